"""Selecting a training run's medium/expert actors into a policy card the suite can build from."""

import json

import pytest
import torch

from pbrl.errors import PbrlError
from pbrl_envs import suite
from pbrl_envs.select_policies import SelectPolicies
from pbrl_envs.train_behavior import TrainBehaviorConfig, train_one


@pytest.fixture(autouse=True)
def _one_torch_thread(_torch_threads):
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    cfg = TrainBehaviorConfig(steps=600, learning_starts=200, ckpt_every=100, eval_episodes=1, hidden=16,
                              batch_size=32)
    train_one(cfg, "Pendulum-v1", 0, out)
    return out


def _rewrite_returns(run_dir, returns):
    evals = json.loads((run_dir / "evals.json").read_text())
    for e, r in zip(evals, returns):
        e["return_stoch_mean"] = r
    (run_dir / "evals.json").write_text(json.dumps(evals))


def test_select_medium_by_return_and_best_expert(run_dir, tmp_path):
    # steps 100..600; returns chosen by hand so that medium = first >= -700 (step 400), expert = best (step 500)
    _rewrite_returns(run_dir, [-1200, -1100, -900, -650, -300, -400])
    card = SelectPolicies(run=run_dir, family="pendtest", medium_return=-700, out=tmp_path).run_()
    assert card["medium_step"] == 400 and card["expert_step"] == 500
    assert card["replay_steps"] == [200, 300, 400]  # from learning_starts on: before it, actions were random
    assert sorted(int(s) for s in card["checkpoints"]) == [200, 300, 400, 500]
    assert json.loads((tmp_path / "pendtest.json").read_text()) == card
    for entry in card["checkpoints"].values():
        assert (tmp_path / entry["file"]).is_file()
    assert suite.replay_schedule(card, 400) == [(None, 200), (200, 100), (300, 100)]


def test_select_errors(run_dir, tmp_path):
    _rewrite_returns(run_dir, [-1200, -1100, -900, -650, -300, -400])
    with pytest.raises(PbrlError, match="no checkpoint reaches"):
        SelectPolicies(run=run_dir, family="x", medium_return=0.0, out=tmp_path).run_()
    with pytest.raises(PbrlError, match="no checkpoint at step 450"):
        SelectPolicies(run=run_dir, family="x", medium_step=450, out=tmp_path).run_()
    with pytest.raises(PbrlError, match="evals.json: missing"):
        SelectPolicies(run=tmp_path, family="x", medium_step=400, out=tmp_path).run_()


def test_reevaluation_replaces_training_evals(run_dir, tmp_path):
    _rewrite_returns(run_dir, [5.0] * 6)  # impossible pendulum returns: re-evaluation must overwrite them
    card = SelectPolicies(run=run_dir, family="re", medium_step=300, reeval_episodes=2, out=tmp_path).run_()
    for e in card["evals"]:
        assert -2000 < e["return_stoch_mean"] < 0
    assert card["checkpoints"]["300"]["return_stoch_mean"] < 0
    assert card["training"]["reeval_episodes"] == 2
