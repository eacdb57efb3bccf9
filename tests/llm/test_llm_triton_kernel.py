"""The Triton prefix-sharing kernel alone, against dense-mask sdpa (float64, interpreter on CPU)."""

from __future__ import annotations

import pytest
import torch

from pbrl.llm import triton_attention as ta
from pbrl.llm.prefix_sharing import TokenizedPair, build_batch, dense_mask


def _pairs(lens):
    g = torch.Generator().manual_seed(0)
    return [TokenizedPair(*(torch.randint(0, 50, (n,), generator=g).tolist() for n in pcr)) for pcr in lens]


@pytest.mark.parametrize("layout", ["shared", "packed_shared", "packed"])
def test_kernel_matches_dense_reference(layout):
    pairs = _pairs([(20, 9, 14), (1, 2, 6), (17, 5, 1), (30, 3, 3)])
    b = build_batch(pairs, layout, pack_length=64)
    B, S = b.doc.shape
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(B, 2, S, 8, dtype=torch.float64, generator=g).requires_grad_() for _ in range(3))
    tiles = ta.tile_lists(b.doc, b.branch, 16)
    out = ta.prefix_attention(q, k, v, b.doc, b.branch, 0.3, tiles)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=dense_mask(b.doc, b.branch), scale=0.3
    )
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    go = torch.randn(out.shape, dtype=out.dtype, generator=g)
    for a, r in zip(torch.autograd.grad(out, (q, k, v), go), torch.autograd.grad(ref, (q, k, v), go)):
        torch.testing.assert_close(a, r, rtol=0, atol=1e-12)


def test_tile_lists_skip_masked_tiles():
    # one example: prompt 16, chosen 32, rejected 31 (+1 duplicate) -> tiles of 16: P | C C | R R
    pair = _pairs([(16, 32, 31)])[0]
    b = build_batch([pair], "shared")
    tiles = ta.tile_lists(b.doc, b.branch, 16)
    # tile 0 holds the prompt and... the prompt's last token is chosen, so tile 0 is mixed; tiles 1-2 all chosen
    # (tokens 16..47), tiles 3-4 all rejected (48..79): the rejected tiles skip the two chosen tiles.
    assert tiles.kv_cnt.tolist() == [[1, 2, 3, 2, 3]]
    assert tiles.kv_idx[0, 3, :2].tolist() == [0, 3] and tiles.kv_idx[0, 4, :3].tolist() == [0, 3, 4]
    assert tiles.q_idx[0, 1, : tiles.q_cnt[0, 1]].tolist() == [1, 2]  # chosen keys are seen by chosen queries only
    # two packed documents of one tile each never see each other
    two = build_batch(_pairs([(4, 4, 7), (4, 4, 7)]), "packed_shared", pack_length=32)
    assert ta.tile_lists(two.doc, two.branch, 16).kv_cnt.tolist() == [[1, 1]]


def test_interpreter_refuses_bfloat16():
    if not ta.INTERPRET:
        pytest.skip("a GPU runs bfloat16 natively")
    b = build_batch(_pairs([(3, 2, 2)]), "shared")
    q = torch.zeros(1, 1, b.doc.shape[1], 16, dtype=torch.bfloat16)
    from pbrl.errors import PbrlError

    with pytest.raises(PbrlError, match="bfloat16"):
        ta.prefix_attention(q, q, q, b.doc, b.branch, 0.25)
