"""Scripted teachers: label segment pairs from the dataset's true rewards.

The exact teacher (Uni-RLHF's "fake labels") prefers the segment with the larger summed true reward and calls a tie
when |R_a - R_b| <= tie_threshold (10 for MuJoCo, 0 for sparse tasks in Uni-RLHF).

The B-Pref teachers (Lee et al., "B-Pref: Benchmarking Preference-Based RL", NeurIPS D&B 2021) add one irrationality
each; all parameters can also be combined:
- myopic:     R = sum_t gamma^(H-1-t) r_t   (gamma < 1 weights the segment end more)
- skip:       drop the query when max(R_a, R_b) < skip_threshold (neither segment is good enough to judge)
- equal:      tie (0.5) when |R_a - R_b| < equal_threshold
- stochastic: label ~ Bernoulli(sigmoid(beta * (R_b - R_a)))   (beta = inf: deterministic)
- mistake:    flip the label with probability epsilon
Order as in B-Pref: discount, skip, equal, then stochastic choice, then mistake.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import numpy as np
import tyro

from pbrl.data.preferences import PreferencePairs
from pbrl.errors import PbrlError

if TYPE_CHECKING:
    from pbrl.data.dataset import EpisodeDataset


@dataclass(frozen=True)
class Teacher:
    """A scripted labeller; the defaults are the exact teacher with no tie band."""

    tie_threshold: float = 0.0
    """Exact teacher: |R_a - R_b| <= this is a tie (Uni-RLHF: 10 for MuJoCo)."""
    gamma: float = 1.0
    """Myopic discount toward the segment end (B-Pref: 0.9)."""
    skip_threshold: float = -math.inf
    """Drop queries whose better segment return is below this."""
    equal_threshold: float = 0.0
    """Tie when |R_a - R_b| < this (strict, B-Pref's equal teacher)."""
    beta: float = math.inf
    """Rationality of the Bradley-Terry choice; inf = always the better segment (B-Pref stochastic: 1)."""
    epsilon: float = 0.0
    """Probability of flipping a label (B-Pref mistake: 0.1)."""


TeacherName = Literal["exact", "stochastic", "myopic", "skip", "equal", "mistake"]
"""The named teacher presets (the keys of TEACHERS)."""

# named presets: one irrationality each, B-Pref's default strengths
TEACHERS: dict[str, Teacher] = {
    "exact": Teacher(),
    "stochastic": Teacher(beta=1.0),
    "myopic": Teacher(gamma=0.9),
    "skip": Teacher(skip_threshold=0.0),  # absolute return: pass a task-specific value for real use
    "equal": Teacher(equal_threshold=1.0),
    "mistake": Teacher(epsilon=0.1),
}
assert tuple(TEACHERS) == get_args(TeacherName), "TeacherName must list the TEACHERS presets"


@dataclass(frozen=True)
class TeacherConfig:
    """A teacher preset and the parameters that override it: the one set of teacher options of `pbrl prefs`,
    `pbrl rec prefs`, `pbrl pipeline` and sweep grids.

    Embedded in a command's config as `teacher: TeacherConfig` under `tyro.conf.OmitArgPrefixes`, its flags stay
    flat: `--teacher stochastic --beta 1`. Unset parameters (None) keep the preset's value.
    """

    name: Annotated[TeacherName, tyro.conf.arg(name="teacher")] = "exact"
    """Teacher model (B-Pref presets); the parameters below override its defaults."""
    tie_threshold: float | None = None
    """Exact teacher tie band |R_a - R_b| <= t (Uni-RLHF MuJoCo: 10)."""
    beta: float | None = None
    """Stochastic teacher rationality."""
    gamma: float | None = None
    """Myopic discount."""
    epsilon: float | None = None
    """Mistake probability."""
    skip_threshold: float | None = None
    """Skip queries whose better return is below this."""
    equal_threshold: float | None = None
    """Tie when |R_a - R_b| < this."""

    def overrides(self) -> dict[str, float]:
        """The parameters that are set, as keyword arguments of `get_teacher`."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "name" and getattr(self, f.name) is not None}

    def resolve(self) -> Teacher:
        """The preset with the overrides applied."""
        return get_teacher(self.name, **self.overrides())

    @classmethod
    def from_flat(cls, config: dict[str, Any], source: str = "config") -> tuple[TeacherConfig, dict[str, Any]]:
        """Split a flat dict (a sweep grid row: {"teacher": "stochastic", "beta": 1.0, ...}) into a TeacherConfig and
        the remaining keys. `teacher` may also be a nested dict {"name": ..., "beta": ...} or a TeacherConfig."""
        rest = dict(config)
        own = {f.name for f in fields(cls)} - {"name"}
        t = rest.pop("teacher", "exact")
        flat = {k: rest.pop(k) for k in list(rest) if k in own}
        if isinstance(t, TeacherConfig):
            base = asdict(t)
        elif isinstance(t, dict):
            unknown = set(t) - own - {"name"}
            if unknown:
                raise PbrlError(f"{source}: unknown teacher fields {sorted(unknown)}; known: {sorted(own | {'name'})}")
            base = dict(t)
        elif isinstance(t, str):
            base = {"name": t}
        else:
            raise PbrlError(f"{source}: teacher must be a name or a dict, got {t!r}")
        name = base.get("name", "exact")
        if name not in TEACHERS:
            raise PbrlError(f"{source}: unknown teacher {name!r}; choose from {sorted(TEACHERS)}")
        return cls(**{**base, **flat}), rest


def get_teacher(teacher: str | Teacher | TeacherConfig, **overrides: float | None) -> Teacher:
    """A Teacher from a preset name, a Teacher or a TeacherConfig, with `overrides` (None = keep) applied."""
    if isinstance(teacher, TeacherConfig):
        base = teacher.resolve()
    elif isinstance(teacher, Teacher):
        base = teacher
    elif teacher in TEACHERS:
        base = TEACHERS[teacher]
    else:
        raise PbrlError(f"unknown teacher {teacher!r}; choose from {sorted(TEACHERS)}")
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def segment_returns(rewards: np.ndarray, starts: np.ndarray, length: int, gamma: float = 1.0) -> np.ndarray:
    """sum_t gamma^(H-1-t) r[start + t] for every start [M] (float64)."""
    csum_w = gamma ** (length - 1 - np.arange(length, dtype=np.float64))  # [H]
    window = starts[:, None] + np.arange(length)[None, :]  # [M, H]
    return (rewards.astype(np.float64)[window] * csum_w).sum(1)


def label_pairs(
    returns_a: np.ndarray, returns_b: np.ndarray, teacher: Teacher, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(labels P(b) [M], keep mask [M]) from (discounted) segment returns, applying the teacher's models in order."""
    diff = returns_b - returns_a
    keep = np.maximum(returns_a, returns_b) >= teacher.skip_threshold
    if math.isinf(teacher.beta):
        label = (diff > 0).astype(np.float64)
    else:
        p_b = 1.0 / (1.0 + np.exp(-np.clip(teacher.beta * diff, -500, 500)))
        label = (rng.random(len(diff)) < p_b).astype(np.float64)
    flip = rng.random(len(diff)) < teacher.epsilon
    label = np.where(flip, 1.0 - label, label)
    tie = (np.abs(diff) <= teacher.tie_threshold) | (np.abs(diff) < teacher.equal_threshold)
    label = np.where(tie, 0.5, label)
    return label.astype(np.float32), keep


PairDraw = Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
"""(n, rng) -> (start_a [n], start_b [n], returns_a [n], returns_b [n], valid [n] bool): n candidate pairs."""


def draw_labelled_pairs(
    draw: PairDraw, num_queries: int, teacher: Teacher, rng: np.random.Generator, who: str = "teacher",
    rounds: int = 20,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start_a, start_b, label) of `num_queries` labelled pairs: draw candidates, label them with `teacher`, and
    redraw the skipped (or invalid) ones, at most `rounds` times. The one redraw loop of every scripted teacher."""
    got_a, got_b, got_y = [], [], []
    need = num_queries
    for _ in range(rounds):
        a, b, ra, rb, valid = draw(need, rng)
        y, keep = label_pairs(ra, rb, teacher, rng)
        keep &= valid
        got_a.append(a[keep])
        got_b.append(b[keep])
        got_y.append(y[keep])
        need -= int(keep.sum())
        if need <= 0:
            break
    if need > 0:
        raise PbrlError(f"{who}: only {num_queries - need} of {num_queries} queries could be labelled "
                        f"in {rounds} rounds of draws (skipped too many)")
    return (np.concatenate(got_a)[:num_queries], np.concatenate(got_b)[:num_queries],
            np.concatenate(got_y)[:num_queries])


def teacher_meta(teacher: str | Teacher | TeacherConfig, resolved: Teacher) -> dict[str, Any]:
    """The teacher's name and its resolved parameters for PreferencePairs.meta (inf as null: strict JSON)."""
    name = teacher if isinstance(teacher, str) else teacher.name if isinstance(teacher, TeacherConfig) else "custom"
    params = {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(resolved).items()}
    return {"teacher": name, "teacher_params": params}


def scripted_preferences(
    dataset: EpisodeDataset,
    num_queries: int,
    segment_length: int,
    teacher: str | Teacher | TeacherConfig = "exact",
    seed: int = 0,
    *,
    cross_episodes: bool = False,
    rewards: np.ndarray | None = None,
    **teacher_overrides: float | None,
) -> PreferencePairs:
    """Label `num_queries` random segment pairs with a scripted teacher.

    Segments are windows inside one episode (uniform over all valid windows) unless `cross_episodes`, which allows any
    window of the flat array as Uni-RLHF does. `rewards` [N] overrides the dataset's (e.g. a hidden true reward).
    Skipped queries are replaced by new draws until `num_queries` are labelled (at most 20 rounds).
    """
    if num_queries < 1:
        raise PbrlError(f"num_queries must be >= 1, got {num_queries}")
    t = get_teacher(teacher, **teacher_overrides)
    r = dataset.rewards if rewards is None else np.asarray(rewards)
    if r.shape != (dataset.num_transitions,):
        raise PbrlError(f"rewards must have shape ({dataset.num_transitions},), got {r.shape}")
    rng = np.random.default_rng(seed)
    starts = dataset.window_starts(segment_length, cross_episodes)
    if len(starts) == 0:
        raise PbrlError(
            f"no window of {segment_length} steps fits in an episode of {dataset.name} "
            f"(longest has {dataset.episode_lengths.max()}); use a shorter segment or cross_episodes"
        )

    def draw(n: int, rng: np.random.Generator):
        a = starts[rng.integers(0, len(starts), n)]
        b = starts[rng.integers(0, len(starts), n)]
        ra = segment_returns(r, a, segment_length, t.gamma)
        rb = segment_returns(r, b, segment_length, t.gamma)
        return a, b, ra, rb, np.ones(n, dtype=bool)

    a, b, y = draw_labelled_pairs(draw, num_queries, t, rng, who="scripted teacher")
    meta = {
        "source": "scripted",
        **teacher_meta(teacher, t),
        "seed": seed,
        "cross_episodes": cross_episodes,
        "dataset": dataset.name,
    }
    return PreferencePairs(a, b, segment_length, y, meta)
