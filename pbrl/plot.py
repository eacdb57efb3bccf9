"""`pbrl plot RUN... --out curves.png`: learning and loss curves of one or several run folders, side by side.

Reads each folder's metrics.jsonl (pbrl.runs; a pipeline folder has none of its own: its `reward/` and `policy/`
sub-runs are read, labelled `<folder>/reward` and `<folder>/policy`) and draws one panel per metric key, every run
as one line labelled by its folder name, steps on x. Panels come in this order: evaluation (the `eval/` namespace
and any score or return), then losses, then the other metrics (accuracies, margins, norms), then throughput
(`perf/`); within each group by key, so the keys of one namespace sit together. A metric key is a namespaced key
(`iql/v_loss`) with a number in at least one row; bookkeeping such as `step` and `epoch` is not drawn unless asked
for with `--keys`. The PNG carries no timestamp or version, so the same folders give the same bytes.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tyro

from pbrl.errors import PbrlError
from pbrl.runs import METRICS_NAME, is_run_folder, read_rows, scalar_items
from pbrl.utils import atomic_write_bytes

Series = tuple[str, list[dict[str, Any]]]
"""A run's label and its metrics rows."""

def key_group(key: str) -> int:
    """Panel order of a metric key: 0 evaluation, 1 loss, 2 other, 3 perf (see the module docstring)."""
    namespace, _, name = key.rpartition("/")
    top = namespace.split("/")[0]
    if top == "eval":
        return 0
    if "loss" in name:  # before score/return: `dt/return_loss` is a loss
        return 1
    if "score" in name or "return" in name:
        return 0
    return 3 if top == "perf" else 2


def select_keys(series: list[Series], keys: list[str] | None = None) -> list[str]:
    """The keys to draw, one panel each. `keys` given: those, in the order given, each checked to have a number
    in some run (else one PbrlError naming it and the keys there are). Otherwise every namespaced key with a
    finite number in some row, ordered by `key_group`, then by key."""
    found: set[str] = set()
    numeric_anywhere: set[str] = set()
    for _, rows in series:
        for row in rows:
            numeric_anywhere.update(k for k, _ in scalar_items(row, skip=()))
            found.update(k for k, _ in scalar_items(row) if "/" in k)
    if keys:
        for k in keys:
            if k not in numeric_anywhere:
                known = ", ".join(sorted(found)[:12]) + (", ..." if len(found) > 12 else "")
                raise PbrlError(f"--keys: no run has a number for {k!r} (keys there: {known or 'none'})")
        return list(dict.fromkeys(keys))
    if not found:
        raise PbrlError(f"no numeric metrics to draw in {', '.join(label for label, _ in series)}")
    return sorted(found, key=lambda k: (key_group(k), k))


def _labels(paths: list[Path]) -> list[str]:
    """Folder names, each lengthened with its parents' names until no other run shares it (a/seed0, b/seed0)."""
    parts = [p.resolve().parts for p in paths]
    out = []
    for i, x in enumerate(parts):
        others = [y for j, y in enumerate(parts) if j != i]
        depth = next((d for d in range(1, len(x) + 1) if all(y[-d:] != x[-d:] for y in others)), len(x))
        out.append("/".join(x[-depth:]) if depth < len(x) else str(paths[i]))  # the same folder twice: its path
    return out


def read_runs(run_dirs: list[str | os.PathLike]) -> list[Series]:
    """(label, rows) of each run folder, or of each sub-run of a pipeline folder (one level down)."""
    if not run_dirs:
        raise PbrlError("pass one or more run folders")
    paths = [Path(d) for d in run_dirs]
    out: list[Series] = []
    for path, label in zip(paths, _labels(paths)):
        if not path.is_dir():
            raise PbrlError(f"{path}: no such run folder")
        if (path / METRICS_NAME).is_file():
            sources = [(path, label)]
        else:  # a pipeline folder: its trainers' sub-runs
            sources = [(sub, f"{label}/{sub.name}") for sub in sorted(path.iterdir())
                       if sub.is_dir() and (sub / METRICS_NAME).is_file()]
        if not sources:
            what = "a run folder without" if is_run_folder(path) else "not a run folder: no"
            raise PbrlError(f"{path}: {what} {METRICS_NAME} (nor a sub-run with one); pass the folder of a "
                            "train, reward train, pipeline or llm dpo run")
        for folder, name in sources:
            rows = read_rows(folder / METRICS_NAME)
            if not rows:
                raise PbrlError(f"{folder / METRICS_NAME}: no rows (the run logged nothing yet)")
            out.append((name, rows))
    return out


def curve(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the rows with a finite number under `key`; a row without `step` counts by position."""
    xs, ys = [], []
    for i, row in enumerate(rows):
        v = row.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            step = row.get("step")
            xs.append(float(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else float(i + 1))
            ys.append(float(v))
    return xs, ys


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only), or one PbrlError line saying how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise PbrlError("pbrl plot needs matplotlib: pip install 'pbrl[stats]' (or pip install matplotlib)") from None
    return plt


def save_png(fig: Any, path: str) -> str:
    """Write `fig` as PNG atomically, without a version stamp (the same data gives the same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())
    return path


def plot_runs(
    run_dirs: list[str | os.PathLike],
    out_png: str | os.PathLike,
    keys: list[str] | None = None,
    *,
    columns: int = 3,
    overwrite: bool = False,
) -> list[str]:
    """Draw the curves of `run_dirs` into `out_png` (one panel per key, `columns` panels a row); returns the
    keys drawn. An existing `out_png` is refused unless `overwrite`. Every input is checked before the file
    is written."""
    out = str(out_png)
    if not out.lower().endswith(".png"):
        raise PbrlError(f"--out: expected a .png file, got {out!r}")
    if os.path.exists(out) and not overwrite:
        raise PbrlError(f"{out}: exists; pass --overwrite to replace it")
    series = read_runs(run_dirs)
    chosen = select_keys(series, keys)
    plt = pyplot()
    ncols = max(1, min(columns, len(chosen)))
    nrows = -(-len(chosen) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, key in enumerate(chosen):
        ax = axes[i // ncols, i % ncols]
        for j, (label, rows) in enumerate(series):
            xs, ys = curve(rows, key)
            if xs:  # one colour per run across every panel
                ax.plot(xs, ys, label=label, color=colors[j % len(colors)], marker="." if len(xs) < 20 else None)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for k in range(len(chosen), nrows * ncols):
        axes[k // ncols, k % ncols].set_visible(False)
    fig.tight_layout()
    try:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        save_png(fig, out)
    finally:
        plt.close(fig)
    return chosen


def plot_location_normalizers(norms: dict[str, dict[str, Any]], out_png: str | os.PathLike) -> str:
    """The fitted location-aware normalizers (SegmentRM's figure): per model, the per-position mean and std of the
    segment rewards against ln p (points, `normalizers.location_points`) and the fitted Huber lines
    mu(p) = a_mu ln p + b_mu, sigma(p) = a_sigma ln p + b_sigma. `norms`: label -> a normalizer dict as LM reward
    models store it (a_mu, b_mu, a_sigma, b_sigma, points)."""
    import numpy as np

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, (label, n) in enumerate(norms.items()):
        pts = n.get("points") or {"ln_p": [], "mean": [], "std": []}
        x = np.asarray(pts["ln_p"], np.float64)
        lo = float(x.min()) if len(x) else -1.0
        line = np.linspace(min(lo, -0.05), 0.0, 50)
        c = colors[j % len(colors)]
        for ax, key, a, b in ((axes[0, 0], "mean", n["a_mu"], n["b_mu"]),
                              (axes[0, 1], "std", n["a_sigma"], n["b_sigma"])):
            if len(x):
                ax.scatter(x, pts[key], s=8, color=c, alpha=0.6)
            ax.plot(line, a * line + b, color=c, label=f"{label}: {a:+.3f} ln p {b:+.3f}")
    for ax, title in ((axes[0, 0], "mean of segment reward vs ln p"), (axes[0, 1], "std of segment reward vs ln p")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("ln p  (p = k/K, the segment's relative position)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = str(out_png)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        save_png(fig, out)
    finally:
        plt.close(fig)
    return out


@dataclass
class Plot:
    """Learning and loss curves of run folders (train, reward train, pipeline, llm dpo) as one PNG."""

    runs: tyro.conf.Positional[list[str]]
    """Run folders (a pipeline folder draws its reward/ and policy/ sub-runs)."""
    out: str = "curves.png"
    """PNG file to write."""
    keys: list[str] | None = None
    """Metric keys to draw, one panel each, in this order (default: every namespaced numeric key)."""
    columns: int = 3
    """Panels per row."""
    overwrite: bool = False
    """Replace an existing --out file."""

    def run(self) -> None:
        if self.columns < 1:
            raise PbrlError(f"--columns: expected a positive whole number, got {self.columns}")
        drawn = plot_runs(self.runs, self.out, self.keys, columns=self.columns, overwrite=self.overwrite)
        print(f"wrote {self.out}: {len(drawn)} panel{'s' if len(drawn) != 1 else ''} ({', '.join(drawn)}) "
              f"of {len(self.runs)} run{'s' if len(self.runs) != 1 else ''}")
