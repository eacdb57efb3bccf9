"""Decoding semantic item IDs with a causal LM: constraints, beam search, the reasoning mode's answers.

GREAM (Hong et al. 2025, arXiv 2510.20815) names every item by L code tokens plus, for items whose L codes collide,
one dedup token (``pbrl.rec.semantic_ids.SemanticIds``: ``<|a_3|><|b_1|><|c_7|>`` or ``...<|d_2|>``). A model
recommends by emitting an ID; two constraints keep its output on IDs:

- ``id_trie``: a ``TokenTrie`` of every item's token ids. Only prefixes of real IDs can be emitted and EOS only where
  an ID ends, so every finished output is an existing item.
- ``level_sets_allowed``: the official code's position-wise sets (``prefix_allowed_tokens_fn`` of the public code):
  at position i < L every level-i token, after level L the dedup tokens or EOS, after the dedup token only EOS.
  Each position is checked alone, so combinations that name no item pass (``<|a_1|><|b_2|>`` when only
  ``<|a_1|><|b_1|>`` and ``<|a_2|><|b_2|>`` exist): the invalid-ID rate measures how often.

``constrained_beam_search`` is a batched beam search over either constraint (or none) on pbrl's tiny HF models and any
HF causal LM: the prompts are prefilled once, the cache is expanded to ``num_beams`` rows per prompt, and at each step
the best ``num_beams`` of the (beam, token) candidates by summed log-prob survive. A beam that emitted EOS is
finished: it keeps its score and continues with padding at log-prob 0, so it competes with the live beams until the
end. Scores are the model's own log-probs, log softmax(z) of the unconstrained logits summed over the ID tokens and
EOS (the constraint removes candidates, it does not renormalise: HF's ``generate`` with ``prefix_allowed_tokens_fn``
scores beams the same way). Beams are distinct sequences by construction; a beam whose candidates ran out (fewer
allowed continuations than beams) is dropped rather than padded with an invalid sequence.

Why not HF's ``generate(num_beams=..., prefix_allowed_tokens_fn=...)``: measured with transformers 5.24 on a tiny
pbrl Llama and a trie constraint, it returns the same ranked beams as this search (log-probs within 2e-6) while the
catalog has enough IDs, but with 3 items and 10 beams 4 of its 40 returned beams lie outside the catalog and 24 are
duplicates scored -1e9 (it fills the beams with -inf candidates, the leak GENRE issue #51 reports).
``tests/recsim/test_decoding.py`` keeps the equality as a test.

Reasoning mode (``<think>...</think><answer>ID</answer>``): ``parse_answer`` reads the ID tokens of a response, and
``rank_samples`` orders n sampled responses by their total sequence log-prob, reasoning tokens included, as the
official evaluation does (10 samples at T 0.7, top-p 0.9).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from pbrl.errors import PbrlError
from pbrl.llm.sampler import Allowed, TokenTrie


class ItemIds(Protocol):
    """What decoding needs of ``pbrl.rec.semantic_ids.SemanticIds``."""

    codes: Any  # [N, L] int64, 1-indexed code per level
    dedup: Any  # [N] int64, 0 = no dedup token, r >= 1 = rank inside a colliding group
    k: int

    @property
    def levels(self) -> int: ...

    def level_token(self, level: int, code: int) -> str: ...

    def item_tokens(self, item: int) -> list[str]: ...

    def item_of(self, tokens: Sequence[str]) -> int | None: ...


# ----------------------------------------------------------------------------------------------- IDs as token ids
class IdVocab:
    """Semantic IDs in a tokenizer's ids: each item's token ids, the tokens of each level, and the way back.

    ``items[i]``: item i's token ids (L, or L + 1 with its dedup token); ``level_ids[l]``: the K token ids of level l
    (l < L), ``dedup_ids``: the dedup tokens the catalog uses (ranks 1 .. max rank); ``item(token_ids)``: the item of
    an ID or None."""

    def __init__(self, ids: ItemIds, tokenizer: Any):
        self.ids = ids
        self.levels = int(ids.levels)
        vocab = tokenizer.get_vocab()

        def tid(tok: str) -> int:
            v = vocab.get(tok)
            if v is None:
                raise PbrlError(f"tokenizer: has no token {tok!r} of the semantic IDs (add them with "
                                "pbrl.rec.semantic_ids.add_id_tokens before training the model)")
            return int(v)

        n = len(ids.codes)
        self.items: list[tuple[int, ...]] = [tuple(tid(t) for t in ids.item_tokens(i)) for i in range(n)]
        self.by_tokens: dict[tuple[int, ...], int] = {}
        for i, seq in enumerate(self.items):
            if seq in self.by_tokens:
                raise PbrlError(f"semantic ids: items {self.by_tokens[seq]} and {i} have the same ID tokens")
            self.by_tokens[seq] = i
        self.level_ids: list[list[int]] = [[tid(ids.level_token(lv, c)) for c in range(1, int(ids.k) + 1)]
                                           for lv in range(self.levels)]
        max_rank = int(max(ids.dedup)) if len(ids.dedup) else 0
        self.dedup_ids: list[int] = [tid(ids.level_token(self.levels, r)) for r in range(1, max_rank + 1)]
        self.id_token_set: frozenset[int] = frozenset(v for lv in self.level_ids for v in lv) | frozenset(
            self.dedup_ids)

    def __len__(self) -> int:
        return len(self.items)

    def item(self, token_ids: Sequence[int]) -> int | None:
        """The item named by exactly these ID token ids, or None (not an existing ID)."""
        return self.by_tokens.get(tuple(int(t) for t in token_ids))

    def parse_direct(self, response: Sequence[int], eos_token_id: int) -> tuple[bool, list[int]]:
        """(format ok, ID token ids) of a direct-mode response: ok iff it is L or L + 1 ID tokens followed by EOS.
        (The official reward searches the text for a run of 4-5 ID tokens anywhere; a constrained or trained model
        emits nothing else, and strictness keeps stray text from scoring.)"""
        toks = [int(t) for t in response]
        if not toks or toks[-1] != eos_token_id:
            return False, toks
        body = toks[:-1]
        ok = len(body) in (self.levels, self.levels + 1) and all(t in self.id_token_set for t in body)
        return ok, body


def id_trie(ids: ItemIds, tokenizer: Any) -> TokenTrie:
    """A ``TokenTrie`` over every item's ID token ids (use with the sampler or ``constrained_beam_search``)."""
    return TokenTrie(IdVocab(ids, tokenizer).items)


def level_sets_allowed(ids: ItemIds, tokenizer: Any, eos_id: int) -> Callable[[int, list[int]], list[int]]:
    """The official position-wise constraint as the sampler's ``allowed`` callable ``(row, generated) -> tokens``:
    position i < L: all K level-i tokens; position L: the dedup tokens and EOS; after that only EOS. Counted from the
    first generated token (direct mode)."""
    vocab = IdVocab(ids, tokenizer)
    L = vocab.levels
    after_levels = list(vocab.dedup_ids) + [int(eos_id)]
    only_eos = [int(eos_id)]

    def allowed(row: int, generated: list[int]) -> list[int]:
        pos = len(generated)
        if pos < L:
            return vocab.level_ids[pos]
        return after_levels if pos == L else only_eos

    return allowed


# ----------------------------------------------------------------------------------------------- beam search
@dataclass(frozen=True)
class Beam:
    """One finished beam: its generated token ids (EOS included when emitted), the item they name (None: not an
    existing ID, or no EOS within max_new_tokens) and the summed model log-prob of its tokens."""

    tokens: tuple[int, ...]
    item: int | None
    logprob: float


@torch.inference_mode()
def constrained_beam_search(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    allowed: Allowed,
    *,
    vocab: IdVocab,
    eos_token_id: int,
    num_beams: int = 10,
    max_new_tokens: int | None = None,
    pad_token_id: int | None = None,
    batch_size: int = 16,
) -> list[list[Beam]]:
    """Beam search (module docstring) of every prompt: per prompt its beams ranked by decreasing log-prob.

    ``allowed``: a ``TokenTrie`` (``id_trie``), a callable ``(row, generated) -> tokens | None``
    (``level_sets_allowed``; ``row = prompt * num_beams + beam`` slot) or None. ``max_new_tokens`` defaults to L + 2
    (the levels, a dedup token, EOS)."""
    from pbrl.llm.response_batch import cache_keyword

    if num_beams < 1:
        raise PbrlError(f"num_beams: expected >= 1, got {num_beams}")
    if batch_size < 1:
        raise PbrlError(f"batch_size: expected >= 1, got {batch_size}")
    T = max_new_tokens if max_new_tokens is not None else vocab.levels + 2
    if T < 1:
        raise PbrlError(f"max_new_tokens: expected >= 1, got {T}")
    V = int(model.config.vocab_size)
    for i, p in enumerate(prompts):
        if len(p) == 0 or min(p) < 0 or max(p) >= V:
            raise PbrlError(f"prompts[{i}]: expected a non-empty list of token ids in 0..{V - 1}")
    if not 0 <= eos_token_id < V:
        raise PbrlError(f"eos_token_id: {eos_token_id} is outside the vocabulary (0..{V - 1})")
    pad = eos_token_id if pad_token_id is None else int(pad_token_id)
    kw = cache_keyword(type(model))
    was_training = model.training
    model.eval()
    out: list[list[Beam]] = []
    for b in range(0, len(prompts), batch_size):
        out.extend(_beam_batch(model, [list(p) for p in prompts[b: b + batch_size]], allowed, vocab, eos_token_id,
                               num_beams, T, pad, kw))
    model.train(was_training)
    return out


def _beam_batch(model, prompts: list[list[int]], allowed: Allowed, vocab: IdVocab, eos: int, B: int, T: int,
                pad: int, kw: str) -> list[list[Beam]]:
    from transformers import DynamicCache

    device = next(model.parameters()).device
    P, L = len(prompts), max(len(p) for p in prompts)
    R = P * B
    ids = torch.full((P, L), pad, dtype=torch.long)
    attn = torch.zeros(P, L + T, dtype=torch.long)
    for i, p in enumerate(prompts):  # left padding: positions 0.. of every prompt end at column L - 1
        ids[i, L - len(p):] = torch.tensor(p, dtype=torch.long)
        attn[i, L - len(p): L] = 1
    ids, attn = ids.to(device), attn.to(device)
    pos = (attn[:, :L].cumsum(-1) - 1).clamp_min(0)
    cache = DynamicCache()
    logits = model(input_ids=ids, attention_mask=attn[:, :L], position_ids=pos, use_cache=True, logits_to_keep=1,
                   **{kw: cache}).logits[:, -1]  # [P, V]
    cache.batch_repeat_interleave(B)
    logits = logits.repeat_interleave(B, 0)  # [R, V]
    attn = attn.repeat_interleave(B, 0)  # [R, L + T]
    next_pos = pos[:, -1:].repeat_interleave(B, 0) + 1  # [R, 1]
    V = logits.shape[-1]
    score = torch.full((P, B), float("-inf"), dtype=torch.float64, device=device)
    score[:, 0] = 0.0  # one live beam per prompt at the start: the others would duplicate it
    done = torch.zeros(P, B, dtype=torch.bool, device=device)
    seqs: list[list[int]] = [[] for _ in range(R)]  # generated tokens per beam slot (host side)
    nodes: list[int] = [0] * R  # trie node per beam slot
    trie = allowed if isinstance(allowed, TokenTrie) else None
    for t in range(T):
        lp = torch.log_softmax(logits.to(torch.float64), -1)  # [R, V] the model's own log-probs
        keep = _allowed_mask(lp.shape, allowed, trie, seqs, nodes, eos, done.view(-1), device)
        lp = lp.masked_fill(~keep, float("-inf"))
        fin = done.view(-1)
        if bool(fin.any()):  # a finished beam has one continuation: padding at log-prob 0
            lp[fin] = float("-inf")
            lp[fin, pad] = 0.0
        cand = (score.view(R, 1) + lp).view(P, B * V)  # [P, B V]
        top, idx = cand.topk(B, dim=-1)  # [P, B]
        src = idx // V  # the beam each candidate extends
        tok = idx % V
        rows = (torch.arange(P, device=device)[:, None] * B + src).view(-1)  # [R] source slot of each new beam
        was_done = fin[rows].view(P, B)
        score = top
        done = was_done | (tok == eos)
        host_rows, host_tok, host_done = rows.tolist(), tok.view(-1).tolist(), was_done.view(-1).tolist()
        seqs = [seqs[r] + ([] if d else [v]) for r, v, d in zip(host_rows, host_tok, host_done)]
        if trie is not None:
            nodes = [nodes[r] if d else trie.step(nodes[r], v) for r, v, d in zip(host_rows, host_tok, host_done)]
        alive = torch.isfinite(score)
        if t == T - 1 or bool((done | ~alive).all()):
            break
        cache.reorder_cache(rows)
        attn[:, L + t] = 1
        logits = model(input_ids=tok.view(R, 1), attention_mask=attn[:, : L + t + 1], position_ids=next_pos,
                       use_cache=True, logits_to_keep=1, **{kw: cache}).logits[:, -1]
        next_pos = next_pos + 1
    result = []
    sc, dn = score.tolist(), done.tolist()
    for p in range(P):
        beams = []
        for b in range(B):
            if not math.isfinite(sc[p][b]):  # ran out of allowed candidates: no beam here
                continue
            seq = tuple(seqs[p * B + b])
            item = vocab.item(seq[:-1]) if dn[p][b] else None
            beams.append(Beam(seq, item, float(sc[p][b])))
        result.append(sorted(beams, key=lambda x: -x.logprob))
    return result


def _allowed_mask(shape, allowed: Allowed, trie: TokenTrie | None, seqs: list[list[int]], nodes: list[int],
                  eos: int, done: torch.Tensor, device) -> torch.Tensor:
    """[R, V] True where the constraint allows the token (finished beams: everything, they are handled apart)."""
    R, V = shape
    if allowed is None:
        return torch.ones(R, V, dtype=torch.bool, device=device)
    keep = torch.zeros(R, V, dtype=torch.bool)
    fin = done.tolist()
    for r in range(R):
        if fin[r]:
            keep[r] = True
            continue
        if trie is not None:
            toks = trie.allowed(nodes[r], eos) if nodes[r] >= 0 else []
        else:
            toks = allowed(r, list(seqs[r]))  # type: ignore[operator]
            if toks is None:
                keep[r] = True
                continue
        bad = [v for v in toks if not 0 <= v < V]
        if bad:
            raise PbrlError(f"allowed: token ids {bad[:3]} are outside the vocabulary (0..{V - 1})")
        keep[r, toks] = True
    return keep.to(device)


def invalid_rate(beams: Sequence[Sequence[Beam]], top: int | None = None) -> float:
    """Fraction of returned beams (the first ``top`` of each prompt; None = all) that name no existing item."""
    picked = [b for per in beams for b in (per if top is None else per[:top])]
    if not picked:
        raise PbrlError("invalid_rate: no beams")
    return sum(b.item is None for b in picked) / len(picked)


def ranked_items(beams: Sequence[Beam], filter_invalid: bool = True) -> list[int | None]:
    """The items of ranked beams. ``filter_invalid`` drops the beams that name no item (the official
    ``--filter_items`` gives them score -1000, i.e. moves them behind every valid one); otherwise they keep their
    slot as None (a miss)."""
    items = [b.item for b in beams]
    return [i for i in items if i is not None] if filter_invalid else items


def target_rank(items: Sequence[int | None], target: int) -> int | None:
    """0-based position of ``target`` in a ranked list, None when it is absent (a miss at every cut-off, as the
    official evaluation counts items outside the beams)."""
    for r, i in enumerate(items):
        if i == target:
            return r
    return None


def beam_metrics(beams: Sequence[Sequence[Beam]], targets: Sequence[int], ks: Sequence[int] = (1, 5, 10),
                 filter_invalid: bool = True) -> dict[str, float]:
    """Recall@K and NDCG@K (``pbrl.rec.metrics``) of the beams' ranked items against one target per prompt, plus
    ``rec/invalid_rate`` over all beams and ``rec/invalid_top1``."""
    from pbrl.rec.metrics import metrics_from_ranks

    if len(beams) != len(targets):
        raise PbrlError(f"targets: expected one per prompt ({len(beams)}), got {len(targets)}")
    miss = np.iinfo(np.int64).max // 2  # beyond every cut-off
    ranks = []
    for per, t in zip(beams, targets):
        r = target_rank(ranked_items(per, filter_invalid), int(t))
        ranks.append(miss if r is None else r)
    out = metrics_from_ranks(np.array(ranks, dtype=np.float64), ks)
    out["rec/invalid_rate"] = invalid_rate(beams)
    out["rec/invalid_top1"] = invalid_rate(beams, top=1)
    return out


# ----------------------------------------------------------------------------------------------- reasoning mode
_ID_TOKEN = re.compile(r"<\|[a-z]_\d+\|>")
_REASONED = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)


def parse_answer(text: str) -> list[str] | None:
    """The ID tokens of a reasoning-mode response ``<think>...</think><answer>ID</answer>``, or None when the format
    is wrong (no think block, no answer block, text after the answer, or an answer that is not only ID tokens;
    whitespace between the ID tokens is allowed)."""
    m = _REASONED.fullmatch(text)
    if m is None:
        return None
    answer = re.sub(r"\s+", "", m.group(2))  # a word-level decoder writes tokens apart
    toks = _ID_TOKEN.findall(answer)
    if not toks or "".join(toks) != answer:
        return None
    return toks


def rank_samples(answers: Sequence[int | None], logprobs: Sequence[float]) -> list[tuple[int, float]]:
    """n samples of one prompt -> the distinct valid items ranked by the total log-prob of the best sample that
    names each (reasoning tokens included); samples without a valid ID are left out."""
    if len(answers) != len(logprobs):
        raise PbrlError(f"rank_samples: {len(answers)} answers but {len(logprobs)} log-probs")
    best: dict[int, float] = {}
    for item, lp in zip(answers, logprobs):
        if item is not None and (item not in best or lp > best[item]):
            best[item] = float(lp)
    return sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))


@dataclass(frozen=True)
class ReasoningResult:
    """Reasoning-mode recommendations of P prompts and what the samples looked like."""

    ranked: list[list[tuple[int, float]]]
    """Per prompt: the distinct valid items by decreasing best total log-prob (``rank_samples``)."""
    samples: int
    """Sampled responses in all."""
    format_failures: int
    """Responses that ``parse_answer`` rejects (no think block, no answer, text after it, or length-cut)."""
    invalid_ids: int
    """Well-formed responses whose answer names no catalog item."""
    think_tokens: float
    """Mean tokens inside ``<think>...</think>`` over the well-formed responses (0 when none)."""
    generated_tokens: int
    """Generated tokens in all (EOS included)."""

    @property
    def invalid_rate(self) -> float:
        """Responses without a valid item: format failures plus invalid IDs, over all samples."""
        return (self.format_failures + self.invalid_ids) / max(self.samples, 1)


def reasoning_decode(
    sampler: Any,
    prompts: list[list[int]],
    tokenizer: Any,
    ids: ItemIds,
    *,
    n: int = 10,
    temperature: float = 0.7,
    top_p: float = 0.9,
    max_new_tokens: int = 1560,
    eos_token_id: int,
    seed: int = 0,
) -> ReasoningResult:
    """Reasoning-mode recommendation: n unconstrained samples per prompt (the official 10 at T 0.7, top-p 0.9),
    each parsed with ``parse_answer`` and the items ranked by ``rank_samples`` on the sampler's summed log-probs
    (those of the distribution it drew from), with the counts of format failures and invalid IDs and the think
    length."""
    from pbrl.llm.sampler import SamplingConfig

    gen = sampler.generate(prompts, SamplingConfig(n=n, temperature=temperature, top_p=top_p,
                                                   max_new_tokens=max_new_tokens, eos_token_id=eos_token_id,
                                                   seed=seed))
    eos_text = tokenizer.convert_ids_to_tokens(eos_token_id)
    ranked, bad_format, bad_id, total, think = [], 0, 0, 0, []
    for toks, lps in zip(gen.tokens, gen.logprobs):
        answers = []
        for y in toks:
            text = tokenizer.decode(y, skip_special_tokens=False).replace(eos_text, "")
            parsed = parse_answer(text)
            item = ids.item_of(parsed) if parsed is not None else None
            if parsed is None:
                bad_format += 1
            else:
                m = _REASONED.fullmatch(text)
                think.append(len(tokenizer(m.group(1), add_special_tokens=False)["input_ids"]))  # type: ignore[union-attr]
                bad_id += item is None
            answers.append(item)
            total += 1
        ranked.append(rank_samples(answers, [sum(lp) for lp in lps]))
    return ReasoningResult(ranked, total, bad_format, bad_id, float(np.mean(think)) if think else 0.0,
                           gen.num_tokens)


def reasoning_recommend(
    sampler: Any,
    prompts: list[list[int]],
    tokenizer: Any,
    ids: ItemIds,
    *,
    n: int = 10,
    temperature: float = 0.7,
    top_p: float = 0.9,
    max_new_tokens: int = 1560,
    eos_token_id: int,
    seed: int = 0,
) -> tuple[list[list[tuple[int, float]]], float]:
    """``reasoning_decode`` as (ranked items per prompt, invalid-sample rate)."""
    r = reasoning_decode(sampler, prompts, tokenizer, ids, n=n, temperature=temperature, top_p=top_p,
                         max_new_tokens=max_new_tokens, eos_token_id=eos_token_id, seed=seed)
    return r.ranked, r.invalid_rate


__all__ = ["Beam", "IdVocab", "beam_metrics", "ItemIds", "constrained_beam_search", "id_trie", "invalid_rate", "level_sets_allowed",
           "parse_answer", "rank_samples", "ranked_items", "ReasoningResult", "reasoning_decode", "reasoning_recommend",
           "target_rank"]
