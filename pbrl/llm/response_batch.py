"""Prompt + response batches for scoring sampled responses: one row per response (`Batch`) or each prompt once
for its n responses (`SharedBatch`: the prompt's KV cache is computed once and shared by its group), and the
per-token log-probs of the responses under a causal LM (`token_logprobs`). PPO (pbrl.llm.ppo), SRPO
(pbrl.rec.srpo) and the constrained beam search (pbrl.rec.decoding) use them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pbrl.errors import PbrlError


@dataclass
class Batch:
    """Prompt + response rows, right-padded: ``ids``/``attn`` [B, L]; ``pos`` [B, T] the position whose output
    predicts response token t (len(prompt) - 1 + t), ``tokens`` [B, T] the response ids, ``mask`` [B, T]."""

    ids: torch.Tensor
    attn: torch.Tensor
    pos: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor

    def to(self, device: torch.device) -> Batch:
        return Batch(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))

    @property
    def size(self) -> int:
        """Units to draw minibatches from: rows (responses)."""
        return self.ids.shape[0]

    def responses(self, units: torch.Tensor) -> torch.Tensor:
        """The response rows of minibatch units [k] -> [k]."""
        return units

    def select(self, units: torch.Tensor | list[int]) -> Batch:
        """A minibatch of rows, trimmed to its longest row and response."""
        idx = torch.as_tensor(units, dtype=torch.long)
        attn = self.attn[idx]
        L = int(attn.sum(-1).max())
        mask = self.mask[idx]
        T = int(mask.sum(-1).max())
        return Batch(self.ids[idx, :L], attn[:, :L], self.pos[idx, :T], self.tokens[idx, :T], mask[:, :T])

    def hidden(self, decoder: torch.nn.Module) -> torch.Tensor:
        """The decoder's last hidden state at the position that predicts each response token [B, T, H]."""
        h = decoder(input_ids=self.ids, attention_mask=self.attn, use_cache=False).last_hidden_state  # [B, L, H]
        return h.gather(1, self.pos[..., None].expand(-1, -1, h.shape[-1]))


def build_batch(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int) -> Batch:
    """The rows [prompt, response] right-padded with ``pad_id`` (see ``Batch``); every response needs a token."""
    B = len(prompts)
    L = max(len(p) + len(r) for p, r in zip(prompts, responses))
    T = max(len(r) for r in responses)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    attn = torch.zeros(B, L, dtype=torch.long)
    pos = torch.zeros(B, T, dtype=torch.long)
    tokens = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        n, k = len(p), len(r)
        ids[i, : n + k] = torch.tensor(list(p) + list(r), dtype=torch.long)
        attn[i, : n + k] = 1
        pos[i, :k] = torch.arange(n - 1, n - 1 + k)
        tokens[i, :k] = torch.tensor(list(r), dtype=torch.long)
        mask[i, :k] = True
    return Batch(ids, attn, pos, tokens, mask)


@dataclass
class SharedBatch:
    """G prompts with n responses each, the prompt computed once per group (prefix sharing through the KV cache):
    ``prompt_ids``/``prompt_attn`` [G, Lp] and ``tokens``/``mask`` [G n, T], all right-padded, the responses of
    group g in rows g n .. g n + n - 1.

    The decoder runs the G prompts once (use_cache), the cache is repeated n times on the batch dim, then the G n
    responses run on it with positions continuing after each prompt; gradients flow into the prompt's keys and
    values through the cache. The hidden state before response token 0 is the prompt's last one, before token t
    the response's token t - 1: the same states as one row [prompt, response] gives (up to float rounding), for
    a prompt's work done once instead of n times. (Right padding: a padding query always has a real key before
    it, so no attention row is fully masked; the response's positions skip the padding columns.)
    """

    prompt_ids: torch.Tensor
    prompt_attn: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor
    n: int

    def to(self, device: torch.device) -> SharedBatch:
        return SharedBatch(self.prompt_ids.to(device), self.prompt_attn.to(device), self.tokens.to(device),
                           self.mask.to(device), self.n)

    @property
    def size(self) -> int:
        """Units to draw minibatches from: prompt groups."""
        return self.prompt_ids.shape[0]

    def responses(self, units: torch.Tensor) -> torch.Tensor:
        """The response rows of groups [k] -> [k n]."""
        return (units[:, None] * self.n + torch.arange(self.n, device=units.device)).reshape(-1)

    def select(self, units: torch.Tensor | list[int]) -> SharedBatch:
        """A minibatch of groups, trimmed to its longest prompt and response."""
        g = torch.as_tensor(units, dtype=torch.long)
        attn = self.prompt_attn[g]
        Lp = int(attn.sum(-1).max())
        rows = self.responses(g)
        mask = self.mask[rows]
        T = int(mask.sum(-1).max())
        return SharedBatch(self.prompt_ids[g, :Lp], attn[:, :Lp], self.tokens[rows, :T], mask[:, :T], self.n)

    def hidden(self, decoder: torch.nn.Module) -> torch.Tensor:
        from transformers import DynamicCache

        cache = DynamicCache()
        kv = {cache_keyword(type(decoder)): cache}
        n, T = self.n, self.tokens.shape[1]
        lengths = self.prompt_attn.sum(-1)  # [G]
        pos = torch.arange(self.prompt_ids.shape[1], device=lengths.device).expand_as(self.prompt_ids)
        hp = decoder(input_ids=self.prompt_ids, attention_mask=self.prompt_attn, position_ids=pos, use_cache=True,
                     **kv).last_hidden_state  # [G, Lp, H]
        last = hp[torch.arange(hp.shape[0], device=hp.device), lengths - 1]  # [G, H] each prompt's last token
        if n > 1:
            cache.batch_repeat_interleave(n)
        attn = torch.cat([self.prompt_attn.repeat_interleave(n, 0), self.mask.to(self.prompt_attn.dtype)], -1)
        start = lengths.repeat_interleave(n)[:, None]  # [G n, 1]: a response's positions continue its prompt's
        hr = decoder(input_ids=self.tokens, attention_mask=attn,
                     position_ids=start + torch.arange(T, device=start.device), use_cache=True,
                     **kv).last_hidden_state  # [G n, T, H]
        return torch.cat([last.repeat_interleave(n, 0)[:, None], hr[:, :-1]], 1)  # [G n, T, H]


@functools.cache
def cache_keyword(decoder_class: type) -> str:
    """The decoder's KV-cache argument: transformers >= 5.24 names it ``cache`` (``past_key_values`` before)."""
    return "cache" if "cache" in inspect.signature(decoder_class.forward).parameters else "past_key_values"


def build_shared_batch(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], n: int,
                       pad_id: int) -> SharedBatch:
    """G = len(prompts) prompts and their n responses each (``responses[g n + s]``), see ``SharedBatch``."""
    G = len(prompts)
    if len(responses) != G * n:
        raise PbrlError(f"build_shared_batch: expected {G} x {n} responses, got {len(responses)}")
    Lp = max(len(p) for p in prompts)
    T = max(len(r) for r in responses)
    ids = torch.full((G, Lp), pad_id, dtype=torch.long)
    attn = torch.zeros(G, Lp, dtype=torch.long)
    for g, p in enumerate(prompts):
        ids[g, : len(p)] = torch.tensor(list(p), dtype=torch.long)
        attn[g, : len(p)] = 1
    tokens = torch.full((G * n, T), pad_id, dtype=torch.long)
    mask = torch.zeros(G * n, T, dtype=torch.bool)
    for i, r in enumerate(responses):
        tokens[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, : len(r)] = True
    return SharedBatch(ids, attn, tokens, mask, n)


AnyBatch = Batch | SharedBatch


def token_logprobs(model: torch.nn.Module, batch: AnyBatch) -> torch.Tensor:
    """log pi(y_t | x, y_<t) of every response token [B, T] (float32 at least, 0 on padding); the output head runs
    on the response positions only."""
    logits = model.get_output_embeddings()(batch.hidden(model.get_decoder()))  # [B, T, V]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # float32 at least (float64 stays)
    lp = logits.log_softmax(-1).gather(-1, batch.tokens[..., None]).squeeze(-1)
    return lp * batch.mask
