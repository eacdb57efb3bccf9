"""Results tables from run records: mean ± std over seeds per dataset and column, rliable IQM with bootstrap
confidence intervals across datasets and seeds, markdown + csv + figures.

The output depends only on the records (sorted, fixed bootstrap seed, figures without timestamps), so regenerating
from the same records gives the same files. Each table states the budget it was run at, read from the records.
"""

from __future__ import annotations

import csv
import glob
import io
import os
from collections import defaultdict
from typing import Any

import numpy as np

from pbrl.errors import PbrlError
from pbrl.utils import atomic_write_text, read_json_lines

BOOTSTRAP_SEED = 0
BOOTSTRAP_REPS = 2000


def load_records(paths: list[str]) -> list[dict[str, Any]]:
    """Successful run records from record files, folders of them (searched recursively) or jsonl files.
    A run folder (config.json beside summary.json or metrics.jsonl, as train and pipeline write) holds no
    records: it is refused with one line pointing to `pbrl plot`, which draws its curves."""
    from pbrl.runs import is_run_folder

    files: list[str] = []
    for p in paths:
        if os.path.isdir(p) and is_run_folder(p):
            raise PbrlError(f"{p}: a run folder, not sweep records (pbrl table reads the records of pbrl sweep); "
                            f"draw its curves with `pbrl plot {p}`")
        if os.path.isdir(p):
            files += sorted(glob.glob(os.path.join(p, "**", "*.json"), recursive=True))
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise PbrlError(f"records path not found: {p}")
    records = []
    for f in files:
        if f.endswith(".failed.json") or os.path.basename(f) == "grid.json":
            continue
        for _, rec in read_json_lines(f, whole=not f.endswith(".jsonl")):
            if isinstance(rec, dict) and rec.get("status") == "ok" and "result" in rec:
                records.append(rec)
    if not records:
        raise PbrlError(f"no successful run records under {paths}")
    return sorted(records, key=lambda r: r["run_id"])


def _row_key(rec: dict[str, Any]) -> str:
    return str(rec["result"].get("dataset_name") or rec["config"].get("dataset", "?"))


def curve_mean(result: dict[str, Any]) -> float | None:
    """The mean of a run's scores over every evaluation of its curve: steadier than the last evaluation when the
    curve has reached a plateau it keeps spiking above and below (None without a curve)."""
    curve = result.get("curve") or []
    return float(np.mean([score for _, score in curve])) if curve else None


def curve_trend(result: dict[str, Any]) -> float | None:
    """How far a run's curve still moves at its end: the mean score over the last third of its evaluations minus
    the mean over the third before it (near 0 on a plateau, positive while it still rises); None below 2
    evaluations. With n evaluations a third is max(1, n // 3) of them."""
    scores = [score for _, score in result.get("curve") or []]
    k = max(1, len(scores) // 3)
    if len(scores) < 2 * k or len(scores) < 2:
        return None
    return float(np.mean(scores[-k:]) - np.mean(scores[-2 * k : -k]))


_DERIVED = {"curve_mean": curve_mean, "curve_trend": curve_trend}


def score_matrix(records: list[dict[str, Any]], key: str = "last_score") -> dict[str, dict[str, list[float]]]:
    """{column: {row: [score per seed, in seed order]}}; keys "curve_mean" and "curve_trend" are `curve_mean` and
    `curve_trend` of each result."""
    out: dict[str, dict[str, list[tuple[Any, float]]]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        val = _DERIVED[key](rec["result"]) if key in _DERIVED else rec["result"].get(key)
        if val is None:
            continue
        out[rec["column"]][_row_key(rec)].append((rec["config"].get("seed", 0), float(val)))
    return {c: {r: [v for _, v in sorted(xs)] for r, xs in rows.items()} for c, rows in out.items()}


def iqm_with_ci(per_row: dict[str, list[float]]) -> tuple[float, float, float] | None:
    """rliable's interquartile mean over (seeds x datasets) with a stratified bootstrap 95% CI."""
    n = min(len(v) for v in per_row.values())
    if n == 0:
        return None
    scores = np.array([v[:n] for _, v in sorted(per_row.items())]).T  # [runs, tasks]
    try:
        from rliable import library as rly
        from rliable import metrics
    except ImportError:
        return None
    # rliable draws its resamples from numpy's global RNG (its random_state reaches arch but not the draws, and
    # arch warns that it is deprecated): seed that for the call, then put the caller's state back
    state = np.random.get_state()
    np.random.seed(BOOTSTRAP_SEED)
    try:
        point, interval = rly.get_interval_estimates(
            {"x": scores},
            lambda s: np.array([metrics.aggregate_iqm(s)]),
            reps=BOOTSTRAP_REPS,
        )
    finally:
        np.random.set_state(state)
    return float(point["x"][0]), float(interval["x"][0, 0]), float(interval["x"][1, 0])


def compute_seconds(records: list[dict[str, Any]]) -> float:
    """The records' total wall time, each seed batch once: the runs of a batch (`seed_batch`, the run ids trained
    together) carry the group's wall time, so summing every record would count it once per seed."""
    seen: set[tuple[str, ...]] = set()
    total = 0.0
    for r in records:
        batch = tuple(r.get("seed_batch") or ())
        if batch:
            if batch in seen:
                continue
            seen.add(batch)
        total += float(r.get("wall_s", 0))
    return total


def budget_lines(records: list[dict[str, Any]]) -> list[str]:
    """What the table was run at, from the records: steps, seeds, dataset sizes, device, git revisions."""
    steps = sorted({str(r["config"].get("steps")) for r in records})
    seeds = sorted({r["config"].get("seed", 0) for r in records})
    budgets = sorted({str(r.get("budget", "?")) for r in records})
    devices = sorted({str(r.get("device_name") or r.get("device")) for r in records})
    sizes = sorted({f"{_row_key(r)}: {r['result'].get('dataset_transitions')}" for r in records})
    # a revision run from a tree with changes keeps its +dirty mark when shortened
    revs = sorted({str(r.get("git_revision"))[:12] + ("+dirty" if str(r.get("git_revision")).endswith("+dirty") else "")
                   for r in records})
    wall = compute_seconds(records)
    return [
        f"- budget: {', '.join(budgets)}; policy steps per run: {', '.join(steps)}; seeds: {seeds}",
        f"- dataset transitions: {'; '.join(sizes)}",
        *build_lines(records),
        f"- device: {', '.join(devices)}; total compute {wall / 3600:.2f} h over {len(records)} runs",
        f"- git revision(s): {', '.join(revs)}",
    ]


def build_lines(records: list[dict[str, Any]]) -> list[str]:
    """Which builds of each dataset the runs trained on (`dataset_sha256` of their records, with the episode
    count): builds are reproducible on one machine, but a suite dataset built elsewhere or by another revision may
    differ, so a table whose runs span builds says so. Nothing when no record has a fingerprint (older records)."""
    if not any(r["result"].get("dataset_sha256") for r in records):
        return []
    builds: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in records:
        res = r["result"]
        sha = res.get("dataset_sha256")
        key = f"{sha[:8]} ({res.get('dataset_episodes')} episodes)" if sha else "not recorded"
        builds[_row_key(r)][key] += 1
    parts = []
    for row in sorted(builds):
        known = sorted((k, n) for k, n in builds[row].items() if k != "not recorded")
        text = ", ".join(f"{k} in {n} run{'s' * (n != 1)}" for k, n in known)
        if "not recorded" in builds[row]:
            n = builds[row]["not recorded"]
            text += f"{', ' if text else ''}not recorded in {n} run{'s' * (n != 1)}"
        parts.append(f"{row}: {text}")
    return [f"- dataset builds (sha256 of the data): {'; '.join(parts)}"]


def welch_lines(
    pairs: list[list[str]],
    rows: list[str],
    mats: dict[str, dict[str, dict[str, list[float]]]],
    reference: dict[str, dict[str, float]] | None = None,
    reference_columns: dict[str, str] | None = None,
) -> list[str]:
    """A markdown table of Welch's t-test (scipy, unequal variances) per (column A, column B) pair and row, on each
    score matrix in `mats`: the difference of the means (A - B), the two-sided p-value and what it says in words
    (A higher or lower than B, at p < 0.05 or within the seeds' noise); '—' below 2 seeds.

    With `reference` (the paper's numbers per row and column; a column's paper name is `reference_columns[col]`,
    else its own), a last cell gives the paper's A - B and whether the first matrix's difference has its sign:
    where the paper's ordering holds. Pairs whose columns share one paper column (an ablation) get '—' there."""
    from scipy.stats import ttest_ind

    names = reference_columns or {}
    first = next(iter(mats.values()), {})
    paper = ["paper: A - B"] if reference else []
    md = ["| dataset | A vs B | " + " | ".join([f"{k}: A - B (p)" for k in mats] + paper) + " |",
          "|---|---|" + "---|" * (len(mats) + len(paper))]
    for r in rows:
        for a, b in pairs:
            cells = []
            for m in mats.values():
                xa, xb = m.get(a, {}).get(r, []), m.get(b, {}).get(r, [])
                if len(xa) < 2 or len(xb) < 2:
                    cells.append("—")
                    continue
                p = ttest_ind(xa, xb, equal_var=False).pvalue
                d = float(np.mean(xa) - np.mean(xb))
                reading = ("higher" if d > 0 else "lower" if d < 0 else "equal") + (
                    " (p < 0.05)" if p < 0.05 else ", within noise")
                shown = f"{p:.2f}" if p >= 0.01 else f"{p:.0e}"  # a tiny p is not 0
                cells.append(f"{d:+.1f} (p = {shown}; n = {len(xa)}, {len(xb)}): {reading}")
            if reference:
                pa, pb = names.get(a, a), names.get(b, b)
                ref = reference.get(r, {})
                if pa == pb or pa not in ref or pb not in ref:
                    cells.append("—")
                else:
                    d_paper = ref[pa] - ref[pb]
                    xa, xb = first.get(a, {}).get(r, []), first.get(b, {}).get(r, [])
                    ours = float(np.mean(xa) - np.mean(xb)) if xa and xb else None
                    agree = "" if ours is None else (
                        "; ours has its sign" if ours * d_paper > 0 else "; ours has the opposite sign")
                    cells.append(f"{d_paper:+.1f}{agree}")
            md.append(f"| {r} | {a} vs {b} | " + " | ".join(cells) + " |")
    return md


def make_table(
    records: list[dict[str, Any]],
    out_dir: str,
    name: str,
    *,
    columns: list[str] | None = None,
    reference: dict[str, dict[str, float]] | None = None,
    reference_note: str = "",
    title: str | None = None,
    pairs: list[list[str]] | None = None,
    reference_columns: dict[str, str] | None = None,
) -> dict[str, str]:
    """Write <name>.md, <name>.csv, <name>_scores.png and <name>_curves.png; returns the paths. `pairs`: column
    pairs compared by Welch's t-test on the last score and on the mean over every evaluation, and with the paper's
    difference when `reference` has both columns (`welch_lines`; `reference_columns` maps a column to its paper
    name)."""
    last = score_matrix(records, "last_score")
    best = score_matrix(records, "best_score")
    every = score_matrix(records, "curve_mean")
    trend = score_matrix(records, "curve_trend")
    cols = columns or sorted(last)
    cols = [c for c in cols if c in last]
    rows = sorted({r for c in cols for r in last[c]})
    os.makedirs(out_dir, exist_ok=True)

    def cell(c: str, r: str, m: dict[str, dict[str, list[float]]], fmt: str = ".1f") -> str:
        xs = m.get(c, {}).get(r, [])
        if len(xs) == 1:  # one seed has no spread to show
            return f"{xs[0]:{fmt}} (1)"
        return f"{np.mean(xs):{fmt}} ± {np.std(xs):.1f} ({len(xs)})" if xs else "—"

    md = [f"# {title or name}", "", "Normalized scores (0-100, D4RL convention), mean ± std over seeds (n seeds), "
          "last evaluation of each run. Generated by `pbrl table` from run records; do not edit.", ""]
    md += budget_lines(records) + [""]
    md.append("| dataset | " + " | ".join(cols) + " |")
    md.append("|---|" + "---|" * len(cols))
    for r in rows:
        md.append(f"| {r} | " + " | ".join(cell(c, r, last) for c in cols) + " |")
    iqms = {c: iqm_with_ci(last[c]) for c in cols}
    if any(v is not None for v in iqms.values()):
        md.append(
            "| IQM [95% CI] | "
            + " | ".join(f"{v[0]:.1f} [{v[1]:.1f}, {v[2]:.1f}]" if v else "—" for v in iqms.values())
            + " |"
        )
    for title, m in (("Best evaluation", best), ("Mean over every evaluation", every)):
        md += ["", f"{title} of each run (mean ± std over seeds):", ""]
        md.append("| dataset | " + " | ".join(cols) + " |")
        md.append("|---|" + "---|" * len(cols))
        for r in rows:
            md.append(f"| {r} | " + " | ".join(cell(c, r, m) for c in cols) + " |")
    if any(trend.values()):
        md += ["", "Where the curves end: the mean over the last third of each run's evaluations minus the mean over "
               "the third before it (mean ± std over seeds). Near 0 the runs have flattened; a positive value means "
               "they were still rising when training stopped.", ""]
        md.append("| dataset | " + " | ".join(cols) + " |")
        md.append("|---|" + "---|" * len(cols))
        for r in rows:
            md.append(f"| {r} | " + " | ".join(cell(c, r, trend, "+.1f") for c in cols) + " |")
    pairs = [p for p in (pairs or []) if p[0] in cols and p[1] in cols]
    if pairs:
        md += ["", "Welch's t-test between columns (two-sided; per-seed scores; 'higher' / 'lower' is A against B):", ""]
        md += welch_lines(pairs, rows, {"last evaluation": last, "mean over every evaluation": every}, reference,
                          reference_columns)
    if reference:
        ref_cols = sorted({c for v in reference.values() for c in v})
        md += ["", f"Paper numbers for comparison. {reference_note}".rstrip(), ""]
        md.append("| dataset | " + " | ".join(ref_cols) + " |")
        md.append("|---|" + "---|" * len(ref_cols))
        for r, vals in reference.items():
            md.append(f"| {r} | " + " | ".join(f"{vals[c]:.1f}" if c in vals else "—" for c in ref_cols) + " |")
    elif reference_note:
        md += ["", f"Note: {reference_note}"]
    paths = {"md": os.path.join(out_dir, f"{name}.md"), "csv": os.path.join(out_dir, f"{name}.csv")}
    atomic_write_text(paths["md"], "\n".join(md) + "\n")

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", "column", "n_seeds", "last_mean", "last_std", "best_mean", "best_std", "last_scores",
                "every_eval_mean", "every_eval_std"])
    for r in rows:
        for c in cols:
            xs, bs, es = last[c].get(r, []), best.get(c, {}).get(r, []), every.get(c, {}).get(r, [])
            if xs:
                w.writerow([r, c, len(xs), f"{np.mean(xs):.3f}", f"{np.std(xs):.3f}",
                            f"{np.mean(bs):.3f}" if bs else "", f"{np.std(bs):.3f}" if bs else "",
                            " ".join(f"{x:.3f}" for x in xs),
                            f"{np.mean(es):.3f}" if es else "", f"{np.std(es):.3f}" if es else ""])
    atomic_write_text(paths["csv"], buf.getvalue())
    paths.update(_figures(records, out_dir, name, cols, rows, last))
    return paths


def _figures(records, out_dir, name, cols, rows, last) -> dict[str, str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    from pbrl.plot import save_png

    out = {}
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows) * len(cols) / 2), 4))
    width = 0.8 / max(1, len(cols))
    for j, c in enumerate(cols):
        means = [np.mean(last[c][r]) if last[c].get(r) else np.nan for r in rows]
        stds = [np.std(last[c][r]) if last[c].get(r) else 0 for r in rows]
        ax.bar(np.arange(len(rows)) + j * width, means, width, yerr=stds, label=c)
    ax.set_xticks(np.arange(len(rows)) + 0.4 - width / 2, rows, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("normalized score (last)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out["scores_png"] = save_png(fig, os.path.join(out_dir, f"{name}_scores.png"))
    plt.close(fig)

    fig, axes = plt.subplots(1, len(rows), figsize=(4 * len(rows), 3.2), squeeze=False)
    for i, r in enumerate(rows):
        ax = axes[0, i]
        for j, c in enumerate(cols):
            curves = [rec["result"].get("curve") or [] for rec in records if rec["column"] == c and _row_key(rec) == r]
            curves = [np.array(cv, dtype=float) for cv in curves if len(cv)]
            if not curves:
                continue
            n = min(len(cv) for cv in curves)
            steps = curves[0][:n, 0]
            ys = np.stack([cv[:n, 1] for cv in curves])
            # one color per column in every panel: a panel missing a column must not shift the others' colors
            ax.plot(steps, ys.mean(0), label=c, color=f"C{j % 10}")
            ax.fill_between(steps, ys.min(0), ys.max(0), alpha=0.15, color=f"C{j % 10}")
        ax.set_title(r, fontsize=9)
        ax.set_xlabel("policy steps")
    axes[0, 0].set_ylabel("normalized score")
    # one legend of every column drawn in any panel (the last panel may lack some)
    handles = {label: h for ax in axes[0] for h, label in zip(*ax.get_legend_handles_labels())}
    if handles:
        axes[0, -1].legend(handles.values(), handles.keys(), fontsize=7)
    fig.tight_layout()
    out["curves_png"] = save_png(fig, os.path.join(out_dir, f"{name}_curves.png"))
    plt.close(fig)
    return out
