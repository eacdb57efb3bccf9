"""Supervised fine-tuning on chats with assistant-only loss masking and packing: `pbrl llm sft`.

Data: a JSONL file, one object per line, either ``{"messages": [{role, content}, ...]}`` (what `pbrl llm chat-data`
writes to sft.jsonl) or ``{"prompt", "completion"}`` (strings, or lists of messages; a string prompt is one user
turn and a string completion one assistant turn). Each conversation is rendered with the tokenizer's chat template
(ChatML) and tokenized with ``pbrl.llm.tokenizer.assistant_mask``: the loss trains the content of every assistant
turn and the ``<|im_end|>`` that closes it (so the model learns to stop); headers, user and system turns are masked
(labels -100, as in the LIONs recipe, Yu et al. 2024, and TRL's ``assistant_only_loss``). ``loss_on="all"``
trains every token of the conversation instead (headers, system and user turns too; still never padding, and
packed documents still never attend to one another): the "loss masking off" side of the ablation.

Filters (counted and reported in summary.json): a conversation longer than ``max_length`` tokens is truncated
(its first ``max_length`` tokens kept), dropped or refused (``overlong``); then one whose labels are more than
``max_masked_fraction`` (0.9) masked is dropped. LIONs applies that 90% filter to packed 8192-token chunks; here it
is applied per conversation, before packing, so an example is kept or dropped whatever it is packed with. It
applies to assistant masking only: with ``loss_on="all"`` nothing is masked and no conversation is dropped by it.

Loss: the token mean over every trained token of an optimizer step (all its micro-batches),

    L = -1 / N_step  sum_{examples i in step} sum_{t : label_{i,t} != -100} log p(x_{i,t+1} | x_{i,<=t}),

so gradient accumulation gives the gradient of the whole step's batch, and packing changes no number.

Layouts: ``packed``: each micro-batch's conversations are packed by best-fit decreasing into rows of exactly
``pack_length`` tokens; every token carries its document id and its position restarts at 0 per document; the
attention backends of ``pbrl.llm.attention`` (varlen / flex / Triton / sdpa with a dense mask) get the structure
as ``pbrl_layout`` and keep attention inside a document (no cross-document attention, unlike wrapped
concatenate-and-chunk packing). ``padded``: one right-padded row per conversation (HF's own sdpa), for comparison.
A batch is a ``pbrl.llm.prefix_sharing.DpoBatch`` with every token in the prompt branch (the mask rule is then
causal within a document) and example i's trained tokens in output slot 2 i, so ``model_branch_logps`` gives the
per-example log-likelihood sums (float32 accumulation, the output head only at trained positions).

Optimizer: AdamW with linear warmup and cosine decay (``pbrl.llm.pretrain.lr_at``). The data order and the
learning rate depend on the step only, so a resumed run reaches the same weights as an uninterrupted one. The run
folder (``pbrl.runs.RunFolder``): config.json (with the fingerprint a resume must match), metrics.jsonl,
checkpoint.pt, summary.json and model/ (``save_pretrained`` of the model and the tokenizer).

Data parallel (launched by ``torchrun`` or ``accelerate launch``; one process per device, gloo on CPU), as the DPO
trainer does: every process reads the whole data set and draws the same step order; process r of W takes the
step's conversations ``r, r + W, ...`` and lays out (packs) its own share, micro-batch by micro-batch; DDP
all-reduces the gradients of the last micro-batch (the others under ``no_sync``) and averages them. The rule that
makes the gradient the single-process one: every process divides its token sum by the *global* count N_step of
the step's trained tokens (known to all, no communication) and multiplies by W, so DDP's average
(1/W) sum_r W g_r / N_step is the gradient of L above, whatever each process's share of N_step and however its
share is packed. ``batch_size`` must divide by W x grad_accum. Rank 0 alone writes the run folder; a run may
resume with another process count (the trajectory is the same up to float rounding).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from pbrl.errors import PbrlError
from pbrl.llm.attention import model_branch_logps
from pbrl.llm.dpo import BranchLogps, resolve_backend
from pbrl.llm.models import TinyLMConfig, build_model, load_model, multi_process_accelerator, num_parameters
from pbrl.llm.prefix_sharing import IGNORE, PROMPT, DpoBatch
from pbrl.llm.pretrain import _load_checkpoint, _save_pretrained, lr_at
from pbrl.runs import RunFolder, RunSettings, fingerprint_file
from pbrl.utils import adam, denormals_flushed, read_json_lines, resolve_device, set_seed, use_threads


@dataclass
class SftConfig(RunSettings):
    """SFT run on chat data with assistant-only loss."""

    data: str = ""
    """Chat data: a JSONL file of {messages} or {prompt, completion} objects."""
    out: str = "runs/sft"
    """Output folder: config.json, metrics.jsonl, checkpoint.pt, summary.json, model/."""
    model_path: str | None = None
    """A local HF model folder to start from (e.g. the model/ of `pbrl llm pretrain`); by default a tiny model of
    `model` is built (random init)."""
    tokenizer_path: str | None = None
    """A local tokenizer folder with a chat template and a pad token (default: model_path)."""
    model: TinyLMConfig = field(default_factory=TinyLMConfig)
    """Shape of the tiny model built when no model_path is given (vocab_size follows the tokenizer)."""
    max_length: int = 1024
    """Longest conversation in tokens (see overlong)."""
    overlong: Literal["truncate", "drop", "refuse"] = "truncate"
    """A conversation over max_length: keep its first max_length tokens, drop it, or stop with an error."""
    loss_on: Literal["assistant", "all"] = "assistant"
    """Tokens the loss trains: assistant (each assistant turn's content and its end-of-turn token) or all (every
    token of the conversation; never padding): the loss-masking on/off ablation."""
    max_masked_fraction: float = 0.9
    """Drop a conversation whose labels are more than this fraction masked (the LIONs filter; assistant masking
    only: with loss_on=all nothing is masked)."""
    layout: Literal["packed", "padded"] = "packed"
    """packed: best-fit-decreasing rows of pack_length tokens with document masking; padded: a row per chat."""
    backend: str = "auto"
    """Attention backend: sdpa, varlen, flex, triton, or hf_sdpa (padded only); auto = hf_sdpa for padded, else
    varlen on CPU and flex on GPUs."""
    pack_length: int | None = None
    """Tokens per packed row (default: max_length rounded up to pad_to_multiple)."""
    pad_to_multiple: int = 8
    """Padded rows are rounded up to a multiple of this."""
    batch_size: int = 16
    """Conversations per optimizer step."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (batch_size must divide by it)."""
    lr: float = 5e-4
    """Peak AdamW learning rate."""
    min_lr_ratio: float = 0.1
    """The cosine decays to lr * min_lr_ratio at the last step."""
    warmup_steps: int = 10
    """Linear warmup steps."""
    weight_decay: float = 0.0
    """AdamW (decoupled) weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping (0 = off)."""
    epochs: int = 1
    """Passes over the conversations (when steps is not given)."""
    steps: int | None = None
    """Optimizer steps (default: epochs * conversations / batch_size). Sets the schedule's length."""
    stop_after: int | None = None
    """Stop (with a checkpoint) after this many steps without changing the schedule; a later run resumes."""
    checkpoint_every: int = 100
    """Save a checkpoint every this many steps (and at the end)."""
    dtype: Literal["float32", "bfloat16", "float64"] = "float32"
    """Parameter dtype (log-likelihoods are accumulated in float32 or wider)."""


# settings that do not change the trajectory (the data is compared by its bytes and its tokens instead)
_NOT_FINGERPRINTED = ("data", "out", "model_path", "tokenizer_path", "resume", "progress", "device",
                      "checkpoint_every", "stop_after", "threads")


@dataclass(frozen=True)
class SftExample:
    """One tokenized conversation: ids and the 0/1 mask of the tokens the loss trains on (``assistant_mask``)."""

    ids: list[int]
    mask: list[int]

    @property
    def num_trained(self) -> int:
        """Trained labels: the masked tokens after the first (the first token has no prediction)."""
        return sum(self.mask[1:])


# ----------------------------------------------------------------------------------------------- data
def _messages(value: object, where: str, role: str | None = None) -> list[dict]:
    """A list of {role, content} messages from a list (checked) or a string (one ``role`` turn)."""
    if isinstance(value, str) and role is not None:
        return [{"role": role, "content": value}]
    if not isinstance(value, list) or not value:
        raise PbrlError(f"{where}: expected a non-empty list of {{role, content}} messages")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise PbrlError(f"{where}[{i}]: expected {{'role': str, 'content': str}}, got {m!r:.80}")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def read_chats(path: str | Path) -> list[tuple[int, list[dict]]]:
    """(line number, messages) of every conversation of a JSONL file; one PbrlError naming the file and line for a
    missing file, a line that is not JSON, a row with neither form, or a conversation without a (non-empty)
    assistant turn."""
    path = Path(path)
    if not str(path) or not path.is_file():
        raise PbrlError(f"{path}: no such chat data file (expected JSONL of {{messages}} or {{prompt, completion}})")
    chats = []
    for n, obj in read_json_lines(path):
        where = f"{path}:{n}"
        if isinstance(obj, dict) and "messages" in obj:
            msgs = _messages(obj["messages"], f"{where}: messages")
        elif isinstance(obj, dict) and "prompt" in obj and "completion" in obj:
            msgs = (_messages(obj["prompt"], f"{where}: prompt", "user")
                    + _messages(obj["completion"], f"{where}: completion", "assistant"))
        else:
            raise PbrlError(f"{where}: expected an object with `messages` or with `prompt` and `completion`")
        turns = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
        if not turns:
            raise PbrlError(f"{where}: the conversation has no assistant turn to train on")
        for i in turns:
            if not msgs[i]["content"].strip():
                raise PbrlError(f"{where}: message {i} is an empty assistant turn")
        chats.append((n, msgs))
    if not chats:
        raise PbrlError(f"{path}: holds no conversations")
    return chats


def encode_chats(
    tokenizer,
    chats: Sequence[tuple[int, list[dict]]],
    *,
    max_length: int,
    overlong: str = "truncate",
    max_masked_fraction: float = 0.9,
    loss_on: str = "assistant",
    where: str = "data",
) -> tuple[list[SftExample], dict[str, int]]:
    """Tokenize and filter conversations -> (examples, counts). Counts: read, truncated, dropped_overlong,
    dropped_masked (labels more than ``max_masked_fraction`` masked, counted after truncation; assistant masking
    only), kept. ``loss_on="all"``: every token's mask is 1."""
    from pbrl.llm.tokenizer import assistant_mask

    counts = {"read": len(chats), "truncated": 0, "dropped_overlong": 0, "dropped_masked": 0, "kept": 0}
    out = []
    for n, msgs in chats:
        ids, mask = assistant_mask(tokenizer, msgs)
        if loss_on == "all":
            mask = [1] * len(ids)
        if len(ids) > max_length:
            if overlong == "refuse":
                raise PbrlError(f"{where}:{n}: {len(ids)} tokens, over max_length {max_length} (overlong=refuse; "
                                "use truncate or drop, or raise max_length)")
            if overlong == "drop":
                counts["dropped_overlong"] += 1
                continue
            ids, mask = ids[:max_length], mask[:max_length]
            counts["truncated"] += 1
        if 1 - sum(mask) / len(ids) > max_masked_fraction:
            counts["dropped_masked"] += 1
            continue
        out.append(SftExample(ids, mask))
    counts["kept"] = len(out)
    return out, counts


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Bin packing: items by decreasing length, each into the bin it fills most tightly (least room left that
    still fits), else a new bin. Returns bins as lists of item indices; PbrlError if an item exceeds capacity."""
    if max(lengths, default=0) > capacity:
        raise PbrlError(f"pack_length: a sequence of {max(lengths)} tokens does not fit in pack_length={capacity}")
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        fits = [b for b, free in enumerate(room) if lengths[i] <= free]
        if fits:
            b = min(fits, key=lambda c: room[c])
            bins[b].append(i)
            room[b] -= lengths[i]
        else:
            bins.append([i])
            room.append(capacity - lengths[i])
    return bins


def sft_batch(
    examples: Sequence[SftExample],
    layout: str = "packed",
    *,
    pack_length: int | None = None,
    pad_to_multiple: int = 1,
    pad_id: int = 0,
) -> DpoBatch:
    """Lay out ``examples`` as one batch [B, S]: ``packed`` rows of exactly ``pack_length`` tokens (best-fit
    decreasing; default: the longest example rounded up to ``pad_to_multiple``), or ``padded``, one row each
    (S = the longest, rounded up). doc = the example's index in its row (-1 for padding), positions restart at 0
    per example, targets[t] = ids[t + 1] where mask[t + 1] (else IGNORE) and slots = 2 i there."""
    if layout not in ("packed", "padded"):
        raise PbrlError(f"layout: expected packed or padded, got {layout!r}")
    if not examples:
        raise PbrlError("sft_batch: expected at least one example, got none")

    def round_up(n: int) -> int:
        return -(-n // pad_to_multiple) * pad_to_multiple

    lengths = [len(e.ids) for e in examples]
    if layout == "packed":
        S = pack_length if pack_length is not None else round_up(max(lengths))
        rows = best_fit_decreasing(lengths, S)
    else:
        S, rows = round_up(max(lengths)), [[i] for i in range(len(examples))]
    B = len(rows)
    ids = torch.full((B, S), pad_id, dtype=torch.long)
    pos = torch.arange(S, dtype=torch.long).repeat(B, 1)  # padding continues the row index (see build_batch)
    doc = torch.full((B, S), -1, dtype=torch.int32)
    targets = torch.full((B, S), IGNORE, dtype=torch.long)
    slots = torch.full((B, S), -1, dtype=torch.long)
    for b, row in enumerate(rows):
        at = 0
        for d, i in enumerate(row):
            e, n = examples[i], lengths[i]
            x, m = torch.tensor(e.ids), torch.tensor(e.mask, dtype=torch.bool)
            ids[b, at : at + n] = x
            pos[b, at : at + n] = torch.arange(n)
            doc[b, at : at + n] = d
            trained = m[1:]  # the logits at t predict token t + 1
            targets[b, at : at + n - 1] = torch.where(trained, x[1:], IGNORE)
            slots[b, at : at + n - 1] = torch.where(trained, 2 * i, -1)
            at += n
    branch = torch.full((B, S), PROMPT, dtype=torch.int32)  # no branches: the rule is causal within a document
    return DpoBatch(ids, pos, doc, branch, targets, slots, num_examples=len(examples), layout=layout)


def example_nll(model: torch.nn.Module, batch: DpoBatch) -> torch.Tensor:
    """Per-example sums of the trained tokens' negative log-likelihoods [N] (the layout reaches the backend)."""
    return -model_branch_logps(model, batch)[:, 0]


# ----------------------------------------------------------------------------------------------- trainer
def _check(cfg: SftConfig) -> None:
    for name in ("max_length", "pad_to_multiple", "batch_size", "grad_accum", "epochs", "checkpoint_every"):
        if getattr(cfg, name) < 1:
            raise PbrlError(f"{name}: expected a positive whole number, got {getattr(cfg, name)}")
    for name in ("steps", "stop_after", "pack_length"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise PbrlError(f"{name}: expected a positive whole number, got {getattr(cfg, name)}")
    if cfg.batch_size % cfg.grad_accum:
        raise PbrlError(f"batch_size ({cfg.batch_size}) must be a multiple of grad_accum ({cfg.grad_accum})")
    if cfg.overlong not in ("truncate", "drop", "refuse"):
        raise PbrlError(f"overlong: expected truncate, drop or refuse, got {cfg.overlong!r}")
    if cfg.layout not in ("packed", "padded"):
        raise PbrlError(f"layout: expected packed or padded, got {cfg.layout!r}")
    if cfg.loss_on not in ("assistant", "all"):
        raise PbrlError(f"loss_on: expected assistant or all, got {cfg.loss_on!r}")
    if not 0 <= cfg.max_masked_fraction <= 1:
        raise PbrlError(f"max_masked_fraction: expected a value in [0, 1], got {cfg.max_masked_fraction}")
    if not cfg.lr > 0 or not 0 <= cfg.min_lr_ratio <= 1 or cfg.warmup_steps < 0:
        raise PbrlError(f"lr ({cfg.lr}) must be > 0, min_lr_ratio ({cfg.min_lr_ratio}) in [0, 1] and "
                        f"warmup_steps ({cfg.warmup_steps}) >= 0")
    if cfg.pack_length is not None and cfg.layout == "packed" and cfg.pack_length < cfg.max_length:
        raise PbrlError(f"pack_length ({cfg.pack_length}) must be at least max_length ({cfg.max_length})")


def _tokenizer(cfg: SftConfig):
    from pbrl.llm.tokenizer import load_tokenizer

    path = cfg.tokenizer_path or cfg.model_path
    if not path:
        raise PbrlError("tokenizer_path: expected a local tokenizer folder with a chat template (or a model_path "
                        "that holds one, such as the model/ of `pbrl llm pretrain`)")
    return load_tokenizer(path, chat=True)


def _tokens_sha256(examples: Sequence[SftExample]) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.ids, e.mask]).encode())
    return h.hexdigest()


@denormals_flushed()
def train_sft(cfg: SftConfig) -> dict:
    """Fine-tune a causal LM on ``cfg.data`` (see the module docstring). Returns the summary (steps, the data
    counts, the final row), the per-step history (of this and earlier, resumed-from runs) and this process's rank.
    Every input is checked before the output folder is written."""
    _check(cfg)
    accelerator = multi_process_accelerator(cfg.device)
    rank = accelerator.process_index if accelerator else 0
    world = accelerator.num_processes if accelerator else 1
    if cfg.threads is not None:  # once, before any tensor work (after accelerate, which may set its own count)
        use_threads(cfg.threads)
    if accelerator is not None:
        device = accelerator.device
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" \
            else resolve_device(cfg.device)
    if cfg.batch_size % (world * cfg.grad_accum):
        raise PbrlError(f"batch_size ({cfg.batch_size}) must divide by processes x grad_accum "
                        f"({world} x {cfg.grad_accum})")
    if not cfg.data:
        raise PbrlError("data: expected a JSONL file of {messages} or {prompt, completion} objects")
    tokenizer = _tokenizer(cfg)
    chats = read_chats(cfg.data)
    examples, counts = encode_chats(tokenizer, chats, max_length=cfg.max_length, overlong=cfg.overlong,
                                    max_masked_fraction=cfg.max_masked_fraction, loss_on=cfg.loss_on,
                                    where=cfg.data)
    if len(examples) < cfg.batch_size:
        raise PbrlError(f"batch_size: {cfg.batch_size} conversations per step, but {cfg.data} leaves only "
                        f"{len(examples)} after the filters ({counts['dropped_masked']} over "
                        f"{cfg.max_masked_fraction:.0%} masked, {counts['dropped_overlong']} over max_length)")
    steps_per_epoch = len(examples) // cfg.batch_size  # the incomplete last batch of an epoch is dropped
    total = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch
    pack_length = cfg.pack_length or -(-cfg.max_length // cfg.pad_to_multiple) * cfg.pad_to_multiple

    out = Path(cfg.out)
    fingerprint = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_FINGERPRINTED}
    fingerprint["steps"] = total
    fingerprint["data_sha256"] = fingerprint_file(cfg.data)
    fingerprint["tokens_sha256"] = _tokens_sha256(examples)  # covers the tokenizer and the filters
    if cfg.model_path:
        fingerprint["model_sha256"] = {p.name: fingerprint_file(p) for p in sorted(Path(cfg.model_path).glob("*"))
                                       if p.is_file()}
    # a resume of a folder holding another run is refused before anything is read from it or written to it
    probe = RunFolder(out, dataclasses.asdict(cfg), fingerprint=fingerprint, resume=cfg.resume, write=False)

    set_seed(cfg.seed)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}[cfg.dtype]
    backend = resolve_backend(cfg.backend, cfg.layout, device)
    if backend == "hf_sdpa" and cfg.layout == "packed":
        raise PbrlError("backend: hf_sdpa cannot keep packed documents apart; use sdpa, varlen, flex or triton")
    if cfg.model_path:
        model = load_model(cfg.model_path, backend=backend, dtype=dtype)
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            raise PbrlError(f"{cfg.model_path}: the model's {model.get_input_embeddings().num_embeddings} "
                            f"embeddings do not cover the tokenizer's {len(tokenizer)} ids")
    else:
        model = build_model(dataclasses.replace(cfg.model, vocab_size=len(tokenizer)), backend=backend,
                            dtype=dtype, seed=cfg.seed)
    model.to(device)
    optimizer = adam(model.parameters(), cfg.lr, weight_decay=cfg.weight_decay, decoupled=True)
    step = 0
    if cfg.resume and probe.has("checkpoint.pt"):
        step = _load_checkpoint(probe, model, optimizer, what="sft")
    run = RunFolder(out, dataclasses.asdict(cfg), fingerprint=fingerprint, resume=cfg.resume, device=str(device),
                    write=rank == 0, extra={"num_parameters": num_parameters(model), "data": counts,
                                            "backend": backend, "processes": world})
    if not cfg.resume and rank == 0:  # a restarted run must not later resume from the previous run's checkpoint
        (out / "checkpoint.pt").unlink(missing_ok=True)
    history = run.rewind(step)  # rows a killed run logged after its last checkpoint come again: drop them
    wrapped = BranchLogps(model)  # one forward module, so DDP sees the whole computation
    if accelerator is not None:
        wrapped, optimizer = accelerator.prepare(wrapped, optimizer)

    end = total if cfg.stop_after is None else min(total, step + cfg.stop_after)
    bar = None
    if cfg.progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=step, desc="sft", unit="step")
    micro = cfg.batch_size // (world * cfg.grad_accum)  # this process's conversations per micro-batch
    pad_id = tokenizer.pad_token_id
    model.train()
    try:
        while step < end:
            epoch, k = divmod(step, steps_per_epoch)
            order = np.random.default_rng(cfg.seed + epoch).permutation(len(examples))  # depends on the step only
            idx = order[k * cfg.batch_size : (k + 1) * cfg.batch_size].tolist()
            # the step's normaliser, over all its micro-batches and processes (every process knows it)
            n_trained = sum(examples[i].num_trained for i in idx)
            share = idx[rank::world]  # this process's conversations of the step
            lr = lr_at(step, cfg, total)
            for group in optimizer.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            nll, tokens, slots = 0.0, 0, 0
            for m in range(cfg.grad_accum):
                part = [examples[i] for i in share[m * micro : (m + 1) * micro]]
                batch = sft_batch(part, cfg.layout, pack_length=pack_length, pad_to_multiple=cfg.pad_to_multiple,
                                  pad_id=pad_id).to(device)
                sync = accelerator is None or m == cfg.grad_accum - 1  # DDP all-reduces on the last one only
                with contextlib.nullcontext() if sync else accelerator.no_sync(wrapped):
                    loss = -wrapped(batch)[:, 0].sum() / n_trained  # [N] per-example NLL sums -> this share's part
                    # DDP averages over the W processes: x W makes the average the whole step's loss gradient
                    (loss * world if world > 1 else loss).backward()
                nll += float(loss.detach()) * n_trained  # synchronizes a GPU, so dt covers the step
                tokens += batch.num_tokens
                slots += batch.input_ids.numel()
            grad_norm = 0.0
            if cfg.max_grad_norm > 0:
                if accelerator is not None:
                    grad_norm = float(accelerator.clip_grad_norm_(wrapped.parameters(), cfg.max_grad_norm))
                else:
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
            optimizer.step()
            dt = time.perf_counter() - t0
            step += 1
            if accelerator is not None:  # the step's sums over all processes
                t = torch.tensor([nll, tokens, slots], dtype=torch.float64, device=device)
                nll, tokens, slots = accelerator.reduce(t, reduction="sum").tolist()
            value = nll / n_trained
            if not math.isfinite(value):
                raise PbrlError(f"step {step}: the loss is not finite ({value}); lower lr")
            row = {"step": step, "epoch": epoch, "sft/loss": value, "sft/lr": lr, "sft/grad_norm": grad_norm,
                   "sft/trained_tokens": n_trained, "sft/padding_fraction": 1 - tokens / slots,
                   "perf/steps_per_s": 1 / dt, "perf/tokens_per_s": tokens / dt}
            history.append(row)
            run.log(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}", tok_s=f"{row['perf/tokens_per_s']:.0f}")
            if rank == 0 and (step % cfg.checkpoint_every == 0 or step == end):
                opt = optimizer.optimizer if accelerator is not None else optimizer  # the plain AdamW's state
                run.save("checkpoint.pt", {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                           "step": step})
    finally:
        if bar is not None:
            bar.close()
    done = step >= total
    summary = {"step": step, "total_steps": total, "done": done, "num_parameters": num_parameters(model),
               "data": counts, "processes": world, "final": history[-1] if history else {}}
    if done and rank == 0:
        _save_pretrained(out / "model", model, tokenizer)
    run.write_summary(summary)
    if accelerator is not None:  # every process returns once the run folder is complete
        accelerator.wait_for_everyone()
    return {**summary, "history": history, "rank": rank}
