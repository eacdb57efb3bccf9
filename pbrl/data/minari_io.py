"""Minari IO: read local Minari datasets into an EpisodeDataset and write one back.

Writing goes through `minari.create_dataset_from_buffers` (DataCollector needs jax). pbrl's own metadata
(provenance, source name) rides in the Minari metadata under the key `pbrl`. The dataset is first created under a
temporary datasets root next to the real one and then renamed into place, so a failed write leaves nothing behind.

Concurrent writers of one id: the final step (does the id exist? rename into place) runs under an exclusive lock
on the datasets root and, on Linux, as a rename that refuses to replace (RENAME_NOREPLACE), so of two writers that
did not ask to overwrite exactly one wins and the other raises PbrlError and leaves nothing. An overwrite swaps the
new folder with the old one in one atomic step (RENAME_EXCHANGE), so readers see the old or the new dataset, never
none. Files and folders are fsynced before and after the rename. Temporary roots are named
`.pbrl-tmp-<pid>-<host tag>-...`; the next writer removes those of writers that were killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from pbrl.errors import PbrlError
from pbrl.utils import (
    atomic_write_bytes,
    dumps_json,
    exchange_paths,
    folder_lock,
    fsync_folder,
    rename_no_replace,
    sweep_stale_temporaries,
    temp_name_prefix,
)

TMP_ROOT_PREFIX = ".pbrl-tmp-"

if TYPE_CHECKING:
    from pbrl.data.dataset import EpisodeDataset


def datasets_root() -> str:
    """Minari's local datasets folder ($MINARI_DATASETS_PATH or ~/.minari/datasets)."""
    return os.environ.get("MINARI_DATASETS_PATH") or os.path.join(
        os.path.expanduser("~"), ".minari", "datasets"
    )


def local_dataset_ids() -> list[str]:
    """Ids of every local Minari dataset (folders holding data/metadata.json)."""
    root = datasets_root()
    ids = []
    for dirpath, _dirnames, filenames in os.walk(root):
        if os.path.basename(dirpath) == "data" and "metadata.json" in filenames:
            ids.append(os.path.relpath(os.path.dirname(dirpath), root))
    return sorted(i for i in ids if not i.startswith(TMP_ROOT_PREFIX))


def dataset_exists(dataset_id: str) -> bool:
    return os.path.isfile(os.path.join(datasets_root(), dataset_id, "data", "metadata.json"))


def read_minari(id_or_dataset: Any, download: bool = False) -> EpisodeDataset:
    """A Minari dataset as an EpisodeDataset: `id_or_dataset` is a local id, a dataset folder (holding
    data/metadata.json), or a `minari.MinariDataset`. Missing, truncated or corrupt files raise one PbrlError that
    names the file; so do non-finite observations, actions or rewards (naming the first bad row)."""
    import minari

    if isinstance(id_or_dataset, str | os.PathLike) and os.path.isfile(
        os.path.join(id_or_dataset, "data", "metadata.json")
    ):
        data = os.path.join(id_or_dataset, "data")
        try:
            mds = minari.MinariDataset(data)
        except Exception as e:  # noqa: BLE001  a corrupt metadata.json raises json/KeyError/... from minari
            raise PbrlError(f"{data}: not a readable Minari dataset ({_one_line(e)})") from None
    elif isinstance(id_or_dataset, str):
        dataset_id = id_or_dataset
        if not download and not dataset_exists(dataset_id):
            hint = ", ".join(local_dataset_ids()[:8]) or "none"
            raise PbrlError(
                f"unknown local Minari dataset {dataset_id!r} under {datasets_root()} (local: {hint}); "
                "`pbrl data list` shows the suite and what is built; `pbrl data build NAME` builds a suite dataset"
            )
        try:
            mds = minari.load_dataset(dataset_id, download=download)
        except Exception as e:  # minari raises several types for corrupt or missing data
            data = os.path.join(datasets_root(), dataset_id, "data")
            raise PbrlError(f"cannot load Minari dataset {dataset_id!r} ({data}): {_one_line(e)}") from None
    else:
        mds = id_or_dataset
    storage = mds.storage
    data_file = os.path.join(str(storage.data_path), "main_data.hdf5")
    where = f"Minari dataset {mds.spec.dataset_id!r} ({data_file})"
    try:
        return _read_storage(mds, where)
    except PbrlError:
        raise
    except Exception as e:  # noqa: BLE001  h5py raises OSError/KeyError/ValueError for truncated or corrupt files
        raise PbrlError(f"{where}: unreadable, truncated or corrupt ({_one_line(e)})") from None


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg[:200]}"


def _read_storage(mds: Any, where: str) -> EpisodeDataset:
    from pbrl.data.dataset import EpisodeDataset

    storage = mds.storage
    episodes = list(storage.get_episodes(range(storage.total_episodes)))
    if not episodes:
        raise PbrlError(f"{where}: has no episodes")
    for ep in episodes:
        if isinstance(ep["observations"], dict | tuple):
            raise PbrlError(f"{where}: dict/tuple observations are not supported (flatten them first)")
    raw_meta = storage.metadata
    lengths = np.array([len(ep["rewards"]) for ep in episodes], dtype=np.int64)
    env_spec = raw_meta.get("env_spec")
    env_id = None
    if env_spec:
        with contextlib.suppress(Exception):
            env_id = json.loads(env_spec)["id"] if isinstance(env_spec, str) else env_spec.id
    meta = dict(json.loads(raw_meta["pbrl"])) if "pbrl" in raw_meta else {}
    meta.update(
        dataset_id=raw_meta["dataset_id"],
        name=meta.get("name") or raw_meta["dataset_id"],
        env_id=env_id or meta.get("env_id"),
        ref_min_score=raw_meta.get("ref_min_score"),
        ref_max_score=raw_meta.get("ref_max_score"),
        description=raw_meta.get("description"),
    )
    try:
        return EpisodeDataset(
            observations=np.concatenate([ep["observations"] for ep in episodes]),
            actions=np.concatenate([ep["actions"] for ep in episodes]),
            rewards=np.concatenate([ep["rewards"] for ep in episodes]),
            terminations=np.concatenate([ep["terminations"] for ep in episodes]),
            truncations=np.concatenate([ep["truncations"] for ep in episodes]),
            episode_starts=np.concatenate([[0], np.cumsum(lengths)]),
            metadata=meta,
            observation_space=storage.observation_space,
            action_space=storage.action_space,
        )
    except PbrlError as e:  # bad values or layout: say which dataset
        raise PbrlError(f"{where}: {e}") from None


@contextlib.contextmanager
def _datasets_root_at(path: str):
    # minari reads MINARI_DATASETS_PATH at every call: point it at a temporary root for the duration of a write
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = path
    try:
        yield
    finally:
        if old is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def write_minari(
    ds: EpisodeDataset,
    dataset_id: str,
    *,
    overwrite: bool = False,
    description: str | None = None,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    provenance: dict[str, Any] | None = None,
    extra_files: dict[str, str] | None = None,
) -> str:
    """Write `ds` as Minari dataset `dataset_id`; `extra_files` (name -> text, e.g. a dataset card) are written into
    the dataset's folder before it is published, so they appear with it in the one rename."""
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_dataset import parse_dataset_id

    try:
        parse_dataset_id(dataset_id)
    except Exception as e:
        raise PbrlError(
            f"invalid Minari dataset id {dataset_id!r} (expected [namespace/]name-vN): {e}"
        ) from None
    root = datasets_root()
    final = os.path.join(root, dataset_id)
    if os.path.exists(final) and not overwrite:
        raise PbrlError(
            f"Minari dataset {dataset_id!r} already exists at {final} (pass overwrite=True / --overwrite)"
        )
    ref_min = ref_min_score if ref_min_score is not None else ds.metadata.get("ref_min_score")
    ref_max = ref_max_score if ref_max_score is not None else ds.metadata.get("ref_max_score")
    if (ref_min is None) != (ref_max is None):
        raise PbrlError("pass both ref_min_score and ref_max_score, or neither")
    meta = dict(ds.metadata)
    meta["provenance"] = list(meta.get("provenance", [])) + ([provenance] if provenance else [])
    meta.pop("dataset_id", None)

    env = None
    if ds.env_id:
        try:
            gym.spec(ds.env_id)
            env = ds.env_id
        except Exception:
            env = None  # env not registered in this process: store spaces only, keep the id in pbrl metadata
    buffers = []
    for i in range(ds.num_episodes):
        ep = ds.episode(i)
        buffers.append(
            EpisodeBuffer(
                id=i,
                observations=np.asarray(ep.observations),
                actions=np.asarray(ep.actions),
                rewards=np.asarray(ep.rewards),
                terminations=np.asarray(ep.terminations),
                truncations=np.asarray(ep.truncations),
            )
        )
    os.makedirs(root, exist_ok=True)
    sweep_stale_temporaries(root, TMP_ROOT_PREFIX)  # leftovers of writers killed mid-write
    tmp_root = tempfile.mkdtemp(prefix=temp_name_prefix(TMP_ROOT_PREFIX), dir=root)
    try:
        with _datasets_root_at(tmp_root), warnings.catch_warnings():
            # minari warns about unset author/permalink/eval_env fields we do not use
            warnings.simplefilter("ignore", UserWarning)
            minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=buffers,
                env=env,
                action_space=ds.action_space,
                observation_space=ds.observation_space,
                algorithm_name=meta.get("algorithm_name") or "pbrl",
                description=description or meta.get("description") or f"pbrl dataset {ds.name}",
                ref_min_score=ref_min,
                ref_max_score=ref_max,
                jpeg_encoding=False,
            )
            mds = minari.load_dataset(dataset_id)
            mds.storage.update_metadata({"pbrl": dumps_json(meta)})
        src = os.path.join(tmp_root, dataset_id)
        for name, text in (extra_files or {}).items():
            with open(os.path.join(src, name), "w") as f:
                f.write(text)
        _fsync_tree(src)
        os.makedirs(os.path.dirname(final) or root, exist_ok=True)
        _publish(src, final, tmp_root, dataset_id, overwrite)
        with folder_lock(root):
            _copy_namespace_metadata(tmp_root, root, dataset_id)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return final


def _publish(src: str, final: str, tmp_root: str, dataset_id: str, overwrite: bool) -> None:
    """Move the finished dataset folder `src` to `final`: the exclusive step of a write (see the module docstring).

    Without `overwrite` an existing `final` (another writer's, finished since this write began) is never replaced:
    PbrlError. With it the old folder is swapped out atomically and left in `tmp_root`, which the caller removes.
    """
    root = datasets_root()
    with folder_lock(root):
        if os.path.lexists(final) and overwrite:
            if not exchange_paths(src, final):
                # no atomic swap on this system: two renames, exclusive among pbrl writers under the lock
                os.rename(final, os.path.join(tmp_root, ".replaced"))
                os.rename(src, final)
        else:
            try:
                rename_no_replace(src, final)
            except FileExistsError:
                raise PbrlError(
                    f"Minari dataset {dataset_id!r} already exists at {final} (written by another process "
                    "meanwhile); pass overwrite=True / --overwrite"
                ) from None
        fsync_folder(os.path.dirname(final))


def _fsync_tree(top: str) -> None:
    # the dataset's bytes reach the disk before the rename makes them visible (a crash cannot publish a hole)
    for dirpath, _dirnames, filenames in os.walk(top):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_folder(dirpath)


def _copy_namespace_metadata(tmp_root: str, root: str, dataset_id: str) -> None:
    # minari keeps namespace_metadata.json in each namespace folder; create it in the real root if missing
    parts = dataset_id.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        rel = os.path.join(*parts[:depth], "namespace_metadata.json")
        src, dst = os.path.join(tmp_root, rel), os.path.join(root, rel)
        if os.path.isfile(src) and not os.path.exists(dst):
            with open(src, "rb") as f:
                atomic_write_bytes(dst, f.read())

