"""CLI commands of the data package: `pbrl data info|collect|build|list`, `pbrl prefs`, `pbrl prefs info`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
import tyro

from pbrl.data.teachers import TeacherConfig
from pbrl.errors import PbrlError

if TYPE_CHECKING:
    from pbrl.data.dataset import EpisodeDataset


def _summary(x: np.ndarray, keys: tuple[str, ...] = ("mean", "std", "min", "max")) -> dict[str, float]:
    fns = {"mean": np.mean, "std": np.std, "min": np.min, "max": np.max}
    return {k: float(fns[k](x)) for k in keys}


def relabel_entry(ds: EpisodeDataset) -> dict | None:
    """The provenance entry of the last relabel step when the dataset's rewards are learned ones, else None."""
    steps = [p for p in ds.metadata.get("provenance") or [] if isinstance(p, dict) and p.get("step") == "relabel"]
    return steps[-1] if steps else None


def true_returns(ds: EpisodeDataset, entry: dict) -> tuple[np.ndarray, str] | None:
    """Per-episode returns of the environment's reward for a relabeled dataset, and where they come from.

    Kept in the relabel entry (`true_episode_returns`), or recomputed from the relabel's source dataset when it
    is still readable and has the same episodes (relabeling changes only the rewards); None when neither holds.
    """
    from pbrl.data.registry import load_dataset

    kept = entry.get("true_episode_returns")
    if kept is not None and len(kept) == ds.num_episodes:
        return np.asarray(kept, dtype=np.float64), "kept in the provenance"
    source = entry.get("source")
    if not isinstance(source, str) or source == ds.name:
        return None
    try:
        src = load_dataset(source)
    except PbrlError:
        return None
    if src.num_transitions != ds.num_transitions or not np.array_equal(src.episode_starts, ds.episode_starts):
        return None
    return src.episode_returns(), f"source dataset {source}"


def describe_dataset(spec: str) -> dict:
    """The facts `pbrl data info` prints, as a dict.

    For a relabeled dataset (a `relabel` step in its provenance) the returns are sums of learned rewards, whose
    scale the normalizer chose: they appear as `learned_return`, and `normalized_return` is the D4RL-normalized
    return of the environment's reward when it is known (`true_return_source` says from where), else None.
    """
    from pbrl.data.registry import load_dataset
    from pbrl.data.scores import normalized_score

    ds = load_dataset(spec)
    lengths = ds.episode_lengths
    returns = ds.episode_returns()
    entry = relabel_entry(ds)
    info: dict = {
        "spec": spec,
        "name": ds.name,
        "env_id": ds.env_id,
        "transitions": ds.num_transitions,
        "episodes": ds.num_episodes,
        "observation_shape": list(ds.observations_all.shape[1:]),
        "action_space": str(ds.action_space),
        "episode_length": {"mean": float(lengths.mean()), "min": int(lengths.min()), "max": int(lengths.max())},
        "terminations": int(ds.terminations.sum()),
        "truncations": int(ds.truncations.sum()),
    }
    true = returns
    if entry is not None:
        model = f"{entry.get('reward_model', '?')} reward x{entry.get('ensemble', '?')}"
        info["rewards"] = f"learned ({model}, {entry.get('normalizer', '?')} normalizer; see provenance)"
        info["learned_return"] = _summary(returns)
        found = true_returns(ds, entry)
        true = None if found is None else found[0]
        if found is not None:
            info["return"] = _summary(found[0])
        info["true_return_source"] = found[1] if found is not None else "not kept (the source dataset has it)"
    else:
        info["return"] = _summary(returns)
    info["normalized_return"] = None
    if true is not None:
        try:
            info["normalized_return"] = _summary(normalized_score(ds, true), ("mean", "min", "max"))
        except PbrlError:
            pass
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
        from pbrl.utils import round_floats

        info = describe_dataset(self.spec)
        if self.json_:
            print(json.dumps(info, indent=2))  # full precision for programs
            return
        for k, v in round_floats(info).items():
            print(f"{k:18s} {json.dumps(v) if isinstance(v, dict | list) else v}")


@dataclass
class DataCollect:
    """Collect episodes of a uniformly random policy from a gymnasium env into a local Minari dataset."""

    env: tyro.conf.Positional[str]
    """Gymnasium environment id, e.g. Hopper-v5."""
    out: Annotated[str, tyro.conf.arg(metavar="MINARI_ID")]
    """Minari dataset id to write, e.g. pbrl/hopper/random-small-v0."""
    transitions: int = 10_000
    """Number of transitions (the last episode is cut and marked truncated)."""
    seed: int = 0
    overwrite: bool = False
    """Replace an existing dataset of that id."""

    def run(self) -> None:
        from pbrl.data.collect import collect_episodes, step_progress
        from pbrl.data.minari_io import dataset_exists
        from pbrl.data.scores import reference_scores

        if dataset_exists(self.out) and not self.overwrite:  # before collecting, not after
            raise PbrlError(f"Minari dataset {self.out!r} already exists (pass --overwrite to replace it)")
        print(f"collecting {self.transitions} transitions of random actions in {self.env}, seed {self.seed}",
              flush=True)
        with step_progress(self.transitions, desc=f"collecting {self.env}"):
            ds = collect_episodes(self.env, num_transitions=self.transitions, seed=self.seed)
        try:
            lo, hi = reference_scores(ds)
        except PbrlError:
            lo = hi = None
        path = ds.to_minari(self.out, overwrite=self.overwrite, ref_min_score=lo, ref_max_score=hi)
        print(f"wrote {ds.num_transitions} transitions in {ds.num_episodes} episodes to {self.out} ({path})")


@dataclass
class DataBuild:
    """Build a suite dataset (e.g. hopper-medium-replay) from its recipe as a local Minari dataset, offline."""

    name: tyro.conf.Positional[str]
    """Suite dataset name; `pbrl data list` shows them all."""
    size: int | None = None
    """Transitions to build (default: the recipe's size)."""
    seed: int = 0
    """Seed of the environments and of the policies' sampling noise; builds are deterministic given it."""
    overwrite: bool = False
    """Replace the dataset if it is already built."""

    def run(self) -> None:
        from pbrl.data.recipes import build_recipe, existing_build, get_recipe

        recipe = get_recipe(self.name)
        n = recipe.default_size if self.size is None else self.size
        card = None if self.overwrite else existing_build(self.name, n, self.seed)
        if card is None:
            print(f"building {self.name} -> {recipe.dataset_id}: {n} transitions, seed {self.seed}", flush=True)
            card = build_recipe(self.name, n, self.seed, self.overwrite)
        if card.get("already_built"):
            print(f"{card['dataset_id']} is already built from {self.name} ({card['transitions']} transitions, "
                  f"seed {card['seed']}); nothing to do (--overwrite rebuilds it)")
            return
        m = card["normalized_return"]
        score = f", normalized return {m['mean']:.4g} +- {m['std']:.4g}" if m else ""
        print(f"built {card['dataset_id']}: {card['transitions']} transitions, {card['episodes']} episodes"
              f"{score} ({card['build_s']} s)")


@dataclass
class DataList:
    """List the registered dataset recipes (which are built) and the other local Minari datasets."""

    json_output: bool = False
    """Print JSON instead of a table."""

    def run(self) -> None:
        from pbrl.data.minari_io import datasets_root, local_dataset_ids
        from pbrl.data.recipes import read_card, recipes

        known = recipes()
        local = set(local_dataset_ids())
        rows = []
        for name, r in sorted(known.items()):
            card = read_card(r.dataset_id) if r.dataset_id in local else None
            rows.append({"name": name, "dataset_id": r.dataset_id, "built": r.dataset_id in local,
                         "default_size": r.default_size, "description": r.description,
                         "transitions": card["transitions"] if card else None})
        others = sorted(local - {r.dataset_id for r in known.values()})
        if self.json_output:
            print(json.dumps({"root": datasets_root(), "suite": rows, "other_local": others}, indent=1))
            return
        width = max((len(r["name"]) for r in rows), default=0)
        print(f"Minari datasets folder: {datasets_root()}\n\nsuite ({len(rows)} recipes):")
        for r in rows:
            state = f"built ({r['transitions']} transitions)" if r["built"] and r["transitions"] else (
                "built" if r["built"] else "-")
            print(f"  {r['name']:<{width}}  {r['dataset_id']:<36} {state:<28} {r['description']}")
        print(f"\nother local Minari datasets ({len(others)}):")
        for i in others:
            print(f"  {i}")


@dataclass
class PrefsLabel:
    """Label random segment pairs of a dataset with a scripted teacher; writes <out>/prefs.npz."""

    spec: tyro.conf.Positional[str]
    """Dataset: Minari id, d4rl:<path>, or a local path (its true rewards are the teacher's)."""
    out: Annotated[str, tyro.conf.arg(metavar="DIR")]
    """Output folder."""
    queries: int = 500
    """Number of labelled pairs."""
    length: int = 50
    """Segment length in steps."""
    teacher: tyro.conf.OmitArgPrefixes[TeacherConfig] = field(default_factory=TeacherConfig)
    """Scripted teacher (B-Pref models): `--teacher NAME` and its parameters."""
    cross_episodes: bool = False
    """Allow windows that cross episode boundaries (Uni-RLHF style)."""
    seed: int = 0
    format: Literal["pbrl", "uni-rlhf", "both"] = "pbrl"
    """Write our npz, the Uni-RLHF pickles, or both."""
    overwrite: bool = False
    """Replace a prefs.npz already in OUT (without it, one is refused; Uni-RLHF pickles get fresh names)."""

    def run(self) -> None:
        from pbrl.data.preferences import PreferencePairs
        from pbrl.data.registry import load_dataset
        from pbrl.data.teachers import scripted_preferences
        from pbrl.utils import refuse_existing

        if self.format in ("pbrl", "both"):  # before labelling, so a refusal costs nothing
            refuse_existing(PreferencePairs.npz_path(self.out), self.overwrite)
        ds = load_dataset(self.spec)
        pairs = scripted_preferences(
            ds, self.queries, self.length, self.teacher, self.seed, cross_episodes=self.cross_episodes
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
            f"labelled {len(pairs)} pairs of {self.length} steps ({self.teacher.name} teacher), tie rate {s['tie_rate']:.4g}"
        )
        for w in written:
            print(f"wrote {w}")  # as the user gave --out: an absolute path stays absolute


@dataclass
class PrefsInfo:
    """Counts, tie rate and label balance of a preference file or folder (pbrl npz, Uni-RLHF, PT)."""

    path: tyro.conf.Positional[str]
    """prefs.npz, or a folder with pbrl, Uni-RLHF or Preference Transformer labels."""
    dataset: Annotated[str | None, tyro.conf.arg(metavar="SPEC")] = None
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
        lo, hi = (int(pairs.lengths.min()), int(pairs.lengths.max())) if len(pairs) else (pairs.length,) * 2
        steps = f"{lo} steps" if lo == hi else f"{lo}-{hi} steps (mean {s['mean_length']:.4g})"
        print(f"pairs      {len(pairs)} of {steps}")
        print(f"ties       {int(s['ties'])} ({s['tie_rate']:.1%})")
        print(f"preferred  a: {int(s['a_preferred'])}  b: {int(s['b_preferred'])}  soft: {int(s['soft'])}")
        print(f"balance    {s['balance']:.4g} (mean label among non-ties; 0.5 = balanced)")
