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
    python baselines/reward_ablation.py --budget paper   # the paper's DTR and label budget, for a GPU or a cluster

Runs the grid with pbrl.sweep (finished runs are skipped; records under runs/sweeps/reward_ablation-<budget>/) and
writes results/reward_ablation-<budget>.{md,csv,png}.
"""

from __future__ import annotations

from dtr_table1 import BUDGETS, CI_DT, PAPER_STEPS, SMALL_DT, SMALL_SEQ_RUN, dataset_id, ensure_built, parser

from pbrl.sweep import Grid, sweep_and_table

# DTR Table 3 (Gym-MuJoCo average of the nine datasets): removing the reward normalization costs 3.1 points.
DATASET = {"ci": "pendulum-medium-replay", "small": "hopper-medium-replay", "paper": "hopper-medium-replay"}
# 12 DTR columns: the small budget affords one seed next to the 3-seed Table 1 in about two hours of CPU
SEEDS = {"small": [0]}


def columns(budget: str) -> list[dict]:
    policy = {}
    if budget == "small":
        policy = {**SMALL_SEQ_RUN, "policy": SMALL_DT}
    elif budget == "ci":
        policy = {"policy": CI_DT}
    elif budget == "paper":
        policy = {"steps": PAPER_STEPS["dtr"]}  # the budget's base steps are the MLPs' 1M; DTR trains 50k (dtr.md)
    dtr = {"algo": "dtr", **policy}
    return [
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


def main() -> None:
    args = parser(__doc__).parse_args()
    name = DATASET[args.budget]
    ensure_built([name])
    b = BUDGETS[args.budget]
    grid = Grid(
        name=f"reward_ablation-{args.budget}",
        runner="pbrl.pipeline:run_record",
        budget=args.budget,
        base=b["base"],
        axes={"dataset": [dataset_id(name)], "seed": SEEDS.get(args.budget, b["seeds"])},
        columns=columns(args.budget),
        meta={
            "title": f"DTR reward ablations on {name} — budget {args.budget}",
            "reference_note": "DTR Table 3: without reward normalization the Gym-MuJoCo average drops by 3.1 points.",
        },
    )
    for path in sweep_and_table(grid, args.out, args.results, workers=args.workers, ray_address=args.ray_address,
                                threads=args.threads).values():
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
