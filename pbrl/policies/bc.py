"""Behaviour cloning (and %BC: cloning only the best episodes).

Continuous actions: a deterministic tanh actor fit by mean squared error, min_pi E ||pi(s) - a||^2.
Discrete actions: a categorical actor fit by cross-entropy, min_pi E[-log pi(a|s)].
`top_fraction` < 1 keeps only the episodes with the highest returns (10%BC in Chen et al. 2021, "Decision
Transformer"; CORL `any_percent_bc`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pbrl.data import EpisodeDataset, Transitions
from pbrl.errors import PbrlError
from pbrl.policies.base import ObservationConfig, Phase, Policy, PolicySpec
from pbrl.policies.nets import CategoricalActor, DeterministicActor
from pbrl.utils import adam


@dataclass
class BCConfig(ObservationConfig):
    """Behaviour cloning (CORL any_percent_bc defaults)."""

    batch_size: int = 256
    """Transitions per update."""
    lr: float = 3e-4
    """Adam learning rate."""
    hidden: tuple[int, ...] = (256, 256)
    """Actor MLP hidden sizes."""
    top_fraction: float = 1.0
    """Fraction of episodes (highest returns first) to clone; 0.1 = 10%BC."""


def bc_loss(pred: torch.Tensor, target: torch.Tensor, discrete: bool) -> torch.Tensor:
    """MSE between actions [B, A] (continuous) or cross-entropy of logits [B, A] against ids [B] (discrete)."""
    return F.cross_entropy(pred, target) if discrete else F.mse_loss(pred, target)


class BC(Policy):
    algo = "bc"

    def __init__(self, config: BCConfig, spec: PolicySpec, total_steps: int) -> None:
        super().__init__(config, spec, total_steps)
        if not 0.0 < config.top_fraction <= 1.0:
            raise PbrlError(f"bc.top_fraction must be in (0, 1], got {config.top_fraction}")
        hidden = tuple(config.hidden)
        if spec.discrete:
            self.actor: torch.nn.Module = CategoricalActor(spec.obs_dim, spec.act_dim, hidden)
        else:
            self.actor = DeterministicActor(spec.obs_dim, spec.act_dim, hidden)
        self.optimizers["actor"] = adam(self.actor.parameters(), config.lr)

    def make_sampler(self, dataset: EpisodeDataset, generator: torch.Generator) -> Callable[[], Any]:
        if self.config.top_fraction < 1.0:
            returns = dataset.episode_returns()  # [E]
            keep = np.argsort(-returns, kind="stable")[
                : max(1, int(round(len(returns) * self.config.top_fraction)))
            ]
            dataset = _subset_episodes(dataset, np.sort(keep))
        return super().make_sampler(dataset, generator)

    def phases(self) -> list[Phase]:
        return [Phase("loss", ("actor",))]

    update = Policy.run_phases

    def loss(
        self, batch: Transitions, noise: dict[str, torch.Tensor], carry: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        loss = bc_loss(self.actor(batch.observations), batch.actions, self.spec.discrete)
        return loss, {"bc/loss": loss}, carry

    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.actor(obs)
        return out.argmax(-1) if self.spec.discrete else out


def _subset_episodes(ds: EpisodeDataset, episodes: np.ndarray) -> EpisodeDataset:
    return EpisodeDataset.from_episodes(
        [ds.episode(int(i)) for i in episodes],
        metadata=ds.metadata,
        observation_space=ds.observation_space,
        action_space=ds.action_space,
    )
