"""`pbrl plot`: which panels are drawn, the PNG written for two tiny run folders, and one-line errors."""

import struct
import sys

import pytest

from pbrl.errors import PbrlError
from pbrl.plot import Plot, curve, key_group, plot_location_normalizers, plot_runs, read_runs, select_keys
from pbrl.runs import RunFolder

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _policy_run(path, scale=1.0):
    """A tiny IQL-like run: update rows every step, an evaluation row at steps 2 and 4."""
    run = RunFolder(path, {"algo": "iql"})
    for s in (1, 2, 3, 4):
        run.log({"step": s, "iql/v_loss": scale / s, "iql/q_loss": 2 * scale / s, "perf/steps_per_s": 100.0 + s})
        if s % 2 == 0:
            run.log({"step": s, "eval/return_mean": 10.0 * s, "eval/normalized_score": 5.0 * s * scale,
                     "eval/returns": [1.0, 2.0]})
    run.write_summary({"last_score": 20.0})
    return path


def _reward_run(path):
    run = RunFolder(path, {"model": "step"})
    for e in (1, 2):
        run.log({"epoch": e, "step": 10 * e, "reward/loss": 0.7 / e, "reward/train_accuracy": 0.5 + 0.1 * e,
                 "perf/pairs_per_s": 1000.0, "reward/val_loss": None})
    return path


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_key_groups_order_evaluation_losses_other_perf():
    assert [key_group(k) for k in ("eval/return_std", "dt/return_loss", "reward/val_loss", "x/score",
                                   "dpo/reward_accuracy", "perf/tokens_per_s")] == [0, 1, 1, 0, 2, 3]


def test_select_keys_default_and_given(tmp_path):
    series = read_runs([_policy_run(tmp_path / "iql"), _reward_run(tmp_path / "rm")])
    # eval first, then losses, then other, then perf; lists, None-only keys and bookkeeping (step, epoch) left out
    assert select_keys(series) == [
        "eval/normalized_score", "eval/return_mean",
        "iql/q_loss", "iql/v_loss", "reward/loss",
        "reward/train_accuracy",
        "perf/pairs_per_s", "perf/steps_per_s",
    ]
    # given keys keep their order, may name bookkeeping, and repeats are drawn once
    assert select_keys(series, ["perf/steps_per_s", "epoch", "iql/v_loss", "epoch"]) == [
        "perf/steps_per_s", "epoch", "iql/v_loss"]
    for bad in ("iql/pi_loss", "reward/val_loss", "eval/returns"):  # unknown, only nulls, not a number
        with pytest.raises(PbrlError, match=f"--keys: no run has a number for '{bad}'"):
            select_keys(series, [bad])


def test_curve_takes_the_rows_with_a_finite_number():
    rows = [{"step": 1, "a/x": 1.0}, {"step": 2, "a/x": None}, {"step": 3, "a/x": float("nan")},
            {"step": 5, "a/x": 4}, {"a/x": 6.0}, {"step": 7, "a/x": True}]
    assert curve(rows, "a/x") == ([1.0, 5.0, 5.0], [1.0, 4.0, 6.0])  # no step: its position (row 5)


def test_labels_pipeline_sub_runs_and_same_named_folders(tmp_path):
    _reward_run(tmp_path / "pipe" / "reward")
    _policy_run(tmp_path / "pipe" / "policy")
    (tmp_path / "pipe" / "prefs").mkdir()  # a sub-folder without metrics is no run
    _policy_run(tmp_path / "a" / "seed0")
    _policy_run(tmp_path / "b" / "seed0")
    labels = [label for label, _ in read_runs([tmp_path / "pipe", tmp_path / "a" / "seed0", tmp_path / "b" / "seed0"])]
    assert labels == ["pipe/policy", "pipe/reward", "a/seed0", "b/seed0"]


def test_plot_of_two_runs_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib is in the stats and dev extras")
    a, b = _policy_run(tmp_path / "run_a"), _policy_run(tmp_path / "run_b", scale=2.0)
    out = tmp_path / "figs" / "curves.png"
    assert plot_runs([a, b], out) == [
        "eval/normalized_score", "eval/return_mean", "iql/q_loss", "iql/v_loss", "perf/steps_per_s"]
    data = out.read_bytes()
    assert len(data) > 1000 and _png_size(data) == (1260, 600)  # 5 panels: 2 rows of 3, 4.2 x 3.0 in at 100 dpi
    with pytest.raises(PbrlError, match="exists; pass --overwrite"):
        plot_runs([a, b], out)
    assert plot_runs([a, b], out, overwrite=True) and out.read_bytes() == data  # same runs, same bytes
    Plot(runs=[str(a)], out=str(tmp_path / "one.png"), keys=["iql/v_loss"]).run()
    assert capsys.readouterr().out.strip().endswith("1 panel (iql/v_loss) of 1 run")
    assert _png_size((tmp_path / "one.png").read_bytes()) == (420, 300)


def test_location_normalizer_figure_draws_points_and_lines(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is in the stats and dev extras")
    seg = {"a_mu": 0.2, "b_mu": 0.1, "a_sigma": -0.1, "b_sigma": 1.0,
           "points": {"ln_p": [-1.1, -0.7, 0.0], "mean": [-0.1, 0.0, 0.1], "std": [1.1, 1.05, 1.0]}}
    bandit = {"a_mu": 0.0, "b_mu": 0.3, "a_sigma": 0.0, "b_sigma": 2.0, "points": {"ln_p": [0.0], "mean": [0.3],
                                                                                     "std": [2.0]}}
    out = plot_location_normalizers({"segment": seg, "bandit": bandit}, tmp_path / "n.png")
    data = (tmp_path / "n.png").read_bytes()
    assert out.endswith("n.png") and _png_size(data) == (900, 340)  # two panels, 9.0 x 3.4 in at 100 dpi
    assert plot_location_normalizers({"segment": seg, "bandit": bandit}, tmp_path / "m.png") and \
        (tmp_path / "m.png").read_bytes() == data  # same input, same bytes


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    good = _policy_run(tmp_path / "good")
    summary_only = tmp_path / "summary_only"
    summary_only.mkdir()
    (summary_only / "config.json").write_text("{}")
    (summary_only / "summary.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    RunFolder(tmp_path / "no_rows", {})
    RunFolder(tmp_path / "no_numbers", {}).log({"step": 1, "eval/returns": [1.0], "note/x": "a"})
    out = tmp_path / "c.png"
    cases = [
        ([tmp_path / "missing"], "missing: no such run folder"),
        ([summary_only], "summary_only: a run folder without metrics.jsonl"),
        ([tmp_path / "empty"], "empty: not a run folder: no metrics.jsonl"),
        ([good, tmp_path / "no_rows"], "no_rows/metrics.jsonl: no rows"),
        ([tmp_path / "no_numbers"], "no numeric metrics to draw in no_numbers"),
        ([], "pass one or more run folders"),
    ]
    for dirs, message in cases:
        with pytest.raises(PbrlError, match=message) as err:
            plot_runs(dirs, out)
        assert "\n" not in str(err.value)
    with pytest.raises(PbrlError, match="expected a .png file"):
        plot_runs([good], tmp_path / "c.pdf")
    with pytest.raises(PbrlError, match="--columns"):
        Plot(runs=[str(good)], out=str(out), columns=0).run()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    with pytest.raises(PbrlError, match=r"needs matplotlib: pip install 'pbrl\[stats\]'"):
        plot_runs([good], out)
    assert not out.exists()


def test_table_on_a_run_folder_points_to_plot(tmp_path):
    from pbrl.tables import load_records

    run = _policy_run(tmp_path / "run")
    with pytest.raises(PbrlError, match=r"run: a run folder, not sweep records .*`pbrl plot .*run`"):
        load_records([str(run)])
    from pbrl.commands import Table

    with pytest.raises(PbrlError, match="pbrl plot"):  # the command says so too, before asking for --name
        Table([str(run)], out=str(tmp_path / "t")).run()


def test_command_line(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib is in the stats and dev extras")
    from pbrl import cli

    assert cli.COMMANDS[("plot",)][0] == "pbrl.plot:Plot"  # listed by `pbrl --help`
    a, b = _policy_run(tmp_path / "a"), _policy_run(tmp_path / "b")
    out = tmp_path / "c.png"
    assert cli.main(["plot", str(a), str(b), "--out", str(out), "--keys", "iql/v_loss", "eval/return_mean"]) == 0
    assert "2 panels (iql/v_loss, eval/return_mean) of 2 runs" in capsys.readouterr().out
    assert _png_size(out.read_bytes()) == (840, 300)
    assert cli.main(["plot", str(a), "--out", str(tmp_path / "d.png"), "--keys", "iql/nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pbrl: error: --keys: no run has a number for 'iql/nope'") and err.count("\n") == 1
    assert not (tmp_path / "d.png").exists()
