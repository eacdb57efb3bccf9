"""Attention backends for prefix-shared / packed DPO batches, plugged into HF models by name.

Each backend is registered with ``transformers.AttentionInterface`` (no monkey patching), so any HF decoder that
dispatches through it (Llama, Qwen2, Mistral, ...) runs with it after ``model.set_attn_implementation(name)`` or
``from_config(..., attn_implementation=name)``:

- ``pbrl_sdpa``: ``scaled_dot_product_attention`` with a dense boolean mask [B, 1, S, S] — the reference;
- ``pbrl_varlen``: ``scaled_dot_product_attention`` per document: every document (a packed sequence) is gathered
  into its own row — causal, no mask — except a prefix-shared document's rejected tokens, which attend to
  prompt+rejected through a small [R, P+R] mask; so attention never pays for masked-out (S^2) entries, and
  documents of very different lengths go to separate calls so that short ones do not pad to the longest. A whole
  batch can then be packed into one row with no padding at all (the CPU path; FlashAttention's varlen plays this
  role on GPUs);
- ``pbrl_flex``: FlexAttention with a ``BlockMask`` built from per-tile summaries (fully masked 128x128 tiles
  skipped, fully allowed ones unmasked), compiled;
- ``pbrl_triton``: the Triton kernel of ``pbrl.llm.triton_attention`` (forward and backward) that visits only the
  tiles the prefix-sharing / packed-document structure leaves unmasked.

No mask function is registered for these names, so the HF model builds no mask of its own (it would be wrong for
prefix sharing and costs O(S^2)); the structure comes in through the ``pbrl_layout`` keyword, which HF decoders
forward to their attention functions. Each mask representation (dense, BlockMask, tile lists) is built once per
batch and shared by all layers. Without ``pbrl_layout`` the backends do plain causal attention.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from pbrl.errors import PbrlError
from pbrl.llm.prefix_sharing import (
    CHOSEN,
    REJECTED,
    DpoBatch,
    branch_logps,
    dense_mask,
    tile_index_lists,
    tile_visits,
)

BACKENDS: tuple[str, ...] = ("sdpa", "varlen", "flex", "triton")
FLEX_BLOCK = 128


class AttentionLayout:
    """The document/branch structure of a batch, with each backend's mask built lazily and cached."""

    def __init__(self, doc: torch.Tensor, branch: torch.Tensor):
        self.doc = doc.to(torch.int32).contiguous()  # [B, S]
        self.branch = branch.to(torch.int32).contiguous()  # [B, S]
        self._dense: torch.Tensor | None = None
        self._documents: Documents | None = None
        self._block_mask = None
        self._tiles: dict[int, object] = {}

    @classmethod
    def of(cls, batch: DpoBatch) -> AttentionLayout:
        return cls(batch.doc, batch.branch)

    def dense(self) -> torch.Tensor:
        """[B, 1, S, S] bool."""
        if self._dense is None:
            self._dense = dense_mask(self.doc, self.branch)
        return self._dense

    def documents(self) -> Documents:
        """The per-document gather plan of the ``varlen`` backend."""
        if self._documents is None:
            self._documents = Documents(self.doc, self.branch)
        return self._documents

    def block_mask(self):
        """FlexAttention BlockMask of the same rule, built from per-tile summaries (``tile_visits``): O(S/128)
        work instead of ``create_block_mask``'s evaluation of the mask function on all S^2 pairs. Full tiles are
        marked as such, so flex applies the element mask only on the partial ones."""
        if self._block_mask is None:
            from torch.nn.attention.flex_attention import BlockMask

            doc, branch = self.doc, self.branch

            def mask_mod(b, h, q, k):
                return (
                    (q >= k)
                    & (doc[b, q] == doc[b, k])
                    & ~((branch[b, q] == REJECTED) & (branch[b, k] == CHOSEN))
                )

            visit, full = tile_visits(doc, branch, FLEX_BLOCK)  # [B, NTq, NTk]
            cnt, idx = tile_index_lists(visit & ~full)
            full_cnt, full_idx = tile_index_lists(full)
            S = doc.shape[1]
            self._block_mask = BlockMask.from_kv_blocks(
                cnt[:, None], idx[:, None], full_cnt[:, None], full_idx[:, None],  # head axis of 1: shared
                BLOCK_SIZE=FLEX_BLOCK, mask_mod=mask_mod, seq_lengths=(S, S),
            )
        return self._block_mask

    def tiles(self, block: int):
        """Tile lists for the Triton kernel (see ``triton_attention.TileLists``), cached per tile size."""
        if block not in self._tiles:
            from pbrl.llm.triton_attention import tile_lists

            self._tiles[block] = tile_lists(self.doc, self.branch, block)
        return self._tiles[block]


def _runs(pos: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group entries (flat positions ``pos``, grouped by equal consecutive ``keys``) into left-aligned rows.

    -> idx [n, L] (positions, 0 past a row's end), valid [n, L], and each entry's row [T]."""
    _, counts = torch.unique_consecutive(keys, return_counts=True)  # [n]
    n, L = counts.numel(), int(counts.max()) if counts.numel() else 0
    row = torch.repeat_interleave(torch.arange(n, device=pos.device), counts)  # [T]
    col = torch.arange(pos.numel(), device=pos.device) - (torch.cumsum(counts, 0) - counts)[row]
    idx = torch.zeros(n, L, dtype=torch.long, device=pos.device)
    valid = torch.zeros(n, L, dtype=torch.bool, device=pos.device)
    idx[row, col] = pos
    valid[row, col] = True
    return idx, valid, row


def _row_groups(qlen: torch.Tensor, klen: torch.Tensor) -> list[torch.Tensor]:
    """Rows of an sdpa call cut into at most two groups of similar length, each padded only to its own longest.

    sdpa pays for every padded entry: n * Lq * Lk for n rows padded to Lq queries and Lk keys. Rows sorted by key
    length are split where n1 * Lq1 * Lk1 + n2 * Lq2 * Lk2 is smallest, when that saves at least a fifth (each
    group is one more call). qlen, klen [n] -> the row indices of each group."""
    n = qlen.numel()
    if n < 2:
        return [torch.arange(n, device=qlen.device)]
    order = torch.sort(klen, descending=True, stable=True).indices
    q, k = qlen[order].tolist(), klen[order].tolist()
    q_head = list(itertools.accumulate(q, max))  # longest query run among the first s rows
    q_tail = list(itertools.accumulate(reversed(q), max))[::-1]  # ... among rows s..n-1
    best, s = min((i * q_head[i - 1] * k[0] + (n - i) * q_tail[i] * k[i], i) for i in range(1, n))
    if best > 0.8 * n * q_head[-1] * k[0]:
        return [torch.arange(n, device=qlen.device)]
    return [order[:s], order[s:]]


class Documents:
    """The ``varlen`` plan: attention per document, causal, with no [S, S] mask.

    A document is a packed sequence. One without both responses (a prompt+response sequence) is attended as one
    causal row. A prefix-shared one (prompt, chosen, rejected) is split in two: prompt+chosen is one causal row
    (outputs of the prompt and chosen tokens), and the rejected tokens are queries against the keys of
    prompt+rejected, query j seeing the prompt and rejected tokens 0..j (a small [R, P+R] mask). So attention
    costs (P+C)^2/2 + R (P + R/2) per example; the prompt's keys and values are computed once, by the layers.
    Rows of very different lengths go to separate calls (``_row_groups``), so short documents do not pad to the
    longest.

    causal: [(idx [n, L] flat positions (b * S + s), valid [n, L]), ...], one per group; tokens [Ta] = their
    idx[valid], concatenated;
    rejected: [(kidx [m, Lk] keys, qidx [m, Lq] queries, qvalid [m, Lq], mask [m, 1, Lq, Lk]), ...];
    qtokens [Tb] = their qidx[qvalid], concatenated.
    """

    def __init__(self, doc: torch.Tensor, branch: torch.Tensor):
        B, S = doc.shape
        dev = doc.device
        flat = doc.reshape(-1).long()  # [B*S], -1 = padding
        br = branch.reshape(-1)
        key = torch.arange(B * S, device=dev) // S * S + flat  # unique per (row, document)
        real = flat >= 0
        # documents holding both responses (prefix-shared), marked through their key
        has_c = torch.zeros(B * S + 1, dtype=torch.bool, device=dev)
        has_r = torch.zeros(B * S + 1, dtype=torch.bool, device=dev)
        has_c[key[real & (br == CHOSEN)]] = True
        has_r[key[real & (br == REJECTED)]] = True
        both = (has_c & has_r)[key.clamp(min=0)] & real  # [B*S]
        in_a = real & ~(both & (br == REJECTED))  # causal rows: prompt+chosen, or a whole document
        pos = in_a.nonzero().squeeze(1)
        # tokens of one document are contiguous in `pos` (documents are contiguous runs in a row)
        idx, valid, _ = _runs(pos, key[pos])
        n = valid.sum(1)  # [n]
        self.causal = []
        for rows in _row_groups(n, n):
            L = int(n[rows].max()) if rows.numel() else 0
            self.causal.append((idx[rows, :L], valid[rows, :L]))
        self.tokens = torch.cat([i[v] for i, v in self.causal])
        in_b = both & (br != CHOSEN)  # keys of the rejected queries: prompt+rejected
        pos = in_b.nonzero().squeeze(1)
        kidx, kvalid, row = _runs(pos, key[pos])
        m = kidx.shape[0]
        is_r = br[pos] == REJECTED
        n_prompt = torch.zeros(m, dtype=torch.long, device=dev).index_add_(0, row, (~is_r).long())  # [m]
        # the same documents in the same order as the key rows: query row i belongs to key row i
        qidx, qvalid, _ = _runs(pos[is_r], key[pos[is_r]])
        Lq, Lk = qidx.shape[1], kidx.shape[1]
        # query j (the j-th rejected token) sees keys 0 .. P + j; padded query rows see a prefix (dropped later)
        limit = n_prompt[:, None] + torch.arange(Lq, device=dev)[None, :]  # [m, Lq]
        mask = (torch.arange(Lk, device=dev)[None, None, :] <= limit[:, :, None])[:, None]  # [m, 1, Lq, Lk]
        nq, nk = qvalid.sum(1), kvalid.sum(1)
        self.rejected = []
        for rows in _row_groups(nq, nk) if m else []:
            lq, lk = int(nq[rows].max()), int(nk[rows].max())
            self.rejected.append((kidx[rows, :lk], qidx[rows, :lq], qvalid[rows, :lq], mask[rows, :, :lq, :lk]))
        self.qtokens = torch.cat([q[v] for _, q, v, _ in self.rejected]) if self.rejected else qidx[qvalid]


def _expand_kv(module, key: torch.Tensor, value: torch.Tensor, heads: int):
    """Grouped-query attention: repeat each kv head for its query heads ([B, Hkv, S, D] -> [B, H, S, D])."""
    if key.shape[1] == heads:
        return key, value
    rep = heads // key.shape[1]
    return key.repeat_interleave(rep, dim=1), value.repeat_interleave(rep, dim=1)


def _layout(kwargs) -> AttentionLayout | None:
    layout = kwargs.get("pbrl_layout")
    if layout is not None and not isinstance(layout, AttentionLayout):
        raise PbrlError(f"pbrl_layout: expected an AttentionLayout, got {type(layout).__name__}")
    return layout


def _refuse_unsupported(name: str, kwargs, key: torch.Tensor | None = None) -> None:
    """The kernels here compute plain softmax attention. A model that asks for soft-capped scores (Gemma 2's
    ``attn_logit_softcapping``) or (``key`` given: on the kernels' own path) a sliding window shorter than the keys
    would get other numbers silently: one PbrlError instead."""
    cap = kwargs.get("softcap")
    if cap is not None:
        raise PbrlError(f"{name}: the model soft-caps its attention scores (softcap={cap}, e.g. Gemma 2's "
                        "attn_logit_softcapping), which pbrl's attention backends do not implement")
    window = kwargs.get("sliding_window")
    if key is not None and window is not None and key.shape[2] > window:
        raise PbrlError(f"{name}: rows of {key.shape[2]} tokens exceed the model's sliding attention window "
                        f"({window}), which pbrl's attention backends do not implement; keep rows (max_length, "
                        f"pack_length) at most {window} tokens")


def _plain_attention(layout, query, key, attention_mask) -> bool:
    """No pbrl layout and either a padding mask or a query shorter than the keys (decoding with a KV cache): HF's
    own sdpa path handles those (its mask carries the padding and the bottom-right causal alignment)."""
    return layout is None and (attention_mask is not None or query.shape[2] != key.shape[2])


def _hf_sdpa(module, query, key, value, attention_mask, dropout, scaling, **kwargs):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    kwargs.pop("pbrl_layout", None)
    return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, dropout=dropout,
                                          scaling=scaling, **kwargs)


def sdpa_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Dense-mask reference. query [B, H, S, D], key/value [B, Hkv, S, D] -> ([B, S, H, D], None)."""
    layout = _layout(kwargs)
    _refuse_unsupported("pbrl_sdpa", kwargs)
    if _plain_attention(layout, query, key, attention_mask):
        return _hf_sdpa(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    _refuse_unsupported("pbrl_sdpa", kwargs, key)
    key, value = _expand_kv(module, key, value, query.shape[1])
    if layout is None:
        out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling, dropout_p=dropout)
    else:
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=layout.dense(), scale=scaling, dropout_p=dropout
        )
    return out.transpose(1, 2).contiguous(), None


def varlen_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """sdpa per document (see ``Documents``). Shapes as ``sdpa_forward``; positions outside every document get 0."""
    layout = _layout(kwargs)
    if layout is None:
        return sdpa_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    _refuse_unsupported("pbrl_varlen", kwargs, key)
    B, H, S, D = query.shape
    docs = layout.documents()
    gqa = key.shape[1] != H
    flat = [x.transpose(1, 2).reshape(B * S, x.shape[1], D) for x in (query, key, value)]  # [B*S, h, D]

    def gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:  # [B*S, h, D] -> [n, h, L, D]
        # index_select: its backward is an index_add, cheaper on CPU than advanced indexing's index_put
        return x.index_select(0, idx.reshape(-1)).view(*idx.shape, x.shape[1], D).transpose(1, 2)

    # causal rows are right-padded: causal attention keeps every real query away from the padding after it
    y = torch.cat([
        F.scaled_dot_product_attention(
            gather(flat[0], idx), gather(flat[1], idx), gather(flat[2], idx),
            is_causal=True, scale=scaling, dropout_p=dropout, enable_gqa=gqa,
        ).transpose(1, 2)[valid]
        for idx, valid in docs.causal
    ])  # [Ta, H, D]
    out = query.new_zeros(B * S, H, D).index_copy(0, docs.tokens, y)
    if docs.rejected:
        yr = torch.cat([
            F.scaled_dot_product_attention(
                gather(flat[0], qidx), gather(flat[1], kidx), gather(flat[2], kidx),
                attn_mask=mask, scale=scaling, dropout_p=dropout, enable_gqa=gqa,
            ).transpose(1, 2)[qvalid]
            for kidx, qidx, qvalid, mask in docs.rejected
        ])  # [Tb, H, D]
        out = out.index_copy(0, docs.qtokens, yr)
    return out.view(B, S, H, D), None


_compiled_flex = None


def _flex_fn(query: torch.Tensor):
    """Compiled flex_attention; eager (the reference math path) for float64, which the compiled kernels lack."""
    from torch.nn.attention.flex_attention import flex_attention

    global _compiled_flex
    if query.dtype == torch.float64:
        return flex_attention
    if _compiled_flex is None:
        # default dynamism: a second row length recompiles once with symbolic shapes, later lengths reuse it
        _compiled_flex = torch.compile(flex_attention)
    return _compiled_flex


def flex_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """FlexAttention with a BlockMask. Shapes as ``sdpa_forward``; attention dropout is not supported."""
    if dropout:
        raise PbrlError("pbrl_flex: attention dropout is not supported; set attention_dropout=0")
    layout = _layout(kwargs)
    _refuse_unsupported("pbrl_flex", kwargs)
    if _plain_attention(layout, query, key, attention_mask):
        return _hf_sdpa(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    _refuse_unsupported("pbrl_flex", kwargs, key)
    if layout is None:
        B, _, S, _ = query.shape
        layout = AttentionLayout(
            torch.zeros(B, S, dtype=torch.int32, device=query.device),
            torch.zeros(B, S, dtype=torch.int32, device=query.device),
        )
    enable_gqa = key.shape[1] != query.shape[1]
    out = _flex_fn(query)(query, key, value, block_mask=layout.block_mask(), scale=scaling, enable_gqa=enable_gqa)
    return out.transpose(1, 2).contiguous(), None


def triton_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """The Triton tile-skipping kernel. Shapes as ``sdpa_forward``; attention dropout is not supported."""
    from pbrl.llm.triton_attention import BLOCK, prefix_attention

    if dropout:
        raise PbrlError("pbrl_triton: attention dropout is not supported; set attention_dropout=0")
    layout = _layout(kwargs)
    _refuse_unsupported("pbrl_triton", kwargs)
    if _plain_attention(layout, query, key, attention_mask):
        return _hf_sdpa(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    _refuse_unsupported("pbrl_triton", kwargs, key)
    key, value = _expand_kv(module, key, value, query.shape[1])
    B, H, S, D = query.shape
    if layout is None:
        zeros = torch.zeros(B, S, dtype=torch.int32, device=query.device)
        layout = AttentionLayout(zeros, zeros)
    scale = scaling if scaling is not None else D**-0.5
    out = prefix_attention(query, key, value, layout.doc, layout.branch, scale, layout.tiles(BLOCK))
    return out.transpose(1, 2).contiguous(), None


def register_backends() -> None:
    """Register ``pbrl_sdpa``, ``pbrl_varlen``, ``pbrl_flex`` and ``pbrl_triton`` with transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    for name, fn in (("pbrl_sdpa", sdpa_forward), ("pbrl_varlen", varlen_forward), ("pbrl_flex", flex_forward),
                     ("pbrl_triton", triton_forward)):
        AttentionInterface.register(name, fn)
        # HF builds no mask for an implementation it does not know: then left padding and KV-cache decoding lose
        # their mask. sdpa's mask is None for unpadded causal rows (the layouts' case), so training pays nothing.
        AttentionMaskInterface.register(name, sdpa_mask)


def implementation_name(backend: str) -> str:
    """HF ``attn_implementation`` of a backend: ``sdpa`` -> ``pbrl_sdpa`` etc. (``hf_sdpa`` = HF's own sdpa)."""
    if backend == "hf_sdpa":
        return "sdpa"
    if backend not in BACKENDS:
        raise PbrlError(f"backend: expected one of {BACKENDS + ('hf_sdpa',)}, got {backend!r}")
    register_backends()
    return "pbrl_" + backend


def use_backend(model: torch.nn.Module, backend: str) -> torch.nn.Module:
    """Switch a HF model's attention to ``backend`` in place; returns the model."""
    model.set_attn_implementation(implementation_name(backend))
    return model


def unpadded(batch: DpoBatch) -> DpoBatch:
    """The batch's real tokens as one row [1, T], T = batch.num_tokens: padding dropped, rows concatenated in order,
    documents renumbered 0, 1, ... (unique across the old rows). Positions, branches, targets and slots travel with
    their tokens, so the attention rule, and every log-prob, is unchanged."""
    B, S = batch.doc.shape
    keep = batch.doc >= 0  # [B, S]
    row = torch.arange(B, device=batch.doc.device)[:, None].expand(B, S)
    key = (row.long() * S + batch.doc.long())[keep]  # [T]: one value per (row, document), documents contiguous
    doc = torch.unique_consecutive(key, return_inverse=True)[1].to(torch.int32)
    one = lambda x: x[keep][None]  # noqa: E731  [B, S] -> [1, T]
    return DpoBatch(one(batch.input_ids), one(batch.position_ids), doc[None], one(batch.branch), one(batch.targets),
                    one(batch.slots), num_examples=batch.num_examples, layout=batch.layout)


def _windowed(config) -> bool:
    """Whether some layer may use a sliding attention window (whose length check counts row tokens)."""
    return bool(getattr(config, "sliding_window", None)) and getattr(config, "use_sliding_window", True) is not False


def model_branch_logps(model: torch.nn.Module, batch: DpoBatch) -> torch.Tensor:
    """``branch_logps`` with the batch's structure handed to the attention backend. -> [N, 2].

    ``varlen`` attends per document, so to it rows are only a token budget: the batch runs as one unpadded row
    (``unpadded``), and the layers outside attention (projections, MLP, norms) compute no padding. (Not for models
    with a sliding window, whose length check counts the row's tokens.)"""
    impl = model.config._attn_implementation
    if not str(impl).startswith("pbrl_"):
        # HF's own kernels only see plain causal attention: right padding is safe, anything else is not.
        if batch.layout != "padded":
            raise PbrlError(
                f"attention: layout {batch.layout!r} needs a pbrl backend {BACKENDS}, model uses {impl!r}"
            )
        return branch_logps(model, batch)
    if impl == "pbrl_varlen" and batch.doc.shape[0] * batch.doc.shape[1] > batch.num_tokens \
            and not _windowed(model.config):
        batch = unpadded(batch)
    return branch_logps(model, batch, pbrl_layout=AttentionLayout.of(batch))
