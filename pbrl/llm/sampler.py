"""One sampler for everything that generates (online DPO, later PPO, SRPO and the recommender).

``Sampler`` is the interface: ``generate(prompts, config, allowed=None) -> Generation``, token ids per (prompt,
sample). ``HFSampler`` implements it for any HF causal LM; a vLLM or sglang backend would implement the same method
(``SamplingParams(n=..., temperature=..., top_p=..., max_tokens=..., seed=...)`` maps field for field).

``HFSampler`` in one picture (P prompts, n samples each, R = P*n rows):

    prefill   the P prompts, left-padded, ONCE: [P, L] -> KV cache [P, h, L, d] and the next-token logits [P, V]
    expand    cache and logits repeat_interleave(n) on the batch dim -> [R, ...]: the n samples share the prefill
    decode    one token per step for the active rows: [R', 1] with the cache; rows that emitted EOS leave the
              batch (the cache keeps only the rows still running), their remaining slots are padding

Left padding: a prompt of length l sits in the last l columns; its attention mask is 0 on the padding and its
position ids are 0..l-1 (cumsum of the mask - 1), so RoPE sees the same positions as an unpadded prompt and a
row's tokens equal those of a batch of one (up to float rounding).

Sampling distribution at step t for row r, with z the logits and A the allowed set (constraint):

    z'_v = z_v / T  if v in A  else -inf
    p    = softmax(z')                               (temperature T > 0)
    N    = smallest set of top tokens with sum_{v in N} p_v >= top_p      (nucleus; Holtzman et al. 2020)
    q_v  = p_v / sum_{u in N} p_u  for v in N, else 0;   token ~ q,  log-prob = log q_token

T = 0 is greedy: token = argmax z' and the log-prob is taken under softmax(z) restricted to A (T = 1, no nucleus),
so greedy log-probs are the model's own. Draws use one ``torch.Generator`` seeded with ``config.seed``: the same
seed, prompts and model give the same output.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, Union

import torch

from pbrl.errors import PbrlError

FinishReason = Literal["eos", "length"]
AllowedFn = Callable[[int, list[int]], "list[int] | None"]


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample: ``n`` completions per prompt of at most ``max_new_tokens`` tokens."""

    n: int = 1
    """Samples per prompt; they share the prompt's prefill."""
    temperature: float = 1.0
    """Softmax temperature; 0 = greedy (argmax)."""
    top_p: float = 1.0
    """Nucleus mass in (0, 1]; 1 keeps the whole distribution."""
    max_new_tokens: int = 64
    """Longest completion; a row that reaches it finishes with reason "length"."""
    eos_token_id: int | None = None
    """A row that emits this token stops (the token is kept, reason "eos"); None = never stop early."""
    pad_token_id: int | None = None
    """Fills the slots after EOS in padded outputs; None = eos_token_id, else 0."""
    seed: int = 0
    """Seed of the sampler's random generator."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise PbrlError(f"SamplingConfig.n: expected >= 1, got {self.n}")
        if not self.temperature >= 0:
            raise PbrlError(f"SamplingConfig.temperature: expected >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise PbrlError(f"SamplingConfig.top_p: expected in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise PbrlError(f"SamplingConfig.max_new_tokens: expected >= 1, got {self.max_new_tokens}")
        for name in ("eos_token_id", "pad_token_id"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise PbrlError(f"SamplingConfig.{name}: expected a token id >= 0 or None, got {v}")

    @property
    def pad(self) -> int:
        """The id used for padding."""
        if self.pad_token_id is not None:
            return self.pad_token_id
        return self.eos_token_id if self.eos_token_id is not None else 0


@dataclass
class Generation:
    """Completions of P prompts, n each: ``tokens[p][s]`` (EOS included when emitted, no padding), the log-prob of
    every token under the distribution it was drawn from, and why each completion stopped."""

    tokens: list[list[list[int]]]
    logprobs: list[list[list[float]]]
    finish_reasons: list[list[FinishReason]]

    @property
    def num_tokens(self) -> int:
        """Generated tokens in all completions (EOS included, padding not)."""
        return sum(len(s) for per_prompt in self.tokens for s in per_prompt)

    def padded(self, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(ids [P, n, T], logprobs [P, n, T], mask [P, n, T])``, right-padded to the longest completion
        (padding: ``pad_token_id``, log-prob 0, mask False)."""
        P, n = len(self.tokens), len(self.tokens[0]) if self.tokens else 0
        T = max((len(s) for per_prompt in self.tokens for s in per_prompt), default=0)
        ids = torch.full((P, n, T), pad_token_id, dtype=torch.long)
        lp = torch.zeros(P, n, T, dtype=torch.float64)
        mask = torch.zeros(P, n, T, dtype=torch.bool)
        for p in range(P):
            for s in range(n):
                k = len(self.tokens[p][s])
                ids[p, s, :k] = torch.tensor(self.tokens[p][s], dtype=torch.long)
                lp[p, s, :k] = torch.tensor(self.logprobs[p][s], dtype=torch.float64)
                mask[p, s, :k] = True
        return ids, lp, mask


class TokenTrie:
    """Allowed completions as a trie of token ids: inside the trie only a node's children may follow, and where an
    allowed sequence ends EOS may follow (at a leaf only EOS). Use with an ``eos_token_id`` in the config."""

    def __init__(self, sequences: Sequence[Sequence[int]]):
        if not sequences:
            raise PbrlError("TokenTrie: expected at least one allowed token sequence, got none")
        self.children: list[dict[int, int]] = [{}]  # node -> {token: child node}; node 0 is the root
        self.ends: list[bool] = [False]  # an allowed sequence ends at this node
        for i, seq in enumerate(sequences):
            if len(seq) == 0:
                raise PbrlError(f"TokenTrie: sequence {i} is empty; every allowed sequence needs a token")
            node = 0
            for tok in seq:
                tok = int(tok)
                if tok < 0:
                    raise PbrlError(f"TokenTrie: sequence {i} has a negative token id {tok}")
                nxt = self.children[node].get(tok)
                if nxt is None:
                    nxt = len(self.children)
                    self.children[node][tok] = nxt
                    self.children.append({})
                    self.ends.append(False)
                node = nxt
            self.ends[node] = True

    def step(self, node: int, token: int) -> int:
        """The node after ``token`` (-1 when the token leaves the trie)."""
        return self.children[node].get(token, -1) if node >= 0 else -1

    def allowed(self, node: int, eos_token_id: int) -> list[int]:
        """Tokens allowed at ``node``: its children, plus EOS where an allowed sequence ends."""
        out = list(self.children[node])
        if self.ends[node]:
            out.append(eos_token_id)
        return out


Allowed = Union[AllowedFn, TokenTrie, None]  # noqa: UP007 (a runtime alias; `|` needs the classes)


class Sampler(Protocol):
    """Anything that completes token prompts: the HF sampler here, a vLLM or sglang engine elsewhere."""

    def generate(
        self, prompts: list[list[int]], config: SamplingConfig, allowed: Allowed = None
    ) -> Generation:
        """``config.n`` completions of each prompt. ``allowed`` constrains decoding: a ``TokenTrie``, or a function
        ``(row, generated_so_far) -> allowed next tokens | None`` (None = no constraint), where ``row = p * n + s``
        is the (prompt, sample) pair and ``generated_so_far`` the row's tokens so far."""
        ...


def nucleus_mask(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """True for the tokens outside the nucleus: sorted by probability, a token is dropped when the mass before it
    already reaches ``top_p`` (so the most likely token always stays). probs [R, V] -> bool [R, V]."""
    sorted_p, order = probs.sort(dim=-1, descending=True)
    before = sorted_p.cumsum(-1) - sorted_p  # exclusive cumulative mass
    drop_sorted = before >= top_p
    return torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)


def sampling_logprobs(logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """Log of the sampling distribution q (see the module docstring) from masked logits [R, V] (-inf = not
    allowed); for T = 0 the log-softmax of the logits."""
    if config.temperature == 0:
        return torch.log_softmax(logits, dim=-1)
    z = logits / config.temperature
    if config.top_p < 1:
        z = z.masked_fill(nucleus_mask(torch.softmax(z, dim=-1), config.top_p), float("-inf"))
    return torch.log_softmax(z, dim=-1)


class HFSampler:
    """``Sampler`` for a HF causal LM (``transformers`` ``DynamicCache``): one left-padded prefill per prompt batch,
    the cache shared by the n samples, step-by-step decoding of the rows still running."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        # transformers >= 5.24 names the cache argument `cache` (`past_key_values` is deprecated); older: the latter
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    @torch.inference_mode()
    def generate(
        self, prompts: list[list[int]], config: SamplingConfig, allowed: Allowed = None
    ) -> Generation:
        from transformers import DynamicCache

        model = self.model
        vocab = int(model.config.vocab_size)
        _check_prompts(prompts, vocab)
        if isinstance(allowed, TokenTrie) and config.eos_token_id is None:
            raise PbrlError("SamplingConfig.eos_token_id: a TokenTrie constraint needs an EOS id to end sequences")
        device = next(model.parameters()).device
        P, n, T = len(prompts), config.n, config.max_new_tokens
        R = P * n
        L = max(len(p) for p in prompts)
        ids = torch.full((P, L), config.pad, dtype=torch.long)
        attn = torch.zeros(P, L + T, dtype=torch.long)  # prompt columns, then one column per new token
        for i, p in enumerate(prompts):
            ids[i, L - len(p):] = torch.tensor(p, dtype=torch.long)
            attn[i, L - len(p): L] = 1
        ids, attn = ids.to(device), attn.to(device)
        pos = (attn[:, :L].cumsum(-1) - 1).clamp_min(0)
        gen = torch.Generator(device=device)
        gen.manual_seed(config.seed)

        out_tok = torch.full((R, T), config.pad, dtype=torch.long, device=device)
        out_lp = torch.zeros(R, T, dtype=torch.float64, device=device)
        length = torch.full((R,), T, dtype=torch.long, device=device)  # tokens kept per row (EOS included)
        hit_eos = torch.zeros(R, dtype=torch.bool, device=device)
        rows = torch.arange(R, device=device)  # original row of each active batch row
        # constraint state, kept on the host: per-row generated tokens (callable) or trie node (trie)
        history: list[list[int]] | None = [[] for _ in range(R)] if callable(allowed) else None
        nodes: list[int] | None = [0] * R if isinstance(allowed, TokenTrie) else None

        cache = DynamicCache()
        kv = {self._cache_kw: cache}
        logits = model(
            input_ids=ids, attention_mask=attn[:, :L], position_ids=pos, use_cache=True, logits_to_keep=1, **kv
        ).logits[:, -1]
        if n > 1:  # the n samples of a prompt share its prefill: copy the cache rows, not recompute them
            cache.batch_repeat_interleave(n)
            logits = logits.repeat_interleave(n, dim=0)
            attn = attn.repeat_interleave(n, dim=0)
        next_pos = pos[:, -1:].repeat_interleave(n, dim=0) + 1  # [R', 1]
        for t in range(T):
            logits = logits.to(torch.float64 if logits.dtype == torch.float64 else torch.float32)
            if allowed is not None:
                logits = self._constrain(logits, rows, allowed, config, history, nodes)
            tok, lp = _draw(logits, config, gen)
            out_tok[rows, t] = tok
            out_lp[rows, t] = lp.to(torch.float64)
            if history is not None or nodes is not None:
                host = tok.tolist()
                for r, v in zip(rows.tolist(), host):
                    if history is not None:
                        history[r].append(v)
                    if nodes is not None:
                        nodes[r] = allowed.step(nodes[r], v)  # type: ignore[union-attr]
            if t == T - 1:
                break
            if config.eos_token_id is not None:
                done = tok == config.eos_token_id
                if bool(done.any()):
                    hit_eos[rows[done]] = True
                    length[rows[done]] = t + 1
                    keep = (~done).nonzero().squeeze(-1)
                    if keep.numel() == 0:
                        break
                    # finished rows leave the batch: later steps compute only the rows still running
                    cache.batch_select_indices(keep)
                    rows, tok, attn, next_pos = rows[keep], tok[keep], attn[keep], next_pos[keep]
            attn[:, L + t] = 1
            logits = model(
                input_ids=tok[:, None], attention_mask=attn[:, : L + t + 1], position_ids=next_pos,
                use_cache=True, logits_to_keep=1, **kv,
            ).logits[:, -1]
            next_pos = next_pos + 1
        if config.eos_token_id is not None:  # an EOS drawn at the last step
            last = out_tok[:, T - 1] == config.eos_token_id
            hit_eos |= last & (length == T)

        tok_l, lp_l, len_l, eos_l = out_tok.tolist(), out_lp.tolist(), length.tolist(), hit_eos.tolist()
        tokens = [[tok_l[p * n + s][: len_l[p * n + s]] for s in range(n)] for p in range(P)]
        logprobs = [[lp_l[p * n + s][: len_l[p * n + s]] for s in range(n)] for p in range(P)]
        reasons: list[list[FinishReason]] = [
            ["eos" if eos_l[p * n + s] else "length" for s in range(n)] for p in range(P)
        ]
        return Generation(tokens=tokens, logprobs=logprobs, finish_reasons=reasons)

    @staticmethod
    def _constrain(
        logits: torch.Tensor,
        rows: torch.Tensor,
        allowed: AllowedFn | TokenTrie,
        config: SamplingConfig,
        history: list[list[int]] | None,
        nodes: list[int] | None,
    ) -> torch.Tensor:
        """Set the logits of tokens the constraint forbids to -inf, row by row."""
        vocab = logits.shape[-1]
        keep = torch.zeros_like(logits, dtype=torch.bool)
        constrained = False
        for i, r in enumerate(rows.tolist()):
            if nodes is not None:
                if nodes[r] < 0:
                    raise PbrlError(f"TokenTrie: row {r} left the trie (a token outside every allowed sequence)")
                toks: list[int] | None = allowed.allowed(nodes[r], config.eos_token_id)  # type: ignore[union-attr,arg-type]
            else:
                toks = allowed(r, list(history[r]))  # type: ignore[operator,index]
                if toks is None:
                    keep[i] = True
                    continue
            if len(toks) == 0:
                raise PbrlError(f"allowed: no allowed next token for row {r}; return None for no constraint")
            bad = [v for v in toks if not 0 <= v < vocab]
            if bad:
                raise PbrlError(f"allowed: token ids {bad[:3]} for row {r} are outside the vocabulary (0..{vocab - 1})")
            keep[i, toks] = True
            constrained = True
        return logits.masked_fill(~keep, float("-inf")) if constrained else logits


def _draw(
    logits: torch.Tensor, config: SamplingConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row and its log-prob under the sampling distribution q. logits [R, V] -> ([R], [R]).

    Draws by inverse CDF: u ~ U[0, 1) per row, token = the first index whose cumulative probability exceeds
    u * (kept mass), so one cumsum and one search replace ``multinomial`` (several times slower on CPU). The nucleus
    needs the probabilities in descending order; when the top ``NUCLEUS_CANDIDATES`` tokens of every row already
    hold ``top_p`` of the mass (a trained model's usual case) only those are sorted (``topk``), otherwise all.
    """
    if config.temperature == 0:
        tok = logits.argmax(-1)
        logq = logits.gather(-1, tok[:, None]).squeeze(-1) - logits.logsumexp(-1)
        return tok, logq
    z = logits / config.temperature
    log_norm = z.logsumexp(-1, keepdim=True)
    probs = (z - log_norm).exp()
    u = torch.rand(probs.shape[0], 1, generator=gen, device=probs.device, dtype=probs.dtype)
    if config.top_p >= 1:
        cdf = probs.cumsum(-1)
        idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_max(probs.shape[-1] - 1)
        while True:  # rounding can put u * mass on a zero-probability tail; step back to a token with mass
            zero = probs.gather(-1, idx) == 0
            if not bool(zero.any()):
                break
            idx = torch.where(zero, idx - 1, idx)
        tok = idx.squeeze(-1)
        return tok, (z.gather(-1, idx) - log_norm).squeeze(-1)
    k = min(NUCLEUS_CANDIDATES, probs.shape[-1])
    sorted_p, order = probs.topk(k, dim=-1)  # descending
    if k < probs.shape[-1] and not bool((sorted_p.sum(-1) >= config.top_p).all()):
        sorted_p, order = probs.sort(dim=-1, descending=True)
    cdf = sorted_p.cumsum(-1)
    kept = ((cdf - sorted_p) < config.top_p).sum(-1, keepdim=True)  # nucleus size per row (>= 1)
    mass = cdf.gather(-1, kept - 1)
    idx = torch.minimum(torch.searchsorted(cdf, u * mass, right=True), kept - 1)
    tok = order.gather(-1, idx).squeeze(-1)
    return tok, (sorted_p.gather(-1, idx).log() - mass.log()).squeeze(-1)


NUCLEUS_CANDIDATES = 128


def _check_prompts(prompts: list[list[int]], vocab: int) -> None:
    if len(prompts) == 0:
        raise PbrlError("prompts: expected at least one prompt, got none")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise PbrlError(f"prompts[{i}]: expected at least one token, got none")
        lo, hi = min(p), max(p)
        if lo < 0 or hi >= vocab:
            raise PbrlError(f"prompts[{i}]: token ids must lie in 0..{vocab - 1}, got {lo if lo < 0 else hi}")


__all__ = [
    "Generation",
    "HFSampler",
    "Sampler",
    "SamplingConfig",
    "TokenTrie",
    "nucleus_mask",
    "sampling_logprobs",
]
