"""Preference-based offline RL on the recommendation simulator: does a policy learned from session preferences beat
the logged behaviour, and do whole-session labels beat per-window click labels?

Data: `recsim-mixed` (a quarter of the transitions each from a random, a popularity, an epsilon-greedy click-model and
a soft-optimal planner recommender). Rows:
- behaviour: the mean return of the logged sessions (what the mixture achieves);
- IQL / DT on the true reward (clicks per step);
- IQL / DT on rewards learned from session-level labels (`session_preferences`: windows compared by the clicks of
  the rest of their session) and IQL on rewards from the generic window teacher (summed clicks inside each window).
The reward model is the step-wise MLP ensemble, relabelled with DTR's member z-score; every learned policy is
evaluated in `pbrl/RecSim-v0` on the same seeded users. Scores: 0 = random recommender, 100 = the planner (an oracle
that sees the user's hidden state).

    python baselines/recsim_pbrl.py --budget ci      # a few minutes: 20k transitions, short training
    python baselines/recsim_pbrl.py --budget small   # ~1 h on a busy 2-core CPU: 50k transitions, 10k updates

Writes results/recsim/pbrl_recsim-<budget>.{md,csv,jsonl}; runs (configs, metrics) under runs/recsim/<budget>/.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import time

import numpy as np
import torch

BUDGETS = {
    "ci": {"size": 20_000, "queries": 1000, "length": 5, "reward_epochs": 20, "hidden": 64, "iql_steps": 3000,
           "dt_steps": 1000, "eval_episodes": 50},
    "small": {"size": 50_000, "queries": 2000, "length": 5, "reward_epochs": 30, "hidden": 128, "iql_steps": 10_000,
              "dt_steps": 4000, "eval_episodes": 100},
}


def main() -> None:
    from pbrl.data.teachers import scripted_preferences
    from pbrl.policies.base import default_config
    from pbrl.policies.trainer import train_policy
    from pbrl.rewards.relabel import relabel
    from pbrl.rewards.train import RewardConfig, train_reward
    from pbrl.utils import atomic_write_text, git_revision
    from pbrl_envs import RECIPES
    from pbrl_envs.recsim_data import session_preferences

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", choices=sorted(BUDGETS), default="ci")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-dt", action="store_true", help="leave out the Decision Transformer rows")
    args = ap.parse_args()
    b = BUDGETS[args.budget]
    torch.set_num_threads(args.threads)
    run_root = os.path.join("runs", "recsim", args.budget)
    t0 = time.time()

    ds = RECIPES["recsim-mixed"].build(b["size"], args.seed)
    lo, hi = ds.metadata["ref_min_score"], ds.metadata["ref_max_score"]
    norm = lambda r: 100.0 * (r - lo) / (hi - lo)  # noqa: E731
    rows: list[dict] = []
    behaviour = float(ds.episode_returns().mean())
    rows.append({"method": "behaviour (logged sessions)", "labels": "-", "return": behaviour, "score": norm(behaviour)})
    print(f"[{time.time() - t0:.0f}s] {ds.num_transitions} transitions, {ds.num_episodes} sessions; behaviour "
          f"{behaviour:.2f}; refs random {lo:.2f} planner {hi:.2f}", flush=True)

    hidden = (b["hidden"], b["hidden"])
    labelled = {
        "session": session_preferences(ds, b["queries"], b["length"], seed=args.seed),
        "window": scripted_preferences(ds, b["queries"], b["length"], seed=args.seed),
    }
    datasets = {"true reward": ds}
    for name, pairs in labelled.items():
        model = train_reward(ds, pairs, RewardConfig(hidden=hidden, epochs=b["reward_epochs"], seed=args.seed),
                             progress=False)
        rl = relabel(ds, model)
        corr = float(np.corrcoef(ds.episode_returns(), rl.episode_returns())[0, 1])
        datasets[f"{name} prefs"] = rl
        print(f"[{time.time() - t0:.0f}s] reward from {name} prefs: corr(session return, learned) {corr:.3f}",
              flush=True)

    jobs = [("iql", name) for name in datasets]
    if not args.skip_dt:
        jobs += [("dt", "true reward"), ("dt", "session prefs")]
    for algo, name in jobs:
        if algo == "iql":
            cfg, steps = default_config("iql", hidden=hidden, batch_size=256), b["iql_steps"]
        else:
            # a CPU-sized transformer; returns of a session are tens of clicks, so rtg_scale 10
            cfg = default_config("dt", embed_dim=64, n_layers=2, n_heads=2, n_inner=256, batch_size=64,
                                 warmup_steps=min(1000, b["dt_steps"] // 4), rtg_scale=10.0)
            steps = b["dt_steps"]
        out = os.path.join(run_root, f"{algo}-{name.replace(' ', '_')}-s{args.seed}")
        s = train_policy(algo, datasets[name], cfg, steps=steps, seed=args.seed, eval_every=0,
                         eval_episodes=b["eval_episodes"], out_dir=out, progress=False, env_id="pbrl/RecSim-v0")
        ret = float(s["last_return_mean"])
        rows.append({"method": algo.upper(), "labels": name, "return": ret, "score": norm(ret), "steps": steps})
        print(f"[{time.time() - t0:.0f}s] {algo} on {name}: return {ret:.2f} score {norm(ret):.1f}", flush=True)

    os.makedirs(os.path.join("results", "recsim"), exist_ok=True)
    stem = os.path.join("results", "recsim", f"pbrl_recsim-{args.budget}")
    header = (f"RecSim-v0, recsim-mixed ({b['size']} transitions, seed {args.seed}); {b['queries']} preference pairs "
              f"of {b['length']} steps; IQL {b['iql_steps']} updates (MLP {hidden}), DT {b['dt_steps']} updates "
              f"(embed 64, 2 layers); {b['eval_episodes']} evaluation sessions. Score: 0 = random ({lo:.2f}), "
              f"100 = planner oracle ({hi:.2f}). git {git_revision()}")
    md = [header, "", "| method | reward | return | score |", "|---|---|---|---|"]
    md += [f"| {r['method']} | {r['labels']} | {r['return']:.2f} | {r['score']:.1f} |" for r in rows]
    atomic_write_text(stem + ".md", "\n".join(md) + "\n")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["method", "labels", "return", "score", "steps"])
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(stem + ".csv", buf.getvalue())
    atomic_write_text(stem + ".jsonl", "".join(json.dumps({**r, "budget": args.budget, "seed": args.seed}) + "\n"
                                               for r in rows))
    print("\n".join(md))


if __name__ == "__main__":
    main()
