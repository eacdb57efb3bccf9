"""Table 1 at the papers' budget (baselines/dtr_table1_gpu.py): the estimate's arithmetic by hand, the smoke path on a
CPU end to end, resuming without rerunning finished runs, and the time budget."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from baselines.dtr_table1_gpu import (
    ColumnCost,
    Unit,
    evaluations,
    fitting_units,
    main,
    make_grid,
    run_seconds,
    unit_seconds,
)
from pbrl.errors import PbrlError

FAST = ["--device", "cpu", "--smoke", "--workers", "1", "--measure-updates", "3", "--measure-warmup", "1",
        "--measure-eval-steps", "3", "--columns", "Oracle-IQL", "Pb-IQL"]


def test_evaluations_count_every_period_and_the_last_update():
    assert evaluations(1000, 250) == 4  # 250, 500, 750, 1000
    assert evaluations(1000, 300) == 4  # 300, 600, 900 and after the last (1000)
    assert evaluations(1000, 0) == 1


def test_run_and_unit_seconds_by_hand():
    c = ColumnCost(steps_per_s=100.0, eval_s=2.0, reward_fixed_s=5.0, reward_epoch_s=0.5)
    # 5 + 10 epochs x 0.5 + 1000 / 100 + 4 evaluations x 2 = 5 + 5 + 10 + 8
    assert run_seconds(c, 1000, 300, 10) == pytest.approx(28.0)
    # 5 seeds, 2 side by side: 3 rounds of one run each
    assert unit_seconds(c, 5, 2, 1000, 300, 10) == pytest.approx(84.0)
    assert unit_seconds(c, 2, 5, 1000, 300, 10) == pytest.approx(28.0)
    assert unit_seconds(c, 0, 5, 1000, 300, 10) == 0.0
    # batched: the updates once for all seeds (1000 / 50), evaluations (2 x 1 s) seed after seed
    b = ColumnCost(steps_per_s=50.0, eval_s=1.0, batched=True)
    assert unit_seconds(b, 5, 5, 1000, 500, 0) == pytest.approx(5 * 2 + 20)
    # one seed left of a batched column: a run alone
    assert unit_seconds(b, 1, 5, 1000, 500, 0) == pytest.approx(22.0)


def test_fitting_units_is_the_longest_prefix_within_the_budget():
    costs = {"A": ColumnCost(10.0, 0.0), "B": ColumnCost(1.0, 0.0)}
    units = [Unit("d", col, ("x",), (0,), steps, 0, 0) for col, steps in (("A", 100), ("B", 30), ("A", 10))]
    # estimates 10 s, 30 s (+ one evaluation of 0 s each), 1 s
    assert [u.column for u in fitting_units(units, costs, 1, 45.0)] == ["A", "B", "A"]
    assert [u.column for u in fitting_units(units, costs, 1, 40.0)] == ["A", "B"]
    # the third unit would fit alone, but the table's order is kept: nothing after the first that does not fit
    assert [u.column for u in fitting_units(units, costs, 1, 20.0)] == ["A"]
    assert fitting_units(units, costs, 1, 5.0) == []


def test_paper_grid_states_the_papers_updates_and_sizes():
    g = make_grid(False, "cuda")
    steps = {c["name"]: c.get("steps", g.base["steps"]) for c in g.columns}
    assert steps == {"Oracle-IQL": 1_000_000, "Pb-IQL": 1_000_000, "Pb-TD3BC": 1_000_000, "Pb-CQL": 1_000_000,
                     "Pb-DT": 100_000, "Pb-QT": 50_000, "DTR": 50_000}
    assert g.base["eval_episodes"] == 10 and g.axes["seed"] == [0, 1, 2, 3, 4] and len(g.axes["dataset"]) == 9
    assert g.base["device"] == "cuda"


def test_a_fraction_of_the_budget_is_its_own_grid_with_two_evaluations_per_run():
    g = make_grid(False, "cuda", fraction=0.01)
    assert g.name == "dtr_table1-paper-x0.01" and g.budget == "paper-x0.01"
    by = {c["name"]: (c["steps"], c["eval_every"]) for c in g.columns}
    assert by["Oracle-IQL"] == (10_000, 5_000) and by["Pb-DT"] == (1_000, 500) and by["DTR"] == (500, 250)
    assert all(evaluations(n, e) == 2 for n, e in by.values())
    with pytest.raises(PbrlError, match="steps-fraction"):
        make_grid(False, "cuda", fraction=1.5)


def test_smoke_runs_within_budget_resumes_and_its_estimate_is_the_measured_rates_arithmetic(tmp_path, capsys):
    out = str(tmp_path / "sweep")
    first = main([*FAST, "--out", out, "--estimate-only"])
    costs = first["costs"]
    assert costs["Oracle-IQL"].batched and costs["Pb-IQL"].batched  # Pb-* seeds batch on their own relabeled data
    assert costs["Pb-IQL"].reward_fixed_s + costs["Pb-IQL"].reward_epoch_s > 0
    assert costs["Oracle-IQL"].reward_fixed_s == 0.0
    # the printed estimate is the unit arithmetic on the measured rates: 2 seeds, 20 updates, eval every 10,
    # 1 reward epoch, 1 process per unit
    expect = (unit_seconds(costs["Oracle-IQL"], 2, 1, 20, 10, 0) + unit_seconds(costs["Pb-IQL"], 2, 1, 20, 10, 1))
    assert first["estimate_s"] == pytest.approx(expect)
    assert first["estimate_s"] == pytest.approx(
        (2 * 2 * costs["Oracle-IQL"].eval_s + 20 / costs["Oracle-IQL"].steps_per_s)
        + (2 * (costs["Pb-IQL"].reward_fixed_s + costs["Pb-IQL"].reward_epoch_s + 2 * costs["Pb-IQL"].eval_s)
           + 20 / costs["Pb-IQL"].steps_per_s))  # reward stages seed after seed, the updates once for both
    assert not os.path.isdir(os.path.join(out, "records")) or not os.listdir(os.path.join(out, "records"))
    capsys.readouterr()

    # a fraction of the budget reuses the rates (copied estimate.json): 10 updates, evaluations at 5 and 10
    half = str(tmp_path / "half")
    os.makedirs(half)
    shutil.copy(os.path.join(out, "estimate.json"), half)
    scaled_run = main([*FAST, "--out", half, "--estimate-only", "--steps-fraction", "0.5"])
    assert "rates measured before" in capsys.readouterr().out
    assert scaled_run["estimate_s"] == pytest.approx(
        unit_seconds(costs["Oracle-IQL"], 2, 1, 10, 5, 0) + unit_seconds(costs["Pb-IQL"], 2, 1, 10, 5, 1))

    # a budget nothing fits into: no run starts, the first unit is named
    s = main([*FAST, "--out", out, "--budget-minutes", "1e-6"])
    assert s["ran"] == [] and s["units_todo"] == 2 and s["fits"] == 0
    log = capsys.readouterr().out
    assert "0 of 2 units fit" in log and "stopping: Oracle-IQL" in log
    assert not os.path.isdir(os.path.join(out, "records")) or not os.listdir(os.path.join(out, "records"))

    main([*FAST, "--out", out])
    log = capsys.readouterr().out
    assert "rates measured before" in log  # the second invocation reuses the rates
    recs = sorted(os.listdir(os.path.join(out, "records")))
    assert len([r for r in recs if r.endswith(".json") and not r.endswith(".failed.json")]) == 4, recs
    for col in ("Oracle-IQL", "Pb-IQL"):  # each column's two seeds: one batched model
        got = [json.load(open(os.path.join(out, "records", r))) for r in recs if r.startswith(col)]
        assert len(got) == 2 and all(len(r["seed_batch"]) == 2 and r["status"] == "ok" for r in got), col
    pb = [json.load(open(os.path.join(out, "records", r))) for r in recs if r.startswith("Pb-IQL")]
    assert pb[0]["result"]["reward"] != pb[1]["result"]["reward"]  # each seed's own reward model
    assert os.path.isfile(os.path.join(out, "table", "dtr_table1-smoke.md"))
    mtimes = {r: os.path.getmtime(os.path.join(out, "records", r)) for r in recs}

    again = main([*FAST, "--out", out])
    assert again["units_todo"] == 0 and again["ran"] == []
    assert {r: os.path.getmtime(os.path.join(out, "records", r)) for r in recs} == mtimes
    assert "4 runs done, 0 to run" in capsys.readouterr().out


def test_bad_options_are_one_line_errors(tmp_path):
    with pytest.raises(PbrlError, match="budget-minutes"):
        main([*FAST, "--out", str(tmp_path), "--budget-minutes", "0"])
    with pytest.raises(PbrlError, match="--columns: unknown"):
        main(["--device", "cpu", "--smoke", "--out", str(tmp_path), "--columns", "Pb-XYZ"])
