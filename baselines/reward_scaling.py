"""Scaling sweeps over pbrl's own reward learner: does preference reward learning scale inversely anywhere?

One axis at a time is varied around a base point of the step-wise MLP ensemble (Uni-RLHF / DTR's reward model,
`pbrl.rewards.nets.StepLearner`):
- width of the hidden layers, depth (number of hidden layers), ensemble members;
- the number of preference labels (scripted queries) — at three of its points a short IQL policy is also trained on
  the relabeled data (member z-score, DTR's normalization), beside an IQL on the true reward (the oracle).

Measured per run (3 seeds, each seed draws its own labels, initialisation and held-out pairs):
- held-out pair accuracy: accuracy of the ensemble mean's segment scores on `heldout` fresh pairs labelled by the
  same teacher (pairs the model never saw; tied pairs excluded), `pbrl.rewards.train.evaluate_pairs`;
- learned-vs-true reward correlation, Pearson and Spearman (scipy), per step over the whole dataset and per
  segment of the query length, `pbrl.rewards.report.reward_report`;
- the policy's last normalized score (those points of the labels axis only).

Each axis's trend (metric against log2 of the axis value, with the seeds' standard errors) is classified positive /
flat / inverse / U-shaped / inverted-U by `pbrl.llm.trends.classify_trend` when that module exists; otherwise the
raw series are reported and the table says the classifier was not applied.

    PYTHONPATH=. OMP_NUM_THREADS=1 python baselines/reward_scaling.py --budget cpu   # pendulum, 3 seeds, ~25 min idle
    PYTHONPATH=. OMP_NUM_THREADS=1 python baselines/reward_scaling.py --budget ci    # seconds: 1 seed, 2 points/axis

Runs go through the resumable sweep (`pbrl.sweep.run_sweep`; finished runs are skipped; records under
runs/sweeps/reward_scaling-<budget>/, copied to results/records/reward_scaling-<budget>/ to commit). Outputs:
results/reward_scaling-<budget>.{md,csv,png} (the series per axis, written by `scaling_table` from the records) and
results/reward_scaling-<budget>-policy.{md,csv,_scores.png,_curves.png} (the policy scores through `pbrl.tables`,
what `pbrl table results/records/reward_scaling-<budget>` gives).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the sweep imports this runner as baselines.reward_scaling
    sys.path.insert(0, str(ROOT))

from pbrl.errors import PbrlError  # noqa: E402

HELDOUT_SEED_OFFSET = 100_000
"""Held-out pairs are drawn with seed + this: the same teacher, windows the training draw did not pick."""
AXES = ("width", "depth", "ensemble", "queries")
"""The scaled settings, in table order."""


@dataclass
class PointConfig:
    """One run of the sweep: a reward learner setting, its labels, and optionally a policy on its relabeled data."""

    dataset: str
    seed: int = 0
    reward: str = "step"
    """step: learn the reward; true: no reward model, the policy trains on the dataset's reward (the oracle)."""
    width: int = 64
    depth: int = 2
    ensemble: int = 3
    queries: int = 200
    """Scripted preference labels (pairs); 10% of them are the trainer's validation split."""
    length: int = 25
    """Segment length of every pair."""
    epochs: int = 30
    """Reward training epochs (early stop at 0.968 train accuracy, the anchors')."""
    heldout: int = 500
    """Fresh pairs for the held-out accuracy."""
    tie_threshold: float = 0.0
    """Exact teacher's tie band |R_a - R_b| <= t."""
    policy: str | None = None
    """Offline algorithm trained on the relabeled data (None: no policy)."""
    policy_steps: int = 3000
    eval_every: int = 1000
    eval_episodes: int = 5
    policy_config: dict[str, Any] | None = None
    """Overrides of the policy's config (e.g. {"batch_size": 256})."""
    device: str = "cpu"

    @classmethod
    def from_dict(cls, config: dict[str, Any], source: str = "grid config") -> PointConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known - {"threads"})
        if unknown or "dataset" not in config:
            raise PbrlError(f"{source}: a reward scaling run needs 'dataset' and may set {sorted(known)}; "
                            f"unknown {unknown}")
        cfg = cls(**{k: v for k, v in config.items() if k in known})
        for name in ("width", "depth", "ensemble", "queries", "length", "epochs", "heldout"):
            if int(getattr(cfg, name)) < 1:
                raise PbrlError(f"{source}: {name} must be >= 1, got {getattr(cfg, name)}")
        if cfg.reward not in ("step", "true"):
            raise PbrlError(f"{source}: reward must be 'step' or 'true', got {cfg.reward!r}")
        if cfg.reward == "true" and not cfg.policy:
            raise PbrlError(f"{source}: reward 'true' trains no reward model, so it needs a policy")
        return cfg


def run_point(config: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """Sweep runner: labels -> reward ensemble -> held-out accuracy and correlations (-> relabel -> policy)."""
    import torch

    from pbrl.data import load_dataset, scripted_preferences
    from pbrl.data.teachers import TeacherConfig
    from pbrl.policies.base import default_config
    from pbrl.policies.trainer import train_policy
    from pbrl.rewards.relabel import relabel
    from pbrl.rewards.report import reward_report
    from pbrl.rewards.train import RewardConfig, evaluate_pairs, train_reward

    cfg = PointConfig.from_dict(config)
    t0 = time.time()
    ds = load_dataset(cfg.dataset)
    out: dict[str, Any] = {"dataset_name": ds.name, "dataset_transitions": ds.num_transitions,
                           "last_score": None, "best_score": None, "curve": []}
    train_ds = ds
    if cfg.reward == "step":
        teacher = TeacherConfig(name="exact", tie_threshold=cfg.tie_threshold)
        pairs = scripted_preferences(ds, cfg.queries, cfg.length, teacher, cfg.seed)
        held = scripted_preferences(ds, cfg.heldout, cfg.length, teacher, cfg.seed + HELDOUT_SEED_OFFSET)
        rcfg = RewardConfig(model="step", ensemble=cfg.ensemble, hidden=(cfg.width,) * cfg.depth,
                            epochs=cfg.epochs, seed=cfg.seed, device=cfg.device)
        model = train_reward(ds, pairs, rcfg, out_dir=os.path.join(out_dir, "reward"), progress=False)
        held_eval = evaluate_pairs(model, ds, held)
        report = reward_report(ds, model, seed=cfg.seed)
        final = model.info.get("final", {})
        params = sum(p.numel() for p in model.net.parameters())
        out.update({
            "reward_params": int(params),
            "labels": len(pairs),
            "heldout_pairs": len(held),
            "heldout_accuracy": held_eval["accuracy"],
            "heldout_loss": held_eval["loss"],
            "heldout_member_accuracy": held_eval["member_accuracy"],
            "val_accuracy": final.get("reward/val_accuracy"),
            "train_accuracy": final.get("reward/train_accuracy"),
            "epochs_run": model.info.get("epochs_run"),
            "step_pearson": report.get("step/pearson"),
            "step_spearman": report.get("step/spearman"),
            "segment_pearson": report.get("segment/pearson"),
            "segment_spearman": report.get("segment/spearman"),
        })
        if cfg.policy:
            train_ds = relabel(ds, model, "member-zscore", provenance={"source": cfg.dataset})
    if cfg.policy:
        pol = train_policy(
            cfg.policy, train_ds, default_config(cfg.policy, **(cfg.policy_config or {})), steps=cfg.policy_steps,
            seed=cfg.seed, out_dir=os.path.join(out_dir, "policy"), eval_every=cfg.eval_every,
            eval_episodes=cfg.eval_episodes, device=cfg.device, env_id=ds.env_id, progress=False, overwrite=True,
        )
        out.update({
            "last_score": pol.get("last_score"),
            "best_score": pol.get("best_score"),
            "last_return_mean": pol.get("last_return_mean"),
            "curve": [[e["step"], e["eval/normalized_score"]] for e in pol.get("evaluations", [])
                      if e.get("eval/normalized_score") is not None],
            "steps_per_s": pol.get("perf/steps_per_s"),
        })
    out["threads"] = torch.get_num_threads()
    out["wall_s"] = round(time.time() - t0, 2)
    return out


# ---------------------------------------------------------------- the grid
BUDGETS: dict[str, dict[str, Any]] = {
    # pendulum-medium-replay (20k transitions, no MuJoCo); segments of 25 steps; exact teacher without tie band
    "cpu": {
        "dataset": "pendulum-medium-replay",
        "seeds": [0, 1, 2],
        "base": {"width": 64, "depth": 2, "ensemble": 3, "queries": 200, "length": 25, "epochs": 30,
                 "heldout": 500},
        "values": {"width": [8, 16, 32, 64, 128, 256, 512, 1024], "depth": [1, 2, 3, 4, 6, 8],
                   "ensemble": [1, 2, 3, 5, 8, 12], "queries": [25, 50, 100, 200, 400, 800, 1600, 3200]},
        # IQL 64x64 (pendulum's behaviour policy is 64x64 too), 4k updates, 10 evaluation episodes, on three
        # points of the labels axis (a policy run costs 20-40 reward-only runs on the shared 2-core machine)
        "policy": {"policy": "iql", "policy_steps": 4000, "eval_every": 2000, "eval_episodes": 10,
                   "policy_config": {"batch_size": 256, "hidden": [64, 64]}},
        "policy_queries": [25, 200, 1600],
    },
    "ci": {
        "dataset": "pendulum-medium-replay",
        "seeds": [0],
        "base": {"width": 16, "depth": 1, "ensemble": 2, "queries": 40, "length": 10, "epochs": 2, "heldout": 50},
        "values": {"width": [8, 16], "depth": [1, 2], "ensemble": [1, 2], "queries": [20, 40]},
        "policy": {"policy": "iql", "policy_steps": 50, "eval_every": 50, "eval_episodes": 1,
                   "policy_config": {"batch_size": 32, "hidden": [16, 16]}},
        "policy_queries": [20, 40],
    },
}


def column_name(axis: str, value: Any) -> str:
    return f"{axis}-{value}"


def grid_columns(budget: dict[str, Any]) -> list[dict[str, Any]]:
    """One column per distinct setting: each axis's values with the other settings at the base (the base point is
    one column, shared by every axis), the policy at the labels axis's `policy_queries`, and the oracle policy on
    the true reward."""
    base = budget["base"]
    cols: list[dict[str, Any]] = [{"name": "base", **base,
                                   **(budget["policy"] if base["queries"] in budget["policy_queries"] else {})}]
    for axis in AXES:
        for v in budget["values"][axis]:
            if v == base[axis]:
                continue
            col = {"name": column_name(axis, v), **base, axis: v}
            if axis == "queries" and v in budget["policy_queries"]:
                col.update(budget["policy"])
            cols.append(col)
    cols.append({"name": "oracle-true-reward", "reward": "true", **budget["policy"]})
    return cols


def make_grid(budget_name: str, dataset_id: str) -> Any:
    from pbrl.sweep import Grid

    b = BUDGETS[budget_name]
    return Grid(
        name=f"reward_scaling-{budget_name}",
        runner="baselines.reward_scaling:run_point",
        budget=budget_name,
        base={},
        axes={"dataset": [dataset_id], "seed": b["seeds"]},
        columns=grid_columns(b),
        meta={"title": f"Reward-learner scaling on {b['dataset']}: policy scores on the labels axis — budget "
                       f"{budget_name}",
              "reference_note": "IQL trained on the data relabeled by each labels-axis reward model "
                                "(member z-score); oracle-true-reward: IQL on the dataset's own reward."},
    )


# ---------------------------------------------------------------- the scaling table
METRICS = [
    ("heldout_accuracy", "held-out pair accuracy"),
    ("step_pearson", "step Pearson r"),
    ("step_spearman", "step Spearman rho"),
    ("segment_pearson", "segment Pearson r"),
    ("segment_spearman", "segment Spearman rho"),
    ("last_score", "IQL normalized score"),
]


def axis_value(config: dict[str, Any], axis: str, base: dict[str, Any]) -> Any | None:
    """The value of `axis` a run's config sits at, when the run lies on that axis (every other axis at the base)."""
    if config.get("reward", "step") != "step":
        return None
    if any(config.get(a, base[a]) != base[a] for a in AXES if a != axis):
        return None
    return config.get(axis, base[axis])


def mean_se(xs: list[float]) -> tuple[float, float, int]:
    """Mean, standard error (sample std / sqrt(n); 0 for one seed) and n over the finite values."""
    v = np.array([x for x in xs if x is not None and math.isfinite(x)], dtype=np.float64)
    if not len(v):
        return float("nan"), float("nan"), 0
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0
    return float(v.mean()), se, len(v)


def series(records: list[dict[str, Any]], axis: str, metric: str, base: dict[str, Any]) -> list[tuple[Any, float, float, int]]:
    """[(axis value, mean, se, n)] in increasing axis value, over the runs on `axis` that measured `metric`."""
    by: dict[Any, list[float]] = {}
    for rec in records:
        v = axis_value(rec["config"], axis, base)
        val = rec["result"].get(metric)
        if v is None or val is None:
            continue
        by.setdefault(v, []).append(float(val))
    return [(v, *mean_se(xs)) for v, xs in sorted(by.items())]


def classifier() -> Any | None:
    """`pbrl.llm.trends.classify_trend(x, y, se)` when that module exists, else None."""
    try:
        from pbrl.llm.trends import classify_trend
    except ImportError:
        return None
    return classify_trend


def trend_label(classify: Any | None, s: list[tuple[Any, float, float, int]]) -> str:
    if classify is None:
        return "not classified"
    if len(s) < 3:
        return "too few points"
    x = np.log2([float(v) for v, *_ in s])
    y = np.array([m for _, m, _, _ in s])
    se = np.array([e for _, _, e, _ in s])
    res = classify(x, y, se)
    return str(getattr(res, "label", res))


def scaling_table(records: list[dict[str, Any]], out_dir: str, name: str, budget: dict[str, Any]) -> dict[str, str]:
    """results/<name>.md (a table per axis: mean ± se over seeds of every metric, and each trend's class),
    <name>.csv (the series) and <name>.png (metric against the axis on a log2 scale, error bars = se)."""
    from pbrl.tables import budget_lines
    from pbrl.utils import atomic_write_text

    base = budget["base"]
    classify = classifier()
    first = records[0]["result"]
    lines = [
        f"# Reward-learner scaling on {first.get('dataset_name')} — budget {records[0].get('budget')}",
        "",
        "Step-wise MLP reward ensemble (Bradley–Terry on scripted segment pairs, exact teacher, no tie band), one "
        "axis varied at a time around the base point; mean ± standard error over seeds (n). Generated by "
        "`baselines/reward_scaling.py` from run records; do not edit.",
        "",
        *budget_lines(records),
        f"- base point: {base}; held-out pairs per run: {base['heldout']} (drawn with seed + {HELDOUT_SEED_OFFSET}); "
        f"reward epochs at most {base['epochs']} (early stop at 0.968 train accuracy)",
        f"- policy at labels {budget['policy_queries']}: {budget['policy']}, on the member z-score relabeled data; "
        "`oracle-true-reward` is the same policy on the dataset's own reward",
        "- threads: 1 per run, under `nice -n 19`; the 2-core machine was loaded with other work (load average "
        "about 9), so the wall times are not timings",
        "",
    ]
    if classify is None:
        lines += ["The trend classifier (`pbrl.llm.trends.classify_trend`) was not available when this was "
                  "generated: the raw series are reported and no trend was classified.", ""]
    else:
        lines += ["Trends: `pbrl.llm.trends.classify_trend(log2(axis value), mean, se)` at its default margin of 2 "
                  "standard errors (an interior point beyond both ends by that margin: U-shaped / inverted-U; else "
                  "the last point beyond the first: positive / inverse; else flat).", ""]
    rows_csv = [["axis", "value", "metric", "mean", "se", "n"]]
    trends: dict[tuple[str, str], str] = {}
    for axis in AXES:
        # the policy trains at some label counts only (the base point among them): its score is the labels axis's
        metrics = [(m, t) for m, t in METRICS if series(records, axis, m, base) and (m != "last_score" or axis == "queries")]
        lines += [f"## {axis}", "", "| " + axis + " | " + " | ".join(t for _, t in metrics) + " |",
                  "|---|" + "---|" * len(metrics)]
        table = {m: {v: (mu, se, n) for v, mu, se, n in series(records, axis, m, base)} for m, _ in metrics}
        values = sorted({v for m in table.values() for v in m})
        for v in values:
            cells = []
            for m, _ in metrics:
                if v in table[m]:
                    mu, se, n = table[m][v]
                    cells.append(f"{mu:.3f} ± {se:.3f} ({n})" if m != "last_score" else f"{mu:.1f} ± {se:.1f} ({n})")
                    rows_csv.append([axis, v, m, f"{mu:.5f}", f"{se:.5f}", n])
                else:
                    cells.append("—")
            mark = " (base)" if v == base[axis] else ""
            lines.append(f"| {v}{mark} | " + " | ".join(cells) + " |")
        for m, _ in metrics:
            trends[(axis, m)] = trend_label(classify, series(records, axis, m, base))
        lines += ["| trend | " + " | ".join(trends[(axis, m)] for m, _ in metrics) + " |", ""]
    oracle = [r for r in records if r["config"].get("reward") == "true"]
    if oracle:
        mu, se, n = mean_se([r["result"].get("last_score") for r in oracle])
        lines += [f"Oracle (IQL on the true reward, same policy budget): {mu:.1f} ± {se:.1f} ({n}).", ""]
    if classify is not None:
        lines += ["## Verdict", ""]
        title = dict(METRICS)
        for kind in ("inverse", "U-shaped", "inverted-U", "flat"):
            hits = [(a, m) for (a, m), t in trends.items() if t == kind]
            if not hits:
                lines.append(f"- {kind}: none")
                continue
            parts = []
            for a, m in hits:
                s_ = series(records, a, m, base)
                peak = max(s_, key=lambda p: p[1])
                parts.append(f"{a} / {title[m]} (best {peak[1]:.3f} at {a} {peak[0]}, {s_[-1][1]:.3f} at "
                             f"{s_[-1][0]})")
            lines.append(f"- {kind}: " + "; ".join(parts))
        lines += [f"- positive: every other axis and metric ({sum(t == 'positive' for t in trends.values())} of "
                  f"{len(trends)})", ""]
    paths = {"md": os.path.join(out_dir, f"{name}.md"), "csv": os.path.join(out_dir, f"{name}.csv")}
    os.makedirs(out_dir, exist_ok=True)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows_csv)
    atomic_write_text(paths["csv"], buf.getvalue())
    png = _figure(records, out_dir, name, base)
    if png:
        paths["png"] = png
        lines += [f"![scaling curves]({os.path.basename(png)})", ""]
    atomic_write_text(paths["md"], "\n".join(lines))
    return paths


def _figure(records: list[dict[str, Any]], out_dir: str, name: str, base: dict[str, Any]) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from pbrl.plot import save_png

    panels = [("heldout_accuracy", "held-out accuracy"), ("step_pearson", "step Pearson"),
              ("step_spearman", "step Spearman"), ("segment_spearman", "segment Spearman")]
    fig, axes = plt.subplots(1, len(AXES), figsize=(4 * len(AXES), 3.3), squeeze=False)
    for i, axis in enumerate(AXES):
        ax = axes[0, i]
        for m, label in panels:
            s = series(records, axis, m, base)
            if s:
                ax.errorbar([v for v, *_ in s], [mu for _, mu, _, _ in s], yerr=[se for _, _, se, _ in s],
                            marker="o", capsize=3, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(axis)
        ax.axvline(base[axis], color="grey", lw=0.6, ls=":")
    axes[0, 0].set_ylabel("metric (mean ± se over seeds)")
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    path = save_png(fig, os.path.join(out_dir, f"{name}.png"))
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict[str, str]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", choices=sorted(BUDGETS), default="ci")
    ap.add_argument("--out", default="runs/sweeps", help="sweep folder (records under OUT/<grid name>/records)")
    ap.add_argument("--results", default="results")
    ap.add_argument("--copy-records", default=None, metavar="DIR",
                    help="also copy the records here (e.g. results/records/reward_scaling-cpu)")
    args = ap.parse_args(argv)
    import torch

    from pbrl.sweep import expand, run_sweep
    from pbrl.tables import load_records, make_table

    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT / "baselines"))
    from dtr_table1 import dataset_id, ensure_built  # baselines/dtr_table1.py

    b = BUDGETS[args.budget]
    ensure_built([b["dataset"]])
    grid = make_grid(args.budget, dataset_id(b["dataset"]))
    run_dir = os.path.join(args.out, grid.name)
    done = run_sweep(grid, run_dir, threads=1, batch_seeds=False)
    if any(r["status"] != "ok" for r in done):
        raise PbrlError(f"some runs failed; see {run_dir}/records/*.failed.json")
    rec_dir = os.path.join(run_dir, "records")
    # only this grid's runs: records of an earlier version of the grid (other settings, other ids) stay out
    ids = {r.run_id for r in expand(grid)}
    files = [os.path.join(rec_dir, f"{i}.json") for i in sorted(ids)]
    if args.copy_records:
        os.makedirs(args.copy_records, exist_ok=True)
        for f in files:
            shutil.copy2(f, os.path.join(args.copy_records, os.path.basename(f)))
    # the tables' budget line reads `steps`: here the policy's updates (runs without a policy trained none)
    records = [{**r, "config": {**r["config"], "steps": r["config"].get("policy_steps") if r["config"].get("policy")
                                else "none"}} for r in load_records(files)]
    paths = scaling_table(records, args.results, grid.name, b)
    policy_cols = [c["name"] for c in grid.columns if c.get("policy")]
    paths.update({f"policy_{k}": v for k, v in make_table(
        records, args.results, f"{grid.name}-policy", columns=policy_cols, title=grid.meta["title"],
        reference_note=grid.meta["reference_note"]).items()})
    for p in paths.values():
        print(f"wrote {p}")
    return paths


if __name__ == "__main__":
    main()
