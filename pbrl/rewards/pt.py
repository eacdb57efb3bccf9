"""Preference Transformer (Kim et al., "Preference Transformer: Modeling Human Preferences using Transformers for
RL", ICLR 2023) — the anchor sequence baseline.

A causal transformer over the steps of a segment gives hidden states h_t; a preference-attention layer maps each to
a query q_t, a key k_t (both d) and a reward r_t (scalar). The segment score is the attention-weighted sum

    A = softmax(q k^T / sqrt(d))  (rows over valid keys),   w_j = mean_i A_ij,   S = sum_j w_j r_j

so the weights are non-negative and sum to one over the segment. The dense reward of a step is its r_t.
Simplifications (documented): one token per (s, a) step (the paper interleaves state and action tokens); an
ensemble of such models is batched over members like the other learners.

`PTLearner` (registry name `pt`) is the learner around it: no segments, every step its own unit when relabeling
(the protocol's defaults, see `learner.py`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pbrl.rewards.learner import RewardModel, StepOutput
from pbrl.rewards.nets import EnsembleSequenceModel


class PreferenceTransformer(EnsembleSequenceModel):
    @staticmethod
    def head_dim(d_model: int) -> int:
        return 2 * d_model + 1  # q_t [d], k_t [d], r_t [1]

    def forward(self, x: torch.Tensor, mask: torch.Tensor, ends: torch.Tensor | None = None) -> StepOutput:
        m, b, t, _ = x.shape
        out = self.head(self.body(x, mask))  # [M, B, T, 2d+1]
        q, k, r = out.split([self.d_model, self.d_model, 1], dim=-1)
        valid = mask.bool().expand(m, b, t)  # [M, B, T]
        logits = q @ k.transpose(-1, -2) / math.sqrt(self.d_model)  # [M, B, T, T]
        logits = logits.masked_fill(~valid[..., None, :], float("-inf"))
        attn = torch.softmax(logits, dim=-1)  # [M, B, T(query), T(key)]
        vq = valid.to(x.dtype)  # average over valid query rows only
        w = (attn * vq[..., :, None]).sum(-2) / vq.sum(-1, keepdim=True).clamp_min(1.0)  # [M, B, T]
        return StepOutput(r.squeeze(-1), w)


class PTLearner(RewardModel):
    """The Preference Transformer learner (registry name `pt`)."""

    def build_net(self, in_dim: int, max_len: int) -> nn.Module:
        c = self.config
        return PreferenceTransformer(in_dim, c.ensemble, d_model=c.d_model, layers=c.layers, heads=c.heads, max_len=max_len)
