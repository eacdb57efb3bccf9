"""A Triton flash-attention kernel (forward and backward) that skips the tiles prefix sharing and packing mask out.

The mask rule is the one of ``pbrl.llm.prefix_sharing.DpoBatch``:

    allow(q, k) = k <= q  and  doc[q] == doc[k]  and  not (branch[q] == REJECTED and branch[k] == CHOSEN)

Before the kernels run, ``tile_lists`` summarises each BLOCK-token tile of a row (smallest/largest document id,
whether all its tokens are rejected / chosen) and lists, for every query tile, the key tiles that may hold an
allowed pair — like FlexAttention's BlockMask, but built from O(S/BLOCK) per-tile summaries instead of the
O(S^2) mask. A key tile is skipped when it lies after the query tile (causality), when the two tiles' document-id
ranges are disjoint (packing), or when the query tile is all rejected and the key tile all chosen (prefix
sharing). Inside visited tiles the element mask is applied exactly.

Forward: online softmax (Dao et al., FlashAttention, 2022), O = softmax(Q K^T * scale + mask) V, saving the row
log-sum-exp L. Backward (FlashAttention-2, Dao 2023): D = rowsum(dO * O); P = exp(Q K^T * scale - L);
dV = P^T dO; dS = P * (dO V^T - D); dK = scale * dS^T Q; dQ = scale * dS K. The dK/dV kernel walks, for each key
tile, the transposed lists (the query tiles that see it).

Precision: scores and accumulators in float32 (float64 for float64 inputs); float32 inputs use IEEE dot products
(no TF32) so that results match the reference. Without a GPU the kernels run in Triton's interpreter
(TRITON_INTERPRET=1, or no CUDA device present), which the CPU tests use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from pbrl.errors import PbrlError

# Triton's interpreter (numpy on the CPU) when asked for or when there is no GPU. Triton reads TRITON_INTERPRET
# when it is first imported (its own library functions are decorated then), so set it before that.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from pbrl.llm.prefix_sharing import tile_index_lists, tile_visits  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _check_interpreter() -> None:
    from triton.runtime.interpreter import InterpretedFunction

    if INTERPRET and not isinstance(tl.zeros, InterpretedFunction):
        raise PbrlError(
            "triton: imported before TRITON_INTERPRET=1 was set, so its interpreter cannot run here (no GPU); "
            "set TRITON_INTERPRET=1 in the environment"
        )


def _jit(fn):
    if INTERPRET:
        from triton.runtime.interpreter import InterpretedFunction

        return InterpretedFunction(fn)
    return triton.jit(fn)


BLOCK = 64  # tile size in tokens (queries and keys); tests shrink it to exercise skipping on short rows


@dataclass(frozen=True)
class TileLists:
    """Which tiles to visit. kv_idx[b, i, :kv_cnt[b, i]] = key tiles of query tile i; q_* the transpose."""

    kv_cnt: torch.Tensor  # [B, NT] int32
    kv_idx: torch.Tensor  # [B, NT, NT] int32
    q_cnt: torch.Tensor  # [B, NT] int32
    q_idx: torch.Tensor  # [B, NT, NT] int32
    block: int

    @property
    def density(self) -> float:
        """Visited tiles / causal tiles (1.0 = no skipping beyond causality)."""
        nt = self.kv_cnt.shape[1]
        return float(self.kv_cnt.sum()) / (self.kv_cnt.shape[0] * nt * (nt + 1) / 2)


def _pad_rows(x: torch.Tensor, block: int, value: int) -> torch.Tensor:
    S = x.shape[-1]
    pad = -S % block
    return torch.nn.functional.pad(x, (0, pad), value=value) if pad else x


def tile_lists(doc: torch.Tensor, branch: torch.Tensor, block: int = BLOCK) -> TileLists:
    """Tile lists of a batch's structure (doc, branch [B, S]); rows are padded to a multiple of ``block``."""
    visit, _ = tile_visits(doc, branch, block)  # [B, NTq, NTk]
    kv_cnt, kv_idx = tile_index_lists(visit)
    q_cnt, q_idx = tile_index_lists(visit.transpose(1, 2))
    return TileLists(kv_cnt, kv_idx, q_cnt, q_idx, block)


@_jit
def _allow(offs_m, offs_n, doc_q, doc_k, br_q, br_k):
    causal = offs_m[:, None] >= offs_n[None, :]
    same = doc_q[:, None] == doc_k[None, :]
    cross = (br_q[:, None] == 2) & (br_k[None, :] == 1)  # REJECTED query, CHOSEN key
    return causal & same & (cross == 0)


@_jit
def _dot(a, b, IEEE: tl.constexpr):
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b)


@_jit
def _fwd_kernel(
    Q, K, V, Out, LSE, DOC, BR, KV_CNT, KV_IDX, scale,
    H, S, NT,
    BLOCK: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, ACC: tl.constexpr, IEEE: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    base = bh.to(tl.int64) * S * D
    offs_m = pid_m * BLOCK + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, BD)
    dmask = offs_d[None, :] < D
    q = tl.load(Q + base + offs_m[:, None] * D + offs_d[None, :], mask=dmask, other=0.0)  # [BLOCK, BD]
    doc_q = tl.load(DOC + b * S + offs_m)
    br_q = tl.load(BR + b * S + offs_m)
    m_i = tl.full([BLOCK], float("-inf"), dtype=ACC)
    l_i = tl.zeros([BLOCK], dtype=ACC)
    acc = tl.zeros([BLOCK, BD], dtype=ACC)
    cnt = tl.load(KV_CNT + b * NT + pid_m)
    for j in range(0, cnt):
        kb = tl.load(KV_IDX + (b * NT + pid_m) * NT + j)
        offs_n = kb * BLOCK + tl.arange(0, BLOCK)
        k = tl.load(K + base + offs_n[:, None] * D + offs_d[None, :], mask=dmask, other=0.0)  # [BLOCK, BD]
        v = tl.load(V + base + offs_n[:, None] * D + offs_d[None, :], mask=dmask, other=0.0)
        s = _dot(q, tl.trans(k), IEEE).to(ACC) * scale  # [BLOCK_M, BLOCK_N]
        allow = _allow(offs_m, offs_n, doc_q, tl.load(DOC + b * S + offs_n), br_q, tl.load(BR + b * S + offs_n))
        s = tl.where(allow, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing allowed yet
        p = tl.exp(s - m_safe[:, None])
        alpha = tl.exp(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, IEEE).to(ACC)
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(Out + base + offs_m[:, None] * D + offs_d[None, :], out.to(Out.dtype.element_ty), mask=dmask)
    tl.store(LSE + bh.to(tl.int64) * S + offs_m, m_i + tl.log(l_i))


@_jit
def _bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, DOC, BR, Q_CNT, Q_IDX, scale,
    H, S, NT,
    BLOCK: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, ACC: tl.constexpr, IEEE: tl.constexpr,
):
    pid_n = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    base = bh.to(tl.int64) * S * D
    offs_n = pid_n * BLOCK + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, BD)
    dmask = offs_d[None, :] < D
    k = tl.load(K + base + offs_n[:, None] * D + offs_d[None, :], mask=dmask, other=0.0)
    v = tl.load(V + base + offs_n[:, None] * D + offs_d[None, :], mask=dmask, other=0.0)
    doc_k = tl.load(DOC + b * S + offs_n)
    br_k = tl.load(BR + b * S + offs_n)
    dk = tl.zeros([BLOCK, BD], dtype=ACC)
    dv = tl.zeros([BLOCK, BD], dtype=ACC)
    cnt = tl.load(Q_CNT + b * NT + pid_n)
    for i in range(0, cnt):
        qb = tl.load(Q_IDX + (b * NT + pid_n) * NT + i)
        offs_m = qb * BLOCK + tl.arange(0, BLOCK)
        q = tl.load(Q + base + offs_m[:, None] * D + offs_d[None, :], mask=dmask, other=0.0)
        do = tl.load(DO + base + offs_m[:, None] * D + offs_d[None, :], mask=dmask, other=0.0)
        lse = tl.load(LSE + bh.to(tl.int64) * S + offs_m)
        delta = tl.load(DELTA + bh.to(tl.int64) * S + offs_m)
        s = _dot(q, tl.trans(k), IEEE).to(ACC) * scale  # [BLOCK_M, BLOCK_N]
        allow = _allow(offs_m, offs_n, tl.load(DOC + b * S + offs_m), doc_k, tl.load(BR + b * S + offs_m), br_k)
        p = tl.where(allow, tl.exp(s - lse[:, None]), 0.0)
        dv += _dot(tl.trans(p.to(do.dtype)), do, IEEE).to(ACC)
        dp = _dot(do, tl.trans(v), IEEE).to(ACC)
        ds = p * (dp - delta[:, None])
        dk += _dot(tl.trans(ds.to(q.dtype)), q, IEEE).to(ACC)
    tl.store(DK + base + offs_n[:, None] * D + offs_d[None, :], (dk * scale).to(DK.dtype.element_ty), mask=dmask)
    tl.store(DV + base + offs_n[:, None] * D + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=dmask)


@_jit
def _bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, DOC, BR, KV_CNT, KV_IDX, scale,
    H, S, NT,
    BLOCK: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, ACC: tl.constexpr, IEEE: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    base = bh.to(tl.int64) * S * D
    offs_m = pid_m * BLOCK + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, BD)
    dmask = offs_d[None, :] < D
    q = tl.load(Q + base + offs_m[:, None] * D + offs_d[None, :], mask=dmask, other=0.0)
    do = tl.load(DO + base + offs_m[:, None] * D + offs_d[None, :], mask=dmask, other=0.0)
    lse = tl.load(LSE + bh.to(tl.int64) * S + offs_m)
    delta = tl.load(DELTA + bh.to(tl.int64) * S + offs_m)
    doc_q = tl.load(DOC + b * S + offs_m)
    br_q = tl.load(BR + b * S + offs_m)
    dq = tl.zeros([BLOCK, BD], dtype=ACC)
    cnt = tl.load(KV_CNT + b * NT + pid_m)
    for j in range(0, cnt):
        kb = tl.load(KV_IDX + (b * NT + pid_m) * NT + j)
        offs_n = kb * BLOCK + tl.arange(0, BLOCK)
        k = tl.load(K + base + offs_n[:, None] * D + offs_d[None, :], mask=dmask, other=0.0)
        v = tl.load(V + base + offs_n[:, None] * D + offs_d[None, :], mask=dmask, other=0.0)
        s = _dot(q, tl.trans(k), IEEE).to(ACC) * scale
        allow = _allow(offs_m, offs_n, doc_q, tl.load(DOC + b * S + offs_n), br_q, tl.load(BR + b * S + offs_n))
        p = tl.where(allow, tl.exp(s - lse[:, None]), 0.0)
        dp = _dot(do, tl.trans(v), IEEE).to(ACC)
        ds = p * (dp - delta[:, None])
        dq += _dot(ds.to(k.dtype), k, IEEE).to(ACC)
    tl.store(DQ + base + offs_m[:, None] * D + offs_d[None, :], (dq * scale).to(DQ.dtype.element_ty), mask=dmask)


def _meta(x: torch.Tensor) -> dict:
    D = x.shape[-1]
    return dict(
        D=D,
        BD=max(16, triton.next_power_of_2(D)),
        ACC=tl.float64 if x.dtype == torch.float64 else tl.float32,
        IEEE=x.dtype == torch.float32,
    )


class _PrefixAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, doc, branch, scale, tiles: TileLists):
        B, H, S, D = q.shape  # already padded to a multiple of the tile
        nt = S // tiles.block
        o = torch.empty_like(q)
        lse = torch.empty((B, H, S), dtype=torch.float64 if q.dtype == torch.float64 else torch.float32,
                          device=q.device)
        _fwd_kernel[(nt, B * H)](
            q, k, v, o, lse, doc, branch, tiles.kv_cnt, tiles.kv_idx, scale, H, S, nt,
            BLOCK=tiles.block, **_meta(q),
        )
        ctx.save_for_backward(q, k, v, o, lse, doc, branch)
        ctx.scale, ctx.tiles = scale, tiles
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, doc, branch = ctx.saved_tensors
        tiles: TileLists = ctx.tiles
        do = do.contiguous()
        B, H, S, D = q.shape
        nt = S // tiles.block
        delta = (do.to(lse.dtype) * o.to(lse.dtype)).sum(-1).contiguous()  # [B, H, S]
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        meta = _meta(q)
        _bwd_dkdv_kernel[(nt, B * H)](
            q, k, v, do, lse, delta, dk, dv, doc, branch, tiles.q_cnt, tiles.q_idx, ctx.scale, H, S, nt,
            BLOCK=tiles.block, **meta,
        )
        _bwd_dq_kernel[(nt, B * H)](
            q, k, v, do, lse, delta, dq, doc, branch, tiles.kv_cnt, tiles.kv_idx, ctx.scale, H, S, nt,
            BLOCK=tiles.block, **meta,
        )
        return dq, dk, dv, None, None, None, None


def prefix_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    doc: torch.Tensor,
    branch: torch.Tensor,
    scale: float,
    tiles: TileLists | None = None,
) -> torch.Tensor:
    """Masked attention of q, k, v [B, H, S, D] under the doc/branch [B, S] rule -> [B, H, S, D].

    ``tiles`` (from ``tile_lists``, e.g. cached per batch by ``AttentionLayout``) fixes the tile size; rows are
    padded to a multiple of it internally (padding comes last, so causality keeps it out of real tokens' view).
    """
    _check_interpreter()
    if INTERPRET and q.dtype == torch.bfloat16:
        # tl.dot on bfloat16 returns garbage in Triton's interpreter (3.9); GPUs compute it natively
        raise PbrlError("triton: the CPU interpreter cannot run bfloat16 dot products; use float32 or float16")
    if tiles is None:
        tiles = tile_lists(doc, branch, BLOCK)
    S = q.shape[2]
    pad = -S % tiles.block
    if pad:
        q, k, v = (torch.nn.functional.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
    doc = _pad_rows(doc.to(torch.int32), tiles.block, -1).contiguous()
    branch = _pad_rows(branch.to(torch.int32), tiles.block, 0).contiguous()
    out = _PrefixAttention.apply(q.contiguous(), k.contiguous(), v.contiguous(), doc, branch, float(scale), tiles)
    return out[:, :, :S] if pad else out
