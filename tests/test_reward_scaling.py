"""Reward-learner scaling sweep (baselines/reward_scaling.py): the grid shares its base point, series and standard
errors by hand, a reward model that learns at the base point, the ci budget end to end through the sweep."""

from __future__ import annotations

import os

import pytest

from baselines.reward_scaling import (
    AXES,
    BUDGETS,
    PointConfig,
    axis_value,
    grid_columns,
    main,
    mean_se,
    run_point,
    scaling_table,
    series,
    trend_label,
)
from pbrl.errors import PbrlError


def test_grid_has_one_base_column_and_policies_only_where_asked():
    b = BUDGETS["cpu"]
    cols = grid_columns(b)
    names = [c["name"] for c in cols]
    assert len(names) == len(set(names))
    # the base point once, every other axis value once, the oracle
    assert len(cols) == 1 + sum(len(b["values"][a]) - 1 for a in AXES) + 1
    with_policy = sorted(c["queries"] for c in cols if c.get("policy") and c.get("reward", "step") == "step")
    assert with_policy == sorted(b["policy_queries"])
    assert cols[-1]["name"] == "oracle-true-reward" and cols[-1]["reward"] == "true"
    base = b["base"]
    for c in cols[1:-1]:  # every non-base column differs from the base in exactly one axis
        assert sum(c[a] != base[a] for a in AXES) == 1, c


def _rec(config: dict, **result) -> dict:
    return {"config": config, "result": result}


def test_series_mean_and_standard_error_by_hand():
    base = {"width": 64, "depth": 2, "ensemble": 3, "queries": 200}
    recs = [
        _rec({**base, "width": 32, "seed": 0}, heldout_accuracy=0.80),
        _rec({**base, "width": 32, "seed": 1}, heldout_accuracy=0.90),
        _rec({**base, "seed": 0}, heldout_accuracy=0.95),
        _rec({**base, "depth": 4, "seed": 0}, heldout_accuracy=0.10),  # on the depth axis, not the width axis
        _rec({"reward": "true", "seed": 0}, last_score=50.0),  # the oracle lies on no axis
    ]
    s = series(recs, "width", "heldout_accuracy", base)
    assert [v for v, *_ in s] == [32, 64]
    # mean 0.85, sample std sqrt(0.005) = 0.0707, se = 0.0707 / sqrt(2) = 0.05
    assert s[0][1] == pytest.approx(0.85) and s[0][2] == pytest.approx(0.05) and s[0][3] == 2
    assert s[1][1:] == (pytest.approx(0.95), 0.0, 1)
    assert [v for v, *_ in series(recs, "depth", "heldout_accuracy", base)] == [2, 4]
    assert axis_value({"reward": "true"}, "width", base) is None
    mu, se, n = mean_se([1.0, float("nan"), 3.0])
    assert (mu, n) == (2.0, 2) and se == pytest.approx(1.0)  # sqrt(2) / sqrt(2)


def test_trend_label_without_and_with_a_classifier():
    s = [(8, 0.5, 0.01, 3), (16, 0.6, 0.01, 3), (32, 0.7, 0.01, 3)]
    assert trend_label(None, s) == "not classified"
    assert trend_label(lambda x, y, se: "positive", s[:2]) == "too few points"
    seen = {}

    def classify(x, y, se):
        seen.update(x=list(x), y=list(y), se=list(se))
        return "positive"

    assert trend_label(classify, s) == "positive"
    assert seen["x"] == [3.0, 4.0, 5.0] and seen["y"] == [0.5, 0.6, 0.7]  # log2 of the axis values


def test_point_config_refuses_bad_rows():
    with pytest.raises(PbrlError, match="unknown \\['widht'\\]"):
        PointConfig.from_dict({"dataset": "x", "widht": 3})
    with pytest.raises(PbrlError, match="queries must be >= 1"):
        PointConfig.from_dict({"dataset": "x", "queries": 0})
    with pytest.raises(PbrlError, match="needs a policy"):
        PointConfig.from_dict({"dataset": "x", "reward": "true"})


def test_scaling_table_classifies_each_axis_and_names_the_non_positive_trends(tmp_path):
    budget = {"base": {"width": 64, "depth": 2, "ensemble": 3, "queries": 200, "heldout": 10, "epochs": 1},
              "policy": {"policy": "iql"}, "policy_queries": [200]}
    base = budget["base"]
    jitter = (-0.001, 0.0, 0.001)  # se = 0.001 / sqrt(3) per point: every gap below is many standard errors
    curves = {  # held-out accuracy per axis value
        "width": {8: 0.6, 64: 0.9, 512: 0.6},  # up, then down: inverted-U
        "depth": {1: 0.9, 2: 0.9, 4: 0.9},  # flat
        "ensemble": {1: 0.9, 3: 0.9, 8: 0.9},
        "queries": {25: 0.7, 200: 0.9, 1600: 0.95},  # positive
    }
    recs, seen = [], set()
    for axis, pts in curves.items():
        for v, acc in pts.items():
            cfg = {**base, axis: v}
            if tuple(sorted(cfg.items())) in seen:
                continue
            seen.add(tuple(sorted(cfg.items())))
            for seed, j in enumerate(jitter):
                recs.append({"run_id": f"{axis}{v}-{seed}", "budget": "t", "config": {**cfg, "seed": seed},
                             "result": {"dataset_name": "d", "dataset_transitions": 1, "heldout_accuracy": acc + j}})
    paths = scaling_table(recs, str(tmp_path), "t", budget)
    md = open(paths["md"]).read()
    width = md.split("## width")[1].split("## depth")[0]
    assert "| trend | inverted-U |" in width and "| 64 (base) | 0.900 ± 0.001 (3) |" in width
    assert "| trend | flat |" in md.split("## depth")[1].split("## ensemble")[0]
    assert "| trend | positive |" in md.split("## queries")[1]
    verdict = md.split("## Verdict")[1]
    assert "- inverse: none" in verdict and "- U-shaped: none" in verdict
    assert "inverted-U: width / held-out pair accuracy (best 0.900 at width 64, 0.600 at 512)" in verdict


@pytest.fixture
def pendulum():
    from pbrl_envs.commands import build

    build("pendulum-medium-replay")
    return "pbrl/pendulum/medium-replay-v0"


def test_reward_model_learns_the_pendulum_reward(pendulum, tmp_path):
    # the cpu budget's base point (width 64, depth 2, 200 labels, 30 epochs): measured 0.93 held-out accuracy over
    # 500 pairs, step Spearman 0.85, segment Spearman 0.97 (seed 0)
    r = run_point({"dataset": pendulum, "width": 64, "queries": 200, "epochs": 30, "heldout": 200}, str(tmp_path))
    assert r["labels"] == 200 and r["heldout_pairs"] == 200 and r["last_score"] is None
    assert r["heldout_accuracy"] > 0.8
    assert r["step_spearman"] > 0.6 and r["segment_spearman"] > 0.8


def test_ci_budget_through_the_sweep_and_resume(pendulum, tmp_path):
    out, res = str(tmp_path / "sweeps"), str(tmp_path / "results")
    paths = main(["--budget", "ci", "--out", out, "--results", res, "--copy-records", str(tmp_path / "rec")])
    md = open(paths["md"]).read()
    for axis in AXES:
        assert f"## {axis}" in md
    assert os.path.isfile(paths["png"]) and os.path.isfile(paths["policy_md"])
    n = len(grid_columns(BUDGETS["ci"]))
    assert len(os.listdir(tmp_path / "rec")) == n
    rec_dir = os.path.join(out, "reward_scaling-ci", "records")
    before = {f: os.path.getmtime(os.path.join(rec_dir, f)) for f in os.listdir(rec_dir)}
    main(["--budget", "ci", "--out", out, "--results", res])  # everything done: nothing reruns
    assert {f: os.path.getmtime(os.path.join(rec_dir, f)) for f in os.listdir(rec_dir)} == before
