"""Logged datasets of `pbrl/RecSim-v0` sessions: behaviour policies, suite recipes, a session-level teacher.

Behaviour policies (callables obs -> item id, as `pbrl.data.collect_episodes` expects):
- `RandomPolicy`      uniform over the catalog; its mean return is the reference minimum.
- `PopularityPolicy`  one of the globally most-clicked items (click-through over fresh users, measured by sampling
                      them), with a little uniform exploration: a feed of trending items.
- `ClickModelPolicy`  epsilon-greedy on a click model fitted to what the observation shows (declared topic, topics
                      clicked or skipped in the history, item appeal, repeats): chases the next click.
- `PlannerPolicy`     soft-optimal with the true user state (an oracle): one-step lookahead on clicks plus the expected
                      clicks left in the session given the satisfaction each item leads to, sampled from a softmax;
                      its mean return is the reference maximum.

Recipes (`pbrl data build recsim-random|recsim-popular|recsim-mixed`): sessions of one policy, or a quarter of the
transitions from each; metadata carries ref_min_score/ref_max_score (random vs planner, measured by
`reference_returns`) and the catalog (`items`: id, title, category, text per item id).

The session teacher that labels window pairs by the clicks of the whole rest of each session (return-to-go), the
long-term satisfaction that per-window clicks miss, is generic: `pbrl.rec.session_preferences` (named here too).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np

from pbrl.data import EpisodeDataset, collect_episodes, make_env
from pbrl.data.recipes import RECIPES, Recipe, register_recipe
from pbrl.errors import PbrlError
from pbrl.rec.reasoning import ItemFacts, UserStates
from pbrl.rec.sessions import session_preferences
from pbrl_envs.recsim import ENV_ID, RecSimEnv

__all__ = ["POLICIES", "ClickModelPolicy", "PlannerPolicy", "PopularityPolicy", "RandomPolicy", "build_dataset",
           "catalog_facts", "collect_sessions", "item_popularity", "logged_user_states", "reference_returns",
           "session_preferences"]


class RandomPolicy:
    """Uniform random item."""

    def __init__(self, env: RecSimEnv, seed: int = 0):
        self.num_items = env.num_items
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray) -> int:
        return int(self.rng.integers(self.num_items))


def item_popularity(env: RecSimEnv, num_users: int = 500, seed: int = 0) -> np.ndarray:
    """[I] mean click probability of each item over `num_users` freshly drawn users (a global click-through rate)."""
    probe = RecSimEnv(**_env_kwargs(env))
    rng = np.random.default_rng(seed)
    total = np.zeros(env.num_items)
    for _ in range(num_users):
        probe._reset_user(rng)
        total += probe.click_probabilities()
    return total / num_users


class PopularityPolicy:
    """One of the `top_k` most popular items, uniformly; a uniform random item with probability `epsilon`."""

    def __init__(self, env: RecSimEnv, top_k: int = 10, epsilon: float = 0.1, seed: int = 0):
        self.num_items, self.epsilon = env.num_items, epsilon
        self.top = np.argsort(-item_popularity(env, seed=seed))[:top_k]
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray) -> int:
        if self.rng.random() < self.epsilon:
            return int(self.rng.integers(self.num_items))
        return int(self.rng.choice(self.top))


class ClickModelPolicy:
    """Epsilon-greedy on a click model that reads only the observation.

    Estimated interest per topic: +1 for the declared topic, +0.5 per click on a topic in the history, -0.3 per skip;
    score_i = w_interest * interest[topic_i] + w_appeal * appeal_i - repeat_penalty * [i in history]. The model is
    right about clicks; it ignores quality and satisfaction, which is why it loses users.
    """

    def __init__(self, env: RecSimEnv, epsilon: float = 0.2, seed: int = 0):
        self.env, self.epsilon = env, epsilon
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray) -> int:
        e, K = self.env, self.env.num_topics
        if self.rng.random() < self.epsilon:
            return int(self.rng.integers(e.num_items))
        lay = e.observation_layout()
        hist = obs[lay["history"]].reshape(e.history_len, K + 4)  # [k, K+4]
        present, clicked = hist[:, K + 3], hist[:, K + 2]
        interest = obs[lay["declared_topic"]].astype(np.float64).copy()  # [K]
        interest += hist[:, :K].T @ (present * np.where(clicked > 0, 0.5, -0.3))
        seen = e.decode_history(obs)
        score = e.w_interest * np.clip(interest, -1, 1)[e.catalog.topics] + e.w_appeal * e.catalog.appeal
        score[seen[seen >= 0]] -= e.repeat_penalty
        return int(np.argmax(score))


class PlannerPolicy:
    """Soft-optimal oracle: softmax(Q / temperature) with the true user state of `env`.

    Q(i) = p_i (1 + V(s_click,i)) + (1 - p_i) V(s_skip), where p_i is the true click probability and
    V(s) = c * E[steps left | leave prob l(s) every step, at most H left] = c * (1 - l) (1 - (1 - l)^H) / l,
    c = `click_rate` (a typical clicks-per-step). The policy must step the same env instance it reads.
    """

    def __init__(self, env: RecSimEnv, temperature: float = 0.05, click_rate: float = 0.6, seed: int = 0):
        self.env, self.temperature, self.click_rate = env, temperature, click_rate
        self.rng = np.random.default_rng(seed)

    def q_values(self) -> np.ndarray:
        e = self.env
        horizon = e.max_steps - e.t - 1

        def value(s: np.ndarray | float) -> np.ndarray:
            leave = np.asarray(e.leave_probability(s))
            return self.click_rate * (1 - leave) * (1 - (1 - leave) ** horizon) / leave

        p = e.click_probabilities()  # [I]
        return p * (1.0 + value(e.satisfaction_after_click())) + (1.0 - p) * value(e.satisfaction_after_skip())

    def __call__(self, obs: np.ndarray) -> int:
        q = self.q_values()  # [I]
        w = np.exp((q - q.max()) / self.temperature)
        return int(self.rng.choice(len(q), p=w / w.sum()))


POLICIES = {"random": RandomPolicy, "popular": PopularityPolicy, "click": ClickModelPolicy, "planner": PlannerPolicy}


def _env_kwargs(env: RecSimEnv) -> dict[str, Any]:
    names = ("num_items", "num_topics", "history_len", "max_steps", "slate_size", "w_interest", "w_appeal",
             "w_boredom", "no_click_utility", "repeat_penalty", "boredom_decay", "sat_click", "sat_skip", "drift",
             "interest_noise", "leave_base", "leave_scale")
    kw = {n: getattr(env, n) for n in names}
    kw["catalog_seed"] = env.catalog_seed
    return kw


def collect_sessions(policy: str, *, num_transitions: int | None = None, num_episodes: int | None = None,
                     seed: int = 0, env_kwargs: dict[str, Any] | None = None,
                     on_step: Callable[[RecSimEnv], None] | None = None) -> EpisodeDataset:
    """Sessions of one behaviour policy (a name in POLICIES) in `pbrl/RecSim-v0`, deterministic given `seed`.
    `on_step(env)` is called before every recommendation with the simulator in the state the policy acts in (it must
    not change it): `logged_user_states` records the users' latent state through it."""
    if policy not in POLICIES:
        raise PbrlError(f"unknown recsim behaviour policy {policy!r}; choose from {sorted(POLICIES)}")
    env = make_env(ENV_ID, **(env_kwargs or {}))
    pol = POLICIES[policy](env.unwrapped, seed=seed + 1)
    if on_step is not None:
        inner, sim = pol, env.unwrapped

        def pol(obs: np.ndarray) -> int:
            on_step(sim)
            return inner(obs)

    return collect_episodes(env, pol, num_transitions=num_transitions, num_episodes=num_episodes, seed=seed,
                            metadata={"behavior_policy": policy})


@lru_cache(maxsize=8)
def _reference_returns(num_episodes: int, seed: int, kwargs_items: tuple) -> tuple[float, float]:
    kw = dict(kwargs_items)
    lo = collect_sessions("random", num_episodes=num_episodes, seed=seed, env_kwargs=kw).episode_returns().mean()
    hi = collect_sessions("planner", num_episodes=num_episodes, seed=seed, env_kwargs=kw).episode_returns().mean()
    return float(lo), float(hi)


def reference_returns(num_episodes: int = 500, seed: int = 10_000,
                      env_kwargs: dict[str, Any] | None = None) -> tuple[float, float]:
    """(mean return of RandomPolicy, of PlannerPolicy) over `num_episodes` sessions from a fixed seed."""
    return _reference_returns(num_episodes, seed, tuple(sorted((env_kwargs or {}).items())))


def _catalog_metadata(env: RecSimEnv) -> dict[str, list]:
    c = env.catalog
    return {"id": [str(i) for i in range(c.num_items)], "title": list(c.titles),
            "category": [c.topic_names[t] for t in c.topics], "text": env.item_texts()}


def build_dataset(mixture: dict[str, float], size: int, seed: int, name: str,
                  on_step: Callable[[RecSimEnv], None] | None = None) -> EpisodeDataset:
    """`size` transitions, a share `mixture[policy]` of them from each policy, with reference scores attached
    (`on_step`: see `collect_sessions`; the dataset is the same with or without it)."""
    if size < 1:
        raise PbrlError(f"dataset size must be >= 1 transition, got {size}")
    shares = np.array(list(mixture.values()), dtype=np.float64)
    counts = np.floor(shares / shares.sum() * size).astype(int)
    counts[0] += size - counts.sum()
    episodes = []
    for j, (policy, n) in enumerate(zip(mixture, counts)):
        if n > 0:
            part = collect_sessions(policy, num_transitions=int(n), seed=seed * 1000 + j, on_step=on_step)
            episodes += [part.episode(i) for i in range(part.num_episodes)]
    lo, hi = reference_returns()
    env = make_env(ENV_ID).unwrapped
    meta = {"env_id": ENV_ID, "name": name, "ref_min_score": lo, "ref_max_score": hi,
            "ref_source": "measured: RandomPolicy vs PlannerPolicy, 500 sessions each from seed 10000",
            "behavior_policies": [{"policy": k, "share": float(v / shares.sum())} for k, v in mixture.items()],
            "items": _catalog_metadata(env),
            "provenance": [{"step": "recsim_recipe", "recipe": name, "size": size, "seed": seed}]}
    return EpisodeDataset.from_episodes(episodes, metadata=meta, observation_space=env.observation_space,
                                        action_space=env.action_space)


def catalog_facts(env: RecSimEnv) -> ItemFacts:
    """The catalog's ground truth (topic, appeal, quality per item) for `pbrl.rec.reasoning`."""
    c = env.catalog
    return ItemFacts(topics=np.asarray(c.topics), topic_names=tuple(c.topic_names), appeal=np.asarray(c.appeal),
                     quality=np.asarray(c.quality))


def logged_user_states(ds: EpisodeDataset) -> UserStates:
    """The simulator's latent user state (interest [K], boredom [K], satisfaction) at every logged step of a RecSim
    recipe dataset, before its recommendation: the logs do not store it, so the dataset is regenerated from its
    provenance (recipe, size, seed: building is deterministic) with a recorder at every step, and the replay must
    reproduce the dataset's observations and actions exactly (a relabelled, cut or foreign log is refused)."""
    name = ds.metadata.get("name", "dataset")
    prov = [p for p in ds.metadata.get("provenance", []) if isinstance(p, dict) and p.get("step") == "recsim_recipe"]
    if not prov or prov[0].get("recipe") not in _RECIPES:
        raise PbrlError(f"{name}: no RecSim recipe provenance (recipe, size, seed) in its metadata, so the users' "
                        "latent state cannot be regenerated (build the log with `pbrl data build recsim-...`)")
    recipe, size, seed = prov[0]["recipe"], int(prov[0]["size"]), int(prov[0]["seed"])
    interest, boredom, sat = [], [], []

    def record(env: RecSimEnv) -> None:
        interest.append(env.interest.copy())
        boredom.append(env.boredom.copy())
        sat.append(float(env.satisfaction))

    again = build_dataset(_RECIPES[recipe][0], size, seed, recipe, on_step=record)
    if (again.num_transitions != ds.num_transitions or not np.array_equal(again.actions, ds.actions)
            or not np.array_equal(again.observations, ds.observations)):
        raise PbrlError(f"{name}: does not replay from its provenance ({recipe}, size {size}, seed {seed}): its "
                        "steps were changed after it was built, so the latent state cannot be regenerated")
    return UserStates(interest=np.asarray(interest), boredom=np.asarray(boredom), satisfaction=np.asarray(sat))


_RECIPES = {
    "recsim-random": ({"random": 1.0}, 50_000, "sessions of a uniform random recommender"),
    "recsim-popular": ({"popular": 1.0}, 50_000, "sessions of a popularity (trending items) recommender"),
    "recsim-mixed": ({"random": 1.0, "popular": 1.0, "click": 1.0, "planner": 1.0}, 100_000,
                     "a quarter each of random, popularity, epsilon-greedy click-model and soft-optimal planner"),
}


def _recipe(name: str, mixture: dict[str, float], size: int, description: str) -> Recipe:
    def build(size: int, seed: int) -> EpisodeDataset:
        return build_dataset(mixture, size, seed, name)

    return Recipe(name=name, dataset_id=f"pbrl/recsim/{name.split('-', 1)[1]}-v0", build=build, default_size=size,
                  description=f"RecSim-v0: {description}")


for _name, (_mix, _size, _desc) in _RECIPES.items():
    if _name not in RECIPES:
        register_recipe(_recipe(_name, _mix, _size, _desc))
