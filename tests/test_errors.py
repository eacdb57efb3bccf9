"""One way to refuse input: `pbrl: error: ...`, one line on stderr, exit status 2 (the CLI and the scripts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pbrl.errors import PbrlError, fail, run_script

ROOT = Path(__file__).resolve().parents[1]


def test_run_script_turns_a_pbrl_error_into_one_line_and_status_2(capsys):
    def bad() -> None:
        raise PbrlError("data.hdf5: field 'rewards' missing")

    with pytest.raises(SystemExit) as e:
        run_script(bad)
    assert e.value.code == 2
    assert capsys.readouterr().err == "pbrl: error: data.hdf5: field 'rewards' missing\n"
    for ret, code in ((None, 0), (3, 3)):
        with pytest.raises(SystemExit) as e:
            run_script(lambda ret=ret: ret)
        assert e.value.code == code
    with pytest.raises(SystemExit) as e:
        fail("--rounds must be >= 1")
    assert e.value.code == 2 and capsys.readouterr().err == "pbrl: error: --rounds must be >= 1\n"


def test_a_baseline_scripts_bad_option_is_one_line_and_status_2():
    proc = subprocess.run([sys.executable, "baselines/sequence_throughput.py", "--rounds", "0", "--out", ""],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "pbrl: error: --rounds and --steps must be >= 1"
