"""The whole preference-based offline RL pipeline in one call:

    preferences (scripted teacher on the true reward, or a human label folder)
      -> reward learner (step | segment | pt) -> relabel (normalizer) -> offline policy -> normalized score

The policy never sees the dataset's true rewards unless `reward="true"` (the oracle column of the tables). Every
stage writes into one run folder: config.json, prefs/, reward/, policy/, summary.json. The inputs (options, the
dataset, the labels) are checked before anything is written: a run that fails on its inputs leaves no folder behind.
`run_record(config, out_dir)` is the sweep runner (see pbrl.sweep); its grid rows keep the teacher options flat
(`{"teacher": "stochastic", "beta": 1.0}`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

import numpy as np
import tyro

from pbrl.data.teachers import TeacherConfig
from pbrl.errors import PbrlError
from pbrl.policies.base import AlgoName as Algo
from pbrl.rewards.learner import LearnerName
from pbrl.rewards.normalizers import NormalizerName
from pbrl.utils import (
    atomic_write_json,
    check_fresh_out,
    git_revision,
    remove_paths,
    round_floats,
    threads_line,
    use_threads,
)

PIPELINE_FILES = ("config.json", "summary.json", "prefs", "reward", "policy")
"""What a pipeline run folder holds (a folder with any of them holds a run)."""

RewardChoice = Literal["true", "step", "segment", "pt"]
"""A reward learner of step datasets, or `true` (the dataset's own rewards, the oracle baseline). The `lm` learner
trains on text records instead (`pbrl reward train PAIRS.jsonl --model lm`), so the pipeline does not offer it."""
assert set(get_args(RewardChoice)) - {"true"} < set(get_args(LearnerName)), "the pipeline's learners are registered"


@dataclass
class PipelineConfig:
    """prefs -> reward -> relabel -> policy -> score."""

    dataset: tyro.conf.Positional[str]
    """Dataset spec: Minari id, d4rl:<path>, or a local path."""
    algo: Algo = "iql"
    """Offline policy algorithm."""
    reward: RewardChoice = "step"
    """Reward learner; `true` trains on the dataset's own rewards (the oracle baseline)."""
    normalize: NormalizerName = "member-zscore"
    """Normalizer of the learned rewards (member-zscore = DTR's ensemble normalization)."""
    labels: Annotated[str | None, tyro.conf.arg(metavar="PATH")] = None
    """Human label folder or prefs.npz (Uni-RLHF, PT, pbrl); default: a scripted teacher on the true reward."""
    teacher: tyro.conf.OmitArgPrefixes[TeacherConfig] = dataclasses.field(default_factory=TeacherConfig)
    """Scripted teacher (B-Pref models) when no label folder is given: `--teacher NAME` and its parameters."""
    queries: int = 500
    """Scripted queries."""
    length: int = 50
    """Scripted segment length."""
    query_fraction: float = 1.0
    """Use only this fraction of the labelled pairs (query-count ablations)."""
    ensemble: int = 3
    """Reward ensemble members."""
    reward_epochs: int = 50
    """Reward training epochs (early stop at 0.968 train accuracy)."""
    steps: int = 100_000
    """Policy updates."""
    seed: int = 0
    """Seed of labels, reward and policy."""
    eval_every: int = 5000
    """Policy evaluation period in updates."""
    eval_episodes: int = 10
    """Episodes per evaluation (batched in a vector env)."""
    device: Annotated[str, tyro.conf.arg(metavar="DEVICE")] = "cpu"
    """Torch device."""
    out: Annotated[str, tyro.conf.arg(metavar="DIR")] = "runs/pipeline"
    """Run folder."""
    policy: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Overrides of the algorithm's config fields, e.g. {"hidden": [64, 64]} (Python / grid files)."""
    progress: bool = True
    """Show progress bars."""
    threads: int | None = None
    """Torch CPU threads (default: the free cores, i.e. the cores minus the 1-minute load average). Small MLP
    updates gain little from a second thread and lose several-fold when other processes compete for the cores."""
    overwrite: bool = False
    """Replace the run already in OUT (without it, an OUT that holds a run is refused)."""

    def __post_init__(self) -> None:
        if isinstance(self.teacher, str | dict):  # Python callers: teacher="mistake" or {"name": ..., "epsilon": ...}
            self.teacher, _ = TeacherConfig.from_flat({"teacher": self.teacher}, source="PipelineConfig")

    @classmethod
    def from_dict(cls, config: dict[str, Any], source: str = "pipeline config") -> PipelineConfig:
        """A config from a flat dict (a sweep grid row): teacher options flat or nested, unknown keys an error."""
        teacher, rest = TeacherConfig.from_flat(config, source=source)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(rest) - known
        if unknown:
            raise PbrlError(f"unknown pipeline fields in {source}: {sorted(unknown)}")
        return cls(**rest, teacher=teacher)

    def check(self) -> None:
        """The option checks that need no data (tyro checks the types on the command line; Python callers too)."""
        choices = {"algo": get_args(Algo), "reward": get_args(RewardChoice), "normalize": get_args(NormalizerName)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise PbrlError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if not 0 < self.query_fraction <= 1:
            raise PbrlError(f"query_fraction must be in (0, 1], got {self.query_fraction}")
        learned = self.reward != "true"
        scripted = learned and not self.labels
        for name, used in (("steps", True), ("ensemble", learned), ("reward_epochs", learned), ("queries", scripted),
                           ("length", scripted)):
            if used and getattr(self, name) < 1:
                raise PbrlError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.teacher.resolve()  # a known teacher name
        from pbrl.utils import resolve_device

        resolve_device(self.device, "--device")  # a device torch knows and this machine has

    def run(self) -> None:
        s = run_pipeline(self)
        score = s["policy"].get("last_score")
        print(
            f"{self.algo} on {s['dataset_name']} with {self.reward} reward: last normalized score "
            f"{'n/a' if score is None else f'{score:.4g}'} (best {round_floats(s['policy'].get('best_score'))}); "
            f"see {self.out}"
        )


def _labels(cfg: PipelineConfig, ds) -> Any:
    from pbrl.data import PreferencePairs, scripted_preferences

    if cfg.labels:
        pairs = PreferencePairs.load(cfg.labels).validate(ds, source=cfg.labels)
    else:
        pairs = scripted_preferences(ds, cfg.queries, cfg.length, cfg.teacher, cfg.seed)
    if cfg.query_fraction < 1:
        keep = np.random.default_rng(cfg.seed).permutation(len(pairs))[: max(1, int(round(cfg.query_fraction * len(pairs))))]
        pairs = pairs.subset(np.sort(keep))
    return pairs


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    """Run every stage; returns (and writes) the run summary."""
    from pbrl.data import load_dataset
    from pbrl.policies.base import default_config
    from pbrl.policies.trainer import train_policy

    t0 = time.time()
    # every input is checked before the run folder is written: options, the dataset, the labels, the policy config
    cfg.check()
    stale = check_fresh_out(cfg.out, PIPELINE_FILES, cfg.overwrite, "pass --overwrite to replace it")
    threads, note = use_threads(cfg.threads)
    if cfg.progress:
        print(f"pipeline {cfg.algo} on {cfg.dataset} with {cfg.reward} reward: {cfg.steps} steps, "
              f"{threads_line(threads, note)}", flush=True)
    ds = load_dataset(cfg.dataset)
    pairs = _labels(cfg, ds) if cfg.reward != "true" else None
    pcfg = default_config(cfg.algo, **cfg.policy)
    remove_paths(stale)  # --overwrite: the old run goes whole, so no stage of it is mixed with the new one
    os.makedirs(cfg.out, exist_ok=True)
    atomic_write_json(os.path.join(cfg.out, "config.json"),
                      {**dataclasses.asdict(cfg), "threads": threads, "git_revision": git_revision()})
    summary: dict[str, Any] = {
        "dataset": cfg.dataset,
        "dataset_name": ds.name,
        "dataset_transitions": ds.num_transitions,
        "dataset_episodes": ds.num_episodes,
    }
    train_ds = ds
    if pairs is not None:
        from pbrl.rewards.relabel import relabel
        from pbrl.rewards.report import reward_report
        from pbrl.rewards.train import RewardConfig, train_reward

        pairs.save(os.path.join(cfg.out, "prefs"))
        rcfg = RewardConfig(model=cfg.reward, ensemble=cfg.ensemble, epochs=cfg.reward_epochs, seed=cfg.seed, device=cfg.device)
        model = train_reward(ds, pairs, rcfg, out_dir=os.path.join(cfg.out, "reward"), progress=cfg.progress,
                             overwrite=False)  # the folder is new: emptied above
        train_ds = relabel(ds, model, cfg.normalize, provenance={"source": cfg.dataset})
        summary["prefs"] = pairs.stats()
        final = model.info.get("final", {})
        summary["reward"] = {
            "val_accuracy": final.get("reward/val_accuracy"),
            "train_accuracy": final.get("reward/train_accuracy"),
            "epochs_run": model.info.get("epochs_run"),
            # correlations of learned and true rewards (the true ones are hidden from the policy, not from us)
            "report": reward_report(ds, model, seed=cfg.seed),
        }
    pol = train_policy(
        cfg.algo,
        train_ds,
        pcfg,
        steps=cfg.steps,
        seed=cfg.seed,
        out_dir=os.path.join(cfg.out, "policy"),
        eval_every=cfg.eval_every,
        eval_episodes=cfg.eval_episodes,
        device=cfg.device,
        env_id=ds.env_id,
        progress=cfg.progress,
        overwrite=False,  # the folder is new: emptied above
    )
    summary["policy"] = pol
    summary["wall_s"] = round(time.time() - t0, 1)
    atomic_write_json(os.path.join(cfg.out, "summary.json"), summary)
    return summary


def run_record(config: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """Sweep runner: a pipeline run from a grid config; returns what the tables read."""
    import torch

    # the sweep owns its run folders (it reruns a failed run in place) and has set the worker's threads
    config = {"threads": torch.get_num_threads(), **config}
    cfg = PipelineConfig.from_dict({**config, "out": out_dir, "progress": False, "overwrite": True},
                                   source="grid config")
    s = run_pipeline(cfg)
    pol = s["policy"]
    curve = [[e["step"], e["eval/normalized_score"]] for e in pol.get("evaluations", []) if e.get("eval/normalized_score") is not None]
    return {
        "dataset_name": s["dataset_name"],
        "dataset_transitions": s["dataset_transitions"],
        "last_score": pol.get("last_score"),
        "best_score": pol.get("best_score"),
        "last_return_mean": pol.get("last_return_mean"),
        "curve": curve,
        "reward": s.get("reward"),
        "steps_per_s": pol.get("perf/steps_per_s"),
        "wall_s": s["wall_s"],
    }
