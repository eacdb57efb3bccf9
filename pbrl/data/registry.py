"""`load_dataset(spec)` and `make_env(env_id)`: one entry point for every dataset source and environment.

Specs: a local Minari id (`pbrl/hopper/medium-replay-v0`), `d4rl:<path to hdf5>`, a local path (a D4RL-layout
.hdf5/.h5 file or a Minari dataset folder), or `<prefix>:<path>` for registered loaders (`movielens:`, `amazon:`).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from pbrl.data.dataset import EpisodeDataset
from pbrl.errors import PbrlError

# prefix -> loader, or "module:function" imported on first use
_LOADERS: dict[str, Callable[[str], EpisodeDataset] | str] = {
    "d4rl": "pbrl.data.d4rl_io:read_d4rl",
    "minari": "pbrl.data.minari_io:read_minari",
    "movielens": "pbrl.rec.logs:load_movielens",
    "amazon": "pbrl.rec.logs:load_amazon",
}


def register_loader(prefix: str, loader: Callable[[str], EpisodeDataset] | str) -> None:
    """Route specs `<prefix>:<rest>` to `loader(rest)`."""
    _LOADERS[prefix] = loader


def _loader(prefix: str) -> Callable[[str], EpisodeDataset]:
    fn = _LOADERS[prefix]
    if isinstance(fn, str):
        module, name = fn.split(":")
        try:
            fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise PbrlError(f"loader for '{prefix}:' is not available ({e})") from None
        _LOADERS[prefix] = fn
    return fn


def load_dataset(spec: str, download: bool = False) -> EpisodeDataset:
    """Load a dataset from a spec (see the module docstring); unknown ids and missing files raise PbrlError."""
    if not isinstance(spec, str) or not spec:
        raise PbrlError(f"dataset spec must be a non-empty string, got {spec!r}")
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in _LOADERS:
        if prefix != "minari" and not os.path.exists(rest):
            raise PbrlError(f"{prefix} file not found: {rest}")
        ds = _loader(prefix)(rest) if prefix != "minari" else _loader(prefix)(rest, download=download)
        return ds
    if os.path.isfile(spec):
        if spec.endswith((".hdf5", ".h5")):
            return _loader("d4rl")(spec)
        raise PbrlError(
            f"{spec}: unknown file type (expected a D4RL .hdf5 file; other formats need a prefix)"
        )
    if os.path.isdir(spec):
        if os.path.isfile(os.path.join(spec, "data", "metadata.json")):
            return EpisodeDataset.from_minari(spec)  # a folder: its corrupt files are named, as for ids
        raise PbrlError(f"{spec}: a folder but not a Minari dataset (no data/metadata.json)")
    if _looks_like_path(spec):
        raise PbrlError(f"{spec}: file not found")
    return EpisodeDataset.from_minari(spec, download=download)


def _looks_like_path(spec: str) -> bool:
    """A spec meant as a file, not a Minari id: a data file's suffix, or a separator that ids never start with.

    Minari ids contain '/' (`pbrl/hopper/medium-v0`), so a '/' alone does not make a path: a leading '/', './',
    '../' or '~', an OS-specific separator (Windows' '\\'), or a `.hdf5`/`.h5` suffix does.
    """
    if spec.endswith((".hdf5", ".h5")) or spec.startswith(("/", "./", "../", "~")):
        return True
    return os.sep != "/" and os.sep in spec


def make_env(env_id: str, **kwargs: Any):
    """`gymnasium.make` after the installed tasks packages have registered their environments (`pbrl.plugins`)."""
    import gymnasium as gym

    from pbrl.plugins import load_tasks

    load_tasks()
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as e:
        raise PbrlError(f"cannot make environment {env_id!r}: {e}") from None
