"""A recommendation simulator where chasing clicks is not optimal: `pbrl/RecSim-v0`.

In the spirit of RecSim's interest-evolution environment (Ie et al., "RecSim: A Configurable Simulation Platform for
Recommender Systems", arXiv 1909.04847), reduced to what offline preference-based RL needs:

- a fixed **catalog** (drawn from `catalog_seed`, the same in every episode and every copy of the env): each item has a
  topic, an *appeal* a_i in [0, 1] (how clickable it looks) and a *quality* q_i in [-1, 1] (how good it is once
  consumed), drawn so that appeal and quality are negatively correlated (clickbait), a title and a text description
  generated from those attributes (`item_texts()`, `write_catalog()` for embedding models);
- a **user** drawn at `reset` (from the episode seed): topic interests u in [-1, 1]^K that drift, per-topic boredom
  b >= 0 that grows with exposure and decays, a latent satisfaction s in [0, 1];
- a **session** that ends when the user leaves: every step the user leaves with probability
  p_leave = leave_base + leave_scale * (1 - s)^2, so unsatisfied users leave sooner.

Step with a recommended item i (or a slate): utilities (multinomial logit with a no-click option of utility v_0)

    v_i = w_interest * u[topic_i] + w_appeal * a_i - w_boredom * (b[topic_i] + repeat_penalty * [i seen recently])
    P(click i | slate S) = exp(v_i) / (exp(v_0) + sum_{j in S} exp(v_j))       (= sigmoid(v_i - v_0) for one item)

reward = 1 if the user clicks (engagement per step), else 0. On a click satisfaction moves with what was consumed,
s += sat_click * (q_i + 0.5 u[topic_i] - 0.5 b[topic_i]), and interest in the topic drifts toward the quality seen,
u[topic_i] += drift * q_i; an ignored recommendation costs sat_skip. High-appeal low-quality items win clicks now and
lose the user later: the episode return (total clicks in the session) is maximised by trading clicks for satisfaction,
which the per-step reward alone does not show but a comparison of whole sessions does.

Observation (flat Box in [-1, 1], float32; `observation_layout()` names the blocks):
    history  [k, K + 4]  the last k recommended items, most recent first: topic one-hot, appeal, quality, clicked,
                         present (0 rows before the history fills)
    ids      [k]         (item id + 1) / num_items of the same items (0 = empty): the exact ids, see `decode_history`
    context  [K + 3]     the topic the user declared at sign-up (one-hot; the true favourite with prob 0.7),
                         step / max_steps, clicks so far / max_steps, last reward
Action: Discrete(num_items), or MultiDiscrete([num_items] * slate_size) when slate_size > 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from pbrl.utils import atomic_write_text

_TOPICS = ["cooking", "travel", "music", "sports", "science", "comedy", "history", "gaming", "fashion", "finance",
           "nature", "film", "art", "health", "technology", "politics"]
_ADJECTIVES = ["Quiet", "Golden", "Hidden", "Wild", "Last", "Bright", "Silent", "Lost", "Secret", "Little",
               "Broken", "Northern", "Electric", "Gentle", "Restless", "Hollow"]
_NOUNS = ["Kitchen", "Road", "River", "Garden", "Signal", "Harbor", "Engine", "Letter", "Summit", "Mirror",
          "Orchard", "Canvas", "Lantern", "Circuit", "Meadow", "Archive"]
_FORMATS = ["short clip", "episode", "documentary", "tutorial", "live stream", "interview"]


@dataclass(frozen=True)
class Catalog:
    """The items of a simulator: arrays indexed by item id."""

    topics: np.ndarray  # [I] int64 in [0, K)
    appeal: np.ndarray  # [I] float64 in [0, 1]
    quality: np.ndarray  # [I] float64 in [-1, 1]
    formats: np.ndarray  # [I] int64 index into the format names
    titles: tuple[str, ...]
    topic_names: tuple[str, ...]

    @property
    def num_items(self) -> int:
        return len(self.topics)

    def text(self, i: int) -> str:
        """A one-line description generated from the item's attributes (deterministic)."""
        a, q = self.appeal[i], self.quality[i]
        hook = ("an eye-catching" if a > 0.66 else "a plain-looking" if a < 0.33 else "a")
        verdict = ("that viewers find excellent" if q > 0.4 else "that viewers find disappointing" if q < -0.4
                   else "of average quality")
        return (f"{self.titles[i]}: {hook} {self.topic_names[self.topics[i]]} {_FORMATS[self.formats[i]]} "
                f"{verdict}.")


def make_catalog(num_items: int, num_topics: int, seed: int) -> Catalog:
    """Draw a catalog: topics uniform, appeal U(0, 1), quality = 0.3 - 0.9 (appeal - 0.5) + N(0, 0.35) clipped."""
    rng = np.random.default_rng(seed)
    topics = rng.integers(0, num_topics, size=num_items)
    appeal = rng.uniform(0.0, 1.0, size=num_items)
    quality = np.clip(0.3 - 0.9 * (appeal - 0.5) + rng.normal(0.0, 0.35, size=num_items), -1.0, 1.0)
    formats = rng.integers(0, len(_FORMATS), size=num_items)
    adj = rng.integers(0, len(_ADJECTIVES), size=num_items)
    noun = rng.integers(0, len(_NOUNS), size=num_items)
    # the id suffix keeps titles unique however many items there are
    titles = tuple(f"The {_ADJECTIVES[a]} {_NOUNS[n]} #{i}" for i, (a, n) in enumerate(zip(adj, noun)))
    names = tuple(_TOPICS[k] if k < len(_TOPICS) else f"topic-{k}" for k in range(num_topics))
    return Catalog(topics, appeal, quality, formats, titles, names)


class RecSimEnv(gym.Env):
    """One user session per episode; see the module docstring for the model and the observation layout."""

    metadata = {"render_modes": []}

    def __init__(self, num_items: int = 100, num_topics: int = 8, history_len: int = 5, max_steps: int = 50,
                 slate_size: int = 1, catalog_seed: int = 0, w_interest: float = 2.0, w_appeal: float = 3.0,
                 w_boredom: float = 0.8, no_click_utility: float = 1.5, repeat_penalty: float = 2.0,
                 boredom_decay: float = 0.7, sat_click: float = 0.12, sat_skip: float = 0.03,
                 drift: float = 0.05, interest_noise: float = 0.02, leave_base: float = 0.01,
                 leave_scale: float = 0.5):
        if num_items < 2 or num_topics < 1 or history_len < 1 or max_steps < 1:
            raise ValueError("RecSimEnv: num_items >= 2, num_topics >= 1, history_len >= 1, max_steps >= 1 expected")
        if not 1 <= slate_size <= num_items:
            raise ValueError(f"RecSimEnv: slate_size must be in [1, num_items={num_items}], got {slate_size}")
        self.num_items, self.num_topics, self.history_len = num_items, num_topics, history_len
        self.max_steps, self.slate_size = max_steps, slate_size
        self.w_interest, self.w_appeal, self.w_boredom = w_interest, w_appeal, w_boredom
        self.no_click_utility, self.repeat_penalty, self.boredom_decay = no_click_utility, repeat_penalty, boredom_decay
        self.sat_click, self.sat_skip, self.drift, self.interest_noise = sat_click, sat_skip, drift, interest_noise
        self.leave_base, self.leave_scale = leave_base, leave_scale
        self.catalog_seed = catalog_seed
        self.catalog = make_catalog(num_items, num_topics, catalog_seed)
        self._topic_onehot = np.eye(num_topics, dtype=np.float32)[self.catalog.topics]  # [I, K]

        k, K = history_len, num_topics
        self.obs_dim = k * (K + 4) + k + K + 3
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(self.obs_dim,), dtype=np.float32)
        self.action_space = (spaces.Discrete(num_items) if slate_size == 1
                             else spaces.MultiDiscrete(np.full(slate_size, num_items, dtype=np.int64)))
        self._reset_user(np.random.default_rng(0))  # a valid state before the first reset

    # -- user model (vectorised over items: the planner policies call these on the whole catalog) --------------

    def _reset_user(self, rng: np.random.Generator) -> None:
        K = self.num_topics
        self.interest = np.clip(rng.normal(0.0, 0.5, size=K), -1.0, 1.0)  # [K]
        self.boredom = np.zeros(K)  # [K]
        self.satisfaction = float(np.clip(rng.uniform(0.5, 0.8), 0.0, 1.0))
        favourite = int(np.argmax(self.interest))
        self.declared_topic = favourite if rng.random() < 0.7 else int(rng.integers(0, K))
        self.history: list[tuple[int, bool]] = []  # (item, clicked), most recent last
        self.t, self.clicks, self.last_reward = 0, 0, 0.0

    def utilities(self, items: np.ndarray | None = None) -> np.ndarray:
        """v_i for `items` (all items when None) in the current user state."""
        items = np.arange(self.num_items) if items is None else np.asarray(items)
        topics = self.catalog.topics[items]
        recent = np.zeros(self.num_items, dtype=bool)
        recent[[i for i, _ in self.history[-self.history_len:]]] = True
        fatigue = self.boredom[topics] + self.repeat_penalty * recent[items]
        return (self.w_interest * self.interest[topics] + self.w_appeal * self.catalog.appeal[items]
                - self.w_boredom * fatigue)

    def click_probabilities(self) -> np.ndarray:
        """[I] P(click) if item i alone were recommended now: sigmoid(v_i - v_0)."""
        return 1.0 / (1.0 + np.exp(self.no_click_utility - self.utilities()))

    def satisfaction_after_click(self) -> np.ndarray:
        """[I] satisfaction after clicking item i now (before leaving is drawn)."""
        topics = self.catalog.topics
        delta = self.sat_click * (self.catalog.quality + 0.5 * self.interest[topics] - 0.5 * self.boredom[topics])
        return np.clip(self.satisfaction + delta, 0.0, 1.0)

    def satisfaction_after_skip(self) -> float:
        return float(np.clip(self.satisfaction - self.sat_skip, 0.0, 1.0))

    def leave_probability(self, satisfaction: np.ndarray | float) -> np.ndarray | float:
        return self.leave_base + self.leave_scale * (1.0 - np.asarray(satisfaction)) ** 2

    # -- gymnasium API --------------------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._reset_user(self.np_random)
        return self._observation(), self._info(-1)

    def step(self, action):
        slate = np.unique(np.asarray(action, dtype=np.int64).reshape(-1))  # a duplicate in a slate counts once
        if slate.size == 0 or slate.min() < 0 or slate.max() >= self.num_items:
            raise ValueError(f"RecSimEnv.step: item ids in [0, {self.num_items}) expected, got {action!r}")
        rng = self.np_random
        v = self.utilities(slate)  # [S]
        logits = np.concatenate([[self.no_click_utility], v])
        p = np.exp(logits - logits.max())
        choice = int(rng.choice(len(p), p=p / p.sum())) - 1  # -1 = no click
        clicked = -1 if choice < 0 else int(slate[choice])

        if clicked >= 0:
            self.satisfaction = float(self.satisfaction_after_click()[clicked])
            topic = self.catalog.topics[clicked]
            self.interest[topic] += self.drift * self.catalog.quality[clicked]
        else:
            self.satisfaction = self.satisfaction_after_skip()
        np.add.at(self.boredom, self.catalog.topics[slate], 1.0)  # exposure bores, clicked or not
        self.boredom *= self.boredom_decay
        self.interest = np.clip(self.interest + rng.normal(0.0, self.interest_noise, self.num_topics), -1.0, 1.0)

        shown = int(slate[0]) if clicked < 0 else clicked  # the history keeps the consumed (or first shown) item
        self.history.append((shown, clicked >= 0))
        reward = float(clicked >= 0)
        self.t += 1
        self.clicks += int(clicked >= 0)
        self.last_reward = reward
        terminated = bool(rng.random() < self.leave_probability(self.satisfaction))
        truncated = bool(not terminated and self.t >= self.max_steps)
        return self._observation(), reward, terminated, truncated, self._info(clicked)

    def _info(self, clicked: int) -> dict:
        return {"satisfaction": self.satisfaction, "clicked_item": clicked}

    def _observation(self) -> np.ndarray:
        k, K, c = self.history_len, self.num_topics, self.catalog
        hist = np.zeros((k, K + 4), dtype=np.float32)  # [k, K+4]
        ids = np.zeros(k, dtype=np.float32)  # [k]
        for j, (item, clicked) in enumerate(reversed(self.history[-k:])):
            hist[j, :K] = self._topic_onehot[item]
            hist[j, K:] = (c.appeal[item], c.quality[item], float(clicked), 1.0)
            ids[j] = (item + 1) / self.num_items
        context = np.zeros(K + 3, dtype=np.float32)  # [K+3]
        context[self.declared_topic] = 1.0
        context[K:] = (self.t / self.max_steps, self.clicks / self.max_steps, self.last_reward)
        return np.concatenate([hist.reshape(-1), ids, context])

    # -- helpers for users of the env ---------------------------------------------------------------------------

    def observation_layout(self) -> dict[str, slice]:
        """Name -> slice of the flat observation."""
        k, K = self.history_len, self.num_topics
        h = k * (K + 4)
        return {"history": slice(0, h), "ids": slice(h, h + k), "declared_topic": slice(h + k, h + k + K),
                "context": slice(h + k + K, self.obs_dim)}

    def decode_history(self, obs: np.ndarray) -> np.ndarray:
        """[..., k] item ids in the observation's history, most recent first; -1 where empty."""
        ids = np.asarray(obs)[..., self.observation_layout()["ids"]]
        return np.rint(ids * self.num_items).astype(np.int64) - 1

    def decode_clicks(self, obs: np.ndarray) -> np.ndarray:
        """[..., k] whether each history item of the observation was clicked, most recent first (False where
        empty); aligned with `decode_history`."""
        k, K = self.history_len, self.num_topics
        hist = np.asarray(obs)[..., self.observation_layout()["history"]]
        hist = hist.reshape(*hist.shape[:-1], k, K + 4)  # [..., k, K+4]
        return (hist[..., K + 2] > 0.5) & (hist[..., K + 3] > 0.5)

    def item_texts(self) -> list[str]:
        """One description per item, in id order (input for text embedders and LLM recommenders)."""
        return [self.catalog.text(i) for i in range(self.num_items)]

    def write_catalog(self, path: str) -> None:
        """Write the catalog as JSON lines (id, title, topic, appeal, quality, text), atomically."""
        c = self.catalog
        rows = [json.dumps({"id": i, "title": c.titles[i], "topic": c.topic_names[c.topics[i]],
                            "appeal": round(float(c.appeal[i]), 4), "quality": round(float(c.quality[i]), 4),
                            "text": c.text(i)}) for i in range(self.num_items)]
        atomic_write_text(path, "\n".join(rows) + "\n")


ENV_ID = "pbrl/RecSim-v0"
if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="pbrl_envs.recsim:RecSimEnv")
