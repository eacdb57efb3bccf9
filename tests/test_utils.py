"""Shared helpers in pbrl.utils."""

from __future__ import annotations

import torch

from pbrl.utils import adam


def test_fused_adam_matches_the_reference_update():
    torch.manual_seed(0)
    w = torch.randn(64, 32)
    for decoupled, ref_cls in [(False, torch.optim.Adam), (True, torch.optim.AdamW)]:
        a, b = w.clone().requires_grad_(), w.clone().requires_grad_()
        opt = adam([a], 1e-2, weight_decay=0.1, decoupled=decoupled)
        ref = ref_cls([b], lr=1e-2, weight_decay=0.1, foreach=False)
        assert opt.defaults["fused"] and isinstance(opt, ref_cls)
        for _ in range(5):
            g = torch.randn_like(w)
            a.grad, b.grad = g.clone(), g.clone()
            opt.step()
            ref.step()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        # the state round-trips into a fresh optimizer (resume)
        again = adam([a], 1e-2, weight_decay=0.1, decoupled=decoupled)
        again.load_state_dict(opt.state_dict())
        assert int(again.state_dict()["state"][0]["step"]) == 5
