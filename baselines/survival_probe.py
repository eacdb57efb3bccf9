"""Why the Pb-* MLP columns fall at once on hopper: a learned reward trained from equal-length segment pairs cannot
see a constant per-step offset (Bradley-Terry compares segment sums, so + c per step cancels), and the member z-score
centres it at 0. Hopper's true reward carries the +1 alive bonus on every step; the learned one does not, so
ending an episode costs the policy nothing (the survival-instinct effect of Li et al., NeurIPS 2023).

    PYTHONPATH=. python baselines/survival_probe.py REWARD_FOLDER [--dataset pbrl/hopper/medium-replay-v0]

REWARD_FOLDER: a pipeline run's reward/ (e.g. runs/sweeps/dtr_table1-plateau/runs/Pb-IQL-...-0-.../reward). Prints
the learned (member z-score) and true rewards' means near terminations and elsewhere, then trains IQL (the plateau
column's settings, reward_scale on) for --steps updates on the same learned reward shifted to [0, 1] (min-max), whose
score is to be read beside the z-scored run's at the same update (one seed; about 5 minutes for 20k updates on one
thread). The pipeline's `shift: minmax` (pbrl.rewards.normalizers.shift) is this same map.
"""

from __future__ import annotations

import argparse

import numpy as np

from pbrl.errors import run_script


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reward")
    ap.add_argument("--dataset", default="pbrl/hopper/medium-replay-v0")
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/survival_probe")
    args = ap.parse_args()

    import torch

    from pbrl.data.registry import load_dataset
    from pbrl.policies.base import default_config
    from pbrl.policies.trainer import train_policy
    from pbrl.rewards.normalizers import shift
    from pbrl.rewards.relabel import relabel
    from pbrl.rewards.train import load_reward_model

    torch.set_num_threads(1)
    ds = load_dataset(args.dataset)
    r = relabel(ds, load_reward_model(args.reward), "member-zscore").rewards  # [N]
    ends = ds.episode_starts[1:]  # [E] one past each episode's last step
    near = np.zeros(len(r), bool)  # the last 10 steps of every terminated episode
    for a, b in zip(ds.episode_starts[:-1], ends):
        if ds.terminations[b - 1]:
            near[max(a, b - 10):b] = True
    for name, x in (("learned (member z-score)", r), ("true", ds.rewards)):
        print(f"{name}: mean {x.mean():.3f}, last 10 steps before a termination {x[near].mean():.3f}, elsewhere "
              f"{x[~near].mean():.3f}, share > 0 {(x > 0).mean():.3f}")
    shifted = shift("minmax", r).astype(np.float32)
    print(f"training IQL {args.steps} updates on the min-max shifted reward (1 thread; a few minutes)", flush=True)
    s = train_policy("iql", ds.with_rewards(shifted), default_config("iql", reward_scale=True), steps=args.steps,
                     seed=args.seed, out_dir=args.out, eval_every=args.steps // 2, eval_episodes=5)
    curve = ", ".join(f"{e['step']}: {e['eval/normalized_score']:.1f}" for e in s.get("evaluations", []))
    print(f"IQL on the shifted learned reward: last normalized score {s['last_score']:.1f} after {args.steps} updates"
          f" (every evaluation: {curve})")


if __name__ == "__main__":
    run_script(main)
