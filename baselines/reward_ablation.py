"""Reward-side ablations of DTR (Tu et al., AAAI 2025, Table 3 and beyond) on one suite dataset.

Columns, all DTR on the same dataset and seeds:
- normalization of the learned reward: none / direct (normalize the ensemble mean) / member z-score (DTR's);
- reward learner: step-wise MLP ensemble / segment-level model / Preference Transformer;
- label noise: B-Pref teachers (stochastic, myopic, mistake) against the exact teacher, all four without the tie band
  (with Uni-RLHF's band of 10 the stochastic teacher at beta = 1 gives exactly the exact teacher's labels on
  hopper: every pair outside the band has |R_a - R_b| > 10, so sigmoid(beta * diff) rounds to 0 or 1);
- query count: 10%, 25%, 50% of the labelled queries.

    python baselines/reward_ablation.py --budget ci      # minutes: pendulum, 1 seed, tiny models
    python baselines/reward_ablation.py --budget small   # hopper-medium-replay, 1 seed, CPU-sized DTR (~40 min)
    python baselines/reward_ablation.py --budget plateau --workers 1 --threads 1   # Table 1's plateau DTR (20k
                        # updates at the CPU size, the papers' labels, the [0, 1] shift); two grids: the normalization,
                        # reward and shift columns with 3 seeds, the teacher and query columns with 1 (hours: printed)
    python baselines/reward_ablation.py --budget paper   # the paper's DTR and label budget, for a GPU or a cluster

Runs the grid with pbrl.sweep (finished runs are skipped; records under runs/sweeps/reward_ablation-<budget>/) and
writes results/reward_ablation-<budget>.{md,csv,png}. At the plateau budget the norm-member-zscore column is Table
1's DTR-minmax run (same config): finished runs of it in Table 1's sweep folder or committed records are copied,
with `reused_from`, not trained again.
"""

from __future__ import annotations

import os

from dtr_table1 import (
    BUDGETS,
    CI_DT,
    CPU_RATES,
    PAPER_STEPS,
    PLATEAU_SEQ_RUN,
    SMALL_DT,
    SMALL_SEQ_RUN,
    TERMINAL_TARGETS,
    dataset_id,
    ensure_built,
    parser,
)

from pbrl.errors import run_script
from pbrl.sweep import Grid, sweep_and_table

# DTR Table 3 (Gym-MuJoCo average of the nine datasets): removing the reward normalization costs 3.1 points.
DATASET = {"ci": "pendulum-medium-replay", "small": "hopper-medium-replay", "plateau": "hopper-medium-replay",
           "paper": "hopper-medium-replay"}
FROM_TABLE1 = {"plateau": "norm-member-zscore"}
"""The column that is Table 1's DTR run at that budget (same config, reused: not counted in the estimate)."""
RECORDS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results", "records")
"""The committed records (the plateau ablation reuses Table 1's DTR runs from there)."""
# 12 DTR columns: the small budget affords one seed next to the 3-seed Table 1 in about two hours of CPU
SEEDS = {"small": [0]}
# the plateau budget: 3 seeds for the normalization, reward and shift columns (the issue's), 1 for the label columns
LABEL_SEEDS = {"plateau": [0]}
LABEL_PREFIXES = ("teacher-", "queries-")


def columns(budget: str) -> list[dict]:
    policy = {}
    if budget == "small":
        policy = {**SMALL_SEQ_RUN, "policy": SMALL_DT}
    elif budget == "ci":
        policy = {"policy": CI_DT}
    elif budget == "plateau":
        # Table 1's plateau DTR; every column on the [0, 1]-shifted reward as Table 1's -minmax columns, and
        # shift-none the member z-score alone (dtr_table1.SHIFTED)
        policy = {**PLATEAU_SEQ_RUN, "policy": {**SMALL_DT, **TERMINAL_TARGETS}, "shift": "minmax"}
    elif budget == "paper":
        policy = {"steps": PAPER_STEPS["dtr"]}  # the budget's base steps are the MLPs' 1M; DTR trains 50k (dtr.md)
    dtr = {"algo": "dtr", **policy}
    shift = [{"name": "shift-none", **dtr, "reward": "step", "normalize": "member-zscore", "shift": "none"}]
    return (shift if budget == "plateau" else []) + [
        {"name": "norm-none", **dtr, "reward": "step", "normalize": "none"},
        {"name": "norm-direct", **dtr, "reward": "step", "normalize": "direct"},
        {"name": "norm-member-zscore", **dtr, "reward": "step", "normalize": "member-zscore"},
        {"name": "reward-segment", **dtr, "reward": "segment", "normalize": "member-zscore"},
        {"name": "reward-pt", **dtr, "reward": "pt", "normalize": "member-zscore"},
        # B-Pref's teachers have no tie band: compare them with the exact teacher without one
        {"name": "teacher-exact", **dtr, "reward": "step", "teacher": "exact", "tie_threshold": 0.0},
        {"name": "teacher-stochastic", **dtr, "reward": "step", "teacher": "stochastic", "tie_threshold": 0.0},
        {"name": "teacher-myopic", **dtr, "reward": "step", "teacher": "myopic", "tie_threshold": 0.0},
        {"name": "teacher-mistake", **dtr, "reward": "step", "teacher": "mistake", "tie_threshold": 0.0},
        {"name": "queries-10%", **dtr, "reward": "step", "query_fraction": 0.1},
        {"name": "queries-25%", **dtr, "reward": "step", "query_fraction": 0.25},
        {"name": "queries-50%", **dtr, "reward": "step", "query_fraction": 0.5},
    ]


def grids(budget: str) -> list[tuple[str, list[dict], list[int]]]:
    """(grid name, columns, seeds) per grid: one grid, or at the plateau budget the label columns apart."""
    cols, seeds = columns(budget), SEEDS.get(budget, BUDGETS[budget]["seeds"])
    if budget not in LABEL_SEEDS:
        return [(f"reward_ablation-{budget}", cols, seeds)]
    label = [c for c in cols if c["name"].startswith(LABEL_PREFIXES)]
    rest = [c for c in cols if c not in label]
    return [(f"reward_ablation-{budget}", rest, seeds), (f"reward_ablation-{budget}-labels", label, LABEL_SEEDS[budget])]


def cpu_hours(budget: str) -> float:
    """Core-hours of the budget's grids on this CPU at dtr_table1.CPU_RATES (one thread per run), less the column
    Table 1's sweep trains (FROM_TABLE1)."""
    base = BUDGETS[budget]["base"]["steps"]
    return sum(c.get("steps", base) / CPU_RATES[c["algo"]] * len(s) for _, cols, s in grids(budget) for c in cols
               if c["name"] != FROM_TABLE1.get(budget)) / 3600


def main() -> None:
    args = parser(__doc__).parse_args()
    name = DATASET[args.budget]
    ensure_built([name])
    b = BUDGETS[args.budget]
    if args.budget in ("small", "plateau"):
        print(f"reward_ablation-{args.budget}: about {cpu_hours(args.budget):.1f} core-hours at one thread per run "
              "(finished runs are skipped; stop and resume at will)", flush=True)
    note = "DTR Table 3: without reward normalization the Gym-MuJoCo average drops by 3.1 points."
    if args.budget == "plateau":
        note += (" Every column trains on its reward mapped onto [0, 1] (shift minmax, as Table 1's -minmax columns)"
                 " except shift-none, the member z-score alone.")
    for grid_name, cols, seeds in grids(args.budget):
        grid = Grid(
            name=grid_name,
            runner="pbrl.pipeline:run_record",
            budget=args.budget,
            base=b["base"],
            axes={"dataset": [dataset_id(name)], "seed": seeds},
            columns=cols,
            meta={"title": f"DTR reward ablations on {name} — budget {args.budget}", "reference_note": note},
        )
        # the ablation's default column is Table 1's DTR column at the plateau budget (same config): its runs
        # are taken from Table 1's sweep or its committed records when they finished there
        reuse = [os.path.join(args.out, f"dtr_table1-{args.budget}"),
                 os.path.join(RECORDS, f"dtr_table1-{args.budget}")] if args.budget == "plateau" else None
        for path in sweep_and_table(grid, args.out, args.results, workers=args.workers,
                                    ray_address=args.ray_address, threads=args.threads, reuse=reuse,
                                    only=args.only).values():
            print(f"wrote {path}")


if __name__ == "__main__":
    run_script(main)
