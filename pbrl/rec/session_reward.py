"""A learned session reward as the RL signal of an LLM recommender: `SessionReward`.

A step-wise pbrl reward learner (`RewardConfig(model="step")`) trained on session preferences of a recommendation
log (`pbrl.rec.session_preferences`: windows compared by the clicks of the rest of their session) scores one logged
step x_t = concat(s_t, onehot(a_t)) (`pbrl.rewards.features.step_features`), where s_t is the log's observation when
the recommendation was made and a_t the recommended item. An LLM recommender's prompt is a user's history of item
ids and its answer an item; `SessionReward` maps (prompt p, item i) to the learner's step input concat(s_p,
onehot(i)), s_p the observation of prompt p, and returns

    r(p, i) = (1/M) sum_m (v_m(s_p, i) - mu_m) / sigma_m        normalize=True  (the relabeling's member z-score)
    r(p, i) = (1/M) sum_m v_m(s_p, i)                           normalize=False (raw)

with mu_m, sigma_m the mean and population std of member m's values over the log's steps (`member_stats`), i.e.
exactly the reward `pbrl.rewards.relabel(dataset, model, "member-zscore")` gives a logged step, so that the LLM is
rewarded on the scale offline RL on the relabelled log sees (about unit variance, mean 0 over the log).

The observation of a prompt comes from the caller: the logged observation at the step the prompt was cut
(`SessionReward(model, states)`) or an encoder of a history of item ids (`SessionReward.from_histories`); the
encoder is the log's own observation layout (for `pbrl/RecSim-v0`, the env's), which this library does not import.
`SessionReward` is the ``(prompt_index, item) -> float`` callable `pbrl.rec.srpo.train_srpo` takes as
``extra_reward``; `combined` gives the trainer's ``reward`` mode and extra reward for a weighted sum of the
verifiable reward and this one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from pbrl.errors import PbrlError

if TYPE_CHECKING:
    from pbrl.data import EpisodeDataset
    from pbrl.rec.srpo import ExtraReward
    from pbrl.rewards.learner import RewardModel


def member_stats(dataset: EpisodeDataset, model: RewardModel) -> tuple[np.ndarray, np.ndarray]:
    """(mu [M], sigma [M]): mean and population std of each member's raw step values over `dataset`'s steps (the
    statistics of the member z-score normalizer, `pbrl.rewards.normalizers.member_zscore`)."""
    from pbrl.rewards.relabel import raw_rewards

    model.check(dataset, dataset.name)
    raw = raw_rewards(dataset, model).values.astype(np.float64)  # [M, N]
    return raw.mean(1), np.maximum(raw.std(1), 1e-8)


class SessionReward:
    """r(p, i): the learned session reward of recommending item i at prompt p (module docstring).

    model: a step-wise reward learner (`load_reward_model(folder)` of a `step` model) over discrete actions = the
    catalog; states [P, obs_dim]: the observation of each prompt; stats: (mu [M], sigma [M]) from `member_stats`
    (None: raw values, the members' mean). Each prompt's scores of the whole catalog are computed in one forward pass
    the first time the prompt is asked for, then cached (an SRPO step asks for n rollouts of each prompt).
    """

    def __init__(self, model: RewardModel, states: np.ndarray, stats: tuple[np.ndarray, np.ndarray] | None = None):
        if getattr(model, "kind", None) != "step":
            raise PbrlError(f"reward model: a step-wise learner (model 'step') is needed to score one "
                            f"recommendation, got {getattr(model, 'kind', type(model).__name__)!r}")
        spec = model.spec
        if not spec.discrete:
            raise PbrlError("reward model: trained on continuous actions; a recommendation log has discrete items")
        states = np.asarray(states, dtype=np.float32)
        if states.ndim != 2 or states.shape[1] != spec.obs_dim:
            raise PbrlError(f"states: expected [prompts, {spec.obs_dim}] observations (the reward model's "
                            f"obs_dim), got shape {list(states.shape)}")
        if stats is not None:
            mu, sd = (np.asarray(s, np.float64).reshape(-1) for s in stats)
            if mu.shape != (model.members,) or sd.shape != (model.members,) or not np.all(sd > 0):
                raise PbrlError(f"stats: expected (mu, sigma) of {model.members} members with sigma > 0")
            self.stats: tuple[np.ndarray, np.ndarray] | None = (mu, sd)
        else:
            self.stats = None
        self.model, self.states = model, states
        self.num_items = int(spec.act_dim)
        self._cache: dict[int, np.ndarray] = {}

    @classmethod
    def from_histories(cls, model: RewardModel, histories: Sequence[Sequence[int]],
                       encode: Callable[[Sequence[int]], np.ndarray], max_history: int,
                       stats: tuple[np.ndarray, np.ndarray] | None = None) -> SessionReward:
        """Prompts given as histories of item ids (oldest first), each encoded into an observation by `encode` (the
        log's observation layout). A history longer than `max_history` (what the observation holds) or naming an
        item outside the catalog is refused with one line."""
        n_items = int(model.spec.act_dim)
        states = []
        for p, hist in enumerate(histories):
            hist = [int(i) for i in hist]
            if len(hist) > max_history:
                raise PbrlError(f"histories[{p}]: {len(hist)} items, the observation holds at most {max_history}")
            bad = [i for i in hist if not 0 <= i < n_items]
            if bad:
                raise PbrlError(f"histories[{p}]: item {bad[0]} is outside the catalog of {n_items} items")
            states.append(np.asarray(encode(hist), dtype=np.float32).reshape(-1))
        if not states:
            raise PbrlError("histories: expected at least one prompt, got none")
        return cls(model, np.stack(states), stats)

    @property
    def normalized(self) -> bool:
        return self.stats is not None

    @torch.inference_mode()
    def catalog_scores(self, p: int) -> np.ndarray:
        """[I] r(p, i) for every item i of the catalog (float64)."""
        if not 0 <= int(p) < len(self.states):
            raise PbrlError(f"prompt {p}: outside the {len(self.states)} prompts of this session reward")
        p = int(p)
        if p not in self._cache:
            n, net = self.num_items, self.model.net
            obs = torch.from_numpy(np.repeat(self.states[p][None], n, 0))  # [I, S]
            x = torch.cat([obs, torch.eye(n)], 1)[:, None, :]  # [I, 1, S + I]: every item as one step
            dev = next(net.parameters()).device
            net.eval()
            v = self.model.output(x.to(dev), torch.ones(n, 1, dtype=torch.bool, device=dev)).values  # [M, I, 1]
            v = v[..., 0].double().cpu().numpy()  # [M, I]
            if self.stats is not None:
                mu, sd = self.stats
                v = (v - mu[:, None]) / sd[:, None]
            self._cache[p] = v.mean(0)
        return self._cache[p]

    def __call__(self, prompt_index: int, item: int) -> float:
        """r(prompt_index, item): the `ExtraReward` of `train_srpo`."""
        if not 0 <= int(item) < self.num_items:
            raise PbrlError(f"item {item}: outside the catalog of {self.num_items} items the reward model knows")
        return float(self.catalog_scores(prompt_index)[int(item)])

    def combined(self, verifiable_weight: float, learned_weight: float
                 ) -> tuple[Literal["rsvr", "none"], ExtraReward | None]:
        """(reward, extra_reward) for `SrpoConfig.reward` and `train_srpo(extra_reward=...)` so that a rollout's
        reward is proportional to  verifiable_weight * RSVR + learned_weight * r(p, i).

        The trainer adds the extra reward to the verifiable one at weight 1, so for verifiable_weight > 0 the extra
        reward is (learned_weight / verifiable_weight) * r: the sum is the weighted one divided by
        verifiable_weight, a positive scale that the GRPO z-score of a group's rewards does not see (BGAE's pass@k
        bonus, added after the z-score, reads exact matches, not rewards). verifiable_weight = 0 gives
        ("none", learned_weight * r): the learned reward alone; learned_weight = 0 gives ("rsvr", None).
        """
        if verifiable_weight < 0 or learned_weight < 0 or verifiable_weight == learned_weight == 0:
            raise PbrlError(f"combined: weights must be >= 0 and not both 0, got verifiable {verifiable_weight}, "
                            f"learned {learned_weight}")
        if learned_weight == 0:
            return "rsvr", None
        if verifiable_weight == 0:
            scale = float(learned_weight)
            return "none", _Scaled(self, scale)
        return "rsvr", _Scaled(self, float(learned_weight) / float(verifiable_weight))


class _Scaled:
    """scale * r(p, i), a named callable (train_srpo records the extra reward's qualified name in its config)."""

    def __init__(self, reward: SessionReward, scale: float):
        self.reward, self.scale = reward, scale

    def __call__(self, prompt_index: int, item: int) -> float:
        return self.scale * self.reward(prompt_index, item)


__all__ = ["SessionReward", "member_stats"]
