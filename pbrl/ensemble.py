"""The one ensemble layer every pbrl model shares: M independent linear layers run as one batched matmul.

Reward ensembles, critic ensembles and the per-member transformers carry their weights with a leading member axis
[M, ...] and evaluate all members with `torch.baddbmm`, never a Python loop over members.
"""

from __future__ import annotations

import math

import torch
from torch import nn


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
        lead = x.shape[1:-1]
        flat = x.reshape(x.shape[0], -1, x.shape[-1])  # [M, R, in]
        return torch.baddbmm(self.bias, flat, self.weight).reshape(x.shape[0], *lead, -1)  # [M, ..., out]
