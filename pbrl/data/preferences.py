"""Preference pairs over trajectory segments, and the label-file formats of the field.

A pair compares segment a = flat transitions [start_a, start_a + l) with segment b = [start_b, start_b + l), where
l = `lengths[i]` is the pair's own length (both segments of a pair have it); `length` is the longest, the width
batches are padded to (for fixed-length data every pair has it). `label` = P(b preferred) in [0, 1] (1 = b better,
0 = a better, 0.5 = tie).

Formats:
- pbrl npz (ours): one file `prefs.npz` with arrays `start_a` int64 [M], `start_b` int64 [M], `label` float32 [M],
  `lengths` int64 [M] (per-pair lengths; files written before it existed lack it and mean `length` for every pair),
  scalars `length` int and `format_version` (=1), and `meta` (a JSON string: source, teacher, dataset spec ...).
- Uni-RLHF (Clean-Offline-RLHF): pickled numpy arrays `indices_1_<tag>.pkl`, `indices_2_<tag>.pkl` (int [N] starts)
  and `{human_label|fake_label}_<tag>.pkl`: int [N] in {0, 1, -1} (0: first preferred, 1: second, -1: equal) or
  float [N, 2] one-hot / [.5, .5]. The tag is `domain_<d>_env_<env>_num_<N>_len_<L>_<uuid>`.
- Preference Transformer human labels: `indices_num<N>`, `indices_2_num<N>` (pickled int arrays, possibly longer than
  the labels: the first N are used) and `label_human` (pickled list in {0, 1, -1}); segments of 100 steps.

Pickles execute code when loaded; `safe_unpickle` admits only numpy arrays, numpy scalars and plain containers.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pbrl.errors import PbrlError
from pbrl.utils import atomic_write_bytes

if TYPE_CHECKING:
    from pbrl.data.dataset import EpisodeDataset

FORMAT_VERSION = 1
NPZ_NAME = "prefs.npz"

# the only globals a label pickle may name: what numpy needs to rebuild arrays, dtypes and scalars
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, f: io.BufferedReader, path: str) -> None:
        super().__init__(f)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise PbrlError(
            f"{self._path}: refused to unpickle {module}.{name} (label pickles may hold only numpy arrays and lists)"
        )


def safe_unpickle(path: str) -> Any:
    """Load a pickle that may only contain numpy arrays/scalars and plain lists, tuples, ints and floats."""
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, path).load()
    except PbrlError:
        raise
    except FileNotFoundError:
        raise PbrlError(f"label file not found: {path}") from None
    except Exception as e:
        raise PbrlError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
    return obj


def _as_int_array(obj: Any, path: str) -> np.ndarray:
    arr = np.asarray(obj)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise PbrlError(
            f"{path}: expected a 1-D integer array of segment starts, got {arr.dtype} {arr.shape}"
        )
    return arr.astype(np.int64)


def _labels_from_raw(raw: Any, path: str) -> np.ndarray:
    """Uni-RLHF / PT labels -> P(b preferred): int {0,1,-1} or float [N, 2] rows (p_a, p_b)."""
    arr = np.asarray(raw)
    if arr.ndim == 1:
        bad = np.flatnonzero(~np.isin(arr, (0, 1, -1)))
        if len(bad):
            raise PbrlError(f"{path}: label entry {bad[0]} is {arr[bad[0]].item()!r}; expected 0, 1 or -1")
        return np.where(arr == -1, 0.5, arr).astype(np.float32)
    if arr.ndim == 2 and arr.shape[1] == 2:
        arr = arr.astype(np.float64)
        sums = arr.sum(1)
        bad = np.flatnonzero((arr < 0).any(1) | (arr > 1).any(1) | ~np.isclose(sums, 1.0))
        if len(bad):
            raise PbrlError(
                f"{path}: label row {bad[0]} is {arr[bad[0]].tolist()}; expected [p_a, p_b] summing to 1"
            )
        return arr[:, 1].astype(np.float32)
    raise PbrlError(f"{path}: labels must be int [N] in {{0,1,-1}} or float [N, 2]; got shape {arr.shape}")


@dataclass(frozen=True)
class PreferencePairs:
    """Pairs of segments with soft labels P(b preferred); `lengths` defaults to `length` for every pair."""

    start_a: np.ndarray  # [M] int64 flat transition index
    start_b: np.ndarray  # [M] int64
    length: int  # the longest pair's length (padding width); every pair's when `lengths` is not given
    label: np.ndarray  # [M] float32 in [0, 1]; 0.5 = tie
    meta: dict[str, Any] = field(default_factory=dict)
    lengths: np.ndarray | None = None  # [M] int64 steps of pair i's two segments, each in [1, length]

    def __post_init__(self) -> None:
        a = np.asarray(self.start_a, dtype=np.int64)
        b = np.asarray(self.start_b, dtype=np.int64)
        y = np.asarray(self.label, dtype=np.float32)
        if not (a.shape == b.shape == y.shape) or a.ndim != 1:
            raise PbrlError(
                f"start_a, start_b and label must be 1-D of one length; got {a.shape}, {b.shape}, {y.shape}"
            )
        if int(self.length) < 1:
            raise PbrlError(f"segment length must be >= 1, got {self.length}")
        bad = np.flatnonzero(~np.isfinite(y) | (y < 0) | (y > 1))
        if len(bad):
            raise PbrlError(f"label entry {bad[0]} is {y[bad[0]]}; labels are P(b preferred) in [0, 1]")
        object.__setattr__(self, "start_a", a)
        object.__setattr__(self, "start_b", b)
        object.__setattr__(self, "label", y)
        object.__setattr__(self, "length", int(self.length))
        if self.lengths is None:
            lens = np.full(a.shape, self.length, np.int64)
        else:
            lens = np.asarray(self.lengths)
            if lens.shape != a.shape or not (np.issubdtype(lens.dtype, np.integer) or lens.size == 0):
                raise PbrlError(f"lengths must be int [{len(a)}] like the starts; got {lens.dtype} {lens.shape}")
            lens = lens.astype(np.int64)
            bad = np.flatnonzero((lens < 1) | (lens > self.length))
            if len(bad):
                raise PbrlError(
                    f"lengths entry {bad[0]} is {lens[bad[0]]}; expected 1 <= length <= {self.length} (the longest)"
                )
        object.__setattr__(self, "lengths", lens)

    @classmethod
    def of_lengths(
        cls,
        start_a: np.ndarray,
        start_b: np.ndarray,
        lengths: np.ndarray,
        label: np.ndarray,
        meta: dict[str, Any] | None = None,
    ) -> PreferencePairs:
        """Pairs of different lengths; `length` (the padding width) is the longest."""
        lens = np.asarray(lengths)
        if lens.size == 0:
            raise PbrlError("of_lengths needs at least one pair")
        return cls(start_a, start_b, int(lens.max()), label, dict(meta or {}), lens)

    @property
    def fixed_length(self) -> bool:
        """Every pair has `length` steps."""
        return bool(np.all(self.lengths == self.length))

    def __len__(self) -> int:
        return len(self.label)

    def __repr__(self) -> str:
        """One line (pairs, segment lengths, tie rate, where the labels came from), never the arrays."""
        m = len(self)
        lo, hi = (int(self.lengths.min()), int(self.lengths.max())) if m else (self.length, self.length)
        steps = f"{lo} steps" if lo == hi else f"{lo}-{hi} steps"
        ties = f"{float(self.ties.mean()):.1%}" if m else "-"
        source = self.meta.get("source", "pbrl")
        labels = self.meta.get("labels") or self.meta.get("teacher")
        return (f"PreferencePairs({m} pairs of {steps}, ties {ties}, source {source}"
                + (f" ({labels})" if labels else "") + ")")

    def subset(self, idx: np.ndarray) -> PreferencePairs:
        return PreferencePairs(
            self.start_a[idx], self.start_b[idx], self.length, self.label[idx], dict(self.meta), self.lengths[idx]
        )

    @property
    def ties(self) -> np.ndarray:
        return self.label == 0.5  # [M] bool

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple[PreferencePairs, PreferencePairs]:
        """Random train/validation split (validation gets round(val_fraction * M) pairs)."""
        if not 0.0 <= val_fraction < 1.0:
            raise PbrlError(f"val_fraction must be in [0, 1), got {val_fraction}")
        perm = np.random.default_rng(seed).permutation(len(self))
        n_val = int(round(val_fraction * len(self)))
        return self.subset(np.sort(perm[n_val:])), self.subset(np.sort(perm[:n_val]))

    def validate(self, dataset: EpisodeDataset, source: str = "preferences") -> PreferencePairs:
        """Check every segment lies inside the dataset's flat transitions; returns self."""
        n = dataset.num_transitions
        for name, starts in (("start_a", self.start_a), ("start_b", self.start_b)):
            bad = np.flatnonzero((starts < 0) | (starts + self.lengths > n))
            if len(bad):
                i = bad[0]
                raise PbrlError(
                    f"{source}: {name}[{i}] = {starts[i]} with length {self.lengths[i]} runs past the dataset "
                    f"({n} transitions); do the labels belong to this dataset?"
                )
        return self

    def stats(self) -> dict[str, float]:
        """Counts, tie rate and label balance (mean label among non-ties: 0.5 = balanced)."""
        ties = self.ties
        strict = self.label[~ties]
        return {
            "pairs": float(len(self)),
            "length": float(self.length),
            "mean_length": float(self.lengths.mean()) if len(self) else float(self.length),
            "ties": float(ties.sum()),
            "tie_rate": float(ties.mean()) if len(self) else 0.0,
            "b_preferred": float((self.label > 0.5).sum()),
            "a_preferred": float((self.label < 0.5).sum()),
            "soft": float(((self.label > 0) & (self.label < 1) & ~ties).sum()),
            "balance": float(strict.mean()) if len(strict) else float("nan"),
        }

    # ------------------------------------------------------------------ pbrl npz
    @staticmethod
    def npz_path(path: str) -> str:
        """The file `save(path)` writes: `path` itself if it ends in .npz, else `path`/prefs.npz."""
        return path if path.endswith(".npz") else os.path.join(path, NPZ_NAME)

    def save(self, path: str) -> str:
        """Write `prefs.npz` (into `path` if it is a folder or has no .npz suffix); atomic. Returns the file."""
        file = self.npz_path(path)
        buf = io.BytesIO()
        np.savez(
            buf,
            start_a=self.start_a,
            start_b=self.start_b,
            label=self.label,
            lengths=self.lengths,
            length=np.int64(self.length),
            format_version=np.int64(FORMAT_VERSION),
            meta=np.array(json.dumps(self.meta)),
        )
        atomic_write_bytes(file, buf.getvalue())
        return file

    @classmethod
    def load(cls, path: str) -> PreferencePairs:
        """Read any supported layout: a pbrl npz file or a folder holding one, a Uni-RLHF or a PT label folder."""
        if os.path.isdir(path):
            if os.path.isfile(os.path.join(path, NPZ_NAME)):
                path = os.path.join(path, NPZ_NAME)
            elif any(re.match(r"(human|fake)_label_.*\.pkl$", f) for f in os.listdir(path)):
                return cls.from_uni_rlhf(path)
            elif os.path.isfile(os.path.join(path, "label_human")):
                return cls.from_pt(path)
            else:
                raise PbrlError(
                    f"{path}: no {NPZ_NAME}, Uni-RLHF (*_label_*.pkl) or PT (label_human) labels found"
                )
        if not os.path.isfile(path):
            raise PbrlError(f"preference file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                version = int(z["format_version"])
                if version != FORMAT_VERSION:
                    raise PbrlError(f"{path}: format_version {version}, this pbrl reads {FORMAT_VERSION}")
                meta = json.loads(str(z["meta"])) if "meta" in z else {}
                lengths = z["lengths"] if "lengths" in z else None  # absent in files written before it
                return cls(z["start_a"], z["start_b"], int(z["length"]), z["label"], meta, lengths)
        except PbrlError:
            raise
        except (KeyError, ValueError, OSError) as e:
            raise PbrlError(f"{path}: not a pbrl preference file ({e})") from None

    # ------------------------------------------------------------------ Uni-RLHF
    @classmethod
    def from_uni_rlhf(cls, folder: str, tag: str | None = None) -> PreferencePairs:
        """Read a Uni-RLHF label folder (crowdsourced `human_label_*` or scripted `fake_label_*`)."""
        if not os.path.isdir(folder):
            raise PbrlError(f"Uni-RLHF label folder not found: {folder}")
        label_files = sorted(f for f in os.listdir(folder) if re.match(r"(human|fake)_label_.*\.pkl$", f))
        if tag is not None:
            label_files = [f for f in label_files if tag in f]
        if not label_files:
            raise PbrlError(f"{folder}: no Uni-RLHF label file (human_label_*.pkl or fake_label_*.pkl)")
        if len(label_files) > 1:
            raise PbrlError(f"{folder}: several label sets {label_files}; pass tag= to choose one")
        label_file = label_files[0]
        set_tag = re.sub(r"^(human|fake)_label_", "", label_file)
        m = re.search(r"_len_(\d+)", set_tag)
        if not m:
            raise PbrlError(f"{folder}/{label_file}: file name carries no _len_<L> segment length")
        length = int(m.group(1))
        paths = [os.path.join(folder, f"indices_{k}_{set_tag}") for k in (1, 2)]
        lpath = os.path.join(folder, label_file)
        idx1, idx2 = (_as_int_array(safe_unpickle(p), p) for p in paths)
        labels = _labels_from_raw(safe_unpickle(lpath), lpath)
        if not len(idx1) == len(idx2) == len(labels):
            raise PbrlError(f"{folder}: {len(idx1)} / {len(idx2)} indices but {len(labels)} labels")
        kind = "human" if label_file.startswith("human") else "scripted"
        return cls(idx1, idx2, length, labels, {"source": "uni-rlhf", "labels": kind, "file": label_file})

    def to_uni_rlhf(
        self, folder: str, domain: str = "mujoco", env: str = "env", kind: str = "fake"
    ) -> list[str]:
        """Write the Uni-RLHF layout; int {0,1,-1} labels when all are hard or ties, else float [N, 2]."""
        if kind not in ("human", "fake"):
            raise PbrlError(f"kind must be 'human' or 'fake', got {kind!r}")
        if not self.fixed_length:
            raise PbrlError(
                f"{folder}: the Uni-RLHF layout holds one segment length (_len_<L>); these pairs have lengths "
                f"{int(self.lengths.min())}..{self.length} (save them as a pbrl prefs.npz instead)"
            )
        os.makedirs(folder, exist_ok=True)
        tag = f"domain_{domain}_env_{env}_num_{len(self)}_len_{self.length}_{os.urandom(16).hex()}.pkl"
        if np.all(np.isin(self.label, (0.0, 0.5, 1.0))):
            labels: np.ndarray = np.where(self.label == 0.5, -1, self.label).astype(np.int64)
        else:
            labels = np.stack([1.0 - self.label, self.label], axis=1).astype(np.float32)
        out = []
        for name, arr in (
            (f"indices_1_{tag}", self.start_a),
            (f"indices_2_{tag}", self.start_b),
            (f"{kind}_label_{tag}", labels),
        ):
            path = os.path.join(folder, name)
            atomic_write_bytes(path, pickle.dumps(np.asarray(arr)))
            out.append(path)
        return out

    # ------------------------------------------------------------------ Preference Transformer
    @classmethod
    def from_pt(cls, folder: str, length: int = 100) -> PreferencePairs:
        """Read a Preference Transformer human-label folder (segments of `length` steps, 100 in the paper)."""
        lpath = os.path.join(folder, "label_human")
        if not os.path.isfile(lpath):
            raise PbrlError(f"{folder}: no PT label file 'label_human'")
        labels = _labels_from_raw(safe_unpickle(lpath), lpath)
        n = len(labels)
        files = os.listdir(folder)
        f1 = [f for f in files if re.fullmatch(r"indices_num\d+", f)]
        f2 = [f for f in files if re.fullmatch(r"indices_2_num\d+", f)]
        if len(f1) != 1 or len(f2) != 1:
            raise PbrlError(
                f"{folder}: expected one indices_num<N> and one indices_2_num<N> file, found {f1 + f2}"
            )
        starts = []
        for f in (f1[0], f2[0]):
            p = os.path.join(folder, f)
            arr = _as_int_array(safe_unpickle(p), p)
            if len(arr) < n:
                raise PbrlError(f"{p}: {len(arr)} indices for {n} labels")
            starts.append(arr[:n])
        return cls(
            starts[0], starts[1], length, labels, {"source": "preference-transformer", "labels": "human"}
        )
