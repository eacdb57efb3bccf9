"""A new reward learner is one class + one registry line: a toy linear per-step learner, defined here, trains,
relabels and reports through the public functions with no change to them."""

import typing

import numpy as np
import pytest
import torch
from torch import nn

from pbrl.data import EpisodeDataset, scripted_preferences
from pbrl.rewards import (
    LEARNERS,
    NORMALIZERS,
    LearnerName,
    NormalizerName,
    RewardConfig,
    RewardLearner,
    StepOutput,
    get_learner,
    load_reward_model,
    register_learner,
    relabel,
    reward_report,
    train_reward,
)
from pbrl.rewards.commands import Relabel, RewardReport
from pbrl.rewards.learner import RewardModel


class LinearStepNet(nn.Module):
    """r_m(x_t) = w_m . x_t for M members; the score is the plain sum over valid steps."""

    def __init__(self, in_dim: int, members: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(members, in_dim))

    def forward(self, x, mask, ends=None):
        values = torch.einsum("mbtd,md->mbt", x, self.w)  # [M, B, T]
        return StepOutput(values, mask.to(values.dtype).expand_as(values))


class ToyLearner(RewardModel):
    def build_net(self, in_dim: int, max_len: int) -> nn.Module:
        return LinearStepNet(in_dim, self.config.ensemble)


register_learner("toy-linear", ToyLearner)


@pytest.fixture(scope="module")
def linear_task():
    """Reward 2 s_0 - s_1: a linear learner can represent it exactly."""
    rng = np.random.default_rng(0)
    n, e = 2000, 10
    obs = rng.normal(size=(n + e, 2)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, 1)).astype(np.float32)
    keep = np.ones(n + e, bool)
    keep[np.arange(1, e + 1) * (n // e) + np.arange(e)] = False
    s = obs[keep]
    starts = np.arange(e + 1) * (n // e)
    trunc = np.zeros(n, bool)
    trunc[starts[1:] - 1] = True
    ds = EpisodeDataset(obs, act, 2 * s[:, 0] - s[:, 1], np.zeros(n, bool), trunc, starts)
    return ds, scripted_preferences(ds, 300, 10, seed=1)


def test_toy_learner_trains_relabels_reports_and_reloads(linear_task, tmp_path):
    ds, pairs = linear_task
    cfg = RewardConfig(model="toy-linear", ensemble=2, lr=3e-2, epochs=20, batch_size=32, early_stop=False)
    model = train_reward(ds, pairs, cfg, out_dir=tmp_path, progress=False)
    assert isinstance(model, ToyLearner) and isinstance(model, RewardLearner)
    assert model.info["final"]["reward/val_accuracy"] > 0.9
    w = model.net.w.detach().numpy()  # [M, 3] over (s_0, s_1, a): the direction of (2, -1, 0)
    cos = (w @ np.array([2.0, -1.0, 0.0])) / np.linalg.norm(w, axis=1) / np.sqrt(5)
    assert (cos > 0.95).all()
    out = relabel(ds, model, "member-zscore")
    assert out.metadata["provenance"][-1]["reward_model"] == "toy-linear"
    # the true returns travel with the relabeled data (`pbrl data info` reports them)
    np.testing.assert_allclose(out.metadata["provenance"][-1]["true_episode_returns"], ds.episode_returns())
    assert np.corrcoef(out.rewards, ds.rewards)[0, 1] > 0.95
    rep = reward_report(ds, model, pairs)
    assert rep["model"] == "toy-linear" and rep["pairs/accuracy"] > 0.9 and rep["step/pearson"] > 0.95
    loaded = load_reward_model(tmp_path)
    assert type(loaded) is ToyLearner
    np.testing.assert_array_equal(relabel(ds, loaded, "none").rewards, relabel(ds, model, "none").rewards)


def test_names_are_written_once():
    assert set(typing.get_args(LearnerName)) <= set(LEARNERS)
    assert {get_learner(k).kind for k in typing.get_args(LearnerName)} == set(typing.get_args(LearnerName))
    assert typing.get_type_hints(RewardConfig)["model"] == LearnerName
    assert NORMALIZERS == typing.get_args(NormalizerName)
    assert typing.get_type_hints(Relabel)["normalize"] == NormalizerName
    assert typing.get_type_hints(RewardReport)["normalize"] == NormalizerName
