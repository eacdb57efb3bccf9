"""Seed-batched training throughput: S seeds as one batched model (`pbrl.policies.seeds.SeedBatch`, what
`pbrl train --seeds` and grouped sweeps run) against S separate runs, for every algorithm that batches.

  python baselines/seed_batching.py                          # iql td3bc bc cql, hidden 256 and 64, S = 1 3 10
  python baselines/seed_batching.py --algos iql --widths 256 --seeds 1 3 --out ''   # quick look, no file

Data: random Hopper-v5 transitions (obs 11, action 3), batch 256, the algorithms' default configs at the given MLP
width, one torch thread for everything. A timed update includes drawing its batch(es). Two rows per algorithm and
width: `shared`, every seed on the same data (an oracle column, `pbrl train --seeds`), and `own rewards`, each seed
on the same transitions with rewards of its own (the true ones plus seeded noise: the layout of a Pb-* column's
seeds, each relabeled with its own learned reward; the batched model keeps the observations once and the seeds'
rewards stacked, so its batch gathers one more indexed field per seed).
The baseline is one seed's update rate in this process; S separate processes run one after another at one
thread each (the same total threads as the batched run) reach that same aggregate rate, so the ratio is
aggregate seed-updates/s batched / single-seed updates/s (process start-up and data loading, which separate runs
pay S times, are left out, in the separate runs' favour). Rates are medians over --rounds rounds in which every
configuration is timed once in turn, so a change in the machine's load hits all of them alike.
Writes results/seed_batching.md (or --out) with baselines/record.py's header.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time

import torch
from record import recorded  # baselines/record.py (the script's folder is on sys.path)

ALGOS = ("iql", "td3bc", "bc", "cql")


def own_rewards(ds, seed: int):
    """`ds` with rewards of its own for `seed` (the true ones plus seeded standard normal noise)."""
    import numpy as np

    noise = np.random.default_rng(seed).normal(0.0, 1.0, ds.num_transitions).astype(ds.rewards.dtype)
    return ds.with_rewards(ds.rewards + noise)


def build(algo: str, ds, width: int, seeds: list[int], own: bool = False):
    """A SeedBatch of `seeds` at hidden (width, width) (and its policies, samplers and noise generators); `own`:
    each seed on `ds` with its own rewards (`own_rewards`)."""
    from pbrl.policies.base import PolicySpec, default_config, make_policy
    from pbrl.policies.seeds import SeedBatch
    from pbrl.utils import set_seed

    cfg = default_config(algo, hidden=(width, width))
    spec = PolicySpec.from_dataset(ds)
    policies, samplers, noise = [], [], []
    for s in seeds:
        set_seed(s)
        p = make_policy(algo, spec, cfg, 10**6)
        policies.append(p)
        samplers.append(p.make_sampler(own_rewards(ds, s) if own else ds, torch.Generator().manual_seed(s)))
        g = torch.Generator()
        g.set_state(torch.get_rng_state())
        noise.append(g)
    return policies, samplers, noise, SeedBatch(policies, samplers, noise)


def single_update(policy, sampler) -> None:
    policy.update(sampler())


def timed(step, seconds: float, min_steps: int) -> float:
    """Calls of `step` per second over at least `seconds` and `min_steps` calls."""
    n, t0 = 0, time.perf_counter()
    while n < min_steps or time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    ap.add_argument("--widths", nargs="+", type=int, default=[256, 64], help="MLP hidden width (two layers)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 3, 10], help="batch sizes S to time")
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data-size", type=int, default=20_000)
    ap.add_argument("--out", default="results/seed_batching.md", help="'' = print only")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from pbrl.data import collect_episodes

    ds = collect_episodes("Hopper-v5", num_transitions=args.data_size, seed=0)
    title = "Seed-batched training: aggregate updates/s of S seeds as one model vs separate runs (CPU)"
    with recorded(args.out or None, title, threads=1):
        print(f"torch {torch.__version__}, 1 thread; data: {ds.num_transitions} random Hopper-v5 transitions; "
              f"batch 256; {args.rounds} rounds of >= {args.seconds:g} s per measurement (median shown)\n")
        header = "| algo | hidden | data | single seed updates/s | " + " | ".join(
            f"S={s} batched seed-updates/s | ratio" for s in args.seeds) + " |"
        print(header)
        print("|" + "---|" * (4 + 2 * len(args.seeds)))
        at3: list[tuple[str, float]] = []
        own_at3: list[tuple[str, float, float]] = []  # (name, shared ratio, own-rewards ratio) at S = 3
        for algo in args.algos:
            for width in args.widths:
                policies, samplers, _, _ = build(algo, ds, width, [0])
                steps = {"single": functools.partial(single_update, policies[0], samplers[0])}
                # one seed has one dataset: the own-rewards row starts at S = 2
                for data in ("shared", "own"):
                    steps.update({(data, s): build(algo, ds, width, list(range(s)), own=data == "own")[3].update
                                  for s in args.seeds if data == "shared" or s > 1})
                rates: dict = {k: [] for k in steps}
                for fn in steps.values():  # warm-up (first calls build caches)
                    for _ in range(3):
                        fn()
                for _ in range(args.rounds):  # every configuration once per round: a load change hits all alike
                    for k, fn in steps.items():
                        rates[k].append(timed(fn, args.seconds, 3))
                single = statistics.median(rates["single"])
                ratio: dict = {}
                for data, label in (("shared", "shared"), ("own", "own rewards")):
                    cells = [f"{single:.3g}"]
                    for s in args.seeds:
                        if (data, s) not in rates:
                            cells += ["—", "—"]
                            continue
                        agg = s * statistics.median(rates[(data, s)])
                        ratio[(data, s)] = agg / single
                        cells += [f"{agg:.3g}", f"{agg / single:.2f}x"]
                    print(f"| {algo} | {width}x{width} | {label} | " + " | ".join(cells) + " |", flush=True)
                if ("shared", 3) in ratio:
                    at3.append((f"{algo} {width}x{width}", ratio[("shared", 3)]))
                    own_at3.append((f"{algo} {width}x{width}", ratio[("shared", 3)], ratio[("own", 3)]))
                del steps
        print("\nratio = S x (batched updates/s) / (single-seed updates/s): the speed-up over S separate runs one "
              "after another at one thread each. Target (issue 23): >= 2x at S = 3. `own rewards`: each seed on "
              "its own rewards (a Pb-* column's seeds); one seed alone has one dataset, so its row starts at S = 2.")
        if own_at3:
            print("S = 3, own rewards against shared data (own / shared ratio): " + ", ".join(
                f"{n} {o:.2f}x vs {sh:.2f}x ({o / sh:.2f})" for n, sh, o in own_at3) + ".")
        if at3:
            met = [name for name, r in at3 if r >= 2.0]
            print(f"S = 3: target met for {', '.join(met) if met else 'none'}; not met for "
                  f"{', '.join(f'{n} ({r:.2f}x)' for n, r in at3 if r < 2.0) or 'none'}.")
            print("Why: a batched model does the same arithmetic as S separate ones (S matmuls become one batched "
                  "matmul of S times the work), so it can only save the per-update overhead that does not grow "
                  "with S (Python, op dispatch, optimizer calls). At 256-wide MLPs on batch 256 an update is "
                  "mostly matmul arithmetic on one core, and the batched path adds its own per-op cost (vmap's "
                  "batching rules; the linear layers' bias added as a separate op), so the ratio stays near 1; "
                  "the smaller the network, the larger the overhead share and the gain at larger S.")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
