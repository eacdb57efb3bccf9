"""Training throughput of DPO with and without prefix sharing and packing, on the paper's six length profiles.

Modes (same model, same data, same DPO loss with precomputed reference log-probs, AdamW step included):
  standard_padded       one row per prompt+response, right-padded; HF's own sdpa (causal, no mask)
  prefix_shared         one prompt+chosen+rejected row per example (pbrl attention backend)
  standard_packed       prompt+response sequences packed by first-fit-decreasing (document mask); by default all
                        sequences of a step go into one unpadded row, which needs a per-document backend
                        (varlen on CPU, flex or triton on a GPU)
  prefix_shared_packed  prefix-shared sequences packed the same way
  trl                   TRL's DPOTrainer (precompute_ref_log_probs=True), the outside anchor
Every mode (and TRL, through a sequential sampler) trains on the same ``steps`` batches, once per round for
``rounds`` rounds after a warm-up, modes (and the masked modes of every backend) interleaved round by round so that
load changes on the machine hit all modes alike. Throughput is a paired one-pass estimate, the paper's samples/s
over the same data: samples/s = examples in the batches / sum over the batches of the median (over rounds) of that
batch's step time. The token-count bound (2P+C+R)/(P+C+R) is computed over the same examples. Synthetic data:
``pbrl.llm.prefs_data`` profiles.

The model's width is set so that sequence length / hidden size is about the paper's (profile lengths x 0.25 with
hidden 1024 vs full lengths with 4096-wide 7-8B models, both about 0.4). That ratio fixes the share of attention in
a step, which prefix sharing does not shrink (each response still attends to the whole prompt); a narrow model on
the same lengths is attention-bound and gains less than the paper's models.

    python baselines/prefix_sharing_throughput.py                 # CPU run -> results/prefix_sharing.md + figure
    python baselines/prefix_sharing_throughput.py --quick         # a smaller smoke run (prints only)

``baselines/gpu_check_llm.py`` calls ``run_profiles`` with a GPU-sized model and the flex/triton backends.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from pbrl.errors import fail
from pbrl.llm.attention import model_branch_logps, use_backend
from pbrl.llm.dpo import dpo_loss
from pbrl.llm.models import TinyLMConfig, build_model, num_parameters
from pbrl.llm.prefix_sharing import build_batch, response_lengths
from pbrl.llm.prefs_data import PAPER_SPEEDUPS, PROFILES, synthetic_records, tokenize_records
from pbrl.llm.tokenizer import word_tokenizer
from pbrl.utils import adam, atomic_write_text, denormals_flushed, reuse_freed_heap

MODES = {  # name -> layout (the backend is HF sdpa for padded, the chosen pbrl backend otherwise)
    "standard_padded": "padded",
    "prefix_shared": "shared",
    "standard_packed": "packed",
    "prefix_shared_packed": "packed_shared",
}


@dataclass
class BenchConfig:
    model: TinyLMConfig = field(default_factory=lambda: TinyLMConfig(
        hidden_size=1024, num_layers=2, num_heads=16, num_kv_heads=8, intermediate_size=2752))
    profiles: tuple[str, ...] = tuple(PROFILES)
    scale: float = 0.25  # profile lengths x scale (CPU budgets)
    num_examples: int = 64
    batch_size: int = 16  # examples per step
    steps: int = 2  # batches timed per mode per round (the same batches every round)
    rounds: int = 3
    warmup: int = 1  # untimed steps per mode on the timed batches; warmup = steps gives every shape a first run
    backends: tuple[str, ...] = ("varlen",)  # pbrl backends for the masked modes
    pack: str = "step"  # packed rows: "step" = all sequences of a step in one row; "longest" = rows of the longest
    pad_to_multiple: int = 8
    device: str = "cpu"
    dtype: str = "float32"
    trl: bool = True
    activation_checkpointing: bool = False  # the paper's runs recompute activations (gradient checkpointing)
    vocab_words: int = 1000
    seed: int = 0


def _data(cfg: BenchConfig, profile: str):
    records = synthetic_records(profile, cfg.num_examples, vocab_words=cfg.vocab_words, seed=cfg.seed,
                                scale=cfg.scale)
    tok = word_tokenizer([f"w{i}" for i in range(cfg.vocab_words)])
    return records, tok, tokenize_records(records, tok)


def _batch(k: int, batch_size: int, n: int) -> list[int]:
    """Example indices of the k-th batch (every mode and TRL step through the same batches)."""
    return [(k * batch_size + j) % n for j in range(batch_size)]


def _time_steps(model, pairs, layout, cfg, pack_length, pad_id, rounds_out: list[float], n_steps: int, start: int):
    """Run ``n_steps`` DPO training steps on batches start, start+1, ...; append each step's seconds to
    ``rounds_out``."""
    dev = torch.device(cfg.device)
    opt = model._bench_opt
    ref = torch.zeros(len(pairs), 2)
    lengths = response_lengths(pairs)
    for s in range(n_steps):
        idx = _batch(start + s, cfg.batch_size, len(pairs))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        # HF's own kernels need no tile alignment: the padded baseline pads to a multiple of 8 at most
        pad = min(8, cfg.pad_to_multiple) if layout == "padded" else cfg.pad_to_multiple
        batch = build_batch([pairs[j] for j in idx], layout, pack_length=pack_length, pad_to_multiple=pad,
                            pad_id=pad_id).to(dev)
        logps = model_branch_logps(model, batch)
        loss = dpo_loss(logps, ref[idx].to(dev), lengths[idx].to(dev)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        rounds_out.append(time.perf_counter() - t0)


def pass_seconds(step_times: list[float], steps: int) -> float:
    """Seconds of one pass over the ``steps`` batches: per batch the median over rounds, summed.

    ``step_times`` is round-major: [round 0 batch 0, round 0 batch 1, ..., round 1 batch 0, ...].
    """
    if not step_times or len(step_times) % steps:
        raise ValueError(f"expected rounds x {steps} step times, got {len(step_times)}")
    return sum(statistics.median(step_times[s::steps]) for s in range(steps))


def _trl_step_times(model, records, tok, cfg: BenchConfig) -> list[float]:
    """Step times of TRL's DPOTrainer on the same model (a copy, HF sdpa), records and batches, round-major."""
    import datasets
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if cfg.device == "cuda":
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if cfg.device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t0)

    m = copy.deepcopy(model)
    use_backend(m, "hf_sdpa")
    # the warm-up batches, then the timed ones, in order (sequential sampler): the batches the other modes ran
    batches = [*range(1, 1 + cfg.warmup), *(list(range(1, 1 + cfg.steps)) * cfg.rounds)]
    order = [i for k in batches for i in _batch(k, cfg.batch_size, len(records))]
    ds = datasets.Dataset.from_list([{"prompt": records[i].prompt, "chosen": records[i].chosen,
                                      "rejected": records[i].rejected} for i in order])
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        args = DPOConfig(
            output_dir=tmp, per_device_train_batch_size=cfg.batch_size, max_steps=len(batches),
            learning_rate=1e-5, precompute_ref_log_probs=True, report_to="none", save_strategy="no",
            logging_steps=10_000, use_cpu=cfg.device == "cpu", bf16=cfg.dtype == "bfloat16", max_length=None,
            disable_tqdm=True, dataloader_num_workers=0, seed=cfg.seed, train_sampling_strategy="sequential",
            activation_checkpointing=cfg.activation_checkpointing,
            activation_checkpointing_kwargs={"use_reentrant": False},
        )
        trainer = DPOTrainer(model=m, args=args, train_dataset=ds, processing_class=tok, callbacks=[Timer()])
        trainer.train()
    del m, trainer
    return times[cfg.warmup:]


def run_profiles(cfg: BenchConfig, log=print) -> list[dict]:
    """One row per (profile, backend): samples/s of every mode and the ratios. Denormals are flushed to zero for
    every mode and TRL alike, as ``pbrl llm dpo`` does: saturated DPO losses otherwise slow some CPU steps 8x."""
    with denormals_flushed():
        return _run_profiles(cfg, log)


def _run_profiles(cfg: BenchConfig, log) -> list[dict]:
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]
    rows = []
    for profile in cfg.profiles:
        records, tok, pairs = _data(cfg, profile)
        timed = [pairs[i] for k in range(1, 1 + cfg.steps) for i in _batch(k, cfg.batch_size, len(pairs))]
        P = [len(p.prompt) for p in timed]
        C = [len(p.chosen) for p in timed]
        R = [len(p.rejected) for p in timed]
        bound = (2 * sum(P) + sum(C) + sum(R)) / (sum(P) + sum(C) + sum(R) + len(timed))
        longest = max(len(p.prompt) + len(p.chosen) + len(p.rejected) + 1 for p in pairs)
        pack_length = -(-longest // cfg.pad_to_multiple) * cfg.pad_to_multiple
        if cfg.pack == "step":
            pack_length = 1 << 30  # first-fit-decreasing then puts everything into one row
        elif cfg.pack != "longest":
            fail(f"pack: expected 'step' or 'longest', got {cfg.pack!r}")
        model = build_model(TinyLMConfig(**{**asdict(cfg.model), "vocab_size": len(tok)}), dtype=dtype,
                            seed=cfg.seed).to(cfg.device)
        if cfg.activation_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        model._bench_opt = adam(model.parameters(), 1e-5, decoupled=True)  # fused, as pbrl's and HF's trainers
        # padded runs once (HF sdpa); every backend's masked modes join the same interleaved rounds, so that a
        # change of the machine's state (clocks, allocator, compile caches) hits all of them alike
        runs = [("standard_padded", "hf_sdpa")]
        runs += [(m, b) for b in cfg.backends for m in MODES if m != "standard_padded"]
        failed: set[str] = set()
        for m, b in runs:  # warm-up (compiles, allocator) outside the timed rounds
            if b in failed:
                continue
            try:
                use_backend(model, b)
                _time_steps(model, pairs, MODES[m], cfg, pack_length, tok.pad_token_id, [], cfg.warmup, 1)
            except Exception as e:  # a backend that cannot run this shape is reported and left out, not fatal
                if b == "hf_sdpa":
                    raise
                log(f"{profile}: backend {b} failed in {m}, left out: {type(e).__name__}: {e}")
                failed.add(b)
        runs = [r for r in runs if r[1] not in failed]
        times: dict[tuple[str, str], list[float]] = {r: [] for r in runs}
        for r in range(cfg.rounds):
            for m, b in runs[r % len(runs):] + runs[: r % len(runs)]:
                use_backend(model, b)
                _time_steps(model, pairs, MODES[m], cfg, pack_length, tok.pad_token_id, times[m, b], cfg.steps, 1)
        for backend in dict.fromkeys(b for _, b in runs[1:]):
            sel = {m: times[m, "hf_sdpa" if m == "standard_padded" else backend] for m in MODES}
            sps = {m: cfg.batch_size * cfg.steps / pass_seconds(t, cfg.steps) for m, t in sel.items()}
            row = {"profile": profile, "backend": backend, "median_P": statistics.median(P),
                   "median_C": statistics.median(C), "median_R": statistics.median(R), "bound": bound,
                   "params": num_parameters(model), **{f"sps_{m}": v for m, v in sps.items()}}
            row["speedup_shared"] = sps["prefix_shared"] / sps["standard_padded"]
            row["speedup_packed"] = sps["prefix_shared_packed"] / sps["standard_packed"]
            row["step_ms"] = {m: [round(1e3 * x, 2) for x in t] for m, t in sel.items()}
            rows.append(row)
            log(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}))
        if cfg.trl:
            try:
                t = _trl_step_times(model, records, tok, cfg)
                trl_sps = cfg.batch_size * cfg.steps / pass_seconds(t, cfg.steps)
                log(json.dumps({"profile": profile, "trl_step_ms": [round(1e3 * x, 2) for x in t]}))
            except Exception as e:  # the anchor is optional: report why it is missing
                log(f"trl failed on {profile}: {type(e).__name__}: {e}")
                trl_sps = float("nan")
            for row in rows:
                if row["profile"] == profile:
                    row["sps_trl"] = trl_sps
            log(json.dumps({"profile": profile, "sps_trl": trl_sps}))
        del model
    return rows


def markdown(
    rows: list[dict], cfg: BenchConfig, title: str, extra: str = "", timing: str | None = None
) -> str:
    """The results table with the paper's targets next to the measured ratios (``timing``: how samples/s was
    estimated, when not by ``pass_seconds`` on ``cfg``)."""
    p = rows[0]["params"] if rows else 0
    timing = timing or (
        f"every mode trains on the same {cfg.steps} batches in each of {cfg.rounds} interleaved rounds; samples/s = "
        f"{cfg.batch_size * cfg.steps} examples / sum over the batches of the median step time over rounds. "
        f"P / C / R and the token bound are over the same examples.")
    out = [f"# {title}", "",
           f"Model: {cfg.model.arch}, hidden {cfg.model.hidden_size}, {cfg.model.num_layers} layers, "
           f"{cfg.model.num_heads} heads ({cfg.model.num_kv_heads} kv), MLP {cfg.model.intermediate_size}, "
           f"{p / 1e6:.2f}M parameters, {cfg.dtype}, device {cfg.device}. Packed rows: "
           f"{'every sequence of a step in one unpadded row' if cfg.pack == 'step' else 'the longest sequence'}. "
           f"Synthetic data: {cfg.num_examples} examples per profile, lengths = paper profile x {cfg.scale}. "
           f"Batch {cfg.batch_size} examples per step (forward + backward + AdamW); {timing}", "",
           "| profile | backend | P / C / R (median tokens) | token bound | padded | shared | packed | shared+packed "
           "| TRL | shared vs padded (paper) | shared+packed vs packed (paper) | shared vs TRL | shared+packed vs TRL |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pu, pp = PAPER_SPEEDUPS[r["profile"]]
        trl = r.get("sps_trl", float("nan"))
        mark = lambda x, t: f"{x:.2f} ({t:.2f}) {'✓' if x >= t else '✗'}"  # noqa: E731
        out.append(
            f"| {r['profile']} | {r['backend']} | {r['median_P']:.0f} / {r['median_C']:.0f} / {r['median_R']:.0f} "
            f"| {r['bound']:.2f} | {r['sps_standard_padded']:.2f} | {r['sps_prefix_shared']:.2f} "
            f"| {r['sps_standard_packed']:.2f} | {r['sps_prefix_shared_packed']:.2f} | {trl:.2f} "
            f"| {mark(r['speedup_shared'], pu)} | {mark(r['speedup_packed'], pp)} "
            f"| {r['sps_prefix_shared'] / trl:.2f} | {r['sps_prefix_shared_packed'] / trl:.2f} |"
        )
    out += ["", "samples/s columns: padded = standard_padded (HF sdpa, causal), shared = prefix_shared, packed = "
            "standard_packed, shared+packed = prefix_shared_packed (these three through the named backend). "
            "✓/✗: measured ratio at least / below the paper's (Wang & Hegde 2024, 8xH100, FA3 baseline).", extra]
    return "\n".join(out) + "\n"


def convergence(out_png: Path, steps_epochs: int = 3, log=print) -> str:
    """Short DPO runs, standard padded vs prefix-shared packed, same seed; loss curves overlaid in a figure."""
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pbrl.llm.dpo import DpoConfig, train_dpo
    from pbrl.llm.prefs_data import synthetic_pairs

    pairs = synthetic_pairs("hh_rlhf", 256, 64, seed=1, scale=0.25)
    curves = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, layout, backend in [("standard padded", "padded", "hf_sdpa"),
                                      ("prefix shared + packed", "packed_shared", "sdpa")]:
            cfg = DpoConfig(out=f"{tmp}/{layout}", layout=layout, backend=backend, batch_size=16, lr=1e-3,
                            epochs=steps_epochs, progress=False, checkpoint_every=10_000, seed=0,
                            model=TinyLMConfig(hidden_size=64, num_layers=2, intermediate_size=128))
            res = train_dpo(cfg, pairs=pairs)
            curves[name] = [r["dpo/loss"] for r in res["history"]]
    a, b = curves.values()
    diff = max(abs(x - y) for x, y in zip(a, b))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for (name, c), style in zip(curves.items(), ["-", "--"]):
        ax.plot(range(1, len(c) + 1), c, style, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("DPO loss")
    ax.set_title("DPO on synthetic hh_rlhf-profile data (tiny Llama, CPU, float32)")
    ax.legend()
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp_png = out_png.with_suffix(".tmp.png")
    fig.savefig(tmp_png, dpi=120)
    tmp_png.replace(out_png)
    text = (f"Convergence: {len(a)} DPO steps (batch 16, lr 1e-3, 256 synthetic hh_rlhf-profile pairs at scale 0.25, "
            f"2-layer hidden-64 Llama, float32): final loss {a[-1]:.4f} (standard padded) vs {b[-1]:.4f} (prefix "
            f"shared + packed); largest per-step loss difference {diff:.2e}. Figure: {out_png.name}.")
    log(text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run, prints only")
    ap.add_argument("--no-trl", action="store_true", help="skip the TRL anchor")
    ap.add_argument("--out", default="results", help="folder for prefix_sharing.md and the figure")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--activation-checkpointing", action="store_true",
                    help="recompute activations in backward (the paper's setup) -> prefix_sharing-ckpt.md")
    ap.add_argument("--default-heap", action="store_true",
                    help="keep glibc's default heap (the pbrl command line calls reuse_freed_heap)")
    a = ap.parse_args(argv)
    # as `pbrl llm dpo` runs: freed activations stay in the heap (all modes and TRL share the process)
    heap = "glibc's default heap"
    if not a.default_heap:
        heap = "freed blocks kept in the heap" if reuse_freed_heap() else heap + " (reuse_freed_heap unavailable)"
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = BenchConfig(trl=not a.no_trl, activation_checkpointing=a.activation_checkpointing)
    if a.quick:
        cfg = BenchConfig(model=TinyLMConfig(hidden_size=64, num_layers=2, intermediate_size=128),
                          profiles=("hh_rlhf", "tldr"), scale=0.1, num_examples=16, rounds=1, steps=1,
                          trl=not a.no_trl)
    rows = run_profiles(cfg)
    if a.quick:
        print(markdown(rows, cfg, "quick run"))
        return 0
    out = Path(a.out)
    name = "prefix_sharing-ckpt" if a.activation_checkpointing else "prefix_sharing"
    conv = "" if a.activation_checkpointing else convergence(out / "prefix_sharing_convergence.png") + "\n\n"
    load = os.getloadavg()[0]  # other processes on the machine slow every mode; the interleaving spreads it
    env = (f"Measured by baselines/prefix_sharing_throughput.py on {platform.machine()} CPU, "
           f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, Python {sys.version.split()[0]}, "
           f"{heap}; "
           f"1-minute load average at the end {load:.1f} on {os.cpu_count()} cores.")
    title = "Prefix-sharing DPO throughput (CPU" + (", activation checkpointing" if a.activation_checkpointing else "")
    text = markdown(rows, cfg, title + ")", extra="\n" + conv + env)
    atomic_write_text(str(out / f"{name}.md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
