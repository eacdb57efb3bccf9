"""The peer score check's adapters: d3rlpy's flat arrays mark every episode's end; the evaluation wrapper clips."""

from __future__ import annotations

import numpy as np
import pytest

from baselines.peer_scores import COLUMNS, D3rlpyPolicy, d3rlpy_arrays, run_record
from pbrl.data import EpisodeDataset
from pbrl.data.dataset import Episode


def _episode(t: int, terminated: bool, truncated: bool) -> Episode:
    obs = np.arange((t + 1) * 2, dtype=np.float32).reshape(t + 1, 2)
    term = np.zeros(t, dtype=bool)
    trunc = np.zeros(t, dtype=bool)
    term[-1], trunc[-1] = terminated, truncated
    return Episode(obs, np.zeros((t, 1), np.float32), np.ones(t, np.float32), term, trunc)


def test_every_episode_end_is_a_terminal_or_a_timeout():
    # three episodes: terminated, truncated, and cut without either flag (a dataset's last, unfinished episode)
    ds = EpisodeDataset.from_episodes([_episode(3, True, False), _episode(2, False, True), _episode(4, False, False)])
    a = d3rlpy_arrays(ds)
    assert a["observations"].shape == (9, 2) and a["actions"].shape == (9, 1)
    np.testing.assert_array_equal(a["terminals"], [0, 0, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(a["timeouts"], [0, 0, 0, 0, 1, 0, 0, 0, 1])
    # the flat observations are each transition's own (not the episodes' final ones)
    np.testing.assert_array_equal(a["observations"][3], [0, 1])


class _Algo:
    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.stack([x[:, 0], -x[:, 0]], axis=1)


class _Spec:
    action_low, action_high = [-1.0, -0.5], [1.0, 0.5]


def test_policy_wrapper_clips_to_the_action_bounds():
    p = D3rlpyPolicy(_Algo(), _Spec())
    out = p.act(np.array([[2.0, 0.0], [0.25, 1.0]]))
    np.testing.assert_allclose(out, [[1.0, -0.5], [0.25, -0.25]])


def test_columns_pair_each_algorithm_across_libraries():
    pairs = {(c["lib"], c["algo"]) for c in COLUMNS}
    assert pairs == {(lib, algo) for lib in ("pbrl", "d3rlpy") for algo in ("iql", "td3bc")}


def test_d3rlpy_run_without_an_interpreter_says_how_to_set_one(monkeypatch, tmp_path):
    monkeypatch.delenv("PBRL_D3RLPY_PYTHON", raising=False)
    with pytest.raises(RuntimeError, match="PBRL_D3RLPY_PYTHON"):
        run_record({"lib": "d3rlpy", "algo": "iql", "dataset": "x", "seed": 0}, str(tmp_path))


def test_the_command_asks_for_the_interpreter_only_when_a_d3rlpy_column_runs(monkeypatch, capsys):
    import baselines.peer_scores as peer

    monkeypatch.delenv("PBRL_D3RLPY_PYTHON", raising=False)
    monkeypatch.setattr("sys.argv", ["peer_scores.py", "--columns", "d3rlpy-IQL"])
    with pytest.raises(SystemExit) as e:
        peer.main()
    assert e.value.code == 2 and capsys.readouterr().err.startswith("pbrl: error: set PBRL_D3RLPY_PYTHON")
    # pbrl's columns alone go past the check (here to the seed check, which refuses an unknown seed)
    monkeypatch.setattr("sys.argv", ["peer_scores.py", "--columns", "pbrl-IQL", "--seeds", "7"])
    with pytest.raises(SystemExit) as e:
        peer.main()
    assert e.value.code == 2 and capsys.readouterr().err.startswith("pbrl: error: --seeds: the ci budget's seeds are [0]")


def test_the_grid_keeps_the_committed_records_run_ids():
    import os

    from baselines.peer_scores import PAIRS, make_grid
    from pbrl.sweep import expand

    grid = make_grid("peer")
    assert [c["name"] for c in grid.columns] == [c["name"] for c in COLUMNS] and grid.meta["pairs"] == PAIRS
    ids = {r.run_id for r in expand(grid)}
    committed = os.path.join(os.path.dirname(__file__), "..", "results", "records", "peer_scores-peer", "records")
    names = {n[:-5] for n in os.listdir(committed) if n.endswith(".json")}
    assert len(names) >= 15 and names <= ids  # every committed record is a run of this grid
    logstd = [r for r in expand(grid) if r.column == "pbrl-IQL-logstd5"]
    assert len(logstd) == 3 and all(r.config["policy"] == {"log_std_min": -5.0} for r in logstd)
