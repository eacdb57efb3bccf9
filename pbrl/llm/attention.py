"""Attention backends for prefix-shared / packed DPO batches, plugged into HF models by name.

Each backend is registered with ``transformers.AttentionInterface`` (no monkey patching), so any HF decoder that
dispatches through it (Llama, Qwen2, Mistral, ...) runs with it after ``model.set_attn_implementation(name)`` or
``from_config(..., attn_implementation=name)``:

- ``pbrl_sdpa``: ``scaled_dot_product_attention`` with a dense boolean mask [B, 1, S, S] — the reference;
- ``pbrl_varlen``: causal ``scaled_dot_product_attention`` per document: every document (a packed sequence) is
  gathered into its own row(s) — a prefix-shared one as prompt+chosen and prompt+rejected — so attention costs
  sum over documents of L^2 / 2 instead of S^2 per row, with no mask. A whole batch can then be packed into one
  row with no padding at all (the CPU path; FlashAttention's varlen plays this role on GPUs);
- ``pbrl_flex``: FlexAttention with a ``BlockMask`` (fully masked 128x128 tiles skipped), compiled;
- ``pbrl_triton``: the Triton kernel of ``pbrl.llm.triton_attention`` (forward and backward) that visits only the
  tiles the prefix-sharing / packed-document structure leaves unmasked.

No mask function is registered for these names, so the HF model builds no mask of its own (it would be wrong for
prefix sharing and costs O(S^2)); the structure comes in through the ``pbrl_layout`` keyword, which HF decoders
forward to their attention functions. Each mask representation (dense, BlockMask, tile lists) is built once per
batch and shared by all layers. Without ``pbrl_layout`` the backends do plain causal attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pbrl.errors import PbrlError
from pbrl.llm.prefix_sharing import CHOSEN, REJECTED, DpoBatch, branch_logps, dense_mask

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
            self._documents = Documents.of(self.doc, self.branch)
        return self._documents

    def block_mask(self):
        """FlexAttention BlockMask of the same rule."""
        if self._block_mask is None:
            from torch.nn.attention.flex_attention import create_block_mask

            doc, branch = self.doc, self.branch

            def mask_mod(b, h, q, k):
                return (
                    (q >= k)
                    & (doc[b, q] == doc[b, k])
                    & ~((branch[b, q] == REJECTED) & (branch[b, k] == CHOSEN))
                )

            B, S = doc.shape
            self._block_mask = create_block_mask(
                mask_mod, B, None, S, S, device=doc.device, BLOCK_SIZE=FLEX_BLOCK
            )
        return self._block_mask

    def tiles(self, block: int):
        """Tile lists for the Triton kernel (see ``triton_attention.TileLists``), cached per tile size."""
        if block not in self._tiles:
            from pbrl.llm.triton_attention import tile_lists

            self._tiles[block] = tile_lists(self.doc, self.branch, block)
        return self._tiles[block]


class Documents:
    """The ``varlen`` plan: each document as one or two causal sequences ("views") gathered into rows.

    A prefix-shared document (prompt, chosen, rejected) becomes two views, prompt+chosen and prompt+rejected, in
    which the rule is plain causal attention; a document without both responses is one view. Each token's output
    comes from one view: the rejected tokens' from the second, every other token's from the first (the prompt's
    queries in the second view are recomputed and dropped; its keys and values are computed once, by the layers).
    So attention runs causal (the kernels skip the upper triangle) on sum over views of L_v^2 / 2 entries.

    idx [n, L]: flat positions (b * S + s) of view i's tokens, left-aligned, 0 past its end; valid [n, L];
    own [n, L]: the entries whose output is kept; tokens [T]: their flat positions, in idx[own] order.
    """

    def __init__(self, idx: torch.Tensor, valid: torch.Tensor, own: torch.Tensor, tokens: torch.Tensor):
        self.idx, self.valid, self.own, self.tokens = idx, valid, own, tokens
        self.own_flat = own.reshape(-1).nonzero().squeeze(1)  # [T] entries of idx.view(-1) that are kept

    @classmethod
    def of(cls, doc: torch.Tensor, branch: torch.Tensor) -> Documents:
        B, S = doc.shape
        dev = doc.device
        flat = doc.reshape(-1).long()  # [B*S], -1 = padding
        br = branch.reshape(-1)
        key = torch.arange(B * S, device=dev) // S * S + flat  # unique per (row, document)
        real = flat >= 0
        kmax = B * S + 1
        # documents holding both responses (prefix-shared): mark them through their key
        has_c = torch.zeros(kmax, dtype=torch.bool, device=dev)
        has_r = torch.zeros(kmax, dtype=torch.bool, device=dev)
        has_c[key[real & (br == CHOSEN)]] = True
        has_r[key[real & (br == REJECTED)]] = True
        both = (has_c & has_r)[key.clamp(min=0)] & real  # [B*S]
        in_a = real & ~(both & (br == REJECTED))  # prompt+chosen view, or the whole document
        in_b = both & (br != CHOSEN)  # prompt+rejected view
        pos = torch.cat([in_a.nonzero().squeeze(1), in_b.nonzero().squeeze(1)])  # [T'], grouped by view
        vkey = torch.cat([2 * key[in_a], 2 * key[in_b] + 1])
        own_tok = torch.cat([torch.ones(int(in_a.sum()), dtype=torch.bool, device=dev), br[in_b] == REJECTED])
        # tokens of one view are contiguous in `pos` (documents are contiguous runs in a row)
        _, counts = torch.unique_consecutive(vkey, return_counts=True)  # [n]
        n, L = counts.numel(), int(counts.max())
        which = torch.repeat_interleave(torch.arange(n, device=dev), counts)  # [T'] view of each entry
        offset = torch.arange(pos.numel(), device=dev) - (torch.cumsum(counts, 0) - counts)[which]
        idx = torch.zeros(n, L, dtype=torch.long, device=dev)
        valid = torch.zeros(n, L, dtype=torch.bool, device=dev)
        own = torch.zeros(n, L, dtype=torch.bool, device=dev)
        idx[which, offset] = pos
        valid[which, offset] = True
        own[which, offset] = own_tok
        return cls(idx, valid, own, idx[own])


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


def sdpa_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Dense-mask reference. query [B, H, S, D], key/value [B, Hkv, S, D] -> ([B, S, H, D], None)."""
    key, value = _expand_kv(module, key, value, query.shape[1])
    layout = _layout(kwargs)
    if layout is None:
        out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling, dropout_p=dropout)
    else:
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=layout.dense(), scale=scaling, dropout_p=dropout
        )
    return out.transpose(1, 2).contiguous(), None


def varlen_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """sdpa per document. Shapes as ``sdpa_forward``; positions outside every document get zeros."""
    layout = _layout(kwargs)
    if layout is None:
        return sdpa_forward(module, query, key, value, attention_mask, dropout, scaling)
    B, H, S, D = query.shape
    docs = layout.documents()
    n, L = docs.idx.shape
    flat_idx = docs.idx.reshape(-1)

    def gather(x: torch.Tensor) -> torch.Tensor:  # [B, h, S, D] -> [n, h, L, D]
        h = x.shape[1]
        # index_select: its backward is an index_add, cheaper on CPU than advanced indexing's index_put
        return x.transpose(1, 2).reshape(B * S, h, D).index_select(0, flat_idx).view(n, L, h, D).transpose(1, 2)

    # views are right-padded: causal attention keeps every real query away from the padding after it
    y = F.scaled_dot_product_attention(
        gather(query), gather(key), gather(value), is_causal=True, scale=scaling, dropout_p=dropout,
        enable_gqa=key.shape[1] != H,
    )  # [n, H, L, D]
    y = y.transpose(1, 2).reshape(n * L, H, D).index_select(0, docs.own_flat)  # [T, H, D]
    out = query.new_zeros(B * S, H, D).index_copy(0, docs.tokens, y)
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
    key, value = _expand_kv(module, key, value, query.shape[1])
    layout = _layout(kwargs)
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

    AttentionInterface.register("pbrl_sdpa", sdpa_forward)
    AttentionInterface.register("pbrl_varlen", varlen_forward)
    AttentionInterface.register("pbrl_flex", flex_forward)
    AttentionInterface.register("pbrl_triton", triton_forward)


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


def model_branch_logps(model: torch.nn.Module, batch: DpoBatch) -> torch.Tensor:
    """``branch_logps`` with the batch's structure handed to the attention backend. -> [N, 2]."""
    impl = model.config._attn_implementation
    if not str(impl).startswith("pbrl_"):
        # HF's own kernels only see plain causal attention: right padding is safe, anything else is not.
        if batch.layout != "padded":
            raise PbrlError(
                f"attention: layout {batch.layout!r} needs a pbrl backend {BACKENDS}, model uses {impl!r}"
            )
        return branch_logps(model, batch)
    return branch_logps(model, batch, pbrl_layout=AttentionLayout.of(batch))
