"""Prefix-shared and packed layouts for DPO batches, and per-branch log-probs.

Prefix sharing (Wang & Hegde, "Accelerating Direct Preference Optimization with Prefix Sharing", arXiv 2410.20305):
chosen and rejected responses share the prompt, so instead of two sequences [prompt+chosen] and [prompt+rejected]
we run ONE sequence with a block-sparse mask in which rejected tokens cannot see chosen tokens:

    input_ids    = prompt + chosen + prompt[-1:] + rejected          # the last prompt token is duplicated
    position_ids = 0..P+C-1  ++  P-1..P+R-1                           # the rejected branch restarts at P-1
    allow(q, k)  = k <= q  and  doc[q] == doc[k]  and  not (branch[q] == REJECTED and branch[k] == CHOSEN)

The prompt's last token counts as part of the chosen branch and its duplicate as part of the rejected branch, so
each branch sees P prompt keys. The duplicate sits at position P-1; its hidden states equal the prompt's last token's,
and its logits predict the first rejected token, so the rejected branch sees exactly the positions (RoPE) and keys of
a standalone prompt+rejected sequence: log-probs and gradients equal standard DPO's (tests/llm prove it).

Every layout here is described by the same per-token fields, so one attention mask rule and one log-prob
reduction serve all four ways of batching DPO data:

- ``padded``: standard DPO, one row per (prompt+chosen) and per (prompt+rejected), right-padded (TRL's layout);
- ``packed``: the same sequences packed into rows by first-fit-decreasing (``doc`` separates them);
- ``shared``: one prefix-shared sequence per example, one row each, right-padded;
- ``packed_shared``: prefix-shared sequences packed into rows.

Per-branch log-probs are sums of token log-probs accumulated in float32 (or float64 when the model runs in float64)
with ``index_add`` over a per-token output slot (2*i for example i's chosen response, 2*i+1 for its rejected one);
the paper notes that float32 accumulation is necessary for correct sums.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from pbrl.errors import PbrlError

Layout = Literal["padded", "packed", "shared", "packed_shared"]
LAYOUTS: tuple[str, ...] = ("padded", "packed", "shared", "packed_shared")

# Token roles in a sequence. The mask only needs to know who is chosen and who is rejected.
PROMPT, CHOSEN, REJECTED = 0, 1, 2
IGNORE = -100  # no target at this position (cross_entropy's ignore_index convention)


@dataclass(frozen=True)
class TokenizedPair:
    """One preference example as token ids: a prompt and two responses (chosen preferred over rejected)."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int]

    def __post_init__(self) -> None:
        for name in ("prompt", "chosen", "rejected"):
            if len(getattr(self, name)) == 0:
                raise PbrlError(f"TokenizedPair.{name}: expected at least one token, got none")


@dataclass
class _Unit:
    """One sequence to place in a row: its tokens and per-token fields (slots relative to its example)."""

    ids: list[int]
    pos: list[int]
    branch: list[int]
    targets: list[int]
    slots: list[int]  # absolute output slots (2*i or 2*i+1), -1 where there is no target


def shared_unit(pair: TokenizedPair, index: int) -> _Unit:
    """The prefix-shared sequence of example ``index``: prompt + chosen + prompt[-1] + rejected (P+C+R+1 tokens)."""
    p, c, r = pair.prompt, pair.chosen, pair.rejected
    P, C, R = len(p), len(c), len(r)
    ids = p + c + p[-1:] + r
    pos = list(range(P + C)) + list(range(P - 1, P + R))
    # the prompt's last token belongs to the chosen branch: the rejected branch sees its duplicate instead, so
    # that it has exactly P prompt keys, as a standalone prompt+rejected sequence has
    branch = [PROMPT] * (P - 1) + [CHOSEN] * (C + 1) + [REJECTED] * (R + 1)
    # logits at position j predict token j+1: prompt[-1] predicts chosen[0] ... chosen[-2] predicts chosen[-1];
    # chosen[-1] would predict the duplicate, which is no target; the duplicate predicts rejected[0] and so on.
    targets = [IGNORE] * (P - 1) + c + [IGNORE] + r + [IGNORE]
    slots = [-1] * (P - 1) + [2 * index] * C + [-1] + [2 * index + 1] * R + [-1]
    return _Unit(ids, pos, branch, targets, slots)


def separate_units(pair: TokenizedPair, index: int) -> tuple[_Unit, _Unit]:
    """The two standard DPO sequences of example ``index``: prompt + chosen and prompt + rejected."""
    units = []
    for resp, role, slot in ((pair.chosen, CHOSEN, 2 * index), (pair.rejected, REJECTED, 2 * index + 1)):
        P, n = len(pair.prompt), len(resp)
        units.append(
            _Unit(
                ids=pair.prompt + resp,
                pos=list(range(P + n)),
                branch=[PROMPT] * P + [role] * n,
                targets=[IGNORE] * (P - 1) + resp + [IGNORE],
                slots=[-1] * (P - 1) + [slot] * n + [-1],
            )
        )
    return units[0], units[1]


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Bin packing: items sorted by decreasing length, each put in the first bin with room (else a new bin).

    Returns bins as lists of item indices. Raises PbrlError if an item is longer than ``capacity``.
    """
    longest = max(lengths, default=0)
    if longest > capacity:
        raise PbrlError(f"pack_length: a sequence of {longest} tokens does not fit in pack_length={capacity}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(capacity - lengths[i])
    return bins


@dataclass(frozen=True)
class DpoBatch:
    """A DPO batch in one of the four layouts; rows [B, S]. Every field is a tensor on the same device.

    The attention rule for every layout: ``allow(q, k) = k <= q and doc[q] == doc[k] and
    not (branch[q] == REJECTED and branch[k] == CHOSEN)``; padding has doc = -1 (it sees only padding).
    """

    input_ids: torch.Tensor  # [B, S] int64
    position_ids: torch.Tensor  # [B, S] int64 (RoPE positions; restart per document and per rejected branch)
    doc: torch.Tensor  # [B, S] int32: document (sequence) index inside its row, -1 for padding
    branch: torch.Tensor  # [B, S] int32: PROMPT / CHOSEN / REJECTED
    targets: torch.Tensor  # [B, S] int64: the token the logits at this position predict, IGNORE if none
    slots: torch.Tensor  # [B, S] int64: output slot (2*i chosen, 2*i+1 rejected of example i), -1 if none
    num_examples: int
    layout: str

    @property
    def num_tokens(self) -> int:
        """Tokens that are not padding (what the model computes on usefully)."""
        return int((self.doc >= 0).sum())

    def to(self, device: torch.device | str) -> DpoBatch:
        fields = {k: getattr(self, k).to(device) for k in ("input_ids", "position_ids", "doc", "branch", "targets", "slots")}
        return DpoBatch(**fields, num_examples=self.num_examples, layout=self.layout)


def build_batch(
    pairs: Sequence[TokenizedPair],
    layout: Layout = "shared",
    *,
    pack_length: int | None = None,
    pad_to_multiple: int = 1,
    pad_id: int = 0,
) -> DpoBatch:
    """Lay out ``pairs`` as one DPO batch.

    pack_length: row capacity in tokens for the packed layouts (default: the longest sequence, rounded up to
        ``pad_to_multiple``). pad_to_multiple: the row length S is rounded up to a multiple of this (kernels with
        fixed tiles want 64 or 128).
    """
    if layout not in LAYOUTS:
        raise PbrlError(f"layout: expected one of {LAYOUTS}, got {layout!r}")
    if len(pairs) == 0:
        raise PbrlError("build_batch: expected at least one preference pair, got none")
    if pad_to_multiple < 1:
        raise PbrlError(f"pad_to_multiple: expected >= 1, got {pad_to_multiple}")
    units: list[_Unit] = []
    for i, pair in enumerate(pairs):
        if layout in ("shared", "packed_shared"):
            units.append(shared_unit(pair, i))
        else:
            units.extend(separate_units(pair, i))

    def round_up(n: int) -> int:
        return -(-n // pad_to_multiple) * pad_to_multiple

    if layout in ("packed", "packed_shared"):
        capacity = pack_length if pack_length is not None else round_up(max(len(u.ids) for u in units))
        rows = first_fit_decreasing([len(u.ids) for u in units], capacity)
    else:
        rows = [[j] for j in range(len(units))]
    S = round_up(max(sum(len(units[j].ids) for j in row) for row in rows))
    B = len(rows)
    ids = torch.full((B, S), pad_id, dtype=torch.long)
    # padding continues the row's index as its position: a padded row then reads as one monotone sequence, so HF's
    # own kernels (used for the padded baseline) detect no packing and keep their mask-free causal path
    pos = torch.arange(S, dtype=torch.long).repeat(B, 1)
    doc = torch.full((B, S), -1, dtype=torch.int32)
    branch = torch.zeros((B, S), dtype=torch.int32)
    targets = torch.full((B, S), IGNORE, dtype=torch.long)
    slots = torch.full((B, S), -1, dtype=torch.long)
    for b, row in enumerate(rows):
        at = 0
        for d, j in enumerate(row):
            u = units[j]
            n = len(u.ids)
            ids[b, at : at + n] = torch.tensor(u.ids)
            pos[b, at : at + n] = torch.tensor(u.pos)
            doc[b, at : at + n] = d
            branch[b, at : at + n] = torch.tensor(u.branch, dtype=torch.int32)
            targets[b, at : at + n] = torch.tensor(u.targets)
            slots[b, at : at + n] = torch.tensor(u.slots)
            at += n
    return DpoBatch(ids, pos, doc, branch, targets, slots, num_examples=len(pairs), layout=layout)


def sequence_tokens(pairs: Sequence[TokenizedPair], layout: Layout) -> int:
    """Tokens the model processes for ``pairs`` in ``layout`` before padding (2P+C+R standard, P+C+R+1 shared)."""
    if layout in ("shared", "packed_shared"):
        return sum(len(p.prompt) + len(p.chosen) + len(p.rejected) + 1 for p in pairs)
    return sum(2 * len(p.prompt) + len(p.chosen) + len(p.rejected) for p in pairs)


def dense_mask(doc: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """The boolean attention mask [B, 1, S, S] (True = may attend) of the rule in ``DpoBatch``'s docstring."""
    S = doc.shape[-1]
    idx = torch.arange(S, device=doc.device)
    causal = idx[:, None] >= idx[None, :]  # [S, S]
    same_doc = doc[:, :, None] == doc[:, None, :]  # [B, S, S]
    cross = (branch[:, :, None] == REJECTED) & (branch[:, None, :] == CHOSEN)  # [B, S, S]
    return (causal & same_doc & ~cross)[:, None]


def tile_visits(doc: torch.Tensor, branch: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Which (query tile, key tile) pairs of ``block`` tokens hold allowed pairs of the ``dense_mask`` rule, from
    O(S / block) per-tile summaries instead of the O(S^2) mask. doc / branch [B, S]; a last tile that runs past S
    is summarised over its positions < S.

    -> (visit, full), bool [B, NT, NT]. visit: the tile may hold an allowed pair; it is skipped when it lies after
    the query tile, when the two tiles' document-id ranges are disjoint, or when the query tile is all rejected and
    the key tile all chosen. full: every pair of the tile is allowed (strictly below the diagonal, one document
    (or padding only) across both tiles, no rejected query meets a chosen key, and no position past S), so kernels
    may skip the element mask there. Padding (doc -1) attends padding, as in ``dense_mask``.
    """
    B, S = doc.shape
    nt = -(-S // block)
    pad = nt * block - S
    real = F.pad(torch.ones_like(doc, dtype=torch.bool), (0, pad), value=False).view(B, nt, block)
    d = F.pad(doc.to(torch.int64), (0, pad)).view(B, nt, block)
    br = F.pad(branch.to(torch.int32), (0, pad)).view(B, nt, block)
    docs, pads = real & (d >= 0), real & (d < 0)  # document tokens; padding (attends padding only)
    big = torch.iinfo(torch.int64).max
    dmin = d.masked_fill(~docs, big).amin(-1)  # [B, NT] document-id range of the tile's document tokens
    dmax = d.masked_fill(~docs, -big).amax(-1)
    has_pad = pads.any(-1)
    rej, cho = (br == REJECTED) & real, (br == CHOSEN) & real  # [B, NT, block]
    t = torch.arange(nt, device=doc.device)
    # a shared document lies in both ranges, so disjoint ranges share none (exact: ids are numbered in row order)
    overlap = (dmin[:, :, None] <= dmax[:, None, :]) & (dmin[:, None, :] <= dmax[:, :, None])  # [B, NTq, NTk]
    overlap |= has_pad[:, :, None] & has_pad[:, None, :]
    cross_all = (rej | ~real).all(-1)[:, :, None] & (cho | ~real).all(-1)[:, None, :]  # all rejected -> chosen
    visit = (t[:, None] >= t[None, :]) & overlap & ~cross_all
    one_doc = real.all(-1) & ~has_pad & (dmin == dmax)  # [B, NT]: a complete tile of one document
    all_pad = pads.all(-1)
    same = one_doc[:, :, None] & one_doc[:, None, :] & (dmin[:, :, None] == dmin[:, None, :])
    same |= all_pad[:, :, None] & all_pad[:, None, :]
    cross_any = rej.any(-1)[:, :, None] & cho.any(-1)[:, None, :]
    full = (t[:, None] > t[None, :]) & same & ~cross_any
    return visit, full


def tile_index_lists(tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bool [B, NTq, NTk] -> (count [B, NTq] int32, indices [B, NTq, NTk] int32): the first count[b, i] entries of
    indices[b, i] are the marked key tiles in increasing order (the layout of tile-skipping kernels and BlockMask)."""
    cnt = tiles.sum(-1).to(torch.int32)
    # a stable sort of "not marked" puts the marked tile indices first, in increasing order
    idx = torch.sort((~tiles).to(torch.int8), dim=-1, stable=True).indices.to(torch.int32)
    return cnt.contiguous(), idx.contiguous()


def token_logps_to_branches(
    token_logps: torch.Tensor, slots: torch.Tensor, num_examples: int
) -> torch.Tensor:
    """Sum token log-probs [M] into per-branch log-probs [N, 2] (chosen, rejected) by their slots [M]."""
    out = torch.zeros(2 * num_examples, dtype=token_logps.dtype, device=token_logps.device)
    return out.index_add_(0, slots, token_logps).view(num_examples, 2)


def branch_logps(model: torch.nn.Module, batch: DpoBatch, **attn_kwargs) -> torch.Tensor:
    """Per-example (chosen, rejected) log-probs [N, 2] of a HF causal LM on ``batch``.

    The decoder runs on all tokens; the output head runs only at positions that have a target (for prompts
    that is most tokens skipped). Logits go to float32 (float64 stays float64) before log-softmax, and the sums
    are accumulated in that precision. ``attn_kwargs`` reach the attention function (``pbrl.llm.attention``
    passes the layout this way).
    """
    decoder = model.get_decoder()
    head = model.get_output_embeddings()
    hidden = decoder(
        input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False, **attn_kwargs
    ).last_hidden_state  # [B, S, D]
    keep = batch.slots >= 0  # [B, S]
    h = hidden[keep]  # [M, D]
    logits = head(h)  # [M, V]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    scale = getattr(model.config, "logit_scale", None)  # Cohere-style scaled heads
    if isinstance(scale, (int, float)):
        logits = logits * scale
    cap = getattr(model.config, "final_logit_softcapping", None)  # Gemma 2: cap * tanh(logits / cap), as its head
    if isinstance(cap, (int, float)) and cap:
        logits = cap * torch.tanh(logits / cap)
    tok = -F.cross_entropy(logits, batch.targets[keep], reduction="none")  # [M]
    return token_logps_to_branches(tok, batch.slots[keep], batch.num_examples)


def response_lengths(pairs: Sequence[TokenizedPair]) -> torch.Tensor:
    """Response lengths [N, 2] (chosen, rejected); IPO normalizes log-probs by them."""
    return torch.tensor([[len(p.chosen), len(p.rejected)] for p in pairs], dtype=torch.float32)
