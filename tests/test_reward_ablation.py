"""baselines/reward_ablation.py's columns: every column is DTR, at the budget's DTR settings."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

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


def test_plateau_budget_is_table_1s_dtr_on_the_shifted_reward_in_two_grids() -> None:
    from dtr_table1 import CPU_RATES, PLATEAU_SEQ_RUN, TERMINAL_TARGETS
    from reward_ablation import cpu_hours, grids

    (main, cols, seeds), (labels, label_cols, label_seeds) = grids("plateau")
    assert (main, seeds, labels, label_seeds) == ("reward_ablation-plateau", [0, 1, 2], "reward_ablation-plateau-labels", [0])
    assert [c["name"] for c in cols] == ["shift-none", "norm-none", "norm-direct", "norm-member-zscore",
                                         "reward-segment", "reward-pt"]
    assert len(label_cols) == 7 and all(c["name"].startswith(("teacher-", "queries-")) for c in label_cols)
    every = cols + label_cols
    assert all(c["steps"] == PLATEAU_SEQ_RUN["steps"] and c["policy"] == {**SMALL_DT, **TERMINAL_TARGETS}
               for c in every)
    assert [c["shift"] for c in every] == ["none"] + ["minmax"] * 12
    # by hand: (5 columns x 3 seeds + 7 x 1) runs of 20k DTR updates; norm-member-zscore is Table 1's DTR-minmax
    assert cpu_hours("plateau") == pytest.approx((5 * 3 + 7) * 20_000 / CPU_RATES["dtr"] / 3600)
    assert grids("small") == [("reward_ablation-small", columns("small"), [0])]


def test_the_plateau_default_column_is_table_1s_dtr_run_so_the_sweep_reuses_it() -> None:
    from dtr_table1 import BUDGETS, dataset_id
    from dtr_table1 import columns as table1_columns
    from reward_ablation import FROM_TABLE1, grids

    from pbrl.pipeline import run_record
    from pbrl.sweep import Grid, expand

    def keys(cols: list[dict], column: str, seeds: list[int]) -> list[str]:
        grid = Grid(name="g", runner="pbrl.pipeline:run_record", base=BUDGETS["plateau"]["base"],
                    axes={"dataset": [dataset_id("hopper-medium-replay")], "seed": seeds}, columns=cols)
        return [run_record.run_key(r.config) for r in expand(grid) if r.column == column]

    (_, cols, seeds), _ = grids("plateau")
    ours = keys(cols, FROM_TABLE1["plateau"], seeds)
    assert len(ours) == 3 and ours == keys(table1_columns("plateau"), "DTR-minmax", seeds)
    assert set(ours).isdisjoint(keys(cols, "norm-direct", seeds) + keys(table1_columns("plateau"), "Pb-QT-minmax", seeds))
