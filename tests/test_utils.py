"""Shared helpers in pbrl.utils."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch

from pbrl.utils import adam, denormals_flushed


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


def test_denormals_flushed_zeroes_denormals_inside_the_block_only():
    x = torch.tensor([1e-39, 1e-30, 1.0])  # 1e-39 is below float32's smallest normal (1.18e-38)
    assert (x * 1.0)[0] > 0
    with denormals_flushed():
        assert (x * 1.0).tolist() == [0.0, float(x[1]), 1.0]
        assert float(torch.tensor(1e-20) * torch.tensor(1e-20)) == 0.0  # a product that underflows into the range
    assert (x * 1.0)[0] > 0  # torch's default is back


def test_denormals_flushed_restores_the_state_it_found():
    x = torch.tensor([1e-39])
    with denormals_flushed():
        with denormals_flushed():  # a decorated trainer called inside another
            pass
        assert float(x * 1.0) == 0.0  # the outer block is still flushing
    try:
        torch.set_flush_denormal(True)  # a user's own setting survives the block
        with denormals_flushed():
            pass
        assert float(x * 1.0) == 0.0
    finally:
        torch.set_flush_denormal(False)


_KEPT = """
import os, sys
import numpy as np
from pbrl.utils import reuse_freed_heap
took = reuse_freed_heap() if sys.argv[1] == "on" else None
def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
a = np.empty(1 << 24, dtype=np.float32)  # 64 MB, touched, as a training step's large activation
a.fill(1.0)
before = rss()
del a
print(took, (before - rss()) >> 20)  # MB returned to the system by the free
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_reuse_freed_heap_keeps_a_large_freed_block_mapped_for_the_next_step():
    def returned_mb(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", _KEPT, mode], capture_output=True, text=True, check=True)
        took, mb = out.stdout.split()
        return took, int(mb)

    _, default = returned_mb("off")
    took, kept = returned_mb("on")
    assert took == "True"
    assert default >= 60  # glibc default: the block was its own mmap, unmapped on free (next step faults it in)
    assert kept < 4  # the block stayed in the heap, mapped, for the next allocation
