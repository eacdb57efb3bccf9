import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from pbrl.cli import main, one_line
from pbrl.data import PreferencePairs, collect_episodes, load_dataset
from pbrl.data.d4rl_io import write_d4rl
from pbrl.data.teachers import TEACHERS, TeacherConfig, scripted_preferences
from pbrl.errors import PbrlError


def test_data_info_prefs_and_prefs_info(tmp_path, capsys):
    collect_episodes("Pendulum-v1", num_transitions=400, seed=0).to_minari("pbrl/test/pend-v0")
    assert main(["data", "info", "pbrl/test/pend-v0"]) == 0
    out = capsys.readouterr().out
    assert "transitions        400" in out and "Pendulum-v1" in out
    assert main(["prefs", "pbrl/test/pend-v0", "--out", str(tmp_path / "p"), "--queries", "40", "--length", "20",
                 "--teacher", "mistake", "--epsilon", "0.3", "--format", "both"]) == 0
    pairs = PreferencePairs.load(str(tmp_path / "p"))
    assert len(pairs) == 40 and pairs.meta["teacher_params"]["epsilon"] == 0.3
    assert main(["prefs", "info", str(tmp_path / "p"), "--dataset", "pbrl/test/pend-v0"]) == 0
    # labelling into a folder that holds labels is refused (one line, the file untouched) unless --overwrite
    npz = tmp_path / "p" / "prefs.npz"
    before = npz.read_bytes()
    assert "pairs      40 of 20 steps" in capsys.readouterr().out
    assert main(["prefs", "pbrl/test/pend-v0", "--out", str(tmp_path / "p"), "--queries", "10", "--length", "20"]) == 2
    assert capsys.readouterr().err.strip() == f"pbrl: error: {npz}: exists already (pass --overwrite to replace it)"
    assert npz.read_bytes() == before


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    assert main(["data", "info", "pbrl/none/missing-v0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pbrl: error: unknown local Minari dataset") and "Traceback" not in err
    # it points at the commands that exist, not at a --download flag no command has
    assert "`pbrl data list`" in err and "`pbrl data build NAME`" in err and "download" not in err
    assert main(["frobnicate"]) == 2
    path = tmp_path / "walker2d-random-v2.hdf5"
    rng = np.random.default_rng(0)
    t = np.zeros(30, bool)
    t[14] = True
    write_d4rl(str(path), rng.normal(size=(30, 3)), rng.normal(size=(30, 2)), rng.normal(size=30), t, np.zeros(30, bool))
    assert main(["data", "info", f"d4rl:{path}"]) == 0
    out = capsys.readouterr().out
    assert "transitions        29" in out and "episodes           2" in out
    # preference indices past the dataset end name the entry
    PreferencePairs(np.array([0, 25]), np.array([1, 2]), 10, np.array([1.0, 0.0])).save(str(tmp_path / "bad"))
    assert main(["prefs", "info", str(tmp_path / "bad"), "--dataset", f"d4rl:{path}"]) == 2
    assert "start_a[1] = 25" in capsys.readouterr().err


def test_missing_local_files_are_reported_as_missing(tmp_path, capsys):
    for spec in (str(tmp_path / "hopper-medium-v2.hdf5"), "runs/none.h5", "./no/such/folder"):
        assert main(["data", "info", spec]) == 2
        err = capsys.readouterr().err
        assert err == f"pbrl: error: {spec}: file not found\n", err
    assert main(["data", "info", "pbrl/none/missing-v0"]) == 2  # an id, not a path: still an unknown dataset
    assert "unknown local Minari dataset" in capsys.readouterr().err


def _pbrl(*args: str) -> subprocess.CompletedProcess:
    exe = os.path.join(os.path.dirname(sys.executable), "pbrl")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)


def test_argument_errors_print_one_line_naming_the_argument(tmp_path):
    out = str(tmp_path / "p")
    cases = {
        ("prefs", "--out", out): "pbrl: error: pbrl prefs: missing required argument: spec",
        ("prefs", "x", "--out", out, "--queries", "abc"): "pbrl: error: pbrl prefs: --queries: ",
        ("prefs", "x", "--out", out, "--bogus", "1"): "pbrl: error: pbrl prefs: unrecognized arguments: --bogus 1",
        ("prefs", "x", "--out", out, "--teacher", "nope"): "pbrl: error: pbrl prefs: --teacher: invalid choice 'nope'",
    }
    for args, start in cases.items():
        r = _pbrl(*args)
        assert r.returncode == 2 and r.stdout == "", (args, r.stdout)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith(start), (args, r.stderr)
    assert not os.path.exists(out)
    # --help stays tyro's full help, on stdout, exit 0
    r = _pbrl("prefs", "--help")
    assert r.returncode == 0 and "--teacher {exact,stochastic,myopic,skip,equal,mistake}" in r.stdout
    assert "--skip-threshold" in r.stdout and r.stderr == ""


def test_one_line_reduces_a_tyro_box():
    box = ("╭─ Value error ─────────╮\n│ Error parsing --steps: invalid  │\n│ literal 'abc'   │\n"
           "│ ─────────────── │\n│ Argument helptext: │\n╰───────────────╯\n")
    assert one_line(box) == "Value error Error parsing --steps: invalid literal 'abc'"


def test_flat_teacher_flags_label_as_the_python_call(tmp_path):
    collect_episodes("Pendulum-v1", num_transitions=600, seed=1).to_minari("pbrl/test/pend-teacher-v0")
    ds = load_dataset("pbrl/test/pend-teacher-v0")
    runs = {
        "stochastic": (["--teacher", "stochastic", "--beta", "0.05"], {"beta": 0.05}),
        "mistake": (["--teacher", "mistake", "--epsilon", "0.3", "--tie-threshold", "1"],
                    {"epsilon": 0.3, "tie_threshold": 1.0}),
        "myopic": (["--teacher", "myopic", "--gamma", "0.5"], {"gamma": 0.5}),
    }
    for name, (flags, overrides) in runs.items():
        out = str(tmp_path / name)
        assert main(["prefs", "pbrl/test/pend-teacher-v0", "--out", out, "--queries", "50", "--length", "10",
                     "--seed", "3", *flags]) == 0
        got = PreferencePairs.load(out)
        ref = scripted_preferences(ds, 50, 10, name, 3, **overrides)
        np.testing.assert_array_equal(got.start_a, ref.start_a)
        np.testing.assert_array_equal(got.start_b, ref.start_b)
        np.testing.assert_array_equal(got.label, ref.label)
        assert got.meta["teacher"] == name and got.meta["teacher_params"] == ref.meta["teacher_params"]
        # the nested config resolves to the preset with the flags applied
        assert TeacherConfig(name, **overrides).resolve() == replace(TEACHERS[name], **overrides)
    # a stochastic teacher with beta = 0.05 on these returns flips some labels of the exact teacher
    exact = scripted_preferences(ds, 50, 10, "exact", 3)
    assert not np.array_equal(PreferencePairs.load(str(tmp_path / "stochastic")).label, exact.label)


def test_teacher_config_from_flat_grid_rows():
    flat, rest = TeacherConfig.from_flat({"teacher": "stochastic", "beta": 2.0, "steps": 5})
    nested, _ = TeacherConfig.from_flat({"teacher": {"name": "stochastic", "beta": 2.0}})
    assert flat == nested == TeacherConfig("stochastic", beta=2.0) and rest == {"steps": 5}
    assert TeacherConfig.from_flat({})[0] == TeacherConfig()
    with pytest.raises(PbrlError, match="unknown teacher 'oracle'"):
        TeacherConfig.from_flat({"teacher": "oracle"})
    with pytest.raises(PbrlError, match="unknown teacher fields"):
        TeacherConfig.from_flat({"teacher": {"name": "exact", "temperature": 1.0}})


def test_a_reader_that_leaves_early_gets_no_traceback():
    # `pbrl data list | head -1`: stdout is a pipe whose reader is gone (unbuffered, so the first print hits it)
    script = ("import os, sys; r, w = os.pipe(); os.close(r); os.dup2(w, 1); from pbrl.cli import main; "
              "sys.exit(main(['data', 'list']))")
    proc = subprocess.run([sys.executable, "-u", "-c", script], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_data_info_on_a_relabeled_dataset_labels_learned_returns(capsys):
    """Returns of learned rewards are not called normalized returns; the true one comes from the source."""
    import shutil

    from pbrl.data.commands import describe_dataset
    from pbrl.data.minari_io import datasets_root

    src = collect_episodes("Pendulum-v1", num_transitions=450, seed=0)
    src.to_minari("pbrl/test/src-v0", ref_min_score=-1200.0, ref_max_score=-150.0)
    learned = np.arange(450, dtype=np.float32) / 7.0  # any rewards: what matters is that they are not the true ones
    entry = {"step": "relabel", "reward_model": "step", "ensemble": 3, "normalizer": "member-zscore",
             "source": "pbrl/test/src-v0"}
    src.with_rewards(learned, provenance=entry).to_minari(
        "pbrl/test/rel-v0", ref_min_score=-1200.0, ref_max_score=-150.0)
    info = describe_dataset("pbrl/test/rel-v0")
    true = src.episode_returns().astype(np.float64)
    norm = 100.0 * (true + 1200.0) / 1050.0
    assert info["rewards"].startswith("learned (step reward x3, member-zscore normalizer")
    assert info["learned_return"]["max"] == pytest.approx(float(learned[200:400].sum()), rel=1e-6)
    assert info["return"]["mean"] == pytest.approx(true.mean())
    assert info["normalized_return"] == pytest.approx({"mean": norm.mean(), "min": norm.min(), "max": norm.max()})
    assert info["true_return_source"] == "source dataset pbrl/test/src-v0"
    # the text output rounds to 4 significant digits and names the rewards
    assert main(["data", "info", "pbrl/test/rel-v0"]) == 0
    out = capsys.readouterr().out
    assert f'"mean": {float(f"{norm.mean():.4g}")}' in out and "rewards            learned (step" in out
    # returns kept in the provenance win; with neither, the normalized return is absent and says why
    kept = src.with_rewards(learned, provenance={**entry, "true_episode_returns": [1.0, 2.0, 3.0]})
    kept.to_minari("pbrl/test/kept-v0", ref_min_score=0.0, ref_max_score=4.0)
    info = describe_dataset("pbrl/test/kept-v0")
    assert info["normalized_return"] == pytest.approx({"mean": 50.0, "min": 25.0, "max": 75.0})
    assert info["true_return_source"] == "kept in the provenance"
    shutil.rmtree(os.path.join(datasets_root(), "pbrl/test/src-v0"))
    info = describe_dataset("pbrl/test/rel-v0")
    assert info["normalized_return"] is None and "return" not in info
    assert info["true_return_source"].startswith("not kept")
    # a dataset with its environment's rewards is described as before
    src.to_minari("pbrl/test/src-v0", ref_min_score=-1200.0, ref_max_score=-150.0)
    plain = describe_dataset("pbrl/test/src-v0")
    assert "rewards" not in plain and "learned_return" not in plain
    assert plain["normalized_return"] == pytest.approx({"mean": norm.mean(), "min": norm.min(), "max": norm.max()})
    assert plain["return"]["mean"] == pytest.approx(true.mean())


def test_data_commands_help_names_every_value(capsys):
    """Positionals by their field name and options by what they take: no `STR`, no `{None}|...`."""
    expected = {("data", "info"): ["SPEC "], ("data", "build"): ["NAME ", "--size INT "],
                ("data", "collect"): ["ENV ", "--out MINARI_ID "], ("prefs", "info"): ["PATH ", "--dataset SPEC "],
                ("prefs",): ["SPEC ", "--out DIR "]}
    for words, usage in expected.items():
        with pytest.raises(SystemExit) as e:
            main([*words, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr()
        text = out.out + out.err
        assert all(u in text for u in usage) and "STR" not in text and "{None}" not in text, (words, text)


def test_data_collect_says_what_it_collects_and_refuses_an_existing_id_first(capsys, monkeypatch):
    assert main(["data", "collect", "Pendulum-v1", "--out", "pbrl/test/col-v0", "--transitions", "250"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "collecting 250 transitions of random actions in Pendulum-v1, seed 0"
    assert out[1].startswith("wrote 250 transitions in 2 episodes to pbrl/test/col-v0")
    import pbrl.data.collect as collect

    monkeypatch.setattr(collect, "collect_episodes", lambda *a, **k: pytest.fail("collected before refusing"))
    assert main(["data", "collect", "Pendulum-v1", "--out", "pbrl/test/col-v0", "--transitions", "250"]) == 2
    assert capsys.readouterr().err == ("pbrl: error: Minari dataset 'pbrl/test/col-v0' already exists "
                                       "(pass --overwrite to replace it)\n")
