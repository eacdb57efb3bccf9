import numpy as np

from pbrl.cli import main
from pbrl.data import PreferencePairs, collect_episodes
from pbrl.data.d4rl_io import write_d4rl


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
    assert "pairs      40 of 20 steps" in capsys.readouterr().out


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    assert main(["data", "info", "pbrl/none/missing-v0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pbrl: error: unknown local Minari dataset") and "Traceback" not in err
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
