"""Direct Preference Optimization with precomputed reference log-probs, prefix sharing and packing.

DPO (Rafailov et al., 2023, eq. 7): with policy log-probs pi_c, pi_r and reference log-probs ref_c, ref_r of the
chosen and rejected responses, h = (pi_c - ref_c) - (pi_r - ref_r) and

    sigmoid: L = -log sigmoid(beta h)            (with label smoothing e: -(1-e) log s(beta h) - e log s(-beta h))
    hinge:   L = max(0, 1 - beta h)              (SLiC, Zhao et al., 2023)
    IPO:     L = (h' - 1/(2 beta))^2             (Azar et al., 2023; h' from length-normalized log-probs)

plus an optional NLL term on the chosen response (nll_weight * -pi_c / |c|, RPO, Pang et al., 2024). The
reference model is the initial policy: its log-probs are computed once before training (or read from a file), so
no reference model stays in memory. Log-probs come from ``pbrl.llm.attention.model_branch_logps`` on a batch in any
layout of ``pbrl.llm.prefix_sharing`` (prefix sharing gives the same values, so the same training curve).

The trainer: AdamW, gradient accumulation, a progress bar with samples/s and tokens/s, metrics to jsonl,
checkpoints (resume reaches the same weights as an uninterrupted run), data parallel across processes with
``accelerate`` (each process takes its share of every step's examples; DDP averages the gradients).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from pbrl.errors import PbrlError
from pbrl.llm.attention import model_branch_logps
from pbrl.llm.models import TinyLMConfig, build_model, load_model, multi_process_accelerator, num_parameters
from pbrl.llm.prefix_sharing import DpoBatch, Layout, TokenizedPair, build_batch, response_lengths
from pbrl.runs import RunFolder, RunSettings, fingerprint_file
from pbrl.utils import (
    adam,
    atomic_torch_save,
    atomic_write_json,
    denormals_flushed,
    resolve_device,
    safe_torch_load,
    set_seed,
    use_threads,
)

LossType = Literal["sigmoid", "ipo", "hinge"]


# ----------------------------------------------------------------------------------------------- pure losses
def dpo_margins(policy: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """h = (pi_c - ref_c) - (pi_r - ref_r). policy, reference [N, 2] (chosen, rejected) -> [N]."""
    return (policy[:, 0] - reference[:, 0]) - (policy[:, 1] - reference[:, 1])


def sigmoid_loss(policy: torch.Tensor, reference: torch.Tensor, beta: float, label_smoothing: float = 0.0):
    """DPO: -(1-e) log sigmoid(beta h) - e log sigmoid(-beta h), per example [N]."""
    h = dpo_margins(policy, reference)
    return -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)


def hinge_loss(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> torch.Tensor:
    """SLiC-style hinge: max(0, 1 - beta h), per example [N]."""
    return torch.relu(1 - beta * dpo_margins(policy, reference))


def ipo_loss(policy: torch.Tensor, reference: torch.Tensor, beta: float, lengths: torch.Tensor) -> torch.Tensor:
    """IPO: (h' - 1/(2 beta))^2 with log-probs divided by response lengths [N, 2], per example [N]."""
    h = dpo_margins(policy / lengths, reference / lengths)
    return (h - 1 / (2 * beta)) ** 2


def dpo_loss(
    policy: torch.Tensor,
    reference: torch.Tensor,
    lengths: torch.Tensor,
    *,
    loss: LossType = "sigmoid",
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    nll_weight: float = 0.0,
) -> torch.Tensor:
    """Per-example loss [N] of the chosen type plus nll_weight * (-pi_c / |c|)."""
    if loss == "sigmoid":
        out = sigmoid_loss(policy, reference, beta, label_smoothing)
    elif loss == "hinge":
        out = hinge_loss(policy, reference, beta)
    elif loss == "ipo":
        out = ipo_loss(policy, reference, beta, lengths)
    else:
        raise PbrlError(f"loss: expected sigmoid, ipo or hinge, got {loss!r}")
    if nll_weight:
        out = out - nll_weight * policy[:, 0] / lengths[:, 0]
    return out


# ----------------------------------------------------------------------------------------------- config
@dataclass
class DpoConfig(RunSettings):
    """DPO training run."""

    data: str = ""
    """Preference records: a JSONL file or an HF datasets folder ({prompt, chosen, rejected})."""
    out: str = "runs/dpo"
    """Output folder: config.json, metrics.jsonl, ref_logps.pt, checkpoint/, model/."""
    model_path: str | None = None
    """A local HF model folder to start from; by default a tiny model of ``model`` is built (random init)."""
    model: TinyLMConfig = field(default_factory=TinyLMConfig)
    """Shape of the tiny model built when no model_path is given (vocab_size follows the tokenizer)."""
    tokenizer_path: str | None = None
    """A local tokenizer folder; by default model_path's when it holds one, else one is trained on the data (see
    ``tokenizer``)."""
    tokenizer: Literal["word", "bpe"] = "word"
    """Tokenizer to train when no tokenizer_path is given: one token per word, or byte-level BPE."""
    bpe_vocab_size: int = 512
    """Vocabulary size of the trained BPE tokenizer."""
    max_prompt_length: int | None = None
    """Keep at most this many (last) prompt tokens."""
    max_completion_length: int | None = None
    """Keep at most this many (first) response tokens."""
    loss: LossType = "sigmoid"
    """DPO loss: sigmoid (DPO), ipo or hinge."""
    beta: float = 0.1
    """Inverse temperature of the implicit reward."""
    label_smoothing: float = 0.0
    """Conservative DPO label smoothing (sigmoid loss only)."""
    nll_weight: float = 0.0
    """Weight of the NLL term on chosen responses (0 = none)."""
    layout: Layout = "packed_shared"
    """Batch layout: padded (standard), packed, shared (prefix sharing) or packed_shared."""
    backend: str = "auto"
    """Attention backend: sdpa (dense mask), varlen (sdpa per document), flex (FlexAttention) or triton; hf_sdpa
    for the padded layout. auto = hf_sdpa for padded, else varlen on CPU (the fastest there, see
    baselines/prefix_sharing_throughput.py) and flex on GPUs."""
    pack_length: int | None = None
    """Row length of the packed layouts (default: the longest sequence of the data set)."""
    pad_to_multiple: int = 8
    """Round row lengths up to a multiple of this."""
    batch_size: int = 16
    """Examples per optimizer step (over all processes and micro-batches)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    lr: float = 5e-4
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping (0 = off)."""
    epochs: int = 1
    """Passes over the data."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (default: epochs * examples / batch_size)."""
    ref_logps: str | None = None
    """A file of precomputed reference log-probs [N, 2] (torch); by default computed with the initial model."""
    checkpoint_every: int = 50
    """Save a checkpoint every this many steps (and at the end)."""
    dtype: Literal["float32", "bfloat16", "float64"] = "float32"
    """Parameter dtype (bf16 on GPUs; log-probs are accumulated in float32 either way)."""
    device: str = "auto"
    """cpu, cuda, or auto (cuda when available); with accelerate, each process takes its own device."""


# ----------------------------------------------------------------------------------------------- trainer
def resolve_backend(backend: str, layout: Layout, device: torch.device) -> str:
    """The `auto` backend: HF's sdpa for the padded layout, else varlen on CPU and flex on GPUs."""
    if backend != "auto":
        return backend
    if layout == "padded":
        return "hf_sdpa"
    return "varlen" if device.type == "cpu" else "flex"


class BranchLogps(torch.nn.Module):
    """Wraps a causal LM so that DDP sees one forward: batch fields -> per-branch log-probs [N, 2]."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: DpoBatch) -> torch.Tensor:
        return model_branch_logps(self.model, batch)


def reference_logps(
    model: torch.nn.Module,
    pairs: list[TokenizedPair],
    *,
    layout: Layout,
    batch_size: int = 16,
    pack_length: int | None = None,
    pad_to_multiple: int = 8,
    pad_id: int = 0,
) -> torch.Tensor:
    """Log-probs [N, 2] of every pair under ``model`` (no gradients), in the training layout; float32 on CPU."""
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(pairs), batch_size):
            b = build_batch(pairs[i : i + batch_size], layout, pack_length=pack_length,
                            pad_to_multiple=pad_to_multiple, pad_id=pad_id).to(device)
            out.append(model_branch_logps(model, b).float().cpu())
    return torch.cat(out)


def _load_data(cfg: DpoConfig):
    from pbrl.llm.prefs_data import load_preferences, tokenize_records
    from pbrl.llm.tokenizer import bpe_tokenizer, load_tokenizer, word_tokenizer

    if not cfg.data:
        raise PbrlError("data: expected a JSONL file or datasets folder of preference records")
    records = load_preferences(cfg.data)
    path = cfg.tokenizer_path
    if not path and cfg.model_path and (Path(cfg.model_path) / "tokenizer_config.json").is_file():
        path = cfg.model_path  # the model's own tokenizer: one trained afresh would give it other ids
    if path:
        tok = load_tokenizer(path)
    else:
        texts = [t for r in records for t in (r.prompt, r.chosen, r.rejected) if isinstance(t, str)]
        tok = word_tokenizer(texts) if cfg.tokenizer == "word" else bpe_tokenizer(texts, cfg.bpe_vocab_size)
    pairs = tokenize_records(records, tok, max_prompt_length=cfg.max_prompt_length,
                             max_completion_length=cfg.max_completion_length)
    return tok, pairs


def _device(cfg: DpoConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return resolve_device(cfg.device)


# config fields that do not change the training trajectory: a resume may differ in them (max_steps and epochs
# only move the end; the data and reference files are compared by their bytes instead of their paths)
_NOT_FINGERPRINTED = ("data", "out", "resume", "progress", "device", "checkpoint_every", "max_steps", "epochs",
                      "ref_logps", "threads")


def run_fingerprint(cfg: DpoConfig, pairs: list[TokenizedPair]) -> dict:
    """What a resume of ``cfg.out`` must match: the config fields that change the run, the sha256 of the data
    file's bytes (of every file of a datasets folder) and of the reference log-probs file, and of the tokenized
    pairs (which also covers the tokenizer)."""
    fp = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_FINGERPRINTED}
    if cfg.data:
        fp["data_sha256"] = _path_fingerprint(Path(cfg.data))
    if cfg.ref_logps:
        fp["ref_logps_sha256"] = _path_fingerprint(Path(cfg.ref_logps))
    h = hashlib.sha256()
    for p in pairs:
        h.update(json.dumps([p.prompt, p.chosen, p.rejected]).encode())
    fp["tokens_sha256"] = h.hexdigest()
    return fp


def _path_fingerprint(path: Path) -> str | None:
    if path.is_file():
        return fingerprint_file(path)
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(q for q in path.rglob("*") if q.is_file()):
            h.update(f"{f.relative_to(path)}:{fingerprint_file(f)}".encode())
        return h.hexdigest()
    return None


def _load_checkpoint(out: Path, model, optimizer) -> tuple[int, list[dict]]:
    """Weights, optimizer state, step and history from ``out/checkpoint/`` (safe loader; one PbrlError naming the
    file when it is missing, truncated, crafted or does not fit the model)."""
    ckpt = out / "checkpoint"
    weights = safe_torch_load(ckpt / "model.pt", what="DPO model checkpoint")
    opt_state = safe_torch_load(ckpt / "optimizer.pt", what="DPO optimizer checkpoint")
    try:
        state = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
        step, history = int(state["step"]), list(state["history"])
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as e:
        raise PbrlError(f"{ckpt / 'state.json'}: unreadable checkpoint state ({type(e).__name__})") from None
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, KeyError, AttributeError) as e:
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise PbrlError(f"{ckpt / 'model.pt'}: does not fit the model ({type(e).__name__}: {msg})") from None
    try:
        optimizer.load_state_dict(opt_state)
    except (RuntimeError, TypeError, KeyError, ValueError, AttributeError) as e:
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise PbrlError(f"{ckpt / 'optimizer.pt'}: does not fit the optimizer ({type(e).__name__}: {msg})") from None
    return step, history


def _check_ref(ref: object, path: object, n: int) -> torch.Tensor:
    if not isinstance(ref, torch.Tensor) or tuple(ref.shape) != (n, 2) or not ref.is_floating_point():
        raise PbrlError(f"{path}: expected a float tensor of shape [{n}, 2] (chosen, rejected log-probs)")
    return ref


def _save_checkpoint(out: Path, model, optimizer, step: int, history: list[dict]) -> None:
    """Write checkpoint/ as a whole: build it in a temporary folder, then swap it in."""
    tmp, final, old = out / "checkpoint.tmp", out / "checkpoint", out / "checkpoint.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    atomic_torch_save(model.state_dict(), str(tmp / "model.pt"))
    atomic_torch_save(optimizer.state_dict(), str(tmp / "optimizer.pt"))
    atomic_write_json(str(tmp / "state.json"), {"step": step, "history": history})
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


@denormals_flushed()
def train_dpo(cfg: DpoConfig, pairs: list[TokenizedPair] | None = None, tokenizer=None) -> dict:
    """Train a policy with DPO on ``cfg.data`` (or on ``pairs`` given directly). Returns the final metrics and the
    per-step history. Writes config.json, metrics.jsonl, ref_logps.pt, checkpoint/ and model/ under ``cfg.out``.
    Denormals are flushed to zero while it runs (see ``pbrl.utils.denormals_flushed``).
    """
    if cfg.batch_size < 1 or cfg.grad_accum < 1 or cfg.batch_size % cfg.grad_accum:
        raise PbrlError(f"batch_size ({cfg.batch_size}) must be a positive multiple of grad_accum ({cfg.grad_accum})")
    if cfg.beta <= 0:
        raise PbrlError(f"beta: expected > 0, got {cfg.beta}")
    if cfg.threads is not None:  # once, before any tensor work (a bad count is refused here, nothing written)
        use_threads(cfg.threads)
    accelerator = multi_process_accelerator(cfg.device)  # launched by `accelerate launch` / torchrun: one per device
    rank = accelerator.process_index if accelerator else 0
    world = accelerator.num_processes if accelerator else 1
    device = accelerator.device if accelerator else _device(cfg)
    if cfg.batch_size % (world * cfg.grad_accum):
        raise PbrlError(f"batch_size ({cfg.batch_size}) must divide by processes x grad_accum ({world} x {cfg.grad_accum})")

    if pairs is None:
        tokenizer, pairs = _load_data(cfg)
    n = len(pairs)
    out = Path(cfg.out)
    fingerprint = run_fingerprint(cfg, pairs)
    # a resume of a folder holding another run (other data, other settings) is refused before anything is read
    # from it or written to it
    RunFolder(out, dataclasses.asdict(cfg), fingerprint=fingerprint, resume=cfg.resume, write=False)
    pad_id = tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None else 0
    set_seed(cfg.seed)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}[cfg.dtype]
    backend = resolve_backend(cfg.backend, cfg.layout, device)
    if cfg.model_path:
        model = load_model(cfg.model_path, backend=backend, dtype=dtype)
    else:
        vocab = max(len(tokenizer) if tokenizer is not None else 0,
                    1 + max(max(p.prompt + p.chosen + p.rejected) for p in pairs))
        model = build_model(dataclasses.replace(cfg.model, vocab_size=vocab), backend=backend, dtype=dtype,
                            seed=cfg.seed)
    model.to(device)
    pack_length = cfg.pack_length
    if pack_length is None and cfg.layout in ("packed", "packed_shared"):
        # the longest unit of the data set, so every batch packs into rows of one fixed length
        longest = max(len(p.prompt) + len(p.chosen) + len(p.rejected) + 1 for p in pairs)
        pack_length = -(-longest // cfg.pad_to_multiple) * cfg.pad_to_multiple
    layout_kw = dict(pack_length=pack_length, pad_to_multiple=cfg.pad_to_multiple, pad_id=pad_id)

    # reference log-probs: the initial policy's, computed once (the file is reused on resume)
    ref_path = out / "ref_logps.pt"
    save_ref = False
    if cfg.ref_logps:
        ref = _check_ref(safe_torch_load(cfg.ref_logps, what="reference log-probs file"), cfg.ref_logps, n)
    elif ref_path.exists() and cfg.resume:
        ref = _check_ref(safe_torch_load(ref_path, what="reference log-probs file"), ref_path, n)
    else:
        model.eval()
        ref = reference_logps(model, pairs, layout=cfg.layout, batch_size=max(1, cfg.batch_size // cfg.grad_accum),
                              **layout_kw)
        save_ref = rank == 0
    if not torch.isfinite(ref).all():
        raise PbrlError("reference log-probs: found non-finite values")
    lengths = response_lengths(pairs)

    optimizer = adam(model.parameters(), cfg.lr, weight_decay=cfg.weight_decay, decoupled=True)
    steps_per_epoch = max(1, n // cfg.batch_size)
    total = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * steps_per_epoch
    step, history = 0, []
    if cfg.resume and (out / "checkpoint").is_dir():
        step, history = _load_checkpoint(out, model, optimizer)
    # every input is checked: now the folder is written (config.json, emptied or rewound metrics.jsonl)
    # the keys earlier releases wrote stay at the top level, beside the run folder's fingerprint
    run = RunFolder(out, dataclasses.asdict(cfg), fingerprint=fingerprint, resume=cfg.resume, device=str(device),
                    write=rank == 0, extra={"num_parameters": num_parameters(model), "num_examples": n,
                                            "processes": world})
    run.rewind(step)  # rows a killed run logged after its last checkpoint come again: drop them
    if save_ref:
        atomic_torch_save(ref, str(ref_path))
    wrapped = BranchLogps(model)
    if accelerator is not None:
        wrapped, optimizer = accelerator.prepare(wrapped, optimizer)
    wrapped.train()

    bar = None
    if cfg.progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=step, desc="dpo", unit="step")
    micro = cfg.batch_size // (world * cfg.grad_accum)
    try:
        while step < total:
            epoch, k = divmod(step, steps_per_epoch)
            order = np.random.default_rng(cfg.seed + epoch).permutation(n)  # the data order depends on the step only
            idx = order[k * cfg.batch_size : (k + 1) * cfg.batch_size][rank::world]
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            sums = {"loss": 0.0, "margin": 0.0, "acc": 0.0, "chosen": 0.0, "rejected": 0.0}
            tokens = 0
            for m in range(cfg.grad_accum):
                part = idx[m * micro : (m + 1) * micro].tolist()
                batch = build_batch([pairs[i] for i in part], cfg.layout, **layout_kw).to(device)
                tokens += batch.num_tokens
                sync = m == cfg.grad_accum - 1 or accelerator is None
                ctx = contextlib.nullcontext() if sync else accelerator.no_sync(wrapped)
                with ctx:
                    logps = wrapped(batch)  # [n, 2]
                    r, ln = ref[part].to(device), lengths[part].to(device)
                    losses = dpo_loss(logps, r, ln, loss=cfg.loss, beta=cfg.beta,
                                      label_smoothing=cfg.label_smoothing, nll_weight=cfg.nll_weight)
                    # mean over the step's examples of this process (DDP then averages over processes)
                    (losses.sum() / len(idx)).backward()
                with torch.no_grad():
                    rew = cfg.beta * (logps.float() - r.float())  # implicit rewards [n, 2]
                    sums["loss"] += float(losses.sum())
                    sums["margin"] += float((rew[:, 0] - rew[:, 1]).sum())
                    sums["acc"] += float((rew[:, 0] > rew[:, 1]).float().sum())
                    sums["chosen"] += float(rew[:, 0].sum())
                    sums["rejected"] += float(rew[:, 1].sum())
            grad_norm = 0.0
            if cfg.max_grad_norm > 0:
                params = wrapped.parameters()
                if accelerator is not None:
                    grad_norm = float(accelerator.clip_grad_norm_(params, cfg.max_grad_norm))
                else:
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
            step += 1
            count = float(len(idx))
            if accelerator is not None:  # metrics over all processes' examples
                t = torch.tensor([*sums.values(), count, float(tokens)], dtype=torch.float64, device=device)
                t = accelerator.reduce(t, reduction="sum").tolist()
                sums, count, tokens = dict(zip(sums, t[:-2])), t[-2], int(t[-1])
            row = {
                "step": step,
                "dpo/loss": sums["loss"] / count,
                "dpo/reward_margin": sums["margin"] / count,
                "dpo/reward_accuracy": sums["acc"] / count,
                "dpo/chosen_reward": sums["chosen"] / count,
                "dpo/rejected_reward": sums["rejected"] / count,
                "dpo/grad_norm": grad_norm,
                "perf/samples_per_s": count / dt,
                "perf/tokens_per_s": tokens / dt,
            }
            if not math.isfinite(row["dpo/loss"]):
                raise PbrlError(f"step {step}: the loss is not finite ({row['dpo/loss']}); lower lr or check the data")
            history.append(row)
            run.log(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{row['dpo/loss']:.4f}", acc=f"{row['dpo/reward_accuracy']:.2f}",
                                samples_s=f"{row['perf/samples_per_s']:.1f}", tok_s=f"{row['perf/tokens_per_s']:.0f}")
            if rank == 0 and (step % cfg.checkpoint_every == 0 or step == total):
                _save_checkpoint(out, model, optimizer if accelerator is None else optimizer.optimizer, step, history)
    finally:
        if bar is not None:
            bar.close()
    if rank == 0:
        final, tmp = out / "model", out / "model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    return {"final": history[-1] if history else {}, "history": history, "num_parameters": num_parameters(model),
            "rank": rank}
