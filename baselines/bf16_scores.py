"""Does bf16 autocast change what DT / QT / DTR learn on a CPU? The same runs in float32 and with bf16 on, side by
side: same data, seeds, updates and evaluation episodes.

    PYTHONPATH=. python baselines/bf16_scores.py                 # small size, 3 seeds (about 20 minutes, 1 thread)
    PYTHONPATH=. python baselines/bf16_scores.py --size table1   # the small Table 1 transformer (about 1 hour)

Why: on a CPU whose bf16 matrix units are fast, bf16 on is 1.6-1.8x the float32 update rate of these models
(results/sequence_throughput.md), but `bf16: auto` turns it on only on CUDA or AMX CPUs. This measures the other
half of that choice, the scores. bf16 on means `bf16=on` (the trained transformer under autocast; float32 weights,
optimizer and loss) and, for QT / DTR, `ema_bf16=on` (the EMA actor's no-grad forward); the critics' TD stays
float32 in both. Data: a suite dataset (default pendulum expert; `pbrl data build pendulum-expert` makes it in
seconds). Sizes: `small` is the learning tests' transformer and recipes (tests/policies/test_policy_learning.py),
`table1` is `dtr_table1.SMALL_DT` with DT's warm-up at 5% of the run. Writes results/bf16_scores.md (or --out)
with baselines/record.py's header; the per-run scores are in the table, so nothing else needs keeping.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

try:
    from baselines.dtr_table1 import SMALL_DT
    from baselines.record import recorded
except ImportError:  # run as a script: the script's folder is on sys.path
    from dtr_table1 import SMALL_DT  # type: ignore[no-redef]
    from record import recorded  # type: ignore[no-redef]

from pbrl.errors import fail, run_script

SMALL_SEQ = dict(context=10, embed_dim=32, n_layers=2, n_heads=2, n_inner=128, batch_size=64)
SMALL_DTR = dict(critic_hidden=(64, 64), ema_start=100, eta_max=1.0, rtg_scale=100.0, lr=1e-3)
PRECISIONS = {"float32": {"bf16": "off"}, "bf16": {"bf16": "on"}}


def recipe(algo: str, size: str, steps: int) -> dict:
    """The run's settings apart from precision."""
    if size == "small":
        return {**SMALL_SEQ, "warmup_steps": 100, "lr": 1e-3} if algo == "dt" else {**SMALL_SEQ, **SMALL_DTR}
    return {**SMALL_DT, "warmup_steps": max(1, steps // 20)} if algo == "dt" else dict(SMALL_DT)


def precision(algo: str, name: str) -> dict:
    """float32: bf16 off everywhere; bf16: the transformer (and QT / DTR's EMA actor) under autocast."""
    out = dict(PRECISIONS[name])
    if algo != "dt":
        out["ema_bf16"] = out["bf16"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--algos", nargs="+", default=["dt", "qt", "dtr"], choices=["dt", "qt", "dtr"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--size", choices=["small", "table1"], default="small")
    ap.add_argument("--dataset", default="pbrl/pendulum/expert-v0")
    ap.add_argument("--eval-episodes", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="results/bf16_scores.md")
    args = ap.parse_args()
    if args.steps < 1 or args.eval_episodes < 1 or args.threads < 1:
        fail("--steps, --eval-episodes and --threads must be >= 1")
    if len(set(args.seeds)) != len(args.seeds):
        fail(f"--seeds: give each seed once, got {args.seeds}")

    import torch
    from scipy import stats

    from pbrl.data.registry import load_dataset
    from pbrl.policies.base import default_config
    from pbrl.policies.trainer import train_policy

    torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset)
    title = "bf16 autocast against float32 for DT / QT / DTR on a CPU: scores and update rates"
    runs = [(a, p, s) for a in args.algos for s in args.seeds for p in PRECISIONS]
    got: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with recorded(args.out or None, title, threads=args.threads):
        print(f"{len(runs)} runs of {args.steps} updates on {args.dataset} ({args.size} size, {args.threads} "
              f"thread(s), {args.eval_episodes} evaluation episodes each); this takes tens of minutes", flush=True)
        t0 = time.perf_counter()
        for i, (algo, prec, seed) in enumerate(runs, 1):
            config = default_config(algo, **recipe(algo, args.size, args.steps), **precision(algo, prec))
            with tempfile.TemporaryDirectory() as tmp:
                s = train_policy(algo, ds, config, steps=args.steps, seed=seed, eval_every=0,
                                 eval_episodes=args.eval_episodes, out_dir=tmp, progress=False)
            got.setdefault((algo, prec), []).append((s["last_score"], s["perf/steps_per_s"]))
            el = time.perf_counter() - t0
            print(f"  [{i}/{len(runs)}] {algo} {prec:7s} seed {seed}: score {s['last_score']:.1f}, "
                  f"{s['perf/steps_per_s']:.1f} updates/s  ({el:.0f} s, ~{el / i * (len(runs) - i):.0f} s left)",
                  flush=True)
        print()
        print(f"Dataset {args.dataset}; {args.steps} updates; seeds {args.seeds}; last evaluation's normalized score "
              f"over {args.eval_episodes} episodes (mean ± std over seeds); settings: "
              + "; ".join(f"{a}: {recipe(a, args.size, args.steps)}" for a in args.algos) + ".")
        print()
        print("| algo | float32 score | bf16 score | bf16 - float32 (Welch p) | per-seed float32 / bf16 | "
              "float32 updates/s | bf16 updates/s |")
        print("|---|---|---|---|---|---|---|")
        for algo in args.algos:
            f32, b16 = ([x[0] for x in got[(algo, p)]] for p in PRECISIONS)
            rate = {p: statistics.median(x[1] for x in got[(algo, p)]) for p in PRECISIONS}
            sd = lambda x: statistics.stdev(x) if len(x) > 1 else 0.0  # noqa: E731
            p = stats.ttest_ind(b16, f32, equal_var=False).pvalue if len(args.seeds) > 1 else float("nan")
            print(f"| {algo} | {statistics.mean(f32):.1f} ± {sd(f32):.1f} | {statistics.mean(b16):.1f} ± "
                  f"{sd(b16):.1f} | {statistics.mean(b16) - statistics.mean(f32):+.1f} ({p:.2f}) | "
                  + ", ".join(f"{a:.1f} / {b:.1f}" for a, b in zip(f32, b16))
                  + f" | {rate['float32']:.3g} | {rate['bf16']:.3g} |")


if __name__ == "__main__":
    run_script(main)
