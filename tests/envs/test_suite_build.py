"""The control suite: tiny builds of every pendulum kind, determinism, medium-replay schedule, cards, CLI."""

import json
import os

import numpy as np
import pytest
import torch

from pbrl.cli import main
from pbrl.data import load_dataset, normalized_score
from pbrl.data.recipes import build_recipe as build
from pbrl.data.recipes import dataset_card, get_recipe
from pbrl_envs import suite

SIZE = 450  # two full pendulum episodes and a cut one


@pytest.fixture(autouse=True)
def _one_torch_thread(_torch_threads):
    # small networks, one sample at a time: a second intra-op thread only adds barriers (10-20x slower when the
    # cores are busy)
    torch.set_num_threads(1)


def _arrays(ds):
    return [ds.observations, ds.actions, ds.rewards, ds.terminals, ds.timeouts, ds.episode_starts]


def test_suite_names_and_ids():
    for fam in ("pendulum", "hopper", "walker2d", "halfcheetah"):
        for kind in suite.KINDS:
            r = get_recipe(f"{fam}-{kind}")
            assert r.dataset_id == f"pbrl/{fam}/{kind}-v0"
    assert get_recipe("hopper-medium").default_size == 200_000


@pytest.mark.parametrize("kind", suite.KINDS)
def test_pendulum_tiny_build_is_deterministic(kind):
    a = get_recipe(f"pendulum-{kind}").build(SIZE, 0)
    b = get_recipe(f"pendulum-{kind}").build(SIZE, 0)
    c = get_recipe(f"pendulum-{kind}").build(SIZE, 1)
    assert a.num_transitions == SIZE
    for x, y in zip(_arrays(a), _arrays(b)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.actions, c.actions)
    assert a.env_id == "Pendulum-v1"
    assert a.metadata["ref_min_score"] == -1242.54 and a.metadata["ref_max_score"] == -152.05


def test_medium_expert_is_medium_then_expert_halves():
    card = suite.policy_card("pendulum")
    ds = get_recipe("pendulum-medium-expert").build(800, 3)
    pols = ds.metadata["behavior_policies"]
    assert [p["train_step"] for p in pols] == [card["medium_step"], card["expert_step"]]
    medium = get_recipe("pendulum-medium").build(400, 3)
    np.testing.assert_array_equal(ds.actions[:400], medium.actions)  # first half = medium at the same seed
    assert ds.num_transitions == 800


def test_replay_schedule_splits_size_in_proportion_to_training_steps():
    card = {"env_id": "X", "medium_step": 40, "replay_steps": [10, 20, 40]}
    assert suite.replay_schedule(card, 40) == [(None, 10), (10, 10), (20, 20)]
    assert suite.replay_schedule(card, 8) == [(None, 2), (10, 2), (20, 4)]
    sched = suite.replay_schedule(card, 1001)
    assert sum(n for _, n in sched) == 1001
    with pytest.raises(Exception, match="medium_step"):
        suite.replay_schedule({"env_id": "X", "medium_step": 30, "replay_steps": [10, 20]}, 10)


def test_medium_replay_uses_the_checkpoint_chain():
    card = suite.policy_card("pendulum")
    ds = get_recipe("pendulum-medium-replay").build(card["medium_step"], 0)  # natural size: one step each
    steps = [p.get("train_step") for p in ds.metadata["behavior_policies"]]
    assert steps == [None] + card["replay_steps"][:-1]
    assert ds.num_transitions == card["medium_step"]
    assert "D4RL stored the replay buffer" in dataset_card(ds)["notes"]


def test_policy_quality_orders_random_medium_expert():
    """The committed actors are what the card says: expert > medium > random on whole episodes."""
    means = {}
    for kind in ("random", "medium", "expert"):
        ds = get_recipe(f"pendulum-{kind}").build(2000, 7)  # 10 episodes of 200 steps
        means[kind] = float(normalized_score("pendulum", ds.episode_returns()).mean())
    assert means["random"] < 30 < means["medium"] < means["expert"]
    assert means["expert"] > 85


def test_build_writes_minari_dataset_and_card():
    card = build("pendulum-medium", size=SIZE, seed=0)
    ds = load_dataset("pbrl/pendulum/medium-v0")
    assert ds.num_transitions == SIZE and ds.num_episodes == 3
    folder = os.path.join(os.environ["MINARI_DATASETS_PATH"], "pbrl/pendulum/medium-v0")
    on_disk = json.loads(open(os.path.join(folder, "card.json")).read())
    assert on_disk == card
    assert card["complete_episodes"] == 2 and card["transitions"] == SIZE
    full = ds.episode_returns()[:2]
    assert card["return"]["mean"] == pytest.approx(full.mean(), abs=0.01)
    assert card["normalized_return"]["max"] == pytest.approx(
        float(normalized_score("pendulum", full).max()), abs=0.01)
    assert card["behavior_policies"][0]["train_step"] == suite.policy_card("pendulum")["medium_step"]
    assert "normalized return" in open(os.path.join(folder, "card.md")).read()
    assert ds.metadata["ref_min_score"] == -1242.54


def test_cli_build_list_and_errors(capsys):
    assert main(["data", "build", "pendulum-random", "--size", "300", "--seed", "2"]) == 0
    assert "built pbrl/pendulum/random-v0: 300 transitions" in capsys.readouterr().out
    assert main(["data", "build", "pendulum-random", "--size", "300"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["data", "build", "pendulum-random", "--size", "250", "--overwrite"]) == 0
    assert main(["data", "build", "hopper-nonsense"]) == 2
    assert "unknown suite dataset" in capsys.readouterr().err
    assert main(["data", "build", "pendulum-random", "--size", "0", "--overwrite"]) == 2
    assert main(["data", "list", "--json-output"]) == 0
    listing = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in listing["suite"]}
    assert rows["pendulum-random"]["built"] and rows["pendulum-random"]["transitions"] == 250
    assert not rows["hopper-medium"]["built"]
    main(["data", "list"])
    assert "pendulum-random" in capsys.readouterr().out


@pytest.mark.parametrize("family", ["hopper", "walker2d", "halfcheetah"])
def test_locomotion_tiny_builds(family):
    """Every locomotion kind builds at a tiny size from the committed actors, deterministically."""
    card = suite.policy_card(family)
    lo, hi = {"hopper": (-20.272305, 3234.3), "walker2d": (1.629008, 4592.3),
              "halfcheetah": (-280.178953, 12135.0)}[family]
    for kind in ("medium-replay", "medium-expert"):
        a = get_recipe(f"{family}-{kind}").build(300, 5)
        b = get_recipe(f"{family}-{kind}").build(300, 5)
        assert a.num_transitions == 300
        for x, y in zip(_arrays(a), _arrays(b)):
            np.testing.assert_array_equal(x, y)
        assert (a.metadata["ref_min_score"], a.metadata["ref_max_score"]) == (lo, hi)
        assert np.abs(a.actions).max() <= 1.0
    steps = [p.get("train_step") for p in a.metadata["behavior_policies"]]
    assert steps == [card["medium_step"], card["expert_step"]]
    size_kb = sum((suite.CHECKPOINTS / e["file"]).stat().st_size for e in card["checkpoints"].values()) / 1024
    assert all((suite.CHECKPOINTS / e["file"]).stat().st_size < 1_000_000 for e in card["checkpoints"].values())
    assert size_kb > 0


@pytest.mark.parametrize("family", ["hopper", "walker2d", "halfcheetah"])
def test_locomotion_actors_reach_d4rl_like_levels(family):
    """The committed medium actor is near D4RL's medium level (>= 25 normalized; the built datasets average 32-42)
    and the expert clearly above it, over 20 whole sampled episodes each (fixed seeds: deterministic)."""
    from pbrl.data import collect_episodes

    task, card = suite.TASKS[family], suite.policy_card(family)
    means = {}
    for kind in ("medium", "expert"):
        policy = suite.ActorPolicy(suite.load_actor(family, card[f"{kind}_step"]), seed=3)
        ds = collect_episodes(task.env_id, policy, num_episodes=20, seed=3)
        means[kind] = float(normalized_score(family, ds.episode_returns()).mean())
    print(family, means)
    assert means["medium"] >= 25
    assert means["expert"] >= means["medium"] + 10
