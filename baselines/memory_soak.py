"""Memory soak: resident memory of every offline policy over a few thousand updates at a small size.

  python baselines/memory_soak.py                          # all algorithms, 3000 updates each
  python baselines/memory_soak.py --algos dtr qt --steps 6000 --threads 2

Each algorithm runs in its own fresh process (so one cannot inherit another's heap) on the same small Pendulum-v1
dataset, with glibc's heap set up as the `pbrl` command line sets it (`reuse_freed_heap`: freed blocks stay in the
heap): that setting is what turns a few live bytes per update into MBs of resident memory, so it is the one to
soak. The bf16 paths that `auto` picks on CUDA or an AMX CPU are forced on (CQL's proposals, DTR/QT's EMA
forward) so a CPU without AMX exercises them too; `--bf16 default` keeps each algorithm's own default.
Per algorithm: RSS (VmRSS) at fixed update counts, the heap bytes in use (glibc mallinfo2: live allocations, which
fragmentation does not move), and the growth per 1000 updates after a warm-up. PASS when the RSS growth per 1000
updates after the warm-up is below the bound (`--bound-mb`, default 20 MB).
Writes results/memory_soak.md (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ALGOS = ("iql", "cql", "td3bc", "bc", "dt", "qt", "dtr")
MLP = dict(hidden=(64, 64), batch_size=64)
SEQ = dict(batch_size=16, context=10, embed_dim=32, n_layers=2, n_heads=2, n_inner=64, dropout=0.1)
SMALL: dict[str, dict[str, object]] = {
    "bc": MLP,
    "iql": MLP,
    "td3bc": MLP,
    "cql": {**MLP, "n_actions": 4},
    "dt": {**SEQ, "warmup_steps": 100},
    # ema_start 2000: the first 2000 updates copy the actor into the EMA actor, the rest average it (both phases
    # fall in the measured window of the default run)
    "dtr": {**SEQ, "critic_hidden": (64, 64), "ema_start": 2000},
    "qt": {**SEQ, "critic_hidden": (64, 64), "ema_start": 2000},
}
FORCED_BF16: dict[str, dict[str, object]] = {"cql": {"bf16": "on"}, "dtr": {"ema_bf16": "on"}, "qt": {"ema_bf16": "on"}}


def rss_mb() -> float:
    """Resident set size of this process (VmRSS), MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def heap_in_use_mb() -> float | None:
    """Live heap blocks in MB (`pbrl.utils.heap_in_use_bytes`); None off glibc."""
    from pbrl.utils import heap_in_use_bytes

    n = heap_in_use_bytes()
    return None if n is None else n / 2**20


def checkpoints(steps: int) -> list[int]:
    """The update counts at which memory is read: 0 (after setup), then every steps/6 (rounded), and `steps`."""
    every = max(1, steps // 6)
    return sorted({0, *range(every, steps, every), steps})


def worker(algo: str, steps: int, threads: int, bf16: str, n_transitions: int) -> dict[str, object]:
    """One algorithm's soak in this process; returns {update count: (rss MB, heap in use MB)} and settings."""
    import torch

    from pbrl.data import collect_episodes
    from pbrl.policies.base import PolicySpec, default_config, make_policy
    from pbrl.utils import reuse_freed_heap

    heap = reuse_freed_heap()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ds = collect_episodes("Pendulum-v1", num_transitions=n_transitions, seed=0)
    overrides = {**SMALL[algo], **(FORCED_BF16.get(algo, {}) if bf16 == "forced" else {})}
    policy = make_policy(algo, PolicySpec.from_dataset(ds), default_config(algo, **overrides), steps)
    sample = policy.make_sampler(ds, torch.Generator().manual_seed(0))
    marks = checkpoints(steps)
    points, t0 = {}, time.perf_counter()
    for step in range(steps + 1):
        if step:
            policy.update(sample())
        if step in marks:
            points[step] = (rss_mb(), heap_in_use_mb())
    return {
        "points": points,
        "steps_per_s": steps / (time.perf_counter() - t0),
        "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()},
        "reuse_freed_heap": heap,
    }


def run_one(algo: str, args: argparse.Namespace) -> dict[str, object]:
    """`worker` in a fresh interpreter; its result comes back as the last line of stdout (JSON)."""
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        algo,
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
        "--bf16",
        args.bf16,
        "--transitions",
        str(args.transitions),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{algo}: worker failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["points"] = {int(k): v for k, v in out["points"].items()}
    return out


def growth_per_1000(points: dict[int, list], warmup: int, index: int) -> float | None:
    """(value at the last mark - value at the first mark >= warmup) per 1000 updates."""
    marks = sorted(points)
    start = next((m for m in marks if m >= warmup), None)
    end = marks[-1]
    if start is None or end <= start or points[start][index] is None:
        return None
    return (points[end][index] - points[start][index]) * 1000.0 / (end - start)


def machine_header(args: argparse.Namespace) -> list[str]:
    import torch

    from pbrl.utils import cpu_has_amx_bf16, git_revision

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            info = {ln.split(":")[0]: ln.split(":")[1].strip() for ln in f}
        mem = f", memory total {info.get('MemTotal', '?')}, available {info.get('MemAvailable', '?')}"
    except OSError:
        pass
    load = ", load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else ""
    return [
        f"- machine: {cpu}, {os.cpu_count()} logical CPUs, AMX bf16: {cpu_has_amx_bf16()}{mem}{load}",
        f"- torch {torch.__version__}, Python {platform.python_version()}, {platform.libc_ver()[0] or 'no'} libc "
        f"{platform.libc_ver()[1]}, git revision {git_revision()}",
        f"- {args.steps} updates per algorithm, {args.threads} torch thread(s) (OMP_NUM_THREADS={args.threads}), "
        f"each algorithm in its own process, Pendulum-v1 data of {args.transitions} transitions (seed 0)",
        "- heap as the `pbrl` command line sets it (reuse_freed_heap: M_MMAP_MAX=0, M_TRIM_THRESHOLD=1 GiB)",
        "- bf16: "
        + (
            "forced on where `auto` turns it on for CUDA/AMX (CQL proposals, DTR/QT EMA forward)"
            if args.bf16 == "forced"
            else "each algorithm's default for this machine"
        ),
        f"- warm-up {args.warmup} updates; PASS = RSS growth after the warm-up < {args.bound_mb:g} MB per 1000 "
        "updates",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--warmup", type=int, default=500, help="updates before the growth is measured")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--transitions", type=int, default=4000)
    p.add_argument("--bf16", choices=("forced", "default"), default="forced")
    p.add_argument("--bound-mb", type=float, default=20.0, help="PASS bound: RSS MB per 1000 updates")
    p.add_argument("--out", default="results/memory_soak.md")
    p.add_argument("--worker", choices=ALGOS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        res = worker(args.worker, args.steps, args.threads, args.bf16, args.transitions)
        print(json.dumps(res))
        return 0
    if args.warmup >= args.steps:
        p.error(f"--warmup ({args.warmup}) must be below --steps ({args.steps})")

    from pbrl.utils import atomic_write_text

    marks = checkpoints(args.steps)
    lines = ["# Memory soak: resident memory over training updates", "", *machine_header(args), ""]
    head = "| algo | " + " | ".join(f"RSS @{m}" for m in marks)
    head += " | RSS MB/1000 | heap in use MB/1000 | updates/s | verdict |"
    lines += [head, "|" + "---|" * (len(marks) + 5)]
    failed = []
    for algo in args.algos:
        res = run_one(algo, args)
        pts = res["points"]
        rss_rate = growth_per_1000(pts, args.warmup, 0)
        heap_rate = growth_per_1000(pts, args.warmup, 1)
        ok = rss_rate is not None and rss_rate < args.bound_mb
        if not ok:
            failed.append(algo)
        row = f"| {algo} | " + " | ".join(f"{pts[m][0]:.0f}" for m in marks)
        row += f" | {rss_rate:+.1f} | " + ("n/a" if heap_rate is None else f"{heap_rate:+.2f}")
        row += f" | {res['steps_per_s']:.0f} | {'PASS' if ok else 'FAIL'} |"
        lines.append(row)
        print(row, flush=True)
    lines += [
        "",
        "RSS in MB at the update counts named (0 = after building the policy and its sampler). Growth per 1000 "
        f"updates from update {next(m for m in marks if m >= args.warmup)} to update {marks[-1]}. Configs:",
        "",
    ]
    lines += [f"- {a}: {json.dumps({**SMALL[a], **(FORCED_BF16.get(a, {}) if args.bf16 == 'forced' else {})})}"
              for a in args.algos]
    lines += ["", f"Result: {'all PASS' if not failed else 'FAIL: ' + ', '.join(failed)}"]
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, text)
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
