"""The one ensemble layer every pbrl model shares: M independent linear layers run as one batched matmul.

Reward ensembles, critic ensembles and the per-member transformers carry their weights with a leading member axis
[M, ...] and evaluate all members with `torch.baddbmm`, never a Python loop over members.
"""

from __future__ import annotations

import math

import torch
from torch import nn

MIN_BLOCK_ROWS = 512
"""Smallest row block `row_blocks` cuts: below it the extra GEMMs cost more than the idle thread (measured)."""


def row_blocks(members: int, rows: int, threads: int) -> int:
    """How many row blocks each member's GEMM is cut into on a CPU so that the blocks fill every thread.

    CPU `bmm` runs the batch's GEMMs in parallel, one GEMM per thread at a time. With M not a multiple of the
    thread count the last round leaves threads idle: 3 members on 2 threads take 2 rounds of single-thread
    GEMMs, 1.33x the time of 1.5 rounds' worth of work. Cutting each member's rows into k blocks, with M * k a
    multiple of the threads, balances the rounds. Returns k (1 = no cut).
    """
    k = threads // math.gcd(members, threads)
    if k > 1 and rows % k == 0 and rows // k >= MIN_BLOCK_ROWS:
        return k
    return 1


class EnsembleLinear(nn.Module):
    """M independent linear layers in one batched matmul: x [M, ..., in] -> [M, ..., out].

    Each member is initialised like its own `nn.Linear` (U(-1/sqrt(in), 1/sqrt(in)) for weight and bias, which is
    kaiming-uniform with a = sqrt(5)).
    """

    def __init__(self, members: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, in_dim, out_dim))  # [M, in, out]
        self.bias = nn.Parameter(torch.empty(members, 1, out_dim))  # [M, 1, out]
        bound = 1.0 / math.sqrt(in_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        M, lead, (i, o) = x.shape[0], x.shape[1:-1], self.weight.shape[1:]
        flat = x.reshape(M, -1, i)  # [M, R, in]
        k = row_blocks(M, flat.shape[1], torch.get_num_threads()) if x.device.type == "cpu" else 1
        if k == 1:
            return torch.baddbmm(self.bias, flat, self.weight).reshape(M, *lead, o)  # [M, ..., out]
        # each member's weight repeated over its k row blocks (a copy of M*k*in*out, small next to the rows)
        w = self.weight.unsqueeze(1).expand(M, k, i, o).reshape(M * k, i, o)
        b = self.bias.unsqueeze(1).expand(M, k, 1, o).reshape(M * k, 1, o)
        y = torch.baddbmm(b, flat.reshape(M * k, -1, i), w)  # [M*k, R/k, out]
        return y.reshape(M, *lead, o)
