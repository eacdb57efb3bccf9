"""The control benchmark suite: D4RL-style datasets built locally from behaviour policies trained by the project.

D4RL's MuJoCo data cannot be downloaded here and Minari's `mujoco/*` datasets are not D4RL (no medium-replay or
medium-expert), so pbrl ships a recipe instead: SAC actors trained by `pbrl_envs.train_behavior` (committed as small
checkpoints under `checkpoints/`) and builders that roll them out into Minari datasets `pbrl/<family>/<kind>-v0`.

Kinds (as in D4RL, Fu et al. 2020, section 5):
- `random`         uniform random actions.
- `medium`         the SAC actor saved when its stochastic return first reached about one third of the expert's
                   (D4RL: "one third of the expert's performance"), sampled (not the mean action), as D4RL did.
- `expert`         the best actor the training budget reached, sampled.
- `medium-expert`  the first half of the transitions from `medium`, the second from `expert` (D4RL concatenates
                   the two datasets).
- `medium-replay`  the transitions seen while training up to `medium`, REGENERATED from the checkpoints saved along
                   that training run. D4RL stored the replay buffer itself; here training step interval
                   [s_k, s_k+1) is replayed by sampling the actor saved at s_k (a piecewise-constant policy that is
                   refreshed every `ckpt_every` steps instead of after every gradient step), and the first interval
                   [0, s_1) uses uniform random actions (SAC's random warm-up plus the untrained actor). Episodes do
                   not straddle checkpoints: each interval starts fresh episodes and its last one is cut (marked
                   truncated) when the interval's budget is reached. `--size` scales every interval by the same
                   factor (the natural size is the medium checkpoint's step; the default is the family's size).

Reference scores: hopper/walker2d/halfcheetah use D4RL's published random/expert returns (d4rl/infos.py, measured
on the -v2 environments) applied to gymnasium's v5 dynamics, so the scale is D4RL's but a v5 expert is not exactly
a v2 one. The pendulum suite (Pendulum-v1, no MuJoCo) has its own reference scores measured by
`measure_reference_returns`: random = mean return of uniform random actions, expert = mean return of the sampled
expert actor, each over 100 episodes.

The committed actors (sampled-actor returns re-evaluated over 20 episodes; every evaluation is in
checkpoints/<family>.json). Locomotion: SAC 256x256, seed 0, 300k environment steps on a 2-core CPU (one thread
each, `pbrl_envs.train_behavior`), then `pbrl_envs.select_policies --medium-return R --reeval-episodes 20`:
medium = the first checkpoint whose return reaches R (35-43% of D4RL's expert return; D4RL: about one
third of its expert), expert = the best.
- pendulum: SAC 64x64, 10k steps; medium = step 5000 (-526, 65.7 normalized), expert = step 10000 (-136, 101.5).
- hopper (R = 1400): medium = step 110k (1494, 46.5), expert = step 240k (2108, 65.4).
- walker2d (R = 1600): medium = step 140k (1642, 35.7), expert = step 260k (2935, 63.9).
- halfcheetah (R = 4500): medium = step 110k (4514, 38.6), expert = step 300k (6100, 51.4).
The experts are below D4RL's (which trained SAC for about 1M steps); results/datasets.md has the data statistics.

Every build is deterministic given (size, seed): environments are seeded through `collect_episodes`, and the
stochastic actors draw their noise from their own seeded torch generator.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pbrl.data import EpisodeDataset, collect_episodes, register_reference_scores
from pbrl.data.collect import progress_note
from pbrl.data.recipes import RECIPES, Recipe, register_recipe
from pbrl.errors import PbrlError
from pbrl.utils import safe_torch_load
from pbrl_envs.sac import Actor

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
KINDS = ("random", "medium", "medium-replay", "medium-expert", "expert")


@dataclass(frozen=True)
class Task:
    """One environment family of the suite."""

    family: str
    """Dataset family name, e.g. `hopper` (datasets are `<family>-<kind>`)."""
    env_id: str
    """Gymnasium id the data is collected in."""
    ref_min: float
    """Reference return of a random policy (normalized score 0)."""
    ref_max: float
    """Reference return of an expert (normalized score 100)."""
    ref_source: str
    """Where the reference scores come from."""
    default_size: int
    """Transitions of the random/medium/expert/medium-expert datasets when no size is asked for."""


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> None:
    """Add a family: its reference scores and one recipe per kind (built from checkpoints/<family>.json)."""
    TASKS[task.family] = task
    register_reference_scores(task.family, task.ref_min, task.ref_max)
    for kind in KINDS:
        name = f"{task.family}-{kind}"
        if name in RECIPES:
            continue
        register_recipe(Recipe(
            name=name,
            dataset_id=f"pbrl/{task.family}/{kind}-v0",
            build=lambda size, seed, _t=task, _k=kind: build_dataset(_t, _k, size, seed),
            default_size=task.default_size,
            description=_DESCRIPTIONS[kind].format(env=task.env_id),
        ))


_DESCRIPTIONS = {
    "random": "{env}, uniform random actions",
    "medium": "{env}, SAC actor saved part-way through training (medium), sampled",
    "medium-replay": "{env}, regenerated replay of SAC training up to the medium checkpoint",
    "medium-expert": "{env}, half medium + half expert transitions",
    "expert": "{env}, best SAC actor of the training budget, sampled",
}


# ---------------------------------------------------------------------------------------------------------------
# Behaviour policies
# ---------------------------------------------------------------------------------------------------------------


@cache
def policy_card(family: str) -> dict[str, Any] | None:
    """`checkpoints/<family>.json`: actor architecture, the checkpoints and their evaluations, the chosen steps.

    Keys: env_id, hidden, obs_dim, act_dim, act_low, act_high, medium_step, expert_step, replay_steps (the chain
    of checkpoint steps used by medium-replay), checkpoints ({step: {file, return_stoch_mean, ...}}), training.
    """
    path = CHECKPOINTS / f"{family}.json"
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PbrlError(f"{path}: not valid JSON ({e})") from None
    for key in ("env_id", "hidden", "obs_dim", "act_dim", "act_low", "act_high", "medium_step", "expert_step",
                "replay_steps", "checkpoints"):
        if key not in card:
            raise PbrlError(f"{path}: missing field {key!r}")
    return card


def load_actor(family: str, step: int) -> Actor:
    """The committed actor of `family` saved at training step `step` (weights only)."""
    card = policy_card(family)
    if card is None:
        raise PbrlError(f"no behaviour policies for {family!r}: expected {CHECKPOINTS / (family + '.json')}")
    entry = card["checkpoints"].get(str(step))
    if entry is None:
        raise PbrlError(f"{family}.json: no checkpoint at step {step} (have {sorted(map(int, card['checkpoints']))})")
    path = CHECKPOINTS / entry["file"]
    if not path.is_file():
        raise PbrlError(f"missing checkpoint file {path}")
    actor = Actor(card["obs_dim"], card["act_dim"], card["hidden"], card["act_low"], card["act_high"])
    actor.load_state_dict(safe_torch_load(path, what="behaviour-policy checkpoint"))
    actor.eval()
    return actor


class ActorPolicy:
    """A sampled (or deterministic) SAC actor as a `collect_episodes` policy: obs [O] -> action [A].

    Its Gaussian noise comes from its own generator seeded with `seed`, so rollouts are reproducible.
    """

    def __init__(self, actor: Actor, seed: int, deterministic: bool = False) -> None:
        self.actor = actor
        self.deterministic = deterministic
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32)).unsqueeze(0)  # [1, O]
        return self.actor.act(x, self.deterministic, self.generator)[0].numpy()  # [A]


# ---------------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------------


def _concat(parts: list[EpisodeDataset], metadata: dict[str, Any]) -> EpisodeDataset:
    episodes = [p.episode(i) for p in parts for i in range(p.num_episodes)]
    return EpisodeDataset.from_episodes(
        episodes, metadata=metadata, observation_space=parts[0].observation_space,
        action_space=parts[0].action_space,
    )


def replay_schedule(card: dict[str, Any], size: int) -> list[tuple[int | None, int]]:
    """[(checkpoint step or None for uniform random, transitions)] of medium-replay at `size` transitions.

    Interval [s_k, s_k+1) of the chain s_0 = 0 < s_1 < ... < s_m = medium_step is sampled from the actor saved at
    s_k (None at s_0), with size * (s_k+1 - s_k) / s_m transitions (rounded; the counts add up to `size`).
    """
    chain = [0] + sorted(int(s) for s in card["replay_steps"])
    if chain[-1] != int(card["medium_step"]):
        raise PbrlError(f"{card['env_id']}: replay_steps must end at medium_step {card['medium_step']}")
    bounds = np.round(np.asarray(chain, dtype=np.float64) * size / chain[-1]).astype(np.int64)
    return [(None if i == 0 else chain[i], int(bounds[i + 1] - bounds[i]))
            for i in range(len(chain) - 1) if bounds[i + 1] > bounds[i]]


def build_dataset(task: Task, kind: str, size: int, seed: int) -> EpisodeDataset:
    """Build `<family>-<kind>` with `size` transitions; deterministic given (size, seed)."""
    # one observation per forward pass: extra threads only add synchronisation (10x slower on a busy machine)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _build(task, kind, size, seed)
    finally:
        torch.set_num_threads(threads)


def _build(task: Task, kind: str, size: int, seed: int) -> EpisodeDataset:
    if size < 1:
        raise PbrlError(f"--size must be a positive number of transitions, got {size}")
    if kind not in KINDS:
        raise PbrlError(f"unknown dataset kind {kind!r}; expected one of {KINDS}")
    card = policy_card(task.family)
    if kind != "random" and card is None:
        raise PbrlError(f"{task.family}-{kind} needs behaviour policies: {CHECKPOINTS / (task.family + '.json')} "
                        "is missing")
    t0 = time.perf_counter()
    meta: dict[str, Any] = {
        "name": f"{task.family}-{kind}", "env_id": task.env_id,
        "ref_min_score": task.ref_min, "ref_max_score": task.ref_max, "ref_source": task.ref_source,
        "algorithm_name": "pbrl_envs.suite",
    }

    def rollout(step: int | None, n: int, part_seed: int) -> EpisodeDataset:
        policy = None if step is None else ActorPolicy(load_actor(task.family, step), part_seed)
        progress_note("uniform random" if step is None else f"actor of step {step}")  # beside the build's bar
        return collect_episodes(task.env_id, policy, num_transitions=n, seed=part_seed)

    if kind == "random":
        parts, policies = [rollout(None, size, seed)], [None]
    elif kind in ("medium", "expert"):
        step = card[f"{kind}_step"]
        parts, policies = [rollout(step, size, seed)], [step]
    elif kind == "medium-expert":
        half = size // 2
        steps = [card["medium_step"], card["expert_step"]]
        parts = [rollout(steps[0], half, seed)] if half else []
        parts.append(rollout(steps[1], size - half, seed + 1))
        policies = steps
    else:  # medium-replay
        schedule = replay_schedule(card, size)
        parts = [rollout(step, n, seed * 1000 + i) for i, (step, n) in enumerate(schedule)]
        policies = [step for step, _ in schedule]
        meta["notes"] = REPLAY_NOTE
    meta["behavior_policies"] = [_policy_entry(task, card, s) for s in policies]
    meta["collect_s"] = round(time.perf_counter() - t0, 2)
    meta["provenance"] = [{"step": "pbrl_envs.suite.build_dataset", "recipe": f"{task.family}-{kind}",
                           "size": size, "seed": seed}]
    return _concat(parts, meta)


REPLAY_NOTE = (
    "Regenerated, not stored: training interval [s_k, s_k+1) is re-collected with the actor saved at s_k "
    "(sampled actions), the first interval with uniform random actions; D4RL stored the replay buffer itself, "
    "whose policy changed after every gradient step and whose episodes ran across checkpoints."
)


def _policy_entry(task: Task, card: dict[str, Any] | None, step: int | None) -> dict[str, Any]:
    if step is None:
        return {"policy": "uniform random"}
    ev = card["checkpoints"][str(step)]
    entry = {"policy": f"SAC actor {ev['file']}", "train_step": step}
    for key in ("return_stoch_mean", "return_stoch_std", "return_det_mean"):
        if key in ev:
            entry[key] = round(float(ev[key]), 1)
    if "return_stoch_mean" in ev:
        entry["normalized_stoch"] = round(_normalize(task, ev["return_stoch_mean"]), 2)
    return entry


def _normalize(task: Task, r: float | np.ndarray) -> float | np.ndarray:
    return 100.0 * (r - task.ref_min) / (task.ref_max - task.ref_min)


def measure_reference_returns(family: str, episodes: int = 100, seed: int = 12345) -> tuple[float, float]:
    """(mean return of uniform random actions, mean return of the sampled expert actor) over `episodes` each."""
    card = policy_card(family)
    rand = collect_episodes(card["env_id"], None, num_episodes=episodes, seed=seed)
    expert = collect_episodes(card["env_id"], ActorPolicy(load_actor(family, card["expert_step"]), seed),
                              num_episodes=episodes, seed=seed + 1)
    return float(rand.episode_returns().mean()), float(expert.episode_returns().mean())


D4RL_SOURCE = "D4RL's published random/expert returns (d4rl/infos.py, -v2 envs), applied to v5 dynamics"
PENDULUM_SOURCE = "measured by pbrl_envs.suite.measure_reference_returns (100 episodes each)"

register_task(Task("pendulum", "Pendulum-v1", -1242.54, -152.05, PENDULUM_SOURCE, default_size=20_000))
register_task(Task("hopper", "Hopper-v5", -20.272305, 3234.3, D4RL_SOURCE, default_size=200_000))
register_task(Task("walker2d", "Walker2d-v5", 1.629008, 4592.3, D4RL_SOURCE, default_size=200_000))
register_task(Task("halfcheetah", "HalfCheetah-v5", -280.178953, 12135.0, D4RL_SOURCE, default_size=200_000))

