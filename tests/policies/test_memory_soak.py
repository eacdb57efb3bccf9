"""The memory soak benchmark (baselines/memory_soak.py): its growth arithmetic, and a short soak of DTR and BC."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "baselines"))
import memory_soak  # noqa: E402


def test_growth_per_1000_counts_from_the_first_mark_after_the_warmup():
    points = {0: [100.0, 10.0], 250: [150.0, 11.0], 500: [160.0, 11.0], 1000: [170.0, 12.0]}
    # from update 500 (the first mark >= 300) to 1000: +10 MB over 500 updates = 20 MB per 1000
    assert memory_soak.growth_per_1000(points, 300, 0) == pytest.approx(20.0)
    assert memory_soak.growth_per_1000(points, 300, 1) == pytest.approx(2.0)
    assert memory_soak.growth_per_1000(points, 1000, 0) is None  # nothing after the warm-up to measure
    assert memory_soak.checkpoints(600) == [0, 100, 200, 300, 400, 500, 600]


@pytest.mark.slow
def test_short_soak_of_dtr_and_bc_passes(tmp_path):
    # 600 updates, all in DTR's actor-copy phase (ema_start 2000) with its EMA forward under bf16: the code before
    # the no-grad copy grew 235 MB RSS per 1000 updates here, the bound is 20
    out = tmp_path / "soak.md"
    rc = memory_soak.main(["--algos", "dtr", "bc", "--steps", "600", "--warmup", "200", "--out", str(out)])
    text = out.read_text()
    rows = {ln.split("|")[1].strip(): ln for ln in text.splitlines() if ln.startswith("| dtr") or ln.startswith("| bc")}
    assert set(rows) == {"dtr", "bc"}
    assert rc == 0 and all(r.rstrip().endswith("PASS |") for r in rows.values()), text
    assert "Result: all PASS" in text and "AMX bf16" in text
