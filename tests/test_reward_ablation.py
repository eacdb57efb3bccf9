"""baselines/reward_ablation.py's columns: every column is DTR, at the budget's DTR settings."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "baselines"))  # the script imports dtr_table1 by name

from dtr_table1 import PAPER_STEPS, SMALL_DT, SMALL_SEQ_RUN  # noqa: E402
from reward_ablation import columns  # noqa: E402


def test_paper_budget_trains_dtr_for_the_papers_50k_updates_not_the_mlps_1m() -> None:
    cols = columns("paper")
    assert len(cols) == 12 and {c["algo"] for c in cols} == {"dtr"}
    assert {c["steps"] for c in cols} == {PAPER_STEPS["dtr"]} == {50_000}


def test_small_budget_uses_the_cpu_sized_transformer() -> None:
    for c in columns("small"):
        assert c["steps"] == SMALL_SEQ_RUN["steps"] and c["policy"] == SMALL_DT
