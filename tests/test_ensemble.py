from __future__ import annotations

import torch

from pbrl.ensemble import MIN_BLOCK_ROWS, EnsembleLinear, row_blocks


def _reference(lin: EnsembleLinear, x: torch.Tensor) -> torch.Tensor:
    """Each member as its own affine map, looped."""
    return torch.stack([x[m] @ lin.weight[m] + lin.bias[m, 0] for m in range(x.shape[0])])


def test_ensemble_linear_equals_per_member_affine_maps_and_their_gradients():
    torch.manual_seed(0)
    lin = EnsembleLinear(3, 5, 4).double()
    x = torch.randn(3, 2, 6, 5, dtype=torch.float64, requires_grad=True)  # [M, ..., in] with two leading axes
    y = lin(x)
    assert y.shape == (3, 2, 6, 4)
    ref = _reference(lin, x)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, lin.weight, lin.bias), g)
    ref_grads = torch.autograd.grad(ref, (x, lin.weight, lin.bias), g)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_ensemble_linear_under_cpu_autocast_keeps_the_bf16_matmul():
    lin = EnsembleLinear(2, 8, 3)
    x = torch.randn(2, 10, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lin(x)
    assert y.dtype == torch.bfloat16  # the batched matmul runs in bf16 under autocast
    torch.testing.assert_close(y.float(), _reference(lin, x), rtol=2e-2, atol=2e-2)


def test_row_blocks_fill_the_threads_only_when_members_leave_one_idle():
    assert row_blocks(3, 4096, 2) == 2  # 6 GEMMs on 2 threads instead of 3
    assert row_blocks(2, 4096, 2) == 1  # already balanced
    assert row_blocks(3, 4096, 4) == 4  # 12 blocks on 4 threads
    assert row_blocks(6, 4096, 4) == 2
    assert row_blocks(3, 4095, 2) == 1  # rows do not divide
    assert row_blocks(3, 2 * MIN_BLOCK_ROWS - 2, 2) == 1  # blocks too small to pay off
    assert row_blocks(3, 4096, 1) == 1


def test_ensemble_linear_cut_into_row_blocks_equals_per_member_maps():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        lin = EnsembleLinear(3, 5, 4).double()
        x = torch.randn(3, 8, 2 * MIN_BLOCK_ROWS // 8, 5, dtype=torch.float64, requires_grad=True)
        assert row_blocks(3, 2 * MIN_BLOCK_ROWS, 2) == 2  # the cut path runs
        y = lin(x)
        ref = _reference(lin, x)
        g = torch.randn_like(y)
        grads = torch.autograd.grad(y, (x, lin.weight, lin.bias), g)
        ref_grads = torch.autograd.grad(ref, (x, lin.weight, lin.bias), g)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
