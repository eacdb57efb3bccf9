"""The session teacher: window pairs of a session dataset labelled by the returns-to-go of their sessions.

Works on any dataset whose episodes are sessions (simulator logs, MovieLens / Amazon logs): it reads only episode
boundaries and rewards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pbrl.data.preferences import PreferencePairs
from pbrl.data.teachers import Teacher, TeacherConfig, draw_labelled_pairs, get_teacher, teacher_meta
from pbrl.errors import PbrlError

if TYPE_CHECKING:
    from pbrl.data.dataset import EpisodeDataset


def returns_to_go(dataset: EpisodeDataset) -> np.ndarray:
    """[N] G_t = sum_{t' >= t} r_t' within each episode (float64): a reverse cumulative sum per episode."""
    r = dataset.rewards.astype(np.float64)
    ep_of = dataset.episode_index_of(np.arange(dataset.num_transitions))  # [N]
    csum = np.concatenate([[0.0], np.cumsum(r)])  # [N+1]
    return csum[dataset.episode_starts[1:][ep_of]] - csum[:-1]  # [N]


def session_preferences(dataset: EpisodeDataset, num_queries: int, segment_length: int = 5,
                        teacher: str | Teacher | TeacherConfig = "exact", seed: int = 0,
                        **teacher_overrides: float | None) -> PreferencePairs:
    """Label window pairs by the long-term engagement of the sessions they open onto.

    Each pair takes a window of `segment_length` steps from two different sessions at the same step offset t0 of
    both (t0 uniform over the first session's valid offsets; the second session is drawn among those at least
    t0 + segment_length long; which of the two is `a` is a coin flip) and compares their returns-to-go
    G = sum_{t >= t0} r_t, the clicks from the window to the end of the session. A window of clickbait earns clicks
    inside the window and loses the rest of the session; the generic teacher (`pbrl.data.teachers.
    scripted_preferences`, summed reward inside the window) prefers it, this teacher does not. The teacher models of
    `pbrl.data.teachers` (ties, stochastic, mistakes, ...) apply to G. Segments have one length, as PreferencePairs
    require: sessions shorter than `segment_length` are not drawn.
    """
    if num_queries < 1:
        raise PbrlError(f"num_queries must be >= 1, got {num_queries}")
    if segment_length < 1:
        raise PbrlError(f"segment_length must be >= 1, got {segment_length}")
    t = get_teacher(teacher, **teacher_overrides)
    if t.gamma != 1.0:
        raise PbrlError("session_preferences: the myopic discount (gamma) is not defined for returns-to-go")
    starts, lengths = dataset.episode_starts[:-1], dataset.episode_lengths  # [E]
    ok = np.flatnonzero(lengths >= segment_length)
    if len(ok) < 2:
        raise PbrlError(f"session_preferences: fewer than 2 sessions of {dataset.name} have {segment_length} steps "
                        f"(longest: {lengths.max()}); use a shorter segment_length")
    rtg = returns_to_go(dataset)
    by_len = ok[np.argsort(lengths[ok], kind="stable")]  # eligible sessions, shortest first
    sorted_len = lengths[by_len]

    def draw(n: int, rng: np.random.Generator):
        ea = ok[rng.integers(0, len(ok), n)]  # [M]
        t0 = (rng.random(n) * (lengths[ea] - segment_length + 1)).astype(np.int64)  # [M]
        first = np.searchsorted(sorted_len, t0 + segment_length)  # sessions long enough for offset t0
        eb = by_len[first + (rng.random(n) * (len(by_len) - first)).astype(np.int64)]  # [M]
        valid = eb != ea
        swap = rng.random(n) < 0.5  # eb is biased toward long sessions: balance which side it lands on
        ea, eb = np.where(swap, eb, ea), np.where(swap, ea, eb)
        a, b = starts[ea] + t0, starts[eb] + t0
        return a, b, rtg[a], rtg[b], valid

    a, b, y = draw_labelled_pairs(draw, num_queries, t, np.random.default_rng(seed), who="session_preferences")
    meta = teacher_meta(teacher, t)
    meta = {"source": "scripted", "teacher": f"session-return-to-go/{meta['teacher']}",
            "teacher_params": meta["teacher_params"], "seed": seed, "dataset": dataset.name}
    return PreferencePairs(a, b, segment_length, y, meta)
