"""Table 1's CPU budgets (baselines/dtr_table1.py): what each column trains and the printed core-hour estimate."""

from __future__ import annotations

import pytest

from baselines.dtr_table1 import BUDGETS, CPU_RATES, claim_pairs, columns, cpu_hours

S = "-minmax"  # the plateau budget's learned-reward columns


def test_plateau_trains_the_mlps_100k_and_the_sequence_models_20k_with_a_10_percent_dt_warmup():
    cols = {c["name"]: c for c in columns("plateau")}
    assert BUDGETS["plateau"]["base"]["steps"] == 100_000
    assert all("steps" not in cols[n] for n in ("Oracle-IQL", "Pb-IQL", "Pb-IQL" + S, "Pb-TD3BC" + S))
    assert not any(c["algo"] == "cql" for c in cols.values())  # left out at this budget: its cost (BUDGET_NOTES)
    assert {cols[n + S]["steps"] for n in ("Pb-DT", "Pb-QT", "DTR")} == {20_000}
    assert cols["Pb-DT" + S]["policy"]["warmup_steps"] == 2_000


def test_plateau_shifts_every_learned_reward_but_keeps_the_committed_columns_configs():
    plateau, small = {c["name"]: c for c in columns("plateau")}, {c["name"]: c for c in columns("small")}
    assert list(plateau) == ["Oracle-IQL", "Pb-IQL"] + [n + S for n in small if n not in ("Oracle-IQL", "Pb-CQL")]
    assert all(c["shift"] == "minmax" for n, c in plateau.items() if n.endswith(S))
    assert "shift" not in plateau["Oracle-IQL"] and "shift" not in plateau["Pb-IQL"]  # their run ids stay
    assert all("shift" not in c for c in columns("small") + columns("paper"))
    assert claim_pairs("plateau")[0] == ["DTR" + S, "Pb-QT" + S] and ["Pb-IQL" + S, "Pb-IQL"] in claim_pairs("plateau")
    assert ["DTR" + S, "Oracle-IQL"] in claim_pairs("plateau") and claim_pairs("small")[0] == ["DTR", "Pb-QT"]


@pytest.mark.parametrize("budget", ["plateau", "paper"])
def test_the_long_budgets_scale_iql_rewards_as_the_published_recipe_does(budget):
    cols = {c["name"]: c for c in columns(budget)}
    sfx = S if budget == "plateau" else ""
    assert cols["Oracle-IQL"]["policy"]["reward_scale"] and cols["Pb-IQL"]["policy"]["reward_scale"]
    assert cols["Pb-IQL" + sfx]["policy"]["reward_scale"]
    assert "reward_scale" not in cols["Pb-TD3BC" + sfx].get("policy", {})


def test_the_small_budget_keeps_its_records_settings():
    assert all("reward_scale" not in c.get("policy", {}) for c in columns("small"))


def test_plateau_qt_and_dtr_name_their_terminal_targets_so_their_run_ids_change():
    from pbrl.policies.base import default_config

    plateau = {c["name"]: c for c in columns("plateau")}
    assert plateau["Pb-QT" + S]["policy"]["terminal_targets"] and plateau["DTR" + S]["policy"]["terminal_targets"]
    assert default_config("dtr").terminal_targets  # the key only restates the default
    # every other column, and every other budget, keeps the configs (so the run ids) of its committed records
    others = [c for n, c in plateau.items() if n not in ("Pb-QT" + S, "DTR" + S)] + columns("small") + columns("ci")
    assert all("terminal_targets" not in c.get("policy", {}) for c in others)


def test_cpu_hours_by_hand():
    # plateau, one dataset, 3 seeds: 100k updates of iql (x3: oracle, z-scored, shifted), td3bc; 20k of dt, qt, dtr
    per_seed = (3 * 100_000 / CPU_RATES["iql"] + 100_000 / CPU_RATES["td3bc"]
                + 20_000 / CPU_RATES["dt"] + 20_000 / CPU_RATES["qt"] + 20_000 / CPU_RATES["dtr"])
    assert cpu_hours("plateau", 1) == pytest.approx(3 * per_seed / 3600)
    assert cpu_hours("plateau", 2) == pytest.approx(2 * cpu_hours("plateau", 1))


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_a_bad_thread_count_is_one_argparse_line(bad, capsys):
    from baselines.dtr_table1 import parser

    with pytest.raises(SystemExit) as e:
        parser(None).parse_args(["--threads", bad])
    assert e.value.code == 2
    assert f"argument --threads: expected a positive whole number, got {bad!r}" in capsys.readouterr().err


def test_the_estimate_of_what_is_left_counts_the_runs_without_a_record(tmp_path):
    from baselines.dtr_table1 import dataset_id, run_hours
    from pbrl.sweep import Grid, expand, pending_runs

    grid = Grid(name="g", runner="pbrl.pipeline:run_record", base=BUDGETS["plateau"]["base"],
                axes={"dataset": [dataset_id("hopper-medium-replay")], "seed": [0, 1, 2]}, columns=columns("plateau"))
    runs = expand(grid)
    (tmp_path / "records").mkdir()
    done = [r for r in runs if r.column == "Oracle-IQL"]
    for r in done:
        (tmp_path / "records" / f"{r.run_id}.json").write_text("{}")
    left = pending_runs(runs, str(tmp_path))
    assert len(left) == len(runs) - 3 and not {r.run_id for r in left} & {r.run_id for r in done}
    # by hand: the three Oracle-IQL runs are 100k IQL updates each
    assert run_hours([r.config for r in runs]) - run_hours([r.config for r in left]) == pytest.approx(
        3 * 100_000 / CPU_RATES["iql"] / 3600)
    assert run_hours([r.config for r in runs]) == pytest.approx(cpu_hours("plateau", 1))


def test_the_plateau_columns_name_their_paper_columns():
    from baselines.dtr_table1 import PAPER, reference_columns

    names = reference_columns("plateau")
    assert names == {n + S: n for n in ("Pb-IQL", "Pb-TD3BC", "Pb-DT", "Pb-QT", "DTR")}
    # every claim pair is a pair of paper columns, so the table can set the paper's difference beside its own
    for a, b in claim_pairs("plateau"):
        assert {names.get(a, a), names.get(b, b)} <= set(PAPER["hopper-medium-replay"])
    assert reference_columns("small") == {} and reference_columns("paper") == {}


def test_only_is_passed_to_the_sweep():
    from baselines.dtr_table1 import parser

    assert parser(None).parse_args(["--only", "Pb-DT-minmax"]).only == "Pb-DT-minmax"
    assert parser(None).parse_args([]).only is None
