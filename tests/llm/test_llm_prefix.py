"""Prefix-shared layout, packing and per-branch log-probs: hand-computed layouts and equality with separate
sequences (log-probs AND parameter gradients, float64) for every attention backend, packed and unpacked."""

from __future__ import annotations

import pytest
import torch

from pbrl.errors import PbrlError
from pbrl.llm import triton_attention
from pbrl.llm.attention import model_branch_logps, use_backend
from pbrl.llm.models import TinyLMConfig, build_model
from pbrl.llm.prefix_sharing import (
    IGNORE,
    LAYOUTS,
    TokenizedPair,
    build_batch,
    dense_mask,
    first_fit_decreasing,
    sequence_tokens,
)


def test_shared_layout_by_hand():
    pair = TokenizedPair(prompt=[10, 11], chosen=[20, 21], rejected=[30])
    b = build_batch([pair], "shared")
    assert b.input_ids.tolist() == [[10, 11, 20, 21, 11, 30]]
    assert b.position_ids.tolist() == [[0, 1, 2, 3, 1, 2]]
    # the prompt's last token belongs to the chosen branch, its duplicate to the rejected one
    assert b.branch.tolist() == [[0, 1, 1, 1, 2, 2]]
    assert b.targets.tolist() == [[IGNORE, 20, 21, IGNORE, 30, IGNORE]]
    assert b.slots.tolist() == [[-1, 0, 0, -1, 1, -1]]
    m = dense_mask(b.doc, b.branch)[0, 0].int().tolist()
    assert m == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 0, 0, 0, 1, 0],  # the duplicate sees the prompt without its last token, and itself
        [1, 0, 0, 0, 1, 1],
    ]


def test_padded_and_packed_layouts_by_hand():
    pairs = [TokenizedPair([1, 2], [3], [4, 5]), TokenizedPair([6], [7, 8, 9], [10])]
    b = build_batch(pairs, "padded", pad_to_multiple=4, pad_id=0)
    assert b.input_ids.tolist() == [[1, 2, 3, 0], [1, 2, 4, 5], [6, 7, 8, 9], [6, 10, 0, 0]]
    assert b.doc.tolist() == [[0, 0, 0, -1], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, -1, -1]]
    assert b.slots.tolist() == [[-1, 0, -1, -1], [-1, 1, 1, -1], [2, 2, 2, -1], [3, -1, -1, -1]]
    # padding continues the row index as its position
    assert b.position_ids.tolist()[3] == [0, 1, 2, 3]
    p = build_batch(pairs, "packed", pack_length=6)
    # units (lengths 3, 4, 4, 2) -> FFD: [4, 2], [4], [3]
    assert p.input_ids.tolist() == [[1, 2, 4, 5, 6, 10], [6, 7, 8, 9, 0, 0], [1, 2, 3, 0, 0, 0]]
    assert p.doc.tolist() == [[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, -1, -1], [0, 0, 0, -1, -1, -1]]
    assert p.position_ids.tolist()[0] == [0, 1, 2, 3, 0, 1]
    assert sequence_tokens(pairs, "padded") == 13 and sequence_tokens(pairs, "shared") == 12


def test_first_fit_decreasing():
    assert first_fit_decreasing([5, 3, 4, 2, 6], 8) == [[4, 3], [0, 1], [2]]
    with pytest.raises(PbrlError, match="pack_length"):
        first_fit_decreasing([9], 8)


def test_bad_input_errors():
    with pytest.raises(PbrlError, match="prompt"):
        TokenizedPair([], [1], [2])
    with pytest.raises(PbrlError, match="layout"):
        build_batch([TokenizedPair([1], [1], [2])], "zigzag")  # type: ignore[arg-type]


def _pairs(seed: int, vocab: int) -> list[TokenizedPair]:
    g = torch.Generator().manual_seed(seed)
    lens = [(9, 4, 6), (1, 3, 5), (12, 7, 1), (4, 4, 4), (6, 1, 9)]
    rnd = lambda n: torch.randint(0, vocab, (n,), generator=g).tolist()  # noqa: E731
    return [TokenizedPair(rnd(p), rnd(c), rnd(r)) for p, c, r in lens]


def _separate_reference(model, pairs, weights):
    """Each prompt+response alone through HF's own sdpa attention (HF's eager one takes its softmax in float32):
    log-probs [N, 2] by a naive log-softmax and sum, and the grads of sum(w * logps)."""
    use_backend(model, "hf_sdpa")
    rows = []
    for pair in pairs:
        row = []
        for resp in (pair.chosen, pair.rejected):
            ids = torch.tensor([pair.prompt + resp])
            logp = model(ids).logits[0].log_softmax(-1)  # [T, V]
            P = len(pair.prompt)
            row.append(torch.stack([logp[P - 1 + t, tok] for t, tok in enumerate(resp)]).sum())
        rows.append(torch.stack(row))
    logps = torch.stack(rows)
    grads = torch.autograd.grad((weights * logps).sum(), list(model.parameters()))
    return logps.detach(), grads


class _ExactRMSNorm(torch.nn.Module):
    """HF's RMSNorm casts to float32 (a rounding step in a float64 model, which would make gradient sums depend
    on how the tokens are grouped); this one computes in the input dtype."""

    def __init__(self, norm: torch.nn.Module):
        super().__init__()
        self.weight = norm.weight
        self.eps = norm.variance_epsilon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


def _exact_norms(model: torch.nn.Module) -> None:
    model.model.norm = _ExactRMSNorm(model.model.norm)
    for layer in model.model.layers:
        layer.input_layernorm = _ExactRMSNorm(layer.input_layernorm)
        layer.post_attention_layernorm = _ExactRMSNorm(layer.post_attention_layernorm)


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def reference(request):
    cfg = TinyLMConfig(arch=request.param, vocab_size=48, hidden_size=32, num_heads=4, num_kv_heads=2,
                       intermediate_size=64)
    model = build_model(cfg, dtype=torch.float64, seed=3)
    _exact_norms(model)
    if request.param == "qwen2":  # non-zero q/k/v biases, so that they are exercised
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.q_proj.bias.normal_(0, 0.5)
                layer.self_attn.k_proj.bias.normal_(0, 0.5)
    pairs = _pairs(0, 48)
    weights = torch.randn(len(pairs), 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    logps, grads = _separate_reference(model, pairs, weights)
    return model, pairs, weights, logps, grads


# The Triton kernel runs in the interpreter on CPU (seconds per call): the fast run covers the two prefix-shared
# layouts on Llama; the other combinations are marked slow.
_CASES = [(b, layout) for b in ("sdpa", "varlen") for layout in LAYOUTS] + [
    ("triton", layout) if layout in ("shared", "packed_shared") else
    pytest.param("triton", layout, marks=pytest.mark.slow) for layout in LAYOUTS
]


@pytest.mark.parametrize(("backend", "layout"), _CASES)
def test_logps_and_grads_equal_separate_sequences(reference, backend, layout, monkeypatch):
    model, pairs, weights, ref_logps, ref_grads = reference
    fast_triton = {("llama", "shared"), ("qwen2", "packed_shared")}
    if backend == "triton" and layout in ("shared", "packed_shared") and (model.config.model_type, layout) not in fast_triton:
        pytest.skip("the interpreter is slow: the shared layouts run once per architecture")
    monkeypatch.setattr(triton_attention, "BLOCK", 16)  # several tiles per row even on short rows
    use_backend(model, backend)
    batch = build_batch(pairs, layout, pack_length=48, pad_to_multiple=8)
    logps = model_branch_logps(model, batch)
    assert logps.dtype == torch.float64 and logps.shape == (len(pairs), 2)
    torch.testing.assert_close(logps, ref_logps, rtol=0, atol=1e-10)
    grads = torch.autograd.grad((weights * logps).sum(), list(model.parameters()))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("layout", ["packed", "packed_shared"])
def test_varlen_whole_batch_in_one_row(reference, layout):
    """varlen with every sequence of the batch packed into a single unpadded row equals separate sequences."""
    model, pairs, weights, ref_logps, ref_grads = reference
    use_backend(model, "varlen")
    batch = build_batch(pairs, layout, pack_length=10**6)
    assert batch.input_ids.shape[0] == 1 and int((batch.doc >= 0).sum()) == batch.input_ids.shape[1]
    logps = model_branch_logps(model, batch)
    torch.testing.assert_close(logps, ref_logps, rtol=0, atol=1e-10)
    grads = torch.autograd.grad((weights * logps).sum(), list(model.parameters()))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_flex_logps_equal_separate_sequences(reference, layout):
    """FlexAttention has no backward on CPU: log-probs here (eager flex in float64); gradients in the GPU check."""
    model, pairs, _, ref_logps, _ = reference
    use_backend(model, "flex")
    batch = build_batch(pairs, layout, pack_length=48, pad_to_multiple=8)
    with torch.no_grad():
        logps = model_branch_logps(model, batch)
    torch.testing.assert_close(logps, ref_logps, rtol=0, atol=1e-10)


def test_hf_kernels_refuse_non_padded_layouts(reference):
    model, pairs, _, ref_logps, _ = reference
    use_backend(model, "hf_sdpa")
    with torch.no_grad():  # right padding under plain causal attention is exact
        torch.testing.assert_close(model_branch_logps(model, build_batch(pairs, "padded")), ref_logps)
    with pytest.raises(PbrlError, match="needs a pbrl backend"):
        model_branch_logps(model, build_batch(pairs, "shared"))


def test_branch_logps_accumulate_in_float32_for_bf16_models():
    cfg = TinyLMConfig(vocab_size=48, hidden_size=32)
    model = build_model(cfg, dtype=torch.bfloat16)
    pairs = _pairs(1, 48)
    with torch.no_grad():
        logps = model_branch_logps(model, build_batch(pairs, "shared"))
    assert logps.dtype == torch.float32
    # per-token log-probs of a random model are near -log(V): sums of ~n tokens are near -n log V
    n = torch.tensor([[len(p.chosen), len(p.rejected)] for p in pairs], dtype=torch.float32)
    assert torch.allclose(logps / n, torch.full_like(logps, -torch.log(torch.tensor(48.0)).item()), atol=0.5)


@pytest.mark.slow
@pytest.mark.ci_slow
def test_compiled_flex_matches_reference_float32():
    """The compiled FlexAttention path (what runs on GPUs), forward on CPU in float32 (compiling takes ~30 s)."""
    cfg = TinyLMConfig(vocab_size=48, hidden_size=32, num_heads=4, num_kv_heads=2, intermediate_size=64)
    model = build_model(cfg, seed=3)
    pairs = _pairs(0, 48)
    batch = build_batch(pairs, "packed_shared", pack_length=48, pad_to_multiple=8)
    with torch.no_grad():
        use_backend(model, "sdpa")
        ref = model_branch_logps(model, batch)
        use_backend(model, "flex")
        out = model_branch_logps(model, batch)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)


def test_flex_block_mask_skips_tiles():
    """One 128-token tile per branch region: the block mask of a long prefix-shared row skips chosen tiles."""
    from pbrl.llm.attention import AttentionLayout

    pair = TokenizedPair(list(range(128)), [1] * 128, [2] * 127)  # prompt | chosen | dup + rejected: 3 tiles
    b = build_batch([pair], "shared")
    bm = AttentionLayout.of(b).block_mask()
    dense = bm.to_dense()[0, 0].int().tolist()
    assert dense == [[1, 0, 0], [1, 1, 0], [1, 0, 1]]


@pytest.mark.parametrize("layout", ["shared", "packed", "packed_shared"])
def test_flex_block_mask_from_tile_summaries_equals_create_block_mask(layout):
    """The BlockMask built from per-tile summaries lists the same partial and full tiles as flex's own
    create_block_mask, which evaluates the mask rule on every (q, k) pair."""
    from torch.nn.attention.flex_attention import create_block_mask

    from pbrl.llm.attention import FLEX_BLOCK, AttentionLayout
    from pbrl.llm.prefix_sharing import CHOSEN, REJECTED

    g = torch.Generator().manual_seed(1)
    lens = torch.randint(1, 200, (6, 3), generator=g).tolist()  # responses and prompts across tile borders
    pairs = [TokenizedPair([5] * p, [6] * c, [7] * r) for p, c, r in lens]
    batch = build_batch(pairs, layout, pack_length=700, pad_to_multiple=8)
    doc, branch = batch.doc, batch.branch
    B, S = doc.shape
    assert S > 2 * FLEX_BLOCK and S % FLEX_BLOCK  # several tiles and a ragged last one

    def mask_mod(b, h, q, k):
        return (q >= k) & (doc[b, q] == doc[b, k]) & ~((branch[b, q] == REJECTED) & (branch[b, k] == CHOSEN))

    ref = create_block_mask(mask_mod, B, None, S, S, device="cpu", BLOCK_SIZE=FLEX_BLOCK)
    ours = AttentionLayout.of(batch).block_mask()

    def tiles(cnt: torch.Tensor, idx: torch.Tensor) -> list:
        return [[sorted(idx[b, 0, i, : cnt[b, 0, i]].tolist()) for i in range(cnt.shape[2])] for b in range(B)]

    assert tiles(ours.kv_num_blocks, ours.kv_indices) == tiles(ref.kv_num_blocks, ref.kv_indices)
    assert tiles(ours.full_kv_num_blocks, ours.full_kv_indices) == tiles(ref.full_kv_num_blocks, ref.full_kv_indices)
    assert int(ours.full_kv_num_blocks.sum()) > 0  # the full-tile path is exercised


def test_varlen_groups_rows_by_length_only_when_it_saves_padding():
    from pbrl.llm.attention import _row_groups

    def groups(q: list[int], k: list[int]) -> list[list[int]]:
        return [g.tolist() for g in _row_groups(torch.tensor(q), torch.tensor(k))]

    n = [2, 10, 2, 3]  # causal rows: padded 4 * 10 * 10 entries; split 1 * 10 * 10 + 3 * 3 * 3
    assert groups(n, n) == [[1], [3, 0, 2]]
    assert groups([9, 10, 8], [9, 10, 8]) == [[0, 1, 2]]  # similar lengths: one call
    # rejected rows (queries R, keys P+R): a long prompt with a short answer goes alone, by the entries it pads
    assert groups([1, 8, 1], [20, 10, 9]) == [[0], [1, 2]]  # 1*1*20 + 2*8*10 = 180 < 3*8*20 = 480
    assert groups([5], [7]) == [[0]]
