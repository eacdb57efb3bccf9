"""Text statistics of a causal LM's continuations: the measurements of hyperfitting (Carlsson et al., "The
Hyperfitting Phenomenon: Sharpening and Stabilizing LLMs for Open-Ended Text Generation", ICLR 2025,
arXiv 2412.04318) and the temperature control its critics ask for.

The protocol (as the paper's public code runs it): from each held-out context of 32 tokens the model continues
greedily for 224 tokens, and the type-token ratio is taken over the last 96 of them (a looping model repeats a few
types there). Beside it: distinct-n and a repetition rate of the continuations, the validation loss / perplexity on
held-out text (hyperfitting makes it much worse), and the mean predictive entropy at the generated positions
(hyperfitting makes it very low). A model whose entropy is low is a sharper sampler; the control is the *base* model
sampled at the temperature whose mean entropy equals the hyperfitted model's (``match_temperature``): if that
already removes the loops, hyperfitting adds nothing beyond sharpening.

Definitions, for a continuation y_1..y_G (token ids) and its model's logits z_t (the distribution of y_t):

    TTR_last(y)      = |{y_t : t > G - w}| / w                         (w = 96: the last w tokens)
    distinct_n(y)    = |{(y_t..y_{t+n-1})}| / (G - n + 1)              (unique n-grams over all n-grams; Li et al.
                                                                        2016 use the pooled form; here per sequence)
    repetition(y, w) = 1/(G - 1) sum_{t=2..G} [y_t in {y_{t-w}..y_{t-1}}]   (Welleck et al. 2020, "rep/w": the
                                                                        share of tokens that repeat one of the w
                                                                        tokens before them)
    NLL(x)           = -1/(sum_i (L_i - 1)) sum_i sum_{t<L_i} log p(x_{i,t+1} | x_{i,<=t}),  perplexity = exp(NLL)
    H_t(T)           = -sum_v q_v log q_v,   q = softmax(z_t / T)       (T = 1 for greedy continuations)
    mean entropy     = mean of H_t over every generated position of every continuation

Every model here is anything callable as ``model(input_ids=[B, S]) -> .logits [B, S, V]`` with a ``config.vocab_size``
(any HF causal LM); continuations come from ``pbrl.llm.sampler.HFSampler`` without an end token (fixed length, as
the paper generates). Rows of different lengths are right-padded for the teacher-forced passes: under causal
attention a token never sees the padding after it, so no attention mask is needed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from pbrl.errors import PbrlError
from pbrl.llm.sampler import HFSampler, SamplingConfig

CONTEXT_TOKENS, NEW_TOKENS, TTR_LAST = 32, 224, 96
"""The paper's protocol: 32-token contexts, 224 greedy tokens, TTR over the last 96."""


# ----------------------------------------------------------------------------------------------- pure metrics
def type_token_ratio(tokens: Sequence[int], last: int = TTR_LAST) -> float:
    """Distinct tokens among the last ``last`` tokens, divided by ``last`` (see the module docstring); a sequence
    shorter than ``last`` is refused (the window would not be the protocol's)."""
    if last < 1:
        raise PbrlError(f"last: expected a positive window, got {last}")
    if len(tokens) < last:
        raise PbrlError(f"tokens: {len(tokens)} tokens, fewer than the TTR window of the last {last}")
    window = list(tokens)[len(tokens) - last:]
    return len(set(window)) / last


def distinct_n(tokens: Sequence[int], n: int) -> float:
    """Unique n-grams over all n-grams of one sequence (1.0 = no n-gram repeats)."""
    if n < 1:
        raise PbrlError(f"n: expected a positive n-gram order, got {n}")
    toks = list(tokens)
    total = len(toks) - n + 1
    if total < 1:
        raise PbrlError(f"tokens: {len(toks)} tokens, too few for one {n}-gram")
    return len({tuple(toks[i:i + n]) for i in range(total)}) / total


def repetition_rate(tokens: Sequence[int], window: int = 16) -> float:
    """Share of tokens (from the second on) that equal one of the ``window`` tokens before them (rep/w)."""
    if window < 1:
        raise PbrlError(f"window: expected a positive window, got {window}")
    toks = list(tokens)
    if len(toks) < 2:
        raise PbrlError(f"tokens: {len(toks)} tokens, too few for a repetition rate (needs 2)")
    hits = sum(toks[t] in toks[max(0, t - window):t] for t in range(1, len(toks)))
    return hits / (len(toks) - 1)


def entropy_of_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """H(softmax(z / T)) over the last dim, in nats: [..., V] -> [...] (float64 accumulation)."""
    if not temperature > 0:
        raise PbrlError(f"temperature: expected > 0 for an entropy, got {temperature}")
    logq = torch.log_softmax(logits.double() / temperature, dim=-1)
    return -(logq.exp() * logq).sum(-1)


# ----------------------------------------------------------------------------------------------- model passes
def _check_rows(rows: Sequence[Sequence[int]], what: str, min_len: int, vocab: int) -> list[list[int]]:
    out = [list(map(int, r)) for r in rows]
    if not out:
        raise PbrlError(f"{what}: expected at least one sequence, got none")
    for i, r in enumerate(out):
        if len(r) < min_len:
            raise PbrlError(f"{what}[{i}]: {len(r)} tokens, expected at least {min_len}")
        if min(r) < 0 or max(r) >= vocab:
            raise PbrlError(f"{what}[{i}]: token ids must lie in 0..{vocab - 1}")
    return out


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _padded(rows: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [B, S] (pad 0) and the mask of real tokens [B, S]."""
    S = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), S, dtype=torch.long)
    mask = torch.zeros(len(rows), S, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = True
    return ids.to(device), mask.to(device)


@torch.inference_mode()
def sequence_nll(model: torch.nn.Module, sequences: Sequence[Sequence[int]], *, batch_size: int = 16
                 ) -> dict[str, float]:
    """Token-mean next-token NLL of ``sequences`` (each at least 2 tokens) and its perplexity:
    ``{"loss", "perplexity", "tokens"}`` (tokens = predicted positions, sum_i (L_i - 1))."""
    rows = _check_rows(sequences, "sequences", 2, int(model.config.vocab_size))
    total, count = 0.0, 0
    for b in range(0, len(rows), batch_size):
        ids, mask = _padded(rows[b:b + batch_size], _device(model))
        logits = model(input_ids=ids).logits[:, :-1].double()  # [B, S-1, V]: the distribution of token t+1
        nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none")
        keep = mask[:, 1:].flatten()  # [B (S-1)]: targets that are real tokens
        total += float(nll[keep].sum())
        count += int(keep.sum())
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": count}


@torch.inference_mode()
def continuation_entropies(model: torch.nn.Module, contexts: Sequence[Sequence[int]],
                           continuations: Sequence[Sequence[int]], *, temperature: float = 1.0,
                           batch_size: int = 16) -> list[list[float]]:
    """H_t(T) (nats) at every position of each continuation: the entropy of softmax(z / T) of the distribution its
    token was drawn from, by one teacher-forced pass over context + continuation."""
    vocab = int(model.config.vocab_size)
    ctx = _check_rows(contexts, "contexts", 1, vocab)
    cont = _check_rows(continuations, "continuations", 1, vocab)
    if len(ctx) != len(cont):
        raise PbrlError(f"continuations: {len(cont)} for {len(ctx)} contexts")
    out: list[list[float]] = []
    for b in range(0, len(ctx), batch_size):
        rows = [c + y for c, y in zip(ctx[b:b + batch_size], cont[b:b + batch_size])]
        ids, _ = _padded(rows, _device(model))
        h = entropy_of_logits(model(input_ids=ids).logits, temperature)  # [B, S]
        for i, (c, y) in enumerate(zip(ctx[b:b + batch_size], cont[b:b + batch_size])):
            # the logits at position len(c) - 1 + k give the distribution of continuation token k
            out.append(h[i, len(c) - 1:len(c) - 1 + len(y)].tolist())
    return out


def continue_texts(model: torch.nn.Module, contexts: Sequence[Sequence[int]], *, max_new_tokens: int = NEW_TOKENS,
                   temperature: float = 0.0, seed: int = 0, batch_size: int = 16) -> list[list[int]]:
    """Exactly ``max_new_tokens`` tokens after each context (no end token stops a row), greedy for T = 0."""
    ctx = _check_rows(contexts, "contexts", 1, int(model.config.vocab_size))
    sampler = HFSampler(model)
    out: list[list[int]] = []
    was_training = model.training
    model.eval()
    try:
        for b in range(0, len(ctx), batch_size):
            cfg = SamplingConfig(n=1, temperature=temperature, max_new_tokens=max_new_tokens, eos_token_id=None,
                                 seed=seed + b)
            out += [g[0] for g in sampler.generate(ctx[b:b + batch_size], cfg).tokens]
    finally:
        model.train(was_training)
    return out


def mean_entropy_at(model: torch.nn.Module, contexts: Sequence[Sequence[int]], temperature: float, *,
                    max_new_tokens: int = NEW_TOKENS, seed: int = 0, batch_size: int = 16) -> float:
    """Mean H_t(T) over the positions of continuations sampled at temperature T (T > 0)."""
    cont = continue_texts(model, contexts, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                          batch_size=batch_size)
    hs = continuation_entropies(model, contexts, cont, temperature=temperature, batch_size=batch_size)
    return sum(map(sum, hs)) / sum(map(len, hs))


def match_temperature(model: torch.nn.Module, contexts: Sequence[Sequence[int]], target_entropy: float, *,
                      bracket: tuple[float, float] = (0.05, 3.0), max_new_tokens: int = NEW_TOKENS, seed: int = 0,
                      xtol: float = 1e-3, batch_size: int = 16,
                      log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The sampling temperature T at which ``model``'s mean predictive entropy over its own continuations (sampled
    at T from ``contexts``, seed fixed) equals ``target_entropy`` (e.g. a hyperfitted model's greedy entropy).

    Solves f(T) = mean_entropy_at(model, contexts, T) - target = 0 with Brent's method (``scipy.optimize.brentq``)
    inside ``bracket``. With the seed fixed the draws change only where a token's cumulative probability crosses
    its uniform, so f is continuous in T between such points and jumps at them; H(softmax(z/T)) rises with T for
    fixed logits, so f rises overall, and Brent's method returns a T within ``xtol`` of a sign change of f.
    Returns {"temperature", "entropy" (at that T), "target", "evaluations", "bracket"}; a target the bracket does
    not enclose is refused with the entropies at its ends. ``log`` gets one line per evaluation (T, entropy, time).
    """
    from scipy.optimize import brentq

    lo, hi = bracket
    if not 0 < lo < hi:
        raise PbrlError(f"bracket: expected 0 < low < high, got {bracket}")
    if not (math.isfinite(target_entropy) and target_entropy >= 0):
        raise PbrlError(f"target_entropy: expected a finite entropy >= 0 (nats), got {target_entropy}")
    seen: dict[float, float] = {}

    def f(t: float) -> float:
        if t not in seen:
            t0 = time.perf_counter()
            seen[t] = mean_entropy_at(model, contexts, t, max_new_tokens=max_new_tokens, seed=seed,
                                      batch_size=batch_size)
            if log is not None:
                dt = time.perf_counter() - t0
                log(f"match_temperature: evaluation {len(seen)}, T = {t:.4f}, mean entropy {seen[t]:.4f} nats "
                    f"(target {target_entropy:.4f}), {dt:.1f} s, {len(contexts) * max_new_tokens / dt:.0f} "
                    "tokens/s")
        return seen[t] - target_entropy

    f_lo, f_hi = f(lo), f(hi)
    if f_lo * f_hi > 0:
        raise PbrlError(f"target_entropy: {target_entropy:.4f} nats is outside the entropies over the temperature "
                        f"bracket ({seen[lo]:.4f} at T={lo}, {seen[hi]:.4f} at T={hi}); widen the bracket")
    t = lo if f_lo == 0 else hi if f_hi == 0 else float(brentq(f, lo, hi, xtol=xtol, maxiter=100))
    return {"temperature": t, "entropy": f(t) + target_entropy, "target": target_entropy,
            "evaluations": len(seen), "bracket": [lo, hi]}


# ----------------------------------------------------------------------------------------------- all together
def text_stats(model: torch.nn.Module, tokenizer: Any, contexts: Sequence[Sequence[int]], *,
               val_sequences: Sequence[Sequence[int]] | None = None, max_new_tokens: int = NEW_TOKENS,
               ttr_last: int = TTR_LAST, ngrams: Sequence[int] = (1, 2, 3), repetition_window: int = 16,
               temperature: float = 0.0, seed: int = 0, batch_size: int = 16, examples: int = 2) -> dict[str, Any]:
    """The statistics of the module docstring for ``model``'s continuations of ``contexts`` (token ids; greedy at
    T = 0, else sampled at T with ``seed``), each metric the mean over continuations:

    ttr (over the last ``ttr_last`` of ``max_new_tokens``), distinct_<n> for each n of ``ngrams``, repetition
    (rep/``repetition_window``), mean_entropy (at T, or at 1 for greedy), and with ``val_sequences`` val_loss and
    val_perplexity; plus counts, the settings, and the first ``examples`` continuations as text when a
    ``tokenizer`` is given."""
    if max_new_tokens < ttr_last:
        raise PbrlError(f"max_new_tokens: {max_new_tokens} generated tokens, fewer than the TTR window {ttr_last}")
    cont = continue_texts(model, contexts, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                          batch_size=batch_size)
    hs = continuation_entropies(model, contexts, cont, temperature=temperature if temperature > 0 else 1.0,
                                batch_size=batch_size)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    out: dict[str, Any] = {
        "contexts": len(cont), "context_tokens": mean([len(c) for c in contexts]), "new_tokens": max_new_tokens,
        "ttr_last": ttr_last, "temperature": temperature,
        "ttr": mean([type_token_ratio(y, ttr_last) for y in cont]),
        **{f"distinct_{n}": mean([distinct_n(y, n) for y in cont]) for n in ngrams},
        "repetition": mean([repetition_rate(y, repetition_window) for y in cont]),
        "repetition_window": repetition_window,
        "mean_entropy": sum(map(sum, hs)) / sum(map(len, hs)),
    }
    if val_sequences is not None:
        nll = sequence_nll(model, val_sequences, batch_size=batch_size)
        out |= {"val_loss": nll["loss"], "val_perplexity": nll["perplexity"], "val_tokens": nll["tokens"]}
    if tokenizer is not None and examples > 0:
        out["examples"] = [{"context": tokenizer.decode(list(c)), "continuation": tokenizer.decode(y)}
                           for c, y in zip(list(contexts)[:examples], cont[:examples])]
    return out


__all__ = [
    "CONTEXT_TOKENS", "NEW_TOKENS", "TTR_LAST", "continuation_entropies", "continue_texts", "distinct_n",
    "entropy_of_logits", "match_temperature", "mean_entropy_at", "repetition_rate", "sequence_nll", "text_stats",
    "type_token_ratio",
]
