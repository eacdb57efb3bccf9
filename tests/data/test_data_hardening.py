"""The data layer under hostile conditions: racing writers, killed writers, non-finite values, truncated files,
file modes and fsync of what is published."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from pbrl.data import Episode, EpisodeDataset, collect_episodes, load_dataset
from pbrl.data.d4rl_io import write_d4rl
from pbrl.data.minari_io import TMP_ROOT_PREFIX, datasets_root, read_minari
from pbrl.errors import PbrlError
from pbrl.utils import temp_name_prefix

DATASET_ID = "pbrl/race/pendulum-v0"
_FIELDS = ("observations_all", "actions", "rewards", "terminations", "truncations", "episode_starts")


def _assert_same(a: EpisodeDataset, b: EpisodeDataset) -> None:
    for k in _FIELDS:
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)


def _leftovers() -> list[str]:
    return [n for n in os.listdir(datasets_root()) if n.startswith(TMP_ROOT_PREFIX) or ".old-" in n]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ------------------------------------------------------------------ concurrent writers
def _racer(ds: EpisodeDataset, overwrite: bool, barrier, results) -> None:
    """A writer process: writes its temporary dataset, waits until the other one has too (so both passed the
    up-front "already exists" check), then races it to the final rename."""
    import minari

    create = minari.create_dataset_from_buffers

    def create_then_wait(*args, **kwargs):
        out = create(*args, **kwargs)
        barrier.wait(timeout=30)
        return out

    minari.create_dataset_from_buffers = create_then_wait
    try:
        ds.to_minari(DATASET_ID, overwrite=overwrite)
        results.put((ds.metadata["seed"], "ok"))
    except PbrlError as e:
        results.put((ds.metadata["seed"], f"PbrlError: {e}"))
    except BaseException as e:  # noqa: BLE001  reported to the test instead
        results.put((ds.metadata["seed"], f"{type(e).__name__}: {e}"))


def _race(overwrite: bool) -> tuple[dict[int, EpisodeDataset], dict[int, str]]:
    datasets = {
        seed: collect_episodes("Pendulum-v1", num_transitions=250, seed=seed, metadata={"seed": seed})
        for seed in (0, 1)
    }
    ctx = mp.get_context("fork")  # the writers need this process's imports only, not a fresh interpreter
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(ds, overwrite, barrier, results)) for ds in datasets.values()]
    for p in procs:
        p.start()
    out = dict(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return datasets, out


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_two_writers_of_one_id_exactly_one_wins_and_the_other_raises():
    datasets, out = _race(overwrite=False)
    winners = [seed for seed, res in out.items() if res == "ok"]
    assert len(winners) == 1, out
    loser = 1 - winners[0]
    assert out[loser].startswith("PbrlError: ") and "already exists" in out[loser]
    assert "written by another process meanwhile" in out[loser] and "--overwrite" in out[loser]
    _assert_same(load_dataset(DATASET_ID), datasets[winners[0]])  # complete, and the winner's
    assert _leftovers() == []  # the loser left nothing behind


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_two_overwriting_writers_both_finish_and_one_whole_dataset_remains():
    datasets, out = _race(overwrite=True)
    assert set(out.values()) == {"ok"}, out
    back = load_dataset(DATASET_ID)
    assert any(np.array_equal(back.actions, ds.actions) for ds in datasets.values())
    _assert_same(back, next(ds for ds in datasets.values() if np.array_equal(back.actions, ds.actions)))
    assert _leftovers() == []


def test_overwrite_replaces_the_dataset_and_keeps_no_old_copy():
    a = collect_episodes("Pendulum-v1", num_transitions=120, seed=0)
    b = collect_episodes("Pendulum-v1", num_transitions=130, seed=1)
    a.to_minari(DATASET_ID)
    with pytest.raises(PbrlError, match="already exists"):
        b.to_minari(DATASET_ID)
    _assert_same(load_dataset(DATASET_ID), a)
    b.to_minari(DATASET_ID, overwrite=True)
    _assert_same(load_dataset(DATASET_ID), b)
    assert _leftovers() == []
    namespace = os.path.dirname(os.path.join(datasets_root(), DATASET_ID))
    assert sorted(os.listdir(namespace)) == ["namespace_metadata.json", "pendulum-v0"]


# ------------------------------------------------------------------ killed writers
def _write_and_hang(ds: EpisodeDataset) -> None:
    import minari

    create = minari.create_dataset_from_buffers

    def create_then_hang(*args, **kwargs):
        create(*args, **kwargs)
        time.sleep(600)  # killed here, with its temporary root on disk

    minari.create_dataset_from_buffers = create_then_hang
    ds.to_minari(DATASET_ID)


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_a_killed_writers_temporary_root_is_swept_by_the_next_writer():
    ds = collect_episodes("Pendulum-v1", num_transitions=120, seed=0)
    proc = mp.get_context("fork").Process(target=_write_and_hang, args=(ds,))
    proc.start()
    deadline = time.time() + 30
    while time.time() < deadline and not any(
        os.path.isfile(os.path.join(datasets_root(), n, DATASET_ID, "data", "metadata.json"))
        for n in _leftovers()
    ):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    left = _leftovers()
    assert len(left) == 1 and left[0].startswith(f"{TMP_ROOT_PREFIX}{proc.pid}-")  # the writer is in the name
    # a live writer's temporary root (this process's pid) must survive the sweep
    live = os.path.join(datasets_root(), temp_name_prefix(TMP_ROOT_PREFIX) + "live")
    os.makedirs(live)
    ds.to_minari("pbrl/race/other-v0")
    assert _leftovers() == [os.path.basename(live)]
    assert not os.path.exists(os.path.join(datasets_root(), DATASET_ID))  # the killed write published nothing


# ------------------------------------------------------------------ non-finite values
def _episodes(n: int = 2) -> list[Episode]:
    rng = np.random.default_rng(0)
    return [
        Episode(rng.normal(size=(11, 3)), rng.normal(size=(10, 2)), rng.normal(size=10),
                np.zeros(10, bool), np.eye(10, dtype=bool)[-1])
        for _ in range(n)
    ]


@pytest.mark.parametrize(
    ("field", "row", "value", "message"),
    [
        ("observations", 17, np.nan, "observations row 17: NaN (episode 1, step 6)"),
        ("observations", 10, np.inf, "observations row 10: inf (episode 0, step 10)"),  # a final observation
        ("actions", 13, -np.inf, "actions row 13: -inf (episode 1, step 3)"),
        ("rewards", 4, np.nan, "rewards row 4: NaN (episode 0, step 4)"),
    ],
)
def test_non_finite_values_are_refused_with_the_first_bad_row(field, row, value, message):
    ds = EpisodeDataset.from_episodes(_episodes())
    arrays = {"observations": ds.observations_all.copy(), "actions": ds.actions.copy(), "rewards": ds.rewards.copy()}
    arrays[field][row] = value
    arrays[field][row + 1 :] = value  # only the first bad row is named
    with pytest.raises(PbrlError, match="must be finite") as err:
        EpisodeDataset(arrays["observations"], arrays["actions"], arrays["rewards"], ds.terminations,
                       ds.truncations, ds.episode_starts)
    assert str(err.value).startswith(message)


def test_a_float64_value_past_float32s_range_is_refused_as_inf():
    eps = _episodes(1)
    eps[0].observations[3, 1] = 1e300
    with pytest.raises(PbrlError, match="observations row 3: inf"):
        EpisodeDataset.from_episodes(eps)


def test_a_nan_in_a_stored_minari_dataset_names_the_dataset_and_row():
    ds = EpisodeDataset.from_episodes(_episodes())
    folder = ds.to_minari(DATASET_ID)
    data_file = os.path.join(folder, "data", "main_data.hdf5")
    with h5py.File(data_file, "r+") as f:
        f["episode_1/observations"][6, 0] = np.nan  # observation row 11 + 6 of the flat dataset
    with pytest.raises(PbrlError) as err:
        load_dataset(DATASET_ID)
    assert str(err.value).startswith(f"Minari dataset {DATASET_ID!r} ({data_file}): observations row 17: NaN")


def test_a_nan_in_a_d4rl_file_names_the_file_row(tmp_path):
    n = 30
    timeouts = np.zeros(n, bool)
    timeouts[5] = True  # row 5 is dropped, so file row 10 is the dataset's transition 9
    act = np.zeros((n, 2))
    act[10, 1] = np.nan
    path = tmp_path / "x.hdf5"
    write_d4rl(str(path), np.zeros((n, 3)), act, np.zeros(n), np.zeros(n), timeouts)
    with pytest.raises(PbrlError, match=r"x\.hdf5: 'actions' row 10: NaN \(values must be finite\)"):
        load_dataset(f"d4rl:{path}")


# ------------------------------------------------------------------ truncated and corrupt files
def _truncate(path: str, keep: float) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_a_truncated_minari_file_gives_one_error_naming_it_from_every_entry_point(keep):
    from pbrl.data.commands import describe_dataset

    folder = EpisodeDataset.from_episodes(_episodes()).to_minari(DATASET_ID)
    data_file = os.path.join(folder, "data", "main_data.hdf5")
    _truncate(data_file, keep)
    for load in (load_dataset, describe_dataset, read_minari):  # `pbrl data info` / `train` / the library
        for spec in (DATASET_ID, folder):
            with pytest.raises(PbrlError) as err:
                load(spec)
            msg = str(err.value)
            assert data_file in msg and "truncated" in msg and "\n" not in msg, (load, spec, msg)


def test_a_corrupt_minari_metadata_file_is_named():
    folder = EpisodeDataset.from_episodes(_episodes()).to_minari(DATASET_ID)
    with open(os.path.join(folder, "data", "metadata.json"), "w") as f:
        f.write('{"dataset_id": ')
    with pytest.raises(PbrlError, match="not a readable Minari dataset"):
        read_minari(folder)
    for spec in (DATASET_ID, folder):  # by id and by local folder path
        with pytest.raises(PbrlError, match="JSONDecodeError") as err:
            load_dataset(spec)
        assert os.path.join(folder, "data") in str(err.value)


@pytest.mark.parametrize("keep", [0.002, 0.5, 0.99])
def test_a_truncated_d4rl_file_gives_one_error_naming_it(tmp_path, keep):
    path = tmp_path / "hopper-medium-v2.hdf5"
    n = 2000
    write_d4rl(str(path), np.ones((n, 11)), np.ones((n, 3)), np.ones(n), np.zeros(n), np.zeros(n))
    _truncate(str(path), keep)
    for spec in (str(path), f"d4rl:{path}"):
        with pytest.raises(PbrlError, match="cannot read as hdf5") as err:
            load_dataset(spec)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------ modes, fsync, strict JSON
def test_written_datasets_get_the_umasks_modes(tmp_path):
    old = os.umask(0o022)
    try:
        folder = EpisodeDataset.from_episodes(_episodes()).to_minari(DATASET_ID)
        write_d4rl(str(tmp_path / "x.hdf5"), np.zeros((3, 1)), np.zeros((3, 1)), np.zeros(3), np.zeros(3),
                   np.zeros(3))
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "x.hdf5").st_mode & 0o777 == 0o644
    for name in ("main_data.hdf5", "metadata.json"):
        assert os.stat(os.path.join(folder, "data", name)).st_mode & 0o777 == 0o644
    assert os.stat(folder).st_mode & 0o777 == 0o755


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name fsynced descriptors")
def test_the_minari_writer_fsyncs_the_data_before_and_the_folder_after_the_rename(monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    folder = EpisodeDataset.from_episodes(_episodes()).to_minari(DATASET_ID)
    data_files = [p for p in synced if p.endswith(f"/{DATASET_ID}/data/main_data.hdf5")]
    assert data_files and all(TMP_ROOT_PREFIX in p for p in data_files)  # fsynced under its temporary name
    assert os.path.dirname(folder) in synced[synced.index(data_files[-1]):]  # the published rename's folder


def test_minari_metadata_is_strict_json():
    ds = EpisodeDataset.from_episodes(_episodes(), metadata={"name": "x", "score": float("nan")})
    folder = ds.to_minari(DATASET_ID)
    with open(os.path.join(folder, "data", "metadata.json")) as f:
        raw = json.load(f)

    def refuse(token: str):
        raise AssertionError(f"non-strict JSON token {token}")

    assert json.loads(raw["pbrl"], parse_constant=refuse)["score"] is None
    assert load_dataset(DATASET_ID).metadata["score"] is None
