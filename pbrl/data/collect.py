"""Collect episodes from a gymnasium environment into an EpisodeDataset (the project's own data collector)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import numpy as np

from pbrl.data.dataset import Episode, EpisodeDataset
from pbrl.errors import PbrlError

Policy = Callable[[np.ndarray], Any]

_BAR: contextvars.ContextVar[Any] = contextvars.ContextVar("pbrl_collect_bar", default=None)


@contextlib.contextmanager
def step_progress(total: int, desc: str = "collecting", disable: bool | None = None) -> Iterator[Any]:
    """A progress bar over collected transitions (unit `step`, with its rate) for everything collected inside.

    Every `collect_episodes` call in the block (a recipe may roll out several policies one after another) advances
    the one bar, so a build shows a single bar to its full size. `disable=None` shows it only on a terminal
    (tqdm's rule), so logs and tests stay clean. Yields the bar.
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", unit_scale=True, disable=disable, dynamic_ncols=True)
    token = _BAR.set(bar)
    try:
        yield bar
    finally:
        _BAR.reset(token)
        bar.close()


def progress_note(text: str) -> None:
    """Show `text` (e.g. which behaviour policy is rolling out) beside the enclosing `step_progress` bar, if any."""
    bar = _BAR.get()
    if bar is not None:
        bar.set_postfix_str(text, refresh=False)


def collect_episodes(
    env_or_id: str | gym.Env,
    policy: Policy | None = None,
    *,
    num_transitions: int | None = None,
    num_episodes: int | None = None,
    seed: int = 0,
    metadata: dict[str, Any] | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> EpisodeDataset:
    """Roll out `policy` (obs -> action; None = uniform random actions) in one env.

    Stops after `num_episodes` episodes, or once `num_transitions` transitions are reached (the running episode is
    then cut and marked truncated, as D4RL's fixed-size buffers are). Deterministic given `seed`.
    """
    if (num_transitions is None) == (num_episodes is None):
        raise PbrlError("collect_episodes: give exactly one of num_transitions and num_episodes")
    from pbrl.data.registry import make_env

    env = make_env(env_or_id, **(env_kwargs or {})) if isinstance(env_or_id, str) else env_or_id
    env.action_space.seed(seed)
    episodes: list[Episode] = []
    total = 0
    bar = _BAR.get()  # the enclosing `step_progress` bar, if any
    obs, _ = env.reset(seed=seed)
    while True:
        o, a, r, te, tr = [obs], [], [], [], []
        while True:
            act = env.action_space.sample() if policy is None else policy(obs)
            obs, rew, term, trunc, _ = env.step(act)
            a.append(act)
            r.append(rew)
            te.append(term)
            o.append(obs)
            total += 1
            if bar is not None:
                bar.update()  # 0.3 us measured (tqdm redraws at most 10 times a second); a Pendulum step ~20 us
            cut = num_transitions is not None and total >= num_transitions
            tr.append(bool(trunc) or (cut and not term))
            if term or trunc or cut:
                break
        episodes.append(
            Episode(np.asarray(o), np.asarray(a), np.asarray(r, np.float32), np.asarray(te), np.asarray(tr))
        )
        if (num_episodes is not None and len(episodes) >= num_episodes) or (
            num_transitions is not None and total >= num_transitions
        ):
            break
        obs, _ = env.reset()
    env_id = env.spec.id if env.spec is not None else None
    meta = {"env_id": env_id, "name": env_id, "provenance": [{"step": "collect_episodes", "seed": seed}]}
    meta.update(metadata or {})
    return EpisodeDataset.from_episodes(
        episodes, metadata=meta, observation_space=env.observation_space, action_space=env.action_space
    )
