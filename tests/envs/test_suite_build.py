"""The control suite: tiny builds of every pendulum kind, determinism, medium-replay schedule, cards, CLI."""

import json
import os

import numpy as np
import pytest
import torch

from pbrl.cli import main
from pbrl.data import collect_episodes, load_dataset, normalized_score
from pbrl.data.recipes import build_recipe as build
from pbrl.data.recipes import dataset_card, get_recipe
from pbrl.errors import PbrlError
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
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "building pendulum-random -> pbrl/pendulum/random-v0: 300 transitions, seed 2"
    assert out[1].startswith("built pbrl/pendulum/random-v0: 300 transitions")
    assert main(["data", "build", "pendulum-random", "--size", "300"]) == 2  # seed 0 differs from the build's 2
    assert capsys.readouterr().err == ("pbrl: error: Minari dataset 'pbrl/pendulum/random-v0' already exists with "
                                       "another seed 2 (asked 0); pass --overwrite to rebuild it\n")
    assert main(["data", "build", "pendulum-random", "--size", "250", "--overwrite"]) == 0
    capsys.readouterr()
    assert main(["data", "build", "hopper-nonsense"]) == 2
    assert "unknown suite dataset" in capsys.readouterr().err
    assert main(["data", "build", "pendulum-random", "--size", "0", "--overwrite"]) == 2
    capsys.readouterr()
    assert main(["data", "list", "--json-output"]) == 0
    listing = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in listing["suite"]}
    assert rows["pendulum-random"]["built"] and rows["pendulum-random"]["transitions"] == 250
    assert not rows["hopper-medium"]["built"]
    main(["data", "list"])
    assert "pendulum-random" in capsys.readouterr().out


def _files_state(folder):
    """(relative path, mtime_ns, size) of every file under `folder`: equal before and after = nothing rewritten."""
    return sorted((os.path.relpath(os.path.join(d, f), folder), os.stat(os.path.join(d, f)).st_mtime_ns,
                   os.stat(os.path.join(d, f)).st_size) for d, _, fs in os.walk(folder) for f in fs)


def test_rebuild_with_the_same_recipe_size_and_seed_is_a_no_op(capsys):
    """quickstart's build (the library call, defaults) followed by the README's `pbrl data build NAME`."""
    card = build("pendulum-random")  # default size, seed 0, as `pbrl quickstart` builds it
    folder = os.path.join(os.environ["MINARI_DATASETS_PATH"], "pbrl/pendulum/random-v0")
    before = _files_state(folder)
    assert main(["data", "build", "pendulum-random"]) == 0
    n = get_recipe("pendulum-random").default_size
    assert capsys.readouterr().out == (f"pbrl/pendulum/random-v0 is already built from pendulum-random ({n} "
                                       "transitions, seed 0); nothing to do (--overwrite rebuilds it)\n")
    assert main(["data", "build", "pendulum-random", "--size", str(n), "--seed", "0"]) == 0  # explicit = default
    again = build("pendulum-random", size=n, seed=0)
    assert again == {**card, "already_built": True} and "already_built" not in card
    assert _files_state(folder) == before  # nothing rewritten


def test_rebuild_that_differs_or_has_no_card_is_an_error_naming_it(capsys):
    build("pendulum-random", size=300, seed=1)
    with pytest.raises(PbrlError, match=r"another size 300 \(asked 200\), seed 1 \(asked 0\); pass --overwrite"):
        build("pendulum-random", size=200, seed=0)
    assert main(["data", "build", "pendulum-random", "--size", "200", "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert err.endswith("with another size 300 (asked 200); pass --overwrite to rebuild it\n") and "\n" not in err[:-1]
    assert load_dataset("pbrl/pendulum/random-v0").num_transitions == 300  # untouched
    # a dataset written under the recipe's id by something else (no card) is never taken for the recipe's
    collect_episodes("Pendulum-v1", num_transitions=50, seed=0).to_minari("pbrl/pendulum/medium-v0")
    assert main(["data", "build", "pendulum-medium", "--size", "50"]) == 2
    assert "already exists without a dataset card" in capsys.readouterr().err
    assert main(["data", "build", "pendulum-medium", "--size", "50", "--overwrite"]) == 0
    assert "built pbrl/pendulum/medium-v0: 50 transitions" in capsys.readouterr().out


def test_build_progress_counts_every_collected_step():
    """One bar over the whole build (medium-replay rolls out several checkpoints), in transitions."""
    from pbrl.data.collect import step_progress

    with step_progress(SIZE, desc="t", disable=False) as bar:
        get_recipe("pendulum-medium-replay").build(SIZE, 0)
    assert bar.n == SIZE and bar.unit == "step"
    last = suite.replay_schedule(suite.policy_card("pendulum"), SIZE)[-1][0]
    assert bar.postfix == f"actor of step {last}"  # the policy rolling out is named beside the bar
    with step_progress(10, disable=True) as off:  # a disabled bar (not a terminal) still runs the build
        collect_episodes("Pendulum-v1", num_transitions=10, seed=0)
    assert off.disable


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
