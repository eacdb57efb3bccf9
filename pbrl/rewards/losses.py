"""Pure losses and metrics on pairs of sequence scores.

Bradley–Terry (Bradley & Terry 1952; Christiano et al. 2017) with soft labels y = P(b preferred):

    P(b > a) = sigmoid(S_b - S_a)
    L = -(1 - y) log sigmoid(S_a - S_b) - y log sigmoid(S_b - S_a)

which equals the soft cross-entropy on the logits [S_a, S_b] with target [1 - y, y] used by Uni-RLHF and DTR
(ties are y = 0.5, i.e. the target [0.5, 0.5]).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    score_a: torch.Tensor, score_b: torch.Tensor, label: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean soft-label Bradley–Terry loss over the last axis.

    score_a, score_b: [..., B] sequence scores; label: [..., B] or [B] = P(b preferred) in [0, 1];
    weight: optional [..., B] or [B] per-pair weight (0 drops a pair, e.g. masked ties). Returns [...]
    (a scalar for 1-D inputs; one loss per ensemble member for [M, B] inputs).
    """
    diff = score_b - score_a  # [..., B]
    # -log sigmoid(x) = softplus(-x): numerically stable for large |x|
    per_pair = (1.0 - label) * F.softplus(diff) + label * F.softplus(-diff)  # [..., B]
    if weight is None:
        return per_pair.mean(-1)
    weight = weight.to(per_pair.dtype).expand_as(per_pair)
    return (per_pair * weight).sum(-1) / weight.sum(-1).clamp_min(1.0)


def preference_accuracy(score_a: torch.Tensor, score_b: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Fraction of non-tied pairs whose preferred segment scores higher; [..., B] -> [...] (nan if all tie)."""
    strict = label != 0.5  # [B] or [..., B]
    correct = ((score_b > score_a) == (label > 0.5)) & strict
    strict = strict.expand_as(correct)
    return correct.sum(-1).to(torch.float32) / strict.sum(-1).to(torch.float32)
