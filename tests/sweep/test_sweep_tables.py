import json
import os
import sys
import textwrap

import numpy as np
import pytest

from pbrl.cli import main
from pbrl.sweep import Grid, expand, run_sweep, select_runs
from pbrl.tables import load_records, make_table

TOY = textwrap.dedent(
    '''
    import os

    def run(config, out_dir):
        # counts its calls so tests can see skipped runs; the "score" is a known function of the config
        with open(os.path.join(out_dir, "..", "..", "calls.txt"), "a") as f:
            f.write(config["dataset"] + "\\n")
        if config.get("fail"):
            raise RuntimeError("asked to fail")
        s = 10.0 * config["seed"] + config.get("bonus", 0.0)
        return {"dataset_name": config["dataset"], "last_score": s, "best_score": s + 1.0,
                "curve": [[0, 0.0], [10, s]], "dataset_transitions": 100}
    '''
)


@pytest.fixture
def toy_runner(tmp_path, monkeypatch):
    mod_dir = tmp_path / "mods"
    mod_dir.mkdir()
    (mod_dir / "toy_runner.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(mod_dir))
    monkeypatch.setenv("PYTHONPATH", str(mod_dir) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    yield "toy_runner:run"
    sys.modules.pop("toy_runner", None)


def _grid(runner: str, **kw) -> Grid:
    return Grid(
        name="toy",
        runner=runner,
        base={"steps": 10},
        axes={"dataset": ["a", "b"], "seed": [0, 1, 2]},
        columns=[{"name": "A"}, {"name": "B", "bonus": 5.0}],
        budget="ci",
        **kw,
    )


def test_expand_is_stable_and_complete():
    runs = expand(_grid("x:y"))
    assert len(runs) == 2 * 3 * 2
    assert runs[0].config == {"steps": 10, "dataset": "a", "seed": 0}
    assert runs[1].config == {"steps": 10, "dataset": "a", "seed": 0, "bonus": 5.0}
    assert [r.run_id for r in runs] == [r.run_id for r in expand(_grid("x:y"))]


def test_select_runs_matches_every_word_in_the_id_or_a_config_text_value():
    # two families whose dataset ids share their last part, which is all a run id keeps
    grid = Grid(name="t", runner="x:y", base={"steps": 10},
                axes={"dataset": ["pbrl/hopper/medium-replay-v0", "pbrl/walker2d/medium-replay-v0"], "seed": [0, 1]},
                columns=[{"name": "IQL", "algo": "iql"}, {"name": "DTR-minmax", "algo": "dtr"}], budget="ci")
    runs = expand(grid)
    assert all("hopper" not in r.run_id and "walker2d" not in r.run_id for r in runs)

    def picked(only):
        return [(r.column, r.config["dataset"].split("/")[1], r.config["seed"]) for r in select_runs(runs, only)]

    assert picked("DTR-minmax walker2d") == [("DTR-minmax", "walker2d", 0), ("DTR-minmax", "walker2d", 1)]
    assert picked("hopper") == [(c, "hopper", s) for s in (0, 1) for c in ("IQL", "DTR-minmax")]
    assert picked("iql walker2d") == [("IQL", "walker2d", 0), ("IQL", "walker2d", 1)]  # the algo value
    assert picked(runs[3].run_id) == [("DTR-minmax", "hopper", 1)]  # a whole id still picks that run
    assert picked(None) == picked("") == picked("  ") and len(picked(None)) == 8
    assert picked("IQL halfcheetah") == []


def _calls(out):
    return open(os.path.join(out, "calls.txt")).read().split()


def test_local_sweep_skips_finished_runs_and_records_failures(tmp_path, toy_runner):
    out = str(tmp_path / "sw")
    recs = run_sweep(_grid(toy_runner), out, log=lambda s: None)
    assert len(recs) == 12 and all(r["status"] == "ok" for r in recs)
    assert len(_calls(out)) == 12
    assert run_sweep(_grid(toy_runner), out, log=lambda s: None) == []  # resume: nothing left
    assert len(_calls(out)) == 12
    g = Grid(name="toy", runner=toy_runner, axes={"dataset": ["c"], "seed": [0]}, columns=[{"name": "F", "fail": True}])
    (rec,) = run_sweep(g, out, log=lambda s: None)
    assert rec["status"] == "failed" and "asked to fail" in rec["error"]
    assert os.path.isfile(os.path.join(out, "records", f"{rec['run_id']}.failed.json"))


def test_process_pool_sweep(tmp_path, toy_runner):
    out = str(tmp_path / "pool")
    recs = run_sweep(_grid(toy_runner), out, workers=2, log=lambda s: None)
    assert sorted(r["result"]["last_score"] for r in recs) == sorted([0, 10, 20, 5, 15, 25] * 2)


def test_ray_sweep(tmp_path, toy_runner):
    ray = pytest.importorskip("ray")
    out = str(tmp_path / "ray")
    try:
        ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}})
        recs = run_sweep(_grid(toy_runner), out, use_ray=True, log=lambda s: None)
    finally:
        ray.shutdown()
    assert len(recs) == 12 and all(r["status"] == "ok" for r in recs)
    assert len(os.listdir(os.path.join(out, "records"))) == 12


def test_table_values_and_reproducibility(tmp_path, toy_runner):
    out = str(tmp_path / "sw")
    run_sweep(_grid(toy_runner, meta={"reference": {"a": {"A": 1.0}}}), out, log=lambda s: None)
    recs = load_records([out])
    paths = make_table(recs, str(tmp_path / "res"), "toy", columns=["A", "B"])
    md = open(paths["md"]).read()
    # column A on dataset a: seeds 0, 1, 2 -> scores 0, 10, 20: mean 10, population std 8.165
    assert f"| a | 10.0 ± {np.std([0, 10, 20]):.1f} (3) | 15.0 ± 8.2 (3) |" in md
    assert "policy steps per run: 10" in md and "seeds: [0, 1, 2]" in md
    first = {k: open(p, "rb").read() for k, p in paths.items()}
    paths2 = make_table(load_records([out]), str(tmp_path / "res"), "toy", columns=["A", "B"])
    assert {k: open(p, "rb").read() for k, p in paths2.items()} == first
    # through the CLI, with the grid's reference numbers printed beside ours
    assert main(["table", out, "--out", str(tmp_path / "cli")]) == 0
    md = open(tmp_path / "cli" / "toy.md").read()
    assert "Paper numbers" in md and "| a | 1.0 |" in md
    # one seed has no spread: its cell is the score and the count alone
    one = [r for r in recs if r["config"]["seed"] == 2]
    md = open(make_table(one, str(tmp_path / "one"), "toy", columns=["A", "B"])["md"]).read()
    assert "| a | 20.0 (1) | 25.0 (1) |" in md and "± 0.0" not in md


def test_iqm_matches_rliable_definition(tmp_path, toy_runner):
    pytest.importorskip("rliable")
    from pbrl.tables import iqm_with_ci

    per_row = {"a": [0.0, 10.0, 20.0, 30.0], "b": [1.0, 2.0, 3.0, 100.0]}
    point, lo, hi = iqm_with_ci(per_row)
    flat = np.sort(np.array(per_row["a"] + per_row["b"]))
    assert point == pytest.approx(flat[2:6].mean())  # the middle half of 8 scores
    assert lo <= point <= hi
    # the bootstrap is seeded: the same interval whatever the global RNG did before, and that RNG is left alone
    # (rliable resamples from numpy's global RNG; these scores give a different interval for most seeds)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    again = iqm_with_ci(per_row)
    assert np.array_equal(np.random.get_state()[1], before)
    np.random.rand(5)
    assert iqm_with_ci(per_row) == again == (point, lo, hi)


def test_bad_grid_file(tmp_path):
    p = tmp_path / "g.json"
    p.write_text(json.dumps({"name": "x"}))
    assert main(["sweep", str(p)]) == 2


def test_compute_counts_each_seed_batch_once() -> None:
    from pbrl.tables import compute_seconds

    batch = ["a-0", "a-1", "a-2"]  # three seeds trained together for 100 s: each record carries the 100 s
    records = [{"wall_s": 100.0, "seed_batch": batch} for _ in batch]
    records += [{"wall_s": 40.0}, {"wall_s": 7.5, "seed_batch": ["b-0"]}]
    assert compute_seconds(records) == 100.0 + 40.0 + 7.5


def test_table_mean_over_every_evaluation_and_welch_pairs(tmp_path, toy_runner):
    from scipy.stats import t as student_t

    out = str(tmp_path / "sw")
    run_sweep(_grid(toy_runner, meta={"pairs": [["B", "A"], ["A", "nope"]]}), out, log=lambda s: None)
    assert main(["table", out, "--out", str(tmp_path / "cli")]) == 0
    md = open(tmp_path / "cli" / "toy.md").read()
    # curves [[0, 0], [10, s]]: the mean over every evaluation is s / 2 -> A on a: 0, 5, 10
    assert "Mean over every evaluation" in md and f"| a | 5.0 ± {np.std([0, 5, 10]):.1f} (3) | 7.5 ± 4.1 (3) |" in md
    # Welch by hand: B - A = 5 on the last scores, both sample variances 100, n = 3: t = 5 / sqrt(200 / 3), df = 4
    p_last = 2 * student_t.sf(5 / np.sqrt(200 / 3), 4)
    p_every = 2 * student_t.sf(2.5 / np.sqrt(50 / 3), 4)
    assert (f"| a | B vs A | +5.0 (p = {p_last:.2f}; n = 3, 3): higher, within noise | +2.5 (p = {p_every:.2f}; "
            "n = 3, 3): higher, within noise |") in md
    assert "nope" not in md  # a pair naming a column the table lacks is left out


def test_welch_readings_in_words():
    from scipy.stats import t as student_t

    from pbrl.tables import welch_lines

    m = {"A": {"r": [10.0, 11.0, 12.0]}, "B": {"r": [0.0, 1.0, 2.0]}, "C": {"r": [9.0, 12.0, 15.0]}}
    lines = welch_lines([["A", "B"], ["B", "A"], ["A", "C"]], ["r"], {"last": m})
    # A vs B: equal variances 1, t = 10 / sqrt(2 / 3), df = 4
    p_ab = 2 * student_t.sf(10 / np.sqrt(2 / 3), 4)
    assert lines[2] == f"| r | A vs B | +10.0 (p = {p_ab:.0e}; n = 3, 3): higher (p < 0.05) |" and p_ab < 0.01
    assert lines[3] == f"| r | B vs A | -10.0 (p = {p_ab:.0e}; n = 3, 3): lower (p < 0.05) |"
    # A vs C: variances 1 and 9, t = -1 / sqrt(10 / 3), Welch's df = (10 / 3)^2 / ((1 / 3)^2 / 2 + 3^2 / 2)
    df = (10 / 3) ** 2 / ((1 / 3) ** 2 / 2 + 3**2 / 2)
    p_ac = 2 * student_t.sf(1 / np.sqrt(10 / 3), df)
    assert lines[4] == f"| r | A vs C | -1.0 (p = {p_ac:.2f}; n = 3, 3): lower, within noise |"


def test_a_run_another_sweep_finished_is_reused_not_trained_again(tmp_path, toy_runner):
    first = str(tmp_path / "first")
    run_sweep(_grid(toy_runner), first, log=lambda s: None)
    # a second table: column "B again" is the first grid's B (same config), "C" is new
    other = Grid(name="other", runner=toy_runner, base={"steps": 10}, axes={"dataset": ["a"], "seed": [0, 1]},
                 columns=[{"name": "B again", "bonus": 5.0}, {"name": "C", "bonus": 7.0}])
    out, lines = str(tmp_path / "second"), []
    recs = run_sweep(other, out, reuse=[first, str(tmp_path / "missing")], log=lines.append)
    assert sorted(r["column"] for r in recs) == ["C", "C"] and len(_calls(out)) == 2  # only C trained
    assert "2 already done, 2 to run" in "\n".join(lines)
    reused = [r for r in load_records([out]) if r["column"] == "B again"]
    assert len(reused) == 2 and all(r["reused_from"].startswith("toy/B-a-") for r in reused)
    assert sorted(r["result"]["last_score"] for r in reused) == [5.0, 15.0] and reused[0]["sweep"] == "other"
    # a sweep with another runner does not take them
    g = Grid(name="third", runner="pbrl.pipeline:run_record", axes={"seed": [0]}, columns=[{"name": "X", "bonus": 5.0}])
    from pbrl.sweep import reuse_records

    assert len(reuse_records(g, expand(g), str(tmp_path / "third"), [first], log=lambda s: None)) == 1


SLOW = textwrap.dedent(
    """
    import os, time

    def run(config, out_dir):
        time.sleep(0.6)
        return {"dataset_name": "d", "last_score": 1.0, "best_score": 1.0, "curve": [[1, 1.0]]}

    run.progress = lambda run_dir: (f"working in {os.path.basename(run_dir)}", time.time())
    """
)


def test_a_sweep_says_where_its_running_runs_are(tmp_path, monkeypatch):
    (tmp_path / "slow_runner.py").write_text(SLOW)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        grid = Grid(name="slow", runner="slow_runner:run", axes={"seed": [0, 1]})
        lines: list[str] = []
        run_sweep(grid, str(tmp_path / "sw"), log=lines.append, progress_every=0.25)
        text = "\n".join(lines)
        assert "sweep slow: 0/2 runs recorded" in text and "running run-0-" in text and ": working in run-0-" in text
        assert "sweep slow: 1/2 runs recorded" in text
        lines.clear()
        run_sweep(Grid(name="quiet", runner="slow_runner:run"), str(tmp_path / "q"), log=lines.append, progress_every=0)
        assert not any("recorded" in line for line in lines)
    finally:
        sys.modules.pop("slow_runner", None)


def test_tables_list_the_dataset_builds_their_runs_trained_on(tmp_path):
    from pbrl.tables import build_lines

    def rec(i, sha=None, episodes=None, name="hopper"):
        res = {"dataset_name": name, "last_score": 1.0, "curve": [], "dataset_transitions": 100}
        if sha:
            res.update(dataset_sha256=sha, dataset_episodes=episodes)
        return {"run_id": f"r{i}", "column": "A", "config": {"seed": i}, "status": "ok", "result": res}

    old = [rec(0), rec(1, name="walker")]
    assert build_lines(old) == []  # records that predate the fingerprint: the table reads as before
    mixed = old + [rec(2, "a" * 64, 2124), rec(3, "a" * 64, 2124), rec(4, "b" * 64, 2121)]
    assert build_lines(mixed) == ["- dataset builds (sha256 of the data): hopper: aaaaaaaa (2124 episodes) in 2 runs, "
                                  "bbbbbbbb (2121 episodes) in 1 run, not recorded in 1 run; walker: not recorded in 1 run"]
    md = open(make_table(mixed, str(tmp_path), "t")["md"]).read()
    assert "bbbbbbbb (2121 episodes) in 1 run" in md


def test_curve_trend_says_whether_runs_flattened(tmp_path):
    from pbrl.tables import curve_trend

    rising = {"curve": [[i, s] for i, s in enumerate([12.5, 29.8, 44.6, 44.5, 29.6, 26.7, 27.7, 42.1, 57.4, 59.5])]}
    # 10 evaluations: thirds of 3; (42.1 + 57.4 + 59.5) / 3 - (29.6 + 26.7 + 27.7) / 3 = 53.0 - 28.0
    assert curve_trend(rising) == pytest.approx(25.0)
    assert curve_trend({"curve": [[0, 1.0], [1, 4.0]]}) == pytest.approx(3.0)
    assert curve_trend({"curve": [[0, 1.0]]}) is None and curve_trend({"curve": []}) is None

    def rec(i, curve):
        return {"run_id": f"r{i}", "column": "A", "config": {"seed": i}, "status": "ok",
                "result": {"dataset_name": "d", "last_score": curve[-1][1], "curve": curve}}

    md = open(make_table([rec(0, rising["curve"]), rec(1, [[0, 0.0], [1, 2.0], [2, 2.0]])], str(tmp_path),
                         "t")["md"]).read()
    # seed 1: thirds of 1 -> 2.0 - 2.0 = 0; the seeds' mean +12.5, std 12.5
    assert "Where the curves end" in md and "| d | +12.5 ± 12.5 (2) |" in md


def test_welch_sets_the_papers_difference_beside_its_own():
    from pbrl.tables import welch_lines

    m = {"X-s": {"r": [10.0, 11.0, 12.0]}, "Y": {"r": [0.0, 1.0, 2.0]}, "X": {"r": [5.0, 6.0, 7.0]}}
    paper = {"r": {"X": 80.0, "Y": 90.0}}
    lines = welch_lines([["X-s", "Y"], ["Y", "X-s"], ["X-s", "X"], ["X-s", "Z"]], ["r"], {"last": m}, paper,
                        {"X-s": "X"})
    assert lines[0] == "| dataset | A vs B | last: A - B (p) | paper: A - B |"
    assert lines[2].endswith("| -10.0; ours has the opposite sign |")  # ours +10, the paper's 80 - 90
    assert lines[3].endswith("| +10.0; ours has the opposite sign |")
    assert lines[4].endswith("| — |")  # an ablation of one paper column: the paper has no such pair
    assert lines[5].endswith("| — | — |")  # a column without seeds and without a paper number
    same = welch_lines([["Y", "X"]], ["r"], {"last": m}, {"r": {"X": 80.0, "Y": 70.0}})
    assert same[2].endswith("| -10.0; ours has its sign |")  # ours 1 - 6 = -5


def test_budget_lines_keep_the_dirty_mark_of_a_shortened_revision():
    from pbrl.tables import budget_lines

    recs = [{"config": {"steps": 10, "seed": s}, "result": {"dataset_name": "d"}, "git_revision": rev}
            for s, rev in enumerate(["a" * 40, "b" * 40 + "+dirty"])]
    assert budget_lines(recs)[-1] == f"- git revision(s): {'a' * 12}, {'b' * 12}+dirty"


def test_curve_panels_keep_one_color_per_column_and_one_legend_of_all(tmp_path, monkeypatch):
    import warnings

    import pbrl.plot
    from pbrl.tables import _figures

    figs = []
    monkeypatch.setattr(pbrl.plot, "save_png", lambda fig, path: figs.append(fig) or path)

    def rec(column, name):
        return {"column": column, "config": {}, "result": {"dataset_name": name, "curve": [[0, 1.0], [10, 2.0]]}}

    # hopper has both columns, walker only B: B must keep its color in the walker panel and the legend shows A and B
    records = [rec("A", "hopper"), rec("B", "hopper"), rec("B", "walker")]
    last = {"A": {"hopper": [1.0]}, "B": {"hopper": [2.0], "walker": [2.0]}}
    _figures(records, str(tmp_path), "t", ["A", "B"], ["hopper", "walker"], last)
    hopper, walker = figs[1].axes
    color = {line.get_label(): line.get_color() for line in hopper.lines}
    assert [line.get_label() for line in walker.lines] == ["B"]
    assert walker.lines[0].get_color() == color["B"] != color["A"]
    assert [t.get_text() for t in walker.get_legend().get_texts()] == ["A", "B"]

    # no curve at all: no legend and no matplotlib warning about one
    figs.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _figures([{"column": "A", "config": {}, "result": {"dataset_name": "hopper", "curve": []}}], str(tmp_path),
                 "t", ["A"], ["hopper"], {"A": {"hopper": [1.0]}})
    assert figs[1].axes[0].get_legend() is None
