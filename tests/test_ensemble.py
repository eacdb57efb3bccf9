from __future__ import annotations

import torch

from pbrl.ensemble import EnsembleLinear


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
