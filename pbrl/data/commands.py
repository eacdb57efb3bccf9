"""CLI commands of the data package: `pbrl data info`, `pbrl prefs`, `pbrl prefs info`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import tyro

from pbrl.errors import PbrlError


def describe_dataset(spec: str) -> dict:
    """The facts `pbrl data info` prints, as a dict."""
    from pbrl.data.registry import load_dataset
    from pbrl.data.scores import normalized_score

    ds = load_dataset(spec)
    lengths = ds.episode_lengths
    returns = ds.episode_returns()
    info = {
        "spec": spec,
        "name": ds.name,
        "env_id": ds.env_id,
        "transitions": ds.num_transitions,
        "episodes": ds.num_episodes,
        "observation_shape": list(ds.observations_all.shape[1:]),
        "action_space": str(ds.action_space),
        "episode_length": {
            "mean": float(lengths.mean()),
            "min": int(lengths.min()),
            "max": int(lengths.max()),
        },
        "terminations": int(ds.terminations.sum()),
        "truncations": int(ds.truncations.sum()),
        "return": {
            k: float(f(returns))
            for k, f in (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max))
        },
    }
    try:
        norm = normalized_score(ds, returns)
        info["normalized_return"] = {
            k: float(f(norm)) for k, f in (("mean", np.mean), ("min", np.min), ("max", np.max))
        }
    except PbrlError:
        info["normalized_return"] = None
    if ds.metadata.get("provenance"):
        info["provenance"] = ds.metadata["provenance"]
    return info


@dataclass
class DataInfo:
    """Describe a dataset: sizes, episode lengths, returns, normalized returns, provenance."""

    spec: tyro.conf.Positional[str]
    """Minari id, d4rl:<path>, or a local path."""
    json_: Annotated[bool, tyro.conf.arg(name="json")] = False
    """Print JSON instead of text."""

    def run(self) -> None:
        info = describe_dataset(self.spec)
        if self.json_:
            print(json.dumps(info, indent=2))
            return
        for k, v in info.items():
            print(f"{k:18s} {json.dumps(v) if isinstance(v, dict | list) else v}")


@dataclass
class DataCollect:
    """Collect episodes of a uniformly random policy from a gymnasium env into a local Minari dataset."""

    env: tyro.conf.Positional[str]
    """Gymnasium environment id, e.g. Hopper-v5."""
    out: str
    """Minari dataset id to write, e.g. pbrl/hopper/random-small-v0."""
    transitions: int = 10_000
    """Number of transitions (the last episode is cut and marked truncated)."""
    seed: int = 0
    overwrite: bool = False
    """Replace an existing dataset of that id."""

    def run(self) -> None:
        from pbrl.data.collect import collect_episodes
        from pbrl.data.scores import reference_scores

        ds = collect_episodes(self.env, num_transitions=self.transitions, seed=self.seed)
        try:
            lo, hi = reference_scores(ds)
        except PbrlError:
            lo = hi = None
        path = ds.to_minari(self.out, overwrite=self.overwrite, ref_min_score=lo, ref_max_score=hi)
        print(f"wrote {ds.num_transitions} transitions in {ds.num_episodes} episodes to {self.out} ({path})")


@dataclass
class PrefsLabel:
    """Label random segment pairs of a dataset with a scripted teacher; writes <out>/prefs.npz."""

    spec: tyro.conf.Positional[str]
    """Dataset: Minari id, d4rl:<path>, or a local path (its true rewards are the teacher's)."""
    out: str
    """Output folder."""
    queries: int = 500
    """Number of labelled pairs."""
    length: int = 50
    """Segment length in steps."""
    teacher: Literal["exact", "stochastic", "myopic", "skip", "equal", "mistake"] = "exact"
    """Teacher model (B-Pref); parameters below override its defaults."""
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
    cross_episodes: bool = False
    """Allow windows that cross episode boundaries (Uni-RLHF style)."""
    seed: int = 0
    format: Literal["pbrl", "uni-rlhf", "both"] = "pbrl"
    """Write our npz, the Uni-RLHF pickles, or both."""

    def run(self) -> None:
        from pbrl.data.registry import load_dataset
        from pbrl.data.teachers import scripted_preferences

        ds = load_dataset(self.spec)
        pairs = scripted_preferences(
            ds,
            self.queries,
            self.length,
            self.teacher,
            self.seed,
            cross_episodes=self.cross_episodes,
            tie_threshold=self.tie_threshold,
            beta=self.beta,
            gamma=self.gamma,
            epsilon=self.epsilon,
            skip_threshold=self.skip_threshold,
            equal_threshold=self.equal_threshold,
        )
        pairs.meta["dataset_spec"] = self.spec
        written = []
        if self.format in ("pbrl", "both"):
            written.append(pairs.save(self.out))
        if self.format in ("uni-rlhf", "both"):
            env = (ds.name or "dataset").replace("/", "-")
            written += pairs.to_uni_rlhf(self.out, env=env, kind="fake")
        s = pairs.stats()
        print(
            f"labelled {len(pairs)} pairs of {self.length} steps ({self.teacher} teacher), tie rate {s['tie_rate']:.3f}"
        )
        for w in written:
            print(f"wrote {os.path.relpath(w)}")


@dataclass
class PrefsInfo:
    """Counts, tie rate and label balance of a preference file or folder (pbrl npz, Uni-RLHF, PT)."""

    path: tyro.conf.Positional[str]
    """prefs.npz, or a folder with pbrl, Uni-RLHF or Preference Transformer labels."""
    dataset: str | None = None
    """Optional dataset spec: also check every segment lies inside it."""

    def run(self) -> None:
        from pbrl.data.preferences import PreferencePairs

        pairs = PreferencePairs.load(self.path)
        if self.dataset:
            from pbrl.data.registry import load_dataset

            pairs.validate(load_dataset(self.dataset), source=self.path)
            print(f"all {len(pairs)} pairs lie inside {self.dataset}")
        s = pairs.stats()
        print(
            f"source     {pairs.meta.get('source', 'pbrl')} ({pairs.meta.get('labels', pairs.meta.get('teacher', ''))})"
        )
        print(f"pairs      {len(pairs)} of {pairs.length} steps")
        print(f"ties       {int(s['ties'])} ({s['tie_rate']:.1%})")
        print(f"preferred  a: {int(s['a_preferred'])}  b: {int(s['b_preferred'])}  soft: {int(s['soft'])}")
        print(f"balance    {s['balance']:.3f} (mean label among non-ties; 0.5 = balanced)")
