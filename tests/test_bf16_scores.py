"""baselines/bf16_scores.py: the two precisions differ only in the bf16 switches, and bad arguments are refused in
one line before any work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from baselines.bf16_scores import precision, recipe
from pbrl.policies.base import default_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("algo", ["dt", "qt", "dtr"])
@pytest.mark.parametrize("size", ["small", "table1"])
def test_the_precisions_differ_only_in_the_bf16_switches(algo, size):
    f32 = default_config(algo, **recipe(algo, size, 2000), **precision(algo, "float32"))
    b16 = default_config(algo, **recipe(algo, size, 2000), **precision(algo, "bf16"))
    differ = {k for k in vars(f32) if getattr(f32, k) != getattr(b16, k)}
    assert differ == ({"bf16"} if algo == "dt" else {"bf16", "ema_bf16"})
    assert f32.bf16 == "off" and b16.bf16 == "on"


@pytest.mark.parametrize("bad", [["--steps", "0"], ["--seeds", "1", "1"]])
def test_bad_arguments_are_one_line(bad, tmp_path):
    out = tmp_path / "x.md"
    res = subprocess.run([sys.executable, str(ROOT / "baselines" / "bf16_scores.py"), *bad, "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         timeout=120)
    assert res.returncode == 2 and res.stderr.startswith("pbrl: error:") and len(res.stderr.splitlines()) == 1
    assert not out.exists()
