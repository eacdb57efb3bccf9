"""GPU check of the LLM branch: kernel equality on CUDA, then the prefix-sharing throughput benchmark.

    PYTHONPATH=. python baselines/gpu_check_llm.py --out OUT_DIR [--budget-s 270] [--no-trl] [--smoke]
        [--parts triton_kernel,model_equality,throughput] [--profiles tulu,metamath,capybara]
    PYTHONPATH=. python baselines/gpu_check_llm.py --out results --report results/records/gpu_check_llm/*.json

Parts (each runs on its own; a failure is caught, reported and the next part runs):
  1. triton_kernel: the Triton kernel alone vs dense-mask sdpa on CUDA, forward and backward, float32 (IEEE dots)
     and bfloat16, on prefix-shared / packed rows of ~1-2k tokens.
  2. model_equality: per-branch log-probs AND parameter gradients of a tiny Llama (float32) for every backend
     (sdpa, flex, triton) and every layout vs each sequence run alone — flex's backward only runs on GPUs.
  3. throughput: ``prefix_sharing_throughput.run_profiles`` on a 0.87B-parameter Llama (4 layers of Llama-3-8B's
     shape) in bf16 at the paper's full profile lengths, for the flex and triton backends (``--backends``), with
     TRL's DPOTrainer as the anchor when trl is importable.
Writes OUT_DIR/gpu_check.json (everything measured), OUT_DIR/prefix_sharing_gpu.md and prints a summary.
No network; parts stop starting new work when the time budget is spent.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

if not torch.cuda.is_available():  # --smoke on CPU: Triton's interpreter must be chosen before triton is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pbrl.errors import fail  # noqa: E402
from pbrl.utils import atomic_write_text  # noqa: E402 (after the interpreter choice)

T0 = time.perf_counter()


def elapsed() -> float:
    return time.perf_counter() - T0


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def part_triton_kernel(log, dev: str, smoke: bool) -> dict:
    from pbrl.llm import triton_attention as ta
    from pbrl.llm.prefix_sharing import build_batch, dense_mask
    from pbrl.llm.prefs_data import synthetic_pairs

    out = {}
    pairs = synthetic_pairs("capybara", 4, 100, seed=0, scale=0.02 if smoke else 1.0)
    # Triton's CPU interpreter gets bfloat16 dot products wrong, so the smoke run checks float16 instead
    low = torch.float16 if smoke and dev == "cpu" else torch.bfloat16
    block = 16 if smoke else ta.BLOCK
    for layout in ("shared", "packed_shared", "packed"):
        b = build_batch(pairs, layout, pack_length=4096).to(dev)
        B, S = b.doc.shape
        tiles = ta.tile_lists(b.doc, b.branch, block)
        mask = dense_mask(b.doc, b.branch)
        for dtype in (torch.float32, low):
            g = torch.Generator(device=dev).manual_seed(0)
            q, k, v = (torch.randn(B, 4, S, 64, device=dev, generator=g).to(dtype).requires_grad_()
                       for _ in range(3))
            o = ta.prefix_attention(q, k, v, b.doc, b.branch, 0.125, tiles)
            qf, kf, vf = (x.detach().float().requires_grad_() for x in (q, k, v))
            ref = torch.nn.functional.scaled_dot_product_attention(qf, kf, vf, attn_mask=mask, scale=0.125)
            go = torch.randn(o.shape, device=dev, generator=g)
            grads = torch.autograd.grad(o, (q, k, v), go.to(dtype))
            rgrads = torch.autograd.grad(ref, (qf, kf, vf), go)
            errs = {"out": rel_err(o, ref), **{n: rel_err(a, r) for n, a, r in zip("qkv", grads, rgrads)}}
            tol = 1e-5 if dtype == torch.float32 else 2e-2
            key = f"{layout}/{str(dtype).split('.')[-1]}"
            out[key] = {"S": S, "tile_density": tiles.density, "rel_err": errs, "ok": max(errs.values()) < tol}
            log(f"  triton {key}: S={S} density={tiles.density:.2f} max rel err {max(errs.values()):.2e} "
                f"({'ok' if out[key]['ok'] else 'FAIL'})")
    return out


def part_model_equality(log, dev: str) -> dict:
    from pbrl.llm.attention import model_branch_logps, use_backend
    from pbrl.llm.models import TinyLMConfig, build_model
    from pbrl.llm.prefix_sharing import LAYOUTS, build_batch
    from pbrl.llm.prefs_data import synthetic_pairs

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    pairs = synthetic_pairs("hh_rlhf", 6, 64, seed=2, scale=0.5)
    model = build_model(TinyLMConfig(vocab_size=64, hidden_size=64, num_heads=4, num_kv_heads=2,
                                     intermediate_size=128), seed=1).to(dev)
    params = list(model.parameters())
    w = torch.randn(len(pairs), 2, device=dev, generator=torch.Generator(device=dev).manual_seed(3))
    use_backend(model, "hf_sdpa")
    rows = []
    for p in pairs:
        row = []
        for resp in (p.chosen, p.rejected):
            ids = torch.tensor([p.prompt + resp], device=dev)
            lp = model(ids).logits[0].float().log_softmax(-1)
            P = len(p.prompt)
            row.append(lp[torch.arange(P - 1, P - 1 + len(resp)), torch.tensor(resp, device=dev)].sum())
        rows.append(torch.stack(row))
    ref = torch.stack(rows)
    ref_grads = torch.autograd.grad((w * ref).sum(), params)
    out = {}
    for backend in ("sdpa", "flex", "triton"):
        for layout in LAYOUTS:
            key = f"{backend}/{layout}"
            try:
                use_backend(model, backend)
                b = build_batch(pairs, layout, pack_length=256, pad_to_multiple=128 if backend == "flex" else 8)
                lp = model_branch_logps(model, b.to(dev))
                grads = torch.autograd.grad((w * lp).sum(), params)
                gerr = max(rel_err(a, r) for a, r in zip(grads, ref_grads))
                lerr = float((lp - ref).detach().abs().max())
                ok = lerr < 1e-3 and gerr < 1e-3
                out[key] = {"logp_max_abs_err": lerr, "grad_max_rel_err": gerr, "ok": ok}
                log(f"  {key}: logp err {lerr:.2e}, grad rel err {gerr:.2e} ({'ok' if ok else 'FAIL'})")
            except Exception as e:
                out[key] = {"error": f"{type(e).__name__}: {e}", "ok": False}
                log(f"  {key}: ERROR {type(e).__name__}: {e}")
    return out


def throughput_config(profile: str, dev: str, smoke: bool, backends: tuple[str, ...], trl: bool):
    """The benchmark configuration of one profile (the report rebuilds its text from this too)."""
    from prefix_sharing_throughput import BenchConfig

    from pbrl.llm.models import TinyLMConfig

    if smoke:  # CPU: flex has no backward there, the Triton interpreter is slow; tiny shapes, varlen
        return BenchConfig(model=TinyLMConfig(hidden_size=64, num_layers=2, intermediate_size=128),
                           profiles=(profile,), scale=0.1, num_examples=16, steps=1, rounds=1,
                           backends=("varlen",), device=dev, trl=trl)
    # the layer shape of Llama-3-8B (width 4096, 32 heads of 128, 8 kv heads, MLP 14336), 4 layers: at the paper's
    # full lengths the share of attention in a step is the paper's, and a step is compute-bound on one GPU.
    # warm-up = one untimed pass over the timed batches: every shape's kernels, plans and allocator segments exist
    # before timing (the steady state of a long run, where batch shapes recur)
    model = TinyLMConfig(hidden_size=4096, num_layers=4, num_heads=32, num_kv_heads=8, intermediate_size=14336,
                         max_position=16384)
    return BenchConfig(model=model, profiles=(profile,), scale=1.0, num_examples=64, batch_size=8, steps=3,
                       rounds=2, warmup=3, backends=backends, pad_to_multiple=128, device=dev, dtype="bfloat16",
                       trl=trl)


def part_throughput(log, budget_s: float, trl: bool, dev: str, smoke: bool, backends: tuple[str, ...],
                    profiles: tuple[str, ...] = ()) -> dict:
    """``profiles``: in this order; empty = all, cheapest first, so that a budget cut drops the long ones."""
    from prefix_sharing_throughput import run_profiles

    from pbrl.llm.prefs_data import PROFILES

    unknown = [p for p in profiles if p not in PROFILES]
    if unknown:
        fail(f"--profiles: unknown {unknown}; expected some of {sorted(PROFILES)}")
    torch.backends.cuda.matmul.allow_tf32 = True
    rows, skipped = [], []
    order = list(profiles) or sorted(PROFILES, key=lambda p: PROFILES[p][0])
    for profile in order[: 1 if smoke else None]:
        if elapsed() > budget_s:
            skipped.append(profile)
            log(f"  skipping {profile}: time budget spent ({elapsed():.0f}s)")
            continue
        try:
            rows += run_profiles(throughput_config(profile, dev, smoke, backends, trl), log=lambda s: log("  " + s))
        except Exception as e:
            log(f"  {profile}: ERROR {type(e).__name__}: {e}")
            traceback.print_exc()
            skipped.append(profile)
    return {"rows": rows, "skipped": skipped, "smoke": smoke, "backends": list(backends), "trl": trl,
            "estimator": "pass"}


def report(records: list[dict]) -> str:
    """prefix_sharing_gpu.md from check records (the json this script writes): kernel checks, then throughput."""
    from prefix_sharing_throughput import markdown

    out = []
    for rec in records:
        env = rec.get("env", {})
        where = (f"{env.get('device')}, torch {env.get('torch')}, triton {env.get('triton')}, "
                 f"transformers {env.get('transformers')}, trl {env.get('trl')}")
        if "triton_kernel" in rec:
            out += ["# Kernel checks on the GPU", "", f"Measured on {where}. Relative error = ||x - ref|| / ||ref|| "
                    "against dense-mask sdpa in float32 (`triton_kernel`); max abs log-prob error and max relative "
                    "parameter-gradient error against each sequence run alone (`model_equality`, float32, TF32 "
                    "off).", "", "| check | case | errors | ok |", "|---|---|---|---|"]
            for k, v in rec["triton_kernel"].items():
                errs = ", ".join(f"{n} {e:.1e}" for n, e in v["rel_err"].items())
                out.append(f"| triton kernel fwd+bwd | {k} (S={v['S']}, tile density {v['tile_density']:.2f}) "
                           f"| {errs} | {'✓' if v['ok'] else '✗'} |")
            for k, v in rec.get("model_equality", {}).items():
                errs = v.get("error") or f"logp {v['logp_max_abs_err']:.1e}, grad {v['grad_max_rel_err']:.1e}"
                out.append(f"| model log-probs + grads | {k} | {errs} | {'✓' if v['ok'] else '✗'} |")
            out.append("")
        thr = rec.get("throughput")
        if thr and thr.get("rows") and "step_ms" not in thr["rows"][0]:  # before warm-up over the timed batches
            params = thr["rows"][0]["params"] / 1e6
            out += [f"(The throughput rows of the record from {where}, a {params:.0f}M-parameter model timed without "
                    "a warm-up over the timed batches, are not tabulated.)", ""]
        elif thr and thr.get("rows"):
            rows = thr["rows"]
            dev = "cuda" if env.get("cuda_available") else "cpu"
            cfg = throughput_config(rows[0]["profile"], dev, thr.get("smoke", False),
                                    tuple(thr.get("backends", ("flex", "triton"))), thr.get("trl", True))
            timing = None
            if thr.get("estimator") != "pass":  # records from before the paired one-pass estimator
                cfg = dataclasses.replace(cfg, rounds=2, warmup=6)
                timing = ("samples/s = batch / median step time over 2 interleaved rounds of 3 distinct batches "
                          "(batches 1-6), after a warm-up over the same 6 batches; the token bound is over all "
                          f"{cfg.num_examples} examples.")
            measured = sorted({r["profile"] for r in rows})
            out.append(markdown(rows, cfg, "Prefix-sharing DPO throughput on the GPU", timing=timing, extra=(
                f"\nMeasured on {where}; profiles measured: {', '.join(measured)}; not measured (time budget of "
                f"the run or error): {', '.join(thr.get('skipped', [])) or 'none'}. Every mode (and TRL, through a "
                f"sequential sampler) runs the same batches; warm-up = {cfg.warmup} untimed steps over the timed "
                f"batches. Step times of every mode are in the record.")))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="GPU check of pbrl.llm (kernels + throughput)")
    ap.add_argument("--out", required=True, help="output folder (gpu_check.json, prefix_sharing_gpu.md)")
    ap.add_argument("--report", nargs="+", metavar="RECORD",
                    help="only rebuild OUT/prefix_sharing_gpu.md from these gpu_check.json records")
    ap.add_argument("--budget-s", type=float, default=270.0, help="start no new throughput profile after this")
    ap.add_argument("--no-trl", action="store_true", help="skip TRL's DPOTrainer anchor")
    ap.add_argument("--parts", default="triton_kernel,model_equality,throughput")
    ap.add_argument("--backends", default="flex,triton", help="pbrl backends of the masked modes (throughput)")
    ap.add_argument("--profiles", default="", help="throughput profiles in this order (default: all, cheapest first)")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes; runs on CPU too (checks this script)")
    a = ap.parse_args(argv)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if a.report:
        text = report([json.loads(Path(f).read_text()) for f in a.report])
        atomic_write_text(str(out_dir / "prefix_sharing_gpu.md"), text)
        print(text)
        return 0

    def log(s: str) -> None:
        print(f"[{elapsed():6.1f}s] {s}", flush=True)

    rec: dict = {"env": {"python": platform.python_version(), "torch": torch.__version__,
                            "cuda_available": torch.cuda.is_available()}}
    if not torch.cuda.is_available() and not a.smoke:
        log("no CUDA device: nothing to check (--smoke runs tiny shapes on CPU)")
        (out_dir / "gpu_check.json").write_text(json.dumps(rec, indent=2))
        return 1
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    rec["env"]["device"] = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    for mod in ("triton", "transformers", "trl", "accelerate"):
        try:
            rec["env"][mod] = __import__(mod).__version__
        except Exception as e:
            rec["env"][mod] = f"unavailable ({type(e).__name__})"
    log(f"env: {rec['env']}")
    trl_ok = not a.no_trl and not str(rec["env"]["trl"]).startswith("unavailable")
    parts = {
        "triton_kernel": lambda: part_triton_kernel(log, dev, a.smoke),
        "model_equality": lambda: part_model_equality(log, dev),
        "throughput": lambda: part_throughput(log, a.budget_s, trl_ok, dev, a.smoke, tuple(a.backends.split(",")),
                                              tuple(p for p in a.profiles.split(",") if p)),
    }
    for name in a.parts.split(","):
        log(f"part {name}")
        t = time.perf_counter()
        try:
            rec[name] = parts[name]()
        except Exception as e:
            traceback.print_exc()
            rec[name] = {"error": f"{type(e).__name__}: {e}"}
        rec[name + "_seconds"] = time.perf_counter() - t
        (out_dir / "gpu_check.json").write_text(json.dumps(rec, indent=2, default=str))
    text = report([rec])
    if text:
        atomic_write_text(str(out_dir / "prefix_sharing_gpu.md"), text)
        print(text)
    log("summary:")
    for name in a.parts.split(","):
        r = rec.get(name, {})
        if "error" in r:
            log(f"  {name}: ERROR {r['error']}")
        elif name == "throughput":
            for row in r.get("rows", []):
                vs_trl = row["sps_prefix_shared"] / row.get("sps_trl", float("nan"))
                log(f"  {row['profile']}/{row['backend']}: shared x{row['speedup_shared']:.2f}, "
                    f"shared+packed x{row['speedup_packed']:.2f}, vs TRL x{vs_trl:.2f}")
        else:
            bad = [k for k, v in r.items() if isinstance(v, dict) and not v.get("ok")]
            log(f"  {name}: {len(r) - len(bad)}/{len(r)} ok" + (f"; failed: {bad}" if bad else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
