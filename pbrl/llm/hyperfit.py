"""Hyperfitting: `pbrl llm hyperfit` and `pbrl llm textstats`.

Hyperfitting (Carlsson et al., "The Hyperfitting Phenomenon: Sharpening and Stabilizing LLMs for Open-Ended Text
Generation", ICLR 2025, arXiv 2412.04318) fine-tunes *all* parameters of a pre-trained LM on a small set of N
sequences of L tokens for E epochs, with AdamW at a fixed learning rate and no schedule, until the training loss is
near zero. Greedy continuations of held-out contexts then repeat themselves far less (type-token ratio up), while
the validation loss gets much worse and the predictive entropy collapses.

Two recipes behind ``recipe`` (each default can still be overridden field by field):

    paper   E = 20 epochs, lr 1e-6, no weight decay, N sequences drawn at random (seeded) from the corpus
    code    E = 30 epochs, lr 5e-6, weight decay 0.01, the first N documents (what the public code runs)

Both: batch 8, N = 2000, L = 256, gradient clipping at 1.0 (HF Trainer's default, which the public code trains
with). The learning rates are those of 1B-70B models; a tiny model needs a larger one (pass ``lr``).

Data: every document of the corpus (.txt, one per line, or .jsonl with a ``text`` field; ``pbrl.llm.pretrain.
read_corpus``) is tokenized without special tokens (as pre-training saw it); a document with at least L tokens is
eligible and gives one sequence, its first L tokens. Shorter ones are skipped and counted. Held-out text for the
statistics comes from ``eval_corpus``, or by default from the corpus's documents that were not selected.

Loss: mean next-token cross-entropy over the batch's L - 1 predictions per sequence (``pbrl.llm.pretrain.lm_loss``),

    L(theta) = -1/(B (L - 1)) sum_b sum_{t < L} log p_theta(x_{b,t+1} | x_{b,<=t}),

and AdamW (Loshchilov & Hutter 2019) at the fixed lr. Every epoch visits every sequence once in an order that
depends on the seed and the epoch only (the last batch may be smaller), so a resumed run follows the same path.

After every ``eval_every`` epochs (and before the first, for the base model) ``pbrl.llm.textstats.text_stats``
measures the model on the held-out contexts and sequences: TTR over the last 96 of 224 greedy tokens from 32-token
contexts, distinct-n, repetition, mean predictive entropy, validation loss and perplexity. ``stop_loss``: training
stops after the first epoch whose mean training loss is below it.

The run folder (``pbrl.runs.RunFolder``): config.json (with the recipe resolved and the fingerprint a resume must
match: the settings, the corpus bytes, the base model's weights), metrics.jsonl (one row per step, one
``hyperfit/epoch_loss`` + ``eval/*`` row per epoch, and the base model's ``eval/*`` row at step 0),
checkpoint.pt (model, optimizer, step; after every epoch), summary.json and model/ (``save_pretrained``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import tyro

from pbrl.errors import PbrlError
from pbrl.llm.models import load_model, num_parameters
from pbrl.llm.pretrain import _load_checkpoint, _save_pretrained, lm_loss, read_corpus
from pbrl.llm.textstats import CONTEXT_TOKENS, NEW_TOKENS, TTR_LAST, match_temperature, text_stats
from pbrl.runs import RunFolder, RunSettings, fingerprint_file
from pbrl.utils import (
    adam,
    atomic_write_text,
    denormals_flushed,
    dumps_json,
    resolve_device,
    set_seed,
    use_threads,
)

RECIPES: dict[str, dict[str, Any]] = {
    "paper": {"epochs": 20, "lr": 1e-6, "weight_decay": 0.0, "selection": "random"},
    "code": {"epochs": 30, "lr": 5e-6, "weight_decay": 0.01, "selection": "first"},
}
"""The defaults each recipe gives the fields left at None."""

EVAL_KEYS = ("ttr", "distinct_1", "distinct_2", "distinct_3", "repetition", "mean_entropy", "val_loss",
             "val_perplexity")


@dataclass
class HyperfitConfig(RunSettings):
    """Hyperfitting run: full fine-tuning on N sequences for E epochs at a fixed lr."""

    model_path: str = ""
    """The pre-trained model: a local HF model folder (e.g. the model/ of `pbrl llm pretrain`)."""
    corpus: str = ""
    """Training text: a .txt file (one document per line) or a .jsonl file (objects with a `text` field)."""
    out: str = "runs/hyperfit"
    """Output folder: config.json, metrics.jsonl, checkpoint.pt, summary.json, model/."""
    tokenizer_path: str | None = None
    """A local tokenizer folder (default: model_path)."""
    eval_corpus: str | None = None
    """Held-out text for the statistics (default: the corpus's documents that were not selected for training)."""
    recipe: Literal["paper", "code"] = "paper"
    """paper: 20 epochs, lr 1e-6, no weight decay, a seeded random draw of N sequences; code: 30 epochs, lr 5e-6,
    weight decay 0.01, the first N (the public code). Fields below left unset take the recipe's value."""
    epochs: int | None = None
    """Epochs E (recipe: paper 20, code 30)."""
    weight_decay: float | None = None
    """AdamW (decoupled) weight decay (recipe: paper 0, code 0.01)."""
    selection: Literal["first", "random"] | None = None
    """Which eligible documents: the first N or a seeded random draw (recipe: paper random, code first)."""
    num_sequences: int = 2000
    """N training sequences (documents with at least seq_length tokens)."""
    seq_length: int = 256
    """L tokens per sequence (a document's first L)."""
    batch_size: int = 8
    """Sequences per optimizer step."""
    lr: float | None = None
    """Fixed AdamW learning rate, no warmup, no decay (recipe: paper 1e-6, code 5e-6)."""
    max_grad_norm: float = 1.0
    """Gradient clipping (0 = off)."""
    stop_loss: float | None = None
    """Stop after the first epoch whose mean training loss is below this."""
    eval_every: int = 1
    """Measure the text statistics every this many epochs (and before training and at the end)."""
    eval_contexts: int = 64
    """Held-out contexts for the greedy statistics."""
    context_tokens: int = CONTEXT_TOKENS
    """Tokens per context (the first ones of a held-out document)."""
    new_tokens: int = NEW_TOKENS
    """Greedy tokens generated per context."""
    ttr_last: int = TTR_LAST
    """The TTR is taken over the last this many generated tokens."""
    val_sequences: int = 64
    """Held-out documents (their first seq_length tokens) for the validation loss."""
    eval_batch_size: int = 32
    """Rows per forward pass of the statistics."""
    backend: str = "hf_sdpa"
    """Attention backend of the loaded model (see pbrl.llm.attention; rows are dense, so HF's causal sdpa suits)."""
    stop_after: int | None = None
    """Stop (with a checkpoint) after this many epochs of this invocation; a later run resumes."""


# settings that do not change the trajectory (the corpus and the model are compared by their bytes instead)
_NOT_FINGERPRINTED = ("model_path", "corpus", "out", "tokenizer_path", "eval_corpus", "resume", "progress",
                      "device", "stop_after", "threads", "eval_batch_size")


def resolved(cfg: HyperfitConfig) -> HyperfitConfig:
    """``cfg`` with the fields left at None filled from its recipe."""
    if cfg.recipe not in RECIPES:
        raise PbrlError(f"recipe: expected paper or code, got {cfg.recipe!r}")
    fill = {k: v for k, v in RECIPES[cfg.recipe].items() if getattr(cfg, k) is None}
    return dataclasses.replace(cfg, **fill)


def _check(cfg: HyperfitConfig) -> None:
    for name in ("epochs", "num_sequences", "batch_size", "eval_every", "eval_contexts", "context_tokens",
                 "new_tokens", "ttr_last", "val_sequences", "eval_batch_size"):
        if getattr(cfg, name) < 1:
            raise PbrlError(f"{name}: expected a positive whole number, got {getattr(cfg, name)}")
    if cfg.seq_length < 2:
        raise PbrlError(f"seq_length: expected at least 2 tokens (one prediction), got {cfg.seq_length}")
    if cfg.stop_after is not None and cfg.stop_after < 1:
        raise PbrlError(f"stop_after: expected a positive whole number of epochs, got {cfg.stop_after}")
    if not cfg.lr > 0 or not cfg.weight_decay >= 0 or not cfg.max_grad_norm >= 0:
        raise PbrlError(f"lr ({cfg.lr}) must be > 0, weight_decay ({cfg.weight_decay}) and max_grad_norm "
                        f"({cfg.max_grad_norm}) >= 0")
    if cfg.stop_loss is not None and not cfg.stop_loss > 0:
        raise PbrlError(f"stop_loss: expected a training loss > 0, got {cfg.stop_loss}")
    if cfg.new_tokens < cfg.ttr_last:
        raise PbrlError(f"new_tokens: {cfg.new_tokens} generated tokens, fewer than the TTR window {cfg.ttr_last}")
    if cfg.selection not in ("first", "random"):
        raise PbrlError(f"selection: expected first or random, got {cfg.selection!r}")


# ----------------------------------------------------------------------------------------------- shared helpers
def load_lm(model_path: str, tokenizer_path: str | None = None, *, backend: str = "hf_sdpa",
            device: torch.device | None = None) -> tuple[torch.nn.Module, Any]:
    """A local model folder and its tokenizer (``tokenizer_path`` or the model folder), on ``device``."""
    from pbrl.llm.tokenizer import load_tokenizer

    if not model_path:
        raise PbrlError("model_path: expected a local HF model folder (e.g. the model/ of pbrl llm pretrain)")
    model = load_model(model_path, backend=backend)
    tok = load_tokenizer(tokenizer_path or model_path)
    if len(tok) > int(model.config.vocab_size):
        raise PbrlError(f"{tokenizer_path or model_path}: the tokenizer has {len(tok)} tokens, more than the "
                        f"model's vocabulary of {model.config.vocab_size}")
    return model.to(device or torch.device("cpu")), tok


def context_limit(model: torch.nn.Module) -> int | None:
    """The longest sequence the model's positions cover (None when its config does not say)."""
    v = getattr(model.config, "max_position_embeddings", None)
    return int(v) if isinstance(v, int) else None


def check_length(model: torch.nn.Module, tokens: int, what: str, where: str) -> None:
    """One PbrlError when ``tokens`` positions are more than the model covers."""
    limit = context_limit(model)
    if limit is not None and tokens > limit:
        raise PbrlError(f"{what}: {tokens} tokens, longer than the model's context of {limit} positions ({where})")


def encode_docs(tokenizer, docs: list[str]) -> list[list[int]]:
    """Token ids of each document, without special tokens (as pre-training tokenized them)."""
    return [list(ids) for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]]


def eval_rows(ids: list[list[int]], *, contexts: int, context_tokens: int, val_sequences: int, val_length: int,
              where: str) -> tuple[list[list[int]], list[list[int]]]:
    """Contexts (the first ``context_tokens`` tokens of the first ``contexts`` documents that have them) and
    validation sequences (the first ``val_length`` tokens of the first ``val_sequences`` documents of at least 2
    tokens); one PbrlError when there are none."""
    ctx = [d[:context_tokens] for d in ids if len(d) >= context_tokens][:contexts]
    val = [d[:val_length] for d in ids if len(d) >= 2][:val_sequences]
    if not ctx:
        raise PbrlError(f"{where}: no held-out document has {context_tokens} tokens for a context")
    return ctx, val


def _stats(model, tok, ctx, val, cfg: HyperfitConfig, examples: int = 0) -> dict[str, Any]:
    return text_stats(model, tok, ctx, val_sequences=val, max_new_tokens=cfg.new_tokens, ttr_last=cfg.ttr_last,
                      batch_size=cfg.eval_batch_size, examples=examples, seed=cfg.seed)


# ----------------------------------------------------------------------------------------------- trainer
def select_sequences(ids: list[list[int]], cfg: HyperfitConfig) -> tuple[list[int], dict[str, int]]:
    """Indices of the N training documents (eligible = at least L tokens; the first N, or a seeded draw) and the
    counts; one PbrlError naming the corpus when there are fewer than N eligible."""
    eligible = [i for i, d in enumerate(ids) if len(d) >= cfg.seq_length]
    counts = {"documents": len(ids), "eligible": len(eligible), "too_short": len(ids) - len(eligible)}
    if len(eligible) < cfg.num_sequences:
        raise PbrlError(f"{cfg.corpus}: {len(eligible)} of {len(ids)} documents have seq_length {cfg.seq_length} "
                        f"tokens, fewer than num_sequences {cfg.num_sequences}")
    if cfg.selection == "first":
        chosen = eligible[:cfg.num_sequences]
    else:
        rng = np.random.default_rng(cfg.seed)
        chosen = [eligible[i] for i in sorted(rng.choice(len(eligible), cfg.num_sequences, replace=False))]
    return chosen, counts


@denormals_flushed()
def hyperfit(cfg: HyperfitConfig) -> dict[str, Any]:
    """Hyperfit ``cfg.model_path`` on ``cfg.corpus`` (see the module docstring). Returns the summary (epochs done,
    whether the loss threshold stopped it, the base model's and the last statistics) and the metrics history."""
    cfg = resolved(cfg)
    _check(cfg)
    if cfg.threads is not None:  # once, before any tensor work
        use_threads(cfg.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" \
        else resolve_device(cfg.device)
    if not cfg.corpus:
        raise PbrlError("corpus: expected a .txt or .jsonl file")
    docs = read_corpus(cfg.corpus)
    model, tok = load_lm(cfg.model_path, cfg.tokenizer_path, backend=cfg.backend, device=device)
    check_length(model, cfg.seq_length, "seq_length", cfg.model_path)
    check_length(model, cfg.context_tokens + cfg.new_tokens, "context_tokens + new_tokens", cfg.model_path)
    ids = encode_docs(tok, docs)
    chosen, counts = select_sequences(ids, cfg)
    seqs = torch.tensor([ids[i][:cfg.seq_length] for i in chosen], dtype=torch.long)  # [N, L]
    if cfg.eval_corpus:
        held = encode_docs(tok, read_corpus(cfg.eval_corpus))
        where = cfg.eval_corpus
    else:
        taken = set(chosen)
        held = [d for i, d in enumerate(ids) if i not in taken]
        where = f"{cfg.corpus} (the documents not selected; or pass eval_corpus)"
    ctx, val = eval_rows(held, contexts=cfg.eval_contexts, context_tokens=cfg.context_tokens,
                         val_sequences=cfg.val_sequences, val_length=cfg.seq_length, where=where)
    counts |= {"sequences": len(chosen), "eval_contexts": len(ctx), "val_sequences": len(val)}

    out = Path(cfg.out)
    weights = next((Path(cfg.model_path) / n for n in ("model.safetensors", "pytorch_model.bin")
                    if (Path(cfg.model_path) / n).is_file()), Path(cfg.model_path) / "config.json")
    fingerprint = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_FINGERPRINTED}
    fingerprint |= {"corpus_sha256": fingerprint_file(cfg.corpus), "model_sha256": fingerprint_file(weights),
                    "eval_corpus_sha256": fingerprint_file(cfg.eval_corpus) if cfg.eval_corpus else None}
    probe = RunFolder(out, dataclasses.asdict(cfg), fingerprint=fingerprint, resume=cfg.resume, write=False)

    set_seed(cfg.seed)
    optimizer = adam(model.parameters(), cfg.lr, weight_decay=cfg.weight_decay, decoupled=True)
    steps_per_epoch = math.ceil(len(seqs) / cfg.batch_size)  # the last batch of an epoch may be smaller
    step = 0
    if cfg.resume and probe.has("checkpoint.pt"):
        step = _load_checkpoint(probe, model, optimizer, what="hyperfit")
    run = RunFolder(out, dataclasses.asdict(cfg), fingerprint=fingerprint, resume=cfg.resume, device=str(device),
                    extra={"num_parameters": num_parameters(model), "data": counts})
    if not cfg.resume:  # a restarted run must not later resume from the previous run's checkpoint
        (out / "checkpoint.pt").unlink(missing_ok=True)
    history = run.rewind(step)
    epoch = step // steps_per_epoch
    epoch_rows = [r for r in history if "hyperfit/epoch_loss" in r]
    stopped = bool(cfg.stop_loss is not None and epoch_rows and epoch_rows[-1]["hyperfit/epoch_loss"] < cfg.stop_loss)

    def evaluate(ep: int) -> dict[str, Any]:
        s = _stats(model, tok, ctx, val, cfg)
        return {"step": step, "epoch": ep, **{f"eval/{k}": s[k] for k in EVAL_KEYS if k in s}}

    if not any(r.get("epoch") == 0 and "eval/ttr" in r for r in history):  # the base model, once
        row = evaluate(0)
        history.append(row)
        run.log(row)
    end = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, epoch + cfg.stop_after)
    bar = None
    if cfg.progress and not stopped and epoch < end:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=step, desc="hyperfit", unit="step")
    seqs = seqs.to(device)
    model.train()
    try:
        while not stopped and epoch < end:
            order = torch.from_numpy(np.random.default_rng(cfg.seed + epoch).permutation(len(seqs))).to(device)
            loss_sum = 0.0
            for k in range(steps_per_epoch):
                idx = order[k * cfg.batch_size:(k + 1) * cfg.batch_size]
                t0 = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                loss = lm_loss(model, seqs[idx])  # [B, L] rows: inputs [:, :-1], targets [:, 1:]
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
                loss_sum += value * len(idx)  # every row has L - 1 predictions: the epoch's token mean
                tokens = len(idx) * (cfg.seq_length - 1)
                row = {"step": step, "epoch": epoch, "hyperfit/loss": value, "hyperfit/grad_norm": grad_norm,
                       "perf/tokens_per_s": tokens / dt}
                history.append(row)
                run.log(row)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{value:.4f}", tok_s=f"{tokens / dt:.0f}")
            epoch += 1
            epoch_loss = loss_sum / len(seqs)
            stopped = cfg.stop_loss is not None and epoch_loss < cfg.stop_loss
            row = {"step": step, "epoch": epoch, "hyperfit/epoch_loss": epoch_loss}
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs or stopped:
                row |= evaluate(epoch)
                model.train()
            history.append(row)
            run.log(row)
            run.save("checkpoint.pt", {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                       "step": step})
    finally:
        if bar is not None:
            bar.close()
    done = stopped or epoch >= cfg.epochs
    evals = [r for r in history if "eval/ttr" in r]
    summary: dict[str, Any] = {
        "epoch": epoch, "epochs": cfg.epochs, "step": step, "done": done, "stopped_at_loss": stopped,
        "num_parameters": num_parameters(model), "data": counts,
        "recipe": {"name": cfg.recipe, **{k: getattr(cfg, k) for k in RECIPES[cfg.recipe]}},
        "base": evals[0] if evals else {}, "final": evals[-1] if evals else {},
        "final_epoch_loss": next((r["hyperfit/epoch_loss"] for r in reversed(history)
                                  if "hyperfit/epoch_loss" in r), None),
    }
    if done:
        summary["examples"] = _stats(model, tok, ctx[:2], None, cfg, examples=2)["examples"]
        _save_pretrained(out / "model", model, tok)
    run.write_summary(summary)
    return {**summary, "history": history}


# ----------------------------------------------------------------------------------------------- commands
@dataclass
class LlmHyperfit(HyperfitConfig):
    """Hyperfit a local LM: full fine-tuning on N sequences for E epochs at a fixed lr (paper or public-code recipe),
    with the text statistics (TTR, validation loss, entropy) after every epoch."""

    model_path: tyro.conf.Positional[str] = ""
    """The pre-trained model: a local HF model folder (e.g. the model/ of `pbrl llm pretrain`)."""
    corpus: tyro.conf.Positional[str] = ""
    """Training text: a .txt file (one document per line) or a .jsonl file (objects with a `text` field)."""
    overwrite: bool = False
    """Write the run into --out even when the folder holds other files or another command's run, and restart a run
    of this command there (resume off)."""

    def run(self) -> None:
        from pbrl.llm.commands import _config

        result = hyperfit(_config(self, HyperfitConfig, "hyperfit", self.corpus))
        keys = ("eval/ttr", "eval/val_loss", "eval/mean_entropy")
        print(json.dumps({"num_parameters": result["num_parameters"], "done": result["done"],
                          "epoch": result["epoch"], "stopped_at_loss": result["stopped_at_loss"],
                          "final_epoch_loss": result["final_epoch_loss"],
                          "base": {k: result["base"].get(k) for k in keys},
                          "final": {k: result["final"].get(k) for k in keys}}))
        if result["done"]:
            print(f"wrote {self.out}/model, {self.out}/metrics.jsonl")
        else:
            print(f"stopped at epoch {result['epoch']} of {result['epochs']}; run again to resume "
                  f"(wrote {self.out}/checkpoint.pt, {self.out}/metrics.jsonl)")


@dataclass
class LlmTextstats:
    """Text statistics of a local LM on held-out documents: TTR over the last 96 of 224 greedy tokens from 32-token
    contexts, distinct-n, repetition, mean predictive entropy, validation loss; with --match-entropy-of OTHER, also
    this model sampled at the temperature whose entropy matches OTHER's greedy entropy."""

    model: tyro.conf.Positional[str]
    """A local HF model folder (with its tokenizer, or pass --tokenizer-path)."""
    contexts: tyro.conf.Positional[str]
    """Held-out documents (.txt, one per line, or .jsonl with `text`): each one's first context_tokens tokens are
    a context, its first val_length tokens a validation sequence."""
    out: str | None = None
    """Also write the JSON here (an existing file is refused unless --overwrite)."""
    overwrite: bool = False
    """Replace an existing --out file."""
    tokenizer_path: str | None = None
    """A local tokenizer folder (default: the model folder)."""
    match_entropy_of: str | None = None
    """Another model folder (e.g. the hyperfitted one): its greedy mean entropy is the target of the temperature
    search for MODEL, whose statistics at the found temperature are reported under "matched"."""
    num_contexts: int = 64
    """Contexts (the first documents with context_tokens tokens)."""
    context_tokens: int = CONTEXT_TOKENS
    """Tokens per context."""
    new_tokens: int = NEW_TOKENS
    """Tokens generated per context."""
    ttr_last: int = TTR_LAST
    """The TTR window: the last this many generated tokens."""
    val_length: int = 256
    """Tokens per validation sequence (a document's first ones)."""
    val_sequences: int = 64
    """Validation sequences (the first documents of at least 2 tokens)."""
    temperature: float = 0.0
    """Sampling temperature of MODEL's own statistics (0 = greedy, the protocol)."""
    bracket: tuple[float, float] = (0.05, 3.0)
    """Temperatures the entropy-matching search looks between."""
    seed: int = 0
    """Seed of sampled continuations."""
    batch_size: int = 32
    """Rows per forward pass."""
    backend: str = "hf_sdpa"
    """Attention backend of the loaded models."""
    device: str = "cpu"
    """cpu or cuda."""
    threads: int | None = None
    """Torch CPU threads (default: the free cores)."""

    def run(self) -> dict[str, Any]:
        from pbrl.utils import choose_threads, threads_line

        if self.out and Path(self.out).exists() and not self.overwrite:
            raise PbrlError(f"{self.out}: exists; pass --overwrite to replace it")
        for name in ("num_contexts", "context_tokens", "new_tokens", "ttr_last", "val_sequences", "batch_size"):
            if getattr(self, name) < 1:
                raise PbrlError(f"{name}: expected a positive whole number, got {getattr(self, name)}")
        if self.val_length < 2:
            raise PbrlError(f"val_length: expected at least 2 tokens, got {self.val_length}")
        n, note = choose_threads(self.threads)
        use_threads(n)
        print(f"pbrl llm textstats on {self.contexts}: {threads_line(n, note)}", flush=True)
        device = resolve_device(self.device)
        docs = read_corpus(self.contexts)
        model, tok = load_lm(self.model, self.tokenizer_path, backend=self.backend, device=device)
        models = [(self.model, model)]
        if self.match_entropy_of:
            other, _ = load_lm(self.match_entropy_of, self.tokenizer_path or self.model, backend=self.backend,
                               device=device)
            models.append((self.match_entropy_of, other))
        for path, m in models:
            check_length(m, self.context_tokens + self.new_tokens, "context_tokens + new_tokens", path)
            check_length(m, self.val_length, "val_length", path)
        ctx, val = eval_rows(encode_docs(tok, docs), contexts=self.num_contexts, context_tokens=self.context_tokens,
                             val_sequences=self.val_sequences, val_length=self.val_length, where=self.contexts)
        kw = dict(val_sequences=val, max_new_tokens=self.new_tokens, ttr_last=self.ttr_last, seed=self.seed,
                  batch_size=self.batch_size)
        result: dict[str, Any] = {"model": self.model, "contexts_file": self.contexts,
                                  "stats": text_stats(model, tok, ctx, temperature=self.temperature, **kw)}
        if self.match_entropy_of:
            target = text_stats(models[1][1], tok, ctx, **kw)
            found = match_temperature(model, ctx, target["mean_entropy"], bracket=self.bracket,
                                      max_new_tokens=self.new_tokens, seed=self.seed, batch_size=self.batch_size,
                                      log=lambda m: print(m, file=sys.stderr, flush=True))  # stdout: the JSON
            result["other"] = {"model": self.match_entropy_of, "stats": target}
            result["matched"] = {**found, "stats": text_stats(model, tok, ctx, temperature=found["temperature"],
                                                              **kw)}
        text = dumps_json(result, indent=1)
        if self.out:
            atomic_write_text(self.out, text + "\n")
        print(text)
        return result


__all__ = ["RECIPES", "HyperfitConfig", "LlmHyperfit", "LlmTextstats", "hyperfit", "load_lm", "resolved",
           "select_sequences"]
