"""baselines/sequence_throughput.py end to end at a tiny size: its workers run this file against the baseline
revision's tree, so the file must run there (it once imported a helper that tree predates and failed); the
report carries all three variants and both GEMM ceilings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.ci_slow
def test_the_benchmark_runs_against_its_recorded_baseline(tmp_path):
    out = tmp_path / "seq.md"
    res = subprocess.run(
        [sys.executable, str(ROOT / "baselines" / "sequence_throughput.py"), "--rounds", "1", "--steps", "1",
         "--warmup", "0", "--algos", "dt", "--data-size", "500", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| dt | ") and "x |" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 9 and cells[-1].endswith("x")  # baseline, this tree, and the bf16 variant's ratio
    assert "bf16: " in text and "all-bf16 ceiling / baseline" in text


def test_bad_rounds_are_refused_in_one_line():
    res = subprocess.run(
        [sys.executable, str(ROOT / "baselines" / "sequence_throughput.py"), "--rounds", "0", "--out", ""],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120,
    )
    assert res.returncode == 2 and res.stderr.strip().startswith("pbrl: error:") and len(res.stderr.splitlines()) == 1
