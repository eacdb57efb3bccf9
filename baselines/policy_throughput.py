"""Update throughput of pbrl's offline policies, side by side with d3rlpy, and DTR at two configurations.

  python baselines/policy_throughput.py                      # pbrl only (d3rlpy anchor skipped)
  python baselines/policy_throughput.py --d3rlpy-python PY   # + d3rlpy, run by interpreter PY in a subprocess
  python baselines/policy_throughput.py --device cuda --only dtr --dtr-run-steps 3000   # the GPU check

Anchor (d3rlpy 2.8.1 stays out of pbrl's environment; a throwaway venv that sees pbrl's packages):
  python -m venv /tmp/d3venv
  python -c "import site; print(site.getsitepackages()[0])" > $(/tmp/d3venv/bin/python -c \
      "import site; print(site.getsitepackages()[0])")/pbrl_env.pth     # reuse pbrl's torch/gymnasium
  /tmp/d3venv/bin/pip install --no-deps d3rlpy==2.8.1 gym==0.26.2 gym-notices
  /tmp/d3venv/bin/pip install structlog colorama dataclasses-json click scikit-learn
  python baselines/policy_throughput.py --d3rlpy-python /tmp/d3venv/bin/python

Same data for both (random Hopper-v5 transitions: obs 11, action 3), batch 256, 256x256 MLPs, the same thread
count; a timed update includes drawing its batch. The ratio is pbrl / d3rlpy, measured in this one run.
DTR: steps/s at the release's configuration (batch 256, K 20, embed 256, 4 layers, 4 heads) and at a small-budget
CPU configuration, plus the window-batching rate alone. The release's own trainer was measured at 0.23 steps/s
(data batching alone 142/s) on the 2-core reference machine: a recorded reference, not run here.
Writes results/policy_throughput.{md,json} (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RELEASE_DTR_STEPS_PER_S = 0.23  # the DTR release's trainer at its published setting, 2-core CPU (DESIGN.md)
RELEASE_DTR_BATCHING_PER_S = 142.0
SMALL_DTR = dict(batch_size=64, context=20, embed_dim=128, n_layers=3, n_heads=4, n_inner=512)


def make_data(env_id: str, n: int, seed: int):
    from pbrl.data import collect_episodes

    return collect_episodes(env_id, num_transitions=n, seed=seed)


# ------------------------------------------------------------------------------------------------ pbrl side
def time_pbrl(algo: str, ds, steps: int, warmup: int, device: str, **overrides) -> float:
    import torch

    from pbrl.policies.base import PolicySpec, default_config, make_policy

    torch.manual_seed(0)
    policy = make_policy(algo, PolicySpec.from_dataset(ds), default_config(algo, **overrides), 10**6).to(
        device
    )
    sample = policy.make_sampler(ds, torch.Generator().manual_seed(0))
    for _ in range(warmup):
        policy.update(sample())
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        policy.update(sample())
    _sync(device)
    return steps / (time.perf_counter() - t)


def time_batching(algo: str, ds, n: int, device: str, **overrides) -> float:
    import torch

    from pbrl.policies.base import PolicySpec, default_config, make_policy

    policy = make_policy(algo, PolicySpec.from_dataset(ds), default_config(algo, **overrides), 10**6).to(
        device
    )
    sample = policy.make_sampler(ds, torch.Generator().manual_seed(0))
    sample()
    t = time.perf_counter()
    for _ in range(n):
        sample()
    _sync(device)
    return n / (time.perf_counter() - t)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------ d3rlpy side
def d3rlpy_worker(data_path: str, algo: str, steps: int, warmup: int, threads: int) -> float:
    """Runs inside the d3rlpy interpreter: update steps/s of d3rlpy's `algo` on the saved transitions."""
    import d3rlpy
    import torch

    torch.set_num_threads(threads)
    d = np.load(data_path)
    dataset = d3rlpy.dataset.MDPDataset(
        observations=d["observations"],
        actions=d["actions"],
        rewards=d["rewards"],
        terminals=d["terminals"],
        timeouts=d["timeouts"],
    )
    enc = d3rlpy.models.encoders.VectorEncoderFactory(hidden_units=[256, 256])
    common = dict(batch_size=256, actor_encoder_factory=enc, critic_encoder_factory=enc)
    if algo == "iql":
        cfg = d3rlpy.algos.IQLConfig(**common, value_encoder_factory=enc)
    elif algo == "td3bc":
        cfg = d3rlpy.algos.TD3PlusBCConfig(**common)
    elif algo == "cql":
        cfg = d3rlpy.algos.CQLConfig(**common)
    else:
        raise ValueError(algo)
    model = cfg.create(device="cpu:0")
    model.build_with_dataset(dataset)
    buffer = dataset
    for _ in range(warmup):
        model.update(buffer.sample_transition_batch(256))
    t = time.perf_counter()
    for _ in range(steps):
        model.update(buffer.sample_transition_batch(256))
    return steps / (time.perf_counter() - t)


def time_d3rlpy(python: str, ds, algo: str, steps: int, warmup: int, threads: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.npz")
        np.savez(
            path,
            observations=ds.observations,
            actions=ds.actions,
            rewards=ds.rewards,
            terminals=ds.terminations.astype(np.float32),
            timeouts=ds.truncations.astype(np.float32),
        )
        # d3rlpy reads episodes from terminal/timeout flags: close the last one
        cmd = [
            python,
            __file__,
            "--worker",
            algo,
            "--data",
            path,
            "--steps",
            str(steps),
            "--warmup",
            str(warmup),
            "--threads",
            str(threads),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"d3rlpy worker failed:\n{out.stderr[-2000:]}")
        return float(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="timed updates per MLP algorithm")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3, help="alternating pbrl/d3rlpy timing rounds (median)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", choices=["mlp", "dtr", "all"], default="all")
    ap.add_argument("--dtr-steps", type=int, default=5, help="timed DTR updates at the release configuration")
    ap.add_argument(
        "--dtr-small-steps", type=int, default=30, help="timed DTR updates at the small configuration"
    )
    ap.add_argument(
        "--dtr-run-steps", type=int, default=0, help="also time this many release-config steps (GPU)"
    )
    ap.add_argument(
        "--d3rlpy-python", default=None, help="interpreter with d3rlpy installed (see the docstring)"
    )
    ap.add_argument("--data-size", type=int, default=20_000)
    ap.add_argument("--data-env", default="Hopper-v5", help="env whose random transitions are the data")
    ap.add_argument(
        "--out", default=str(Path(__file__).resolve().parent.parent / "results" / "policy_throughput")
    )
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(d3rlpy_worker(args.data, args.worker, args.steps, args.warmup, args.threads))
        return

    import torch

    torch.set_num_threads(args.threads)
    ds = make_data(args.data_env, args.data_size, 0)
    machine = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {args.threads} threads"
    )
    rows: list[dict] = []
    from pbrl.utils import cpu_has_amx_bf16

    if args.only in ("mlp", "all"):
        # CQL twice: its default (bf16 autocast on the proposals' critic pass where AMX/CUDA make it fast) and
        # all-float32, so the precision behind each number is on the row
        cql_auto = "bf16 proposals" if args.device.startswith("cuda") or cpu_has_amx_bf16() else "fp32"
        variants = [("iql", {}, "fp32"), ("td3bc", {}, "fp32"), ("cql", {"bf16": "off"}, "fp32"),
                    ("cql", {}, cql_auto)]
        anchor: dict[str, list[float]] = {}
        for algo, overrides, precision in variants:
            steps = args.steps if algo != "cql" else max(args.steps // 5, 20)
            ours, theirs = [], anchor.get(algo, [])
            # alternate the two sides round by round so load changes on a shared machine hit both; medians
            for _ in range(args.rounds):
                ours.append(time_pbrl(algo, ds, steps, args.warmup, args.device, **overrides))
                if args.d3rlpy_python and args.device == "cpu" and algo not in anchor:
                    theirs.append(time_d3rlpy(args.d3rlpy_python, ds, algo, steps, args.warmup, args.threads))
            anchor[algo] = theirs
            o = float(np.median(ours))
            t = float(np.median(theirs)) if theirs else None
            rows.append(
                {
                    "algo": algo,
                    "config": f"batch 256, 256x256, {precision}",
                    "pbrl_steps_per_s": o,
                    "d3rlpy_steps_per_s": t,
                    "ratio": None if t is None else o / t,
                    "rounds": args.rounds,
                    "timed_updates": steps,
                    "pbrl_rounds": ours,
                    "d3rlpy_rounds": theirs,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        if not args.d3rlpy_python:
            print("d3rlpy anchor skipped (no --d3rlpy-python); see this script's docstring to set it up")
    if args.only in ("dtr", "all"):
        # the default precision, then on CPU all-float32 and all-bf16, so the precision behind each number is named
        if args.device != "cpu":
            variants = {"default (bf16 autocast)": {}}
        else:
            default = "fp32 actor, bf16 EMA forward (default)" if cpu_has_amx_bf16() else "fp32 (default)"
            variants = {default: {}, "fp32": {"bf16": "off", "ema_bf16": "off"},
                        "bf16 autocast": {"bf16": "on", "ema_bf16": "on"}}
        first = len(rows)
        for label, precision in variants.items():
            release = time_pbrl("dtr", ds, args.dtr_steps, 2, args.device, **precision)
            rows.append(
                {
                    "algo": "dtr",
                    "config": f"release: batch 256, K 20, embed 256, 4 layers, 4 heads, {label}",
                    "pbrl_steps_per_s": release,
                    "release_trainer_steps_per_s": RELEASE_DTR_STEPS_PER_S,
                    "ratio_vs_recorded_release": release / RELEASE_DTR_STEPS_PER_S
                    if args.device == "cpu"
                    else None,
                }
            )
        for label, precision in variants.items():
            small = time_pbrl("dtr", ds, args.dtr_small_steps, 3, args.device, **precision, **SMALL_DTR)
            rows.append(
                {
                    "algo": "dtr",
                    "config": f"small: batch 64, K 20, embed 128, 3 layers, 4 heads, inner 512, {label}",
                    "pbrl_steps_per_s": small,
                }
            )
        rows.append(
            {
                "algo": "dtr",
                "config": "window batching alone (batch 256, K 20)",
                "pbrl_batches_per_s": time_batching("dtr", ds, 200, args.device),
                "release_batches_per_s": RELEASE_DTR_BATCHING_PER_S,
            }
        )
        for r in rows[first:]:
            print(json.dumps(r), flush=True)
        if args.dtr_run_steps:
            rate = time_pbrl("dtr", ds, args.dtr_run_steps, 20, args.device)
            rows.append(
                {
                    "algo": "dtr",
                    "config": f"release config, {args.dtr_run_steps} timed steps",
                    "pbrl_steps_per_s": rate,
                    "projected_50k_steps_min": 50_000 / rate / 60,
                }
            )
            print(json.dumps(rows[-1]), flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "machine": machine,
        "device": args.device,
        "threads": args.threads,
        "data": f"{args.data_env} random",
        "data_size": args.data_size,
        "rows": rows,
        "torch": torch.__version__,
    }
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, out.with_suffix(".json"))
    lines = [
        f"# Policy update throughput ({machine}, torch {torch.__version__})",
        "",
        "| algo | config | pbrl steps/s | anchor steps/s | ratio |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        ours = r.get("pbrl_steps_per_s", r.get("pbrl_batches_per_s"))
        anchor = r.get(
            "d3rlpy_steps_per_s", r.get("release_trainer_steps_per_s", r.get("release_batches_per_s"))
        )
        ratio = r.get("ratio", r.get("ratio_vs_recorded_release"))
        lines.append(
            f"| {r['algo']} | {r['config']} | {ours:.3g} | {'-' if anchor is None else f'{anchor:.3g}'} | "
            f"{'-' if ratio is None else f'{ratio:.2f}x'} |"
        )
    lines += [
        "",
        "Anchors: d3rlpy 2.8.1 (float32) measured in the same run (same data, batch, network sizes, threads); "
        "'bf16 proposals' = CQL's default on CUDA or AMX CPUs: the critic's pass over the 3x10 sampled actions per "
        "state runs under bf16 autocast (float32 weights, TD term in float32). DTR's default on CUDA or AMX CPUs "
        "runs only the EMA actor's no-grad forward (the bootstrap action) under bf16; 'fp32' turns that off too. The "
        "DTR release numbers (0.23 steps/s, batching 142/s) are recorded references from the 2-core machine.",
    ]
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out.with_suffix(".md"))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
