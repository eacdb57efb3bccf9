"""Pre-training a tiny base LM (next-token prediction) on a text corpus: `pbrl llm pretrain`.

The corpus is a .txt file (one document per line) or a JSONL file (one object per line with a ``text`` string).
A byte-level BPE tokenizer of ``vocab_size`` is trained on it (with the ChatML specials and template, so a later SFT
starts from a base model that already has its chat tokens, as in the LIONs recipe), or a local one is loaded.

Data: every document is tokenized, followed by <eos>, and the documents are concatenated into one stream that is cut
into rows of ``seq_length + 1`` tokens (inputs = row[:-1], targets = row[1:]; consecutive rows share one token).
A row may hold the end of one document and the start of the next: attention is not masked at document boundaries.
That is not needed for pre-training (GPT-2 / nanoGPT practice): the <eos> between them tells the model a new
document starts, and the loss at every position is still next-token prediction.

Loss: mean next-token cross-entropy  L = -1/(B T) sum_{b,t} log p(x_{b,t+1} | x_{b,<=t}).
Optimizer: AdamW (Loshchilov & Hutter, 2019) with a linear warmup to ``lr`` over ``warmup_steps`` then a cosine
decay to ``min_lr_ratio * lr`` at the last step:  lr_s = lr_min + (lr - lr_min) (1 + cos(pi p)) / 2,
p = (s - warmup) / (total - warmup).

The run folder (``pbrl.runs.RunFolder``): config.json (with the fingerprint a resume must match: the settings that
change the run, the corpus bytes and the token stream), metrics.jsonl (one row per step), checkpoint.pt (model,
optimizer, step; written atomically), tokenizer/ (the trained tokenizer, reused on resume), summary.json, and
model/ (``save_pretrained`` of the model and the tokenizer: ``load_model`` / ``load_tokenizer`` read it back).
A resumed run reaches the same weights as an uninterrupted one (the data order and the learning rate depend on the
step only).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pbrl.errors import PbrlError
from pbrl.llm.models import TinyLMConfig, build_model, num_parameters
from pbrl.runs import RunFolder, RunSettings, fingerprint_file
from pbrl.utils import adam, denormals_flushed, read_json_lines, resolve_device, set_seed, use_threads


@dataclass
class PretrainConfig(RunSettings):
    """Pre-training run of a tiny causal LM."""

    corpus: str = ""
    """Text corpus: a .txt file (one document per line) or a .jsonl file (objects with a `text` field)."""
    out: str = "runs/pretrain"
    """Output folder: config.json, metrics.jsonl, checkpoint.pt, tokenizer/, summary.json, model/."""
    tokenizer_path: str | None = None
    """A local tokenizer folder; by default a byte-level BPE of `vocab_size` is trained on the corpus."""
    vocab_size: int = 512
    """Vocabulary of the trained BPE (bytes + specials + merges)."""
    model: TinyLMConfig = field(default_factory=TinyLMConfig)
    """Shape of the model (its vocab_size follows the tokenizer)."""
    backend: str = "hf_sdpa"
    """Attention backend (see pbrl.llm.attention): rows are dense and unmasked, so HF's own causal sdpa (hf_sdpa)
    suits; the pbrl backends give the same plain causal attention."""
    seq_length: int = 128
    """Tokens per training row."""
    batch_size: int = 16
    """Rows per optimizer step."""
    lr: float = 1e-3
    """Peak AdamW learning rate."""
    min_lr_ratio: float = 0.1
    """The cosine decays to lr * min_lr_ratio at the last step."""
    warmup_steps: int = 20
    """Linear warmup steps."""
    weight_decay: float = 0.1
    """AdamW (decoupled) weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping (0 = off)."""
    epochs: int = 1
    """Passes over the rows (when steps is not given)."""
    steps: int | None = None
    """Optimizer steps (default: epochs * rows / batch_size). Sets the schedule's length."""
    stop_after: int | None = None
    """Stop (with a checkpoint) after this many steps without changing the schedule; a later run resumes."""
    checkpoint_every: int = 100
    """Save a checkpoint every this many steps (and at the end)."""


# settings that do not change the trajectory (the corpus is compared by its bytes instead of its path)
_NOT_FINGERPRINTED = ("corpus", "out", "tokenizer_path", "resume", "progress", "device", "checkpoint_every",
                      "stop_after", "threads")


# ----------------------------------------------------------------------------------------------- data
def read_corpus(path: str | Path) -> list[str]:
    """The documents of a .txt (one per non-blank line) or .jsonl (a `text` string per object) corpus; one
    PbrlError naming the file (and line) when it is missing, not UTF-8, malformed or empty."""
    path = Path(path)
    if not str(path) or not path.is_file():
        raise PbrlError(f"{path}: no such corpus file (expected a .txt or .jsonl file)")
    docs: list[str] = []
    if path.suffix == ".jsonl":
        for n, obj in read_json_lines(path):
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise PbrlError(f"{path}:{n}: expected an object with a `text` string")
            if obj["text"].strip():
                docs.append(obj["text"])
    else:
        for n, raw in enumerate(path.read_bytes().splitlines(), 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise PbrlError(f"{path}:{n}: not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r})") from None
            if line.strip():
                docs.append(line)
    if not docs:
        raise PbrlError(f"{path}: the corpus holds no documents")
    return docs


def token_stream(tokenizer, docs: list[str]) -> torch.Tensor:
    """All documents' ids, each followed by <eos>, as one int64 tensor [N]."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise PbrlError("tokenizer: pre-training needs an eos token to separate documents")
    ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    return torch.tensor([t for doc in ids for t in (*doc, eos)], dtype=torch.long)


def chunk_rows(stream: torch.Tensor, seq_length: int) -> torch.Tensor:
    """Rows [R, seq_length + 1] of consecutive tokens (row r = stream[r L : r L + L + 1]); the tail is dropped."""
    rows = (len(stream) - 1) // seq_length
    if rows < 1:
        raise PbrlError(f"corpus: {len(stream)} tokens, too few for one row of seq_length {seq_length}")
    idx = torch.arange(rows)[:, None] * seq_length + torch.arange(seq_length + 1)[None, :]
    return stream[idx]


def lr_at(step: int, cfg: PretrainConfig, total: int) -> float:
    """Learning rate of update ``step`` (0-based): linear warmup, then cosine to lr * min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    low = cfg.lr * cfg.min_lr_ratio
    return low + (cfg.lr - low) * 0.5 * (1 + math.cos(math.pi * p))


def lm_loss(model: torch.nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of rows [B, T + 1] (inputs row[:, :-1], targets row[:, 1:])."""
    logits = model(input_ids=rows[:, :-1]).logits  # [B, T, V]
    return F.cross_entropy(logits.float().flatten(0, 1), rows[:, 1:].flatten())


# ----------------------------------------------------------------------------------------------- trainer
def _check(cfg: PretrainConfig) -> None:
    for name in ("seq_length", "batch_size", "epochs", "checkpoint_every"):
        if getattr(cfg, name) < 1:
            raise PbrlError(f"{name}: expected a positive whole number, got {getattr(cfg, name)}")
    for name in ("steps", "stop_after"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise PbrlError(f"{name}: expected a positive whole number, got {getattr(cfg, name)}")
    if not cfg.lr > 0 or not 0 <= cfg.min_lr_ratio <= 1 or cfg.warmup_steps < 0:
        raise PbrlError(f"lr ({cfg.lr}) must be > 0, min_lr_ratio ({cfg.min_lr_ratio}) in [0, 1] and "
                        f"warmup_steps ({cfg.warmup_steps}) >= 0")


def _tokenizer(cfg: PretrainConfig, docs: list[str]):
    from pbrl.llm.tokenizer import bpe_tokenizer, load_tokenizer

    saved = Path(cfg.out) / "tokenizer"
    if cfg.tokenizer_path:
        return load_tokenizer(cfg.tokenizer_path), False
    if cfg.resume and saved.is_dir():  # the tokenizer this run trained (the fingerprint checks its tokens)
        return load_tokenizer(saved), False
    return bpe_tokenizer(docs, cfg.vocab_size, chat=True), True


def _save_pretrained(folder: Path, model, tokenizer) -> None:
    """save_pretrained into a temporary folder, then renamed into place."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if model is not None:
        model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


@denormals_flushed()
def pretrain(cfg: PretrainConfig) -> dict:
    """Pre-train a tiny LM on ``cfg.corpus`` (see the module docstring). Returns the final row, the per-step history
    (of this and earlier, resumed-from runs), the number of parameters and whether the schedule's end was reached.
    Denormals are flushed to zero while it runs (see ``pbrl.utils.denormals_flushed``)."""
    _check(cfg)
    if cfg.threads is not None:  # once, before any tensor work
        use_threads(cfg.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" \
        else resolve_device(cfg.device)
    if not cfg.corpus:
        raise PbrlError("corpus: expected a .txt or .jsonl file")
    docs = read_corpus(cfg.corpus)
    tokenizer, trained = _tokenizer(cfg, docs)
    stream = token_stream(tokenizer, docs)
    rows = chunk_rows(stream, cfg.seq_length)  # [R, L + 1]
    if len(rows) < cfg.batch_size:
        raise PbrlError(f"batch_size: {cfg.batch_size} rows per step, but the corpus gives only {len(rows)} rows "
                        f"of seq_length {cfg.seq_length}")
    steps_per_epoch = len(rows) // cfg.batch_size  # the incomplete last batch of an epoch is dropped
    total = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch

    out = Path(cfg.out)
    fingerprint = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_FINGERPRINTED}
    fingerprint["steps"] = total  # the schedule's length (epochs resolve to it)
    fingerprint["corpus_sha256"] = fingerprint_file(cfg.corpus)
    fingerprint["tokens_sha256"] = hashlib.sha256(stream.numpy().tobytes()).hexdigest()  # covers the tokenizer
    # a resume of a folder holding another run is refused before anything is read from it or written to it
    probe = RunFolder(out, dataclasses.asdict(cfg), fingerprint=fingerprint, resume=cfg.resume, write=False)

    set_seed(cfg.seed)
    vocab = len(tokenizer)
    model = build_model(dataclasses.replace(cfg.model, vocab_size=vocab), backend=cfg.backend, seed=cfg.seed)
    model.to(device)
    optimizer = adam(model.parameters(), cfg.lr, weight_decay=cfg.weight_decay, decoupled=True)
    step = 0
    if cfg.resume and probe.has("checkpoint.pt"):
        step = _load_checkpoint(probe, model, optimizer)
    run = RunFolder(out, dataclasses.asdict(cfg), fingerprint=fingerprint, resume=cfg.resume, device=str(device),
                    extra={"num_parameters": num_parameters(model), "num_documents": len(docs),
                           "num_tokens": len(stream), "num_rows": len(rows)})
    if not cfg.resume:  # a restarted run must not later resume from the previous run's checkpoint
        (out / "checkpoint.pt").unlink(missing_ok=True)
    history = run.rewind(step)  # rows a killed run logged after its last checkpoint come again: drop them
    if trained:
        _save_pretrained(out / "tokenizer", None, tokenizer)

    end = total if cfg.stop_after is None else min(total, step + cfg.stop_after)
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=step, desc="pretrain", unit="step")
    rows = rows.to(device)
    tokens_per_step = cfg.batch_size * cfg.seq_length
    model.train()
    try:
        while step < end:
            epoch, k = divmod(step, steps_per_epoch)
            order = np.random.default_rng(cfg.seed + epoch).permutation(len(rows))  # depends on the step only
            idx = torch.from_numpy(order[k * cfg.batch_size : (k + 1) * cfg.batch_size]).to(device)
            lr = lr_at(step, cfg, total)
            for group in optimizer.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = lm_loss(model, rows[idx])
            loss.backward()
            grad_norm = 0.0
            if cfg.max_grad_norm > 0:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
            optimizer.step()
            value = float(loss.detach())  # synchronizes a GPU, so dt covers the step
            dt = time.perf_counter() - t0
            step += 1
            if not math.isfinite(value):
                raise PbrlError(f"step {step}: the loss is not finite ({value}); lower lr")
            row = {"step": step, "epoch": epoch, "pretrain/loss": value, "pretrain/lr": lr,
                   "pretrain/grad_norm": grad_norm, "pretrain/tokens": step * tokens_per_step,
                   "perf/steps_per_s": 1 / dt, "perf/tokens_per_s": tokens_per_step / dt}
            history.append(row)
            run.log(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}", tok_s=f"{row['perf/tokens_per_s']:.0f}")
            if step % cfg.checkpoint_every == 0 or step == end:
                run.save("checkpoint.pt", {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                           "step": step})
    finally:
        if bar is not None:
            bar.close()
    done = step >= total
    summary = {"step": step, "total_steps": total, "done": done, "num_parameters": num_parameters(model),
               "final": history[-1] if history else {}}
    if done:
        _save_pretrained(out / "model", model, tokenizer)
    run.write_summary(summary)
    return {**summary, "history": history}


def _load_checkpoint(run: RunFolder, model, optimizer, what: str = "pretrain") -> int:
    """Weights, optimizer state and step from checkpoint.pt (safe loader; one PbrlError when it does not fit);
    `what` names the trainer in the messages (the SFT trainer reads the same layout)."""
    path = run.path / "checkpoint.pt"
    state = run.load("checkpoint.pt", what=f"{what} checkpoint")
    if not isinstance(state, dict) or not {"model", "optimizer", "step"} <= set(state):
        raise PbrlError(f"{path}: expected a {what} checkpoint (model, optimizer, step)")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, TypeError, KeyError, ValueError, AttributeError) as e:
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise PbrlError(f"{path}: does not fit the model ({type(e).__name__}: {msg})") from None
    return int(state["step"])
