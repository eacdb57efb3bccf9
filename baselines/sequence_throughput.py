"""Update throughput of the sequence models (DT, QT, DTR) at the small Table 1 size, this tree against a baseline
revision, measured side by side in one run.

  python baselines/sequence_throughput.py                      # against BASELINE_REV, 5 rounds
  python baselines/sequence_throughput.py --baseline HEAD~3 --rounds 3 --out ''   # quick look, no file

The baseline revision is checked out with `git worktree add` into a temporary folder; every timing runs in a fresh
subprocess (this file, with PYTHONPATH set to the tree being measured), so both trees run the same timing code on
the same data: random Hopper-v5 transitions (obs 11, action 3; `collect_episodes`, seed 0), the configuration
`baselines/dtr_table1.py` uses for its small budget (SMALL_DT: batch 64, K 20, embed 64, 2 layers, 2 heads,
inner 256; every other setting the algorithm's default), --threads torch threads, float denormals flushed as the
trainer does. A timed update includes drawing its batch. Rounds alternate the two trees (the order flips every
round) so that a change in the machine's load hits both; each rate is the median over the rounds, and the ratio is
current / baseline. Also reported: rates over the process's CPU time (less sensitive to other work on the cores).
Targets (issue 23): DT >= 4x and DTR >= 5x the baseline's rate. Last, the FLOPs of one update and the float32
GEMM rate measured at its main shapes give the rate a pure-matmul update would reach (what float32 allows).
Writes results/sequence_throughput.md (or --out) with baselines/record.py's header.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import recorded  # baselines/record.py (the script's folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
BASELINE_REV = "eba2189cca1957e087675762a4bd3da5a46b276f"
"""The commit before the small-size speed work on DT / QT / DTR."""
ALGOS = ("dt", "qt", "dtr")
TARGETS = {"dt": 4.0, "dtr": 5.0}


def small_config() -> dict:
    from dtr_table1 import SMALL_DT  # the small Table 1 budget's transformer

    return dict(SMALL_DT)


# ------------------------------------------------------------------------------------------------ worker
def bf16_settings(algo: str) -> dict:
    """bf16 autocast turned on everywhere an algorithm has a switch for it (DT: the transformer; QT / DTR: the
    actor and its EMA copy's forward; the critics' TD stays float32)."""
    return {"bf16": "on"} if algo == "dt" else {"bf16": "on", "ema_bf16": "on"}


def worker(algos: list[str], config: dict, steps: int, warmup: int, threads: int, data_size: int,
           bf16: bool = False) -> dict:
    """Runs in the measured tree: {algo: (updates/s wall, updates/s CPU time)} for `steps` timed updates; `bf16`
    adds `bf16_settings` to every algorithm's configuration."""
    import torch

    from pbrl.data import collect_episodes
    from pbrl.policies.base import PolicySpec, default_config, make_policy

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # as `train_policy` runs
    ds = collect_episodes("Hopper-v5", num_transitions=data_size, seed=0)
    spec = PolicySpec.from_dataset(ds)
    out = {}
    for algo in algos:
        torch.manual_seed(0)
        settings = {**config, **(bf16_settings(algo) if bf16 else {})}
        policy = make_policy(algo, spec, default_config(algo, **settings), 10**6)
        sample = policy.make_sampler(ds, torch.Generator().manual_seed(0))
        for _ in range(warmup):
            policy.update(sample())
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            policy.update(sample())
        out[algo] = (steps / (time.perf_counter() - wall), steps / (time.process_time() - cpu))
    return out


def floor_worker(algos: list[str], config: dict, threads: int) -> dict:
    """Runs in this tree: FLOPs of one update (torch's FlopCounterMode) and the float32 and bf16 GEMM rates at the
    update's main shapes, giving the rate an update could reach if it were nothing but its matrix products."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pbrl.data import collect_episodes
    from pbrl.policies.base import PolicySpec, default_config, make_policy

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    ds = collect_episodes("Hopper-v5", num_transitions=2000, seed=0)
    flops = {}
    for algo in algos:
        policy = make_policy(algo, PolicySpec.from_dataset(ds), default_config(algo, **config), 10**6)
        batch = policy.make_sampler(ds, torch.Generator().manual_seed(0))()
        with FlopCounterMode(display=False) as counter:
            policy.update(batch)
        flops[algo] = counter.get_total_flops()
    B, K, E = config["batch_size"], 20, config["embed_dim"]
    inner = config.get("n_inner") or 4 * E
    shapes = [(B * 3 * K, E, inner), (B * 3 * K, inner, E), (B * 3 * K, E, 3 * E), (B * K, 256, 256)]  # MLP, qkv, critic
    rates: dict[str, dict[str, float]] = {"float32": {}, "bf16": {}}
    for dtype, name in ((torch.float32, "float32"), (torch.bfloat16, "bf16")):
        for m, k, n in shapes:
            a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
            for _ in range(5):
                a @ b
            t0, reps = time.process_time(), 50  # CPU time, as the CPU-time update rates it is compared with
            for _ in range(reps):
                a @ b
            rates[name][f"{m}x{k}x{n}"] = 2 * m * k * n * reps / (time.process_time() - t0)
    return {"flops": flops, "gemm": rates["float32"], "gemm_bf16": rates["bf16"]}


def run_worker(tree: Path, args: argparse.Namespace, config: dict, floor: bool = False, bf16: bool = False) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--floor" if floor else "--worker", "--algos", *args.algos,
           *(["--bf16-worker"] if bf16 else []),
           "--config", json.dumps(config), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--data-size", str(args.data_size)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree, check=False)
    if res.returncode != 0:
        raise SystemExit(f"sequence_throughput: error: the worker in {tree} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default=BASELINE_REV, help="git revision to compare with")
    ap.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30, help="timed updates per algorithm per round")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-size", type=int, default=20_000)
    ap.add_argument("--out", default=str(ROOT / "results" / "sequence_throughput.md"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                    help="also time this tree with bf16 autocast on (`bf16_settings`): what this CPU's bf16 gives")
    ap.add_argument("--config", default="{}", help=argparse.SUPPRESS)
    ap.add_argument("--bf16-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.floor:
        print(json.dumps(floor_worker(args.algos, json.loads(args.config), args.threads)))
        return
    if args.worker:
        print(json.dumps(worker(args.algos, json.loads(args.config), args.steps, args.warmup, args.threads,
                                args.data_size, args.bf16_worker)))
        return
    # imported after the workers' return: they run this file against the baseline tree, which may predate it
    from pbrl.errors import fail

    if args.rounds < 1 or args.steps < 1:
        fail("--rounds and --steps must be >= 1")
    rev = subprocess.run(["git", "rev-parse", "--verify", f"{args.baseline}^{{commit}}"], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    if rev.returncode != 0:
        fail(f"--baseline {args.baseline!r} is not a revision of this repo")
    base_rev = rev.stdout.strip()
    config = small_config()
    title = "Sequence-model update throughput at the small Table 1 size: this tree vs a baseline revision"
    with tempfile.TemporaryDirectory() as tmp, recorded(args.out or None, title, threads=args.threads):
        base_tree = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), base_rev], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            trees = {"baseline": base_tree, "current": ROOT, **({"bf16": ROOT} if args.bf16 else {})}
            rates: dict[str, dict[str, list[tuple[float, float]]]] = {k: {a: [] for a in args.algos} for k in trees}
            n_runs = len(trees) * args.rounds
            print(f"baseline {base_rev[:12]} vs this tree{' (and this tree with bf16 on)' if args.bf16 else ''}; "
                  f"{args.rounds} rounds x {len(trees)} variants x {len(args.algos)} "
                  f"algorithms x {args.steps} timed updates ({args.threads} thread(s), config {config}); this "
                  "takes several minutes (each worker builds its data and times every algorithm)", flush=True)
            t0 = time.perf_counter()
            for r in range(args.rounds):
                order = list(trees) if r % 2 == 0 else list(trees)[::-1]
                for name in order:
                    got = run_worker(trees[name], args, config, bf16=name == "bf16")
                    for algo, (wall, cpu) in got.items():
                        rates[name][algo].append((wall, cpu))
                    done = r * len(trees) + order.index(name) + 1
                    el = time.perf_counter() - t0
                    print(f"  round {r + 1}/{args.rounds} {name:8s} " + "  ".join(
                        f"{a} {w:.3g}/s" for a, (w, _) in got.items()) +
                        f"  [{done}/{n_runs} workers, {el:.0f} s, ~{el / done * (n_runs - done):.0f} s left]",
                        flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=False,
                           capture_output=True)
        print()
        print(f"Baseline: git {base_rev[:12]}. Data: {args.data_size} random Hopper-v5 transitions. "
              f"Medians over {args.rounds} alternating rounds of {args.steps} timed updates (after {args.warmup} "
              f"warm-up updates), {args.threads} torch thread(s). Config: {config}.")
        print()
        med = lambda name, algo, i: statistics.median(x[i] for x in rates[name][algo])  # noqa: E731  0 wall, 1 CPU
        bf16_head = " | this tree, bf16 on: updates/s | ratio (wall) |" if args.bf16 else " |"
        print("| algo | baseline updates/s | this tree updates/s | ratio (wall) | ratio (CPU time) | target | met"
              + bf16_head)
        print("|---" * (7 + 2 * args.bf16) + "|")
        verdicts = []
        for algo in args.algos:
            bw, cw, bc, cc = med("baseline", algo, 0), med("current", algo, 0), med("baseline", algo, 1), med(
                "current", algo, 1)
            target = TARGETS.get(algo)
            met = "-" if target is None else ("yes" if cw / bw >= target else "no")
            extra = f" | {med('bf16', algo, 0):.3g} | {med('bf16', algo, 0) / bw:.2f}x |" if args.bf16 else " |"
            print(f"| {algo} | {bw:.3g} | {cw:.3g} | {cw / bw:.2f}x | {cc / bc:.2f}x | "
                  f"{'-' if target is None else f'>= {target:g}x'} | {met}" + extra)
            if target is not None:
                verdicts.append(f"{algo}: {cw / bw:.2f}x against a target of {target:g}x, "
                                f"{'met' if cw / bw >= target else 'NOT met'}")
        print()
        print("Targets (wall-clock ratio, the defaults): " + "; ".join(verdicts) + "."
              + (" The bf16 column turns on " + ", ".join(sorted(bf16_settings("dtr"))) + " (not the default on "
                 "a CPU without AMX); it shows what this CPU's bf16 matrix units give, not a default." if args.bf16
                 else ""))
        floor = run_worker(ROOT, args, config, floor=True)
        gemm, gemm16 = max(floor["gemm"].values()), max(floor["gemm_bf16"].values())
        print()
        print("What float32 allows: FLOPs of one update (torch's FlopCounterMode, this tree) and the float32 GEMM "
              "rate per CPU second at the update's main shapes ("
              + ", ".join(f"{k}: {v / 1e9:.0f}" for k, v in floor["gemm"].items())
              + " GFLOP/s; bf16: " + ", ".join(f"{v / 1e9:.0f}" for v in floor["gemm_bf16"].values())
              + "); the ceiling is the update's FLOPs at the best of those rates, as if it were nothing but "
              "matrix products, against the CPU-time rates above (both per CPU second, so other work on the cores "
              "does not enter the comparison).")
        print()
        print("| algo | GFLOP per update | baseline updates/CPU-s | this tree updates/CPU-s | float32 matmul-bound "
              "ceiling updates/CPU-s | ceiling / baseline | all-bf16 ceiling / baseline | target |")
        print("|---|---|---|---|---|---|---|---|")
        for algo in args.algos:
            bc, cc = med("baseline", algo, 1), med("current", algo, 1)
            ceiling = gemm / floor["flops"][algo]
            target = TARGETS.get(algo)
            print(f"| {algo} | {floor['flops'][algo] / 1e9:.2f} | {bc:.3g} | {cc:.3g} | {ceiling:.3g} | "
                  f"{ceiling / bc:.2f}x | {gemm16 / floor['flops'][algo] / bc:.2f}x | "
                  f"{'-' if target is None else f'{target:g}x'} |")


if __name__ == "__main__":
    sys.exit(main())
