"""The control adapter: turns an EpisodeDataset (+ PreferencePairs) into the generic step tensors of the learners.

A control step is x_t = concat(flatten(s_t), a_t) with continuous actions clipped to 0.999 x the action bounds
(+-0.999 for D4RL's [-1, 1], as Uni-RLHF / DTR do before the reward net; unbounded spaces are not clipped) and discrete actions one-hot. The reference signal of the entropy segmenter is the action
entropy of a behaviour-cloned Gaussian (or categorical, for discrete actions) policy fit here on the dataset:
decision points are where the behaviour is uncertain.

    Gaussian:    H(s) = sum_j log sigma_j(s) + A/2 (1 + ln 2 pi)
    categorical: H(s) = -sum_a pi(a|s) ln pi(a|s)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pbrl.data import EpisodeDataset
from pbrl.errors import PbrlError
from pbrl.utils import adam


@dataclass(frozen=True)
class FeatureSpec:
    """What a control step looks like; stored with a reward model so relabeling can check the dataset fits."""

    obs_dim: int
    act_dim: int  # action dimension, or number of actions when discrete
    discrete: bool

    @property
    def step_dim(self) -> int:
        return self.obs_dim + self.act_dim

    @classmethod
    def of(cls, ds: EpisodeDataset) -> FeatureSpec:
        obs_dim = int(np.prod(ds.observations_all.shape[1:]))
        if ds.is_discrete:
            return cls(obs_dim, int(ds.action_space.n), True)
        return cls(obs_dim, int(np.prod(ds.actions.shape[1:])), False)

    def check(self, ds: EpisodeDataset, source: str = "dataset") -> None:
        got = FeatureSpec.of(ds)
        if got != self:
            raise PbrlError(
                f"{source}: steps look like {asdict(got)}, the reward model expects {asdict(self)}"
            )


def step_features(ds: EpisodeDataset, spec: FeatureSpec | None = None) -> np.ndarray:
    """x_t = concat(flatten(s_t), a_t) for every flat transition -> [N, D] float32."""
    spec = spec or FeatureSpec.of(ds)
    spec.check(ds)
    obs = ds.observations.reshape(ds.num_transitions, -1).astype(np.float32)  # [N, S]
    if spec.discrete:
        act = np.zeros((ds.num_transitions, spec.act_dim), np.float32)  # [N, A] one-hot
        act[np.arange(ds.num_transitions), ds.actions.astype(np.int64)] = 1.0
    else:
        act = clip_actions(ds)
    return np.concatenate([obs, act], axis=1)


def clip_actions(ds: EpisodeDataset) -> np.ndarray:
    """Continuous actions [N, A] clipped to 0.999 x the space's finite bounds (+-0.999 for D4RL's [-1, 1])."""
    act = ds.actions.reshape(ds.num_transitions, -1).astype(np.float32)
    low = np.broadcast_to(
        np.asarray(getattr(ds.action_space, "low", -np.inf), np.float32).reshape(-1), act.shape[1:]
    )
    high = np.broadcast_to(
        np.asarray(getattr(ds.action_space, "high", np.inf), np.float32).reshape(-1), act.shape[1:]
    )
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        return act  # unbounded space (e.g. inferred from a D4RL file): nothing to clip against
    mid, half = (high + low) / 2, (high - low) / 2
    return np.clip(act, mid - 0.999 * half, mid + 0.999 * half)


def windows(flat: torch.Tensor, starts: torch.Tensor, length: int) -> torch.Tensor:
    """Gather [*, T, ...] windows flat[start : start + T] of a flat per-step tensor [N, ...] for starts [*].

    Indices past the end are clamped to the last step: they only occur in the padding of a segment shorter than T
    (masked out by its caller), never inside a validated segment."""
    idx = starts[..., None] + torch.arange(length, device=starts.device)  # [*, T]
    return flat[idx.clamp_max(len(flat) - 1)]


class BehaviorPolicy(nn.Module):
    """pi(a|s): a diagonal Gaussian with state-dependent std (continuous) or a categorical (discrete)."""

    def __init__(self, spec: FeatureSpec, hidden: int = 256) -> None:
        super().__init__()
        self.spec = spec
        out = spec.act_dim if spec.discrete else 2 * spec.act_dim
        self.net = nn.Sequential(
            nn.Linear(spec.obs_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, out),
        )

    def _params(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(obs).chunk(2, dim=-1)  # [B, A] each
        return mean, log_std.clamp(-5.0, 2.0)

    def nll(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of the dataset actions."""
        if self.spec.discrete:
            return F.cross_entropy(self.net(obs), act)
        mean, log_std = self._params(obs)
        z = (act - mean) * torch.exp(-log_std)
        return (0.5 * z.pow(2) + log_std + 0.5 * math.log(2 * math.pi)).sum(-1).mean()

    def entropy(self, obs: torch.Tensor) -> torch.Tensor:
        """Action entropy H(s) [B] (nats)."""
        if self.spec.discrete:
            logp = F.log_softmax(self.net(obs), -1)
            return -(logp.exp() * logp).sum(-1)
        _, log_std = self._params(obs)
        return log_std.sum(-1) + 0.5 * self.spec.act_dim * (1.0 + math.log(2 * math.pi))


def _policy_inputs(ds: EpisodeDataset, spec: FeatureSpec) -> tuple[torch.Tensor, torch.Tensor]:
    obs = torch.from_numpy(ds.observations.reshape(ds.num_transitions, -1).astype(np.float32))
    if spec.discrete:
        return obs, torch.from_numpy(ds.actions.astype(np.int64))
    return obs, torch.from_numpy(clip_actions(ds))


def fit_behavior_policy(
    ds: EpisodeDataset, steps: int = 2000, batch_size: int = 256, lr: float = 1e-3, seed: int = 0
) -> BehaviorPolicy:
    """Behaviour cloning by maximum likelihood (Adam on the NLL of dataset actions)."""
    spec = FeatureSpec.of(ds)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        policy = BehaviorPolicy(spec)
    obs, act = _policy_inputs(ds, spec)
    opt = adam(policy.parameters(), lr)
    for _ in range(steps):
        idx = torch.randint(0, ds.num_transitions, (batch_size,), generator=gen)
        loss = policy.nll(obs[idx], act[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return policy.eval()


@torch.inference_mode()
def behavior_entropy(policy: BehaviorPolicy, ds: EpisodeDataset, chunk: int = 65536) -> np.ndarray:
    """H(s_t) of every flat transition -> [N] float32."""
    policy.spec.check(ds)
    obs, _ = _policy_inputs(ds, policy.spec)
    return torch.cat([policy.entropy(obs[i : i + chunk]) for i in range(0, len(obs), chunk)]).numpy()


def behavior_policy_state(policy: BehaviorPolicy) -> dict[str, Any]:
    return {"spec": asdict(policy.spec), "state_dict": policy.state_dict()}


def behavior_policy_from_state(state: dict[str, Any]) -> BehaviorPolicy:
    policy = BehaviorPolicy(FeatureSpec(**state["spec"]))
    policy.load_state_dict(state["state_dict"])
    return policy.eval()
