"""The whole preference-based offline RL pipeline in one call:

    preferences (scripted teacher on the true reward, or a human label folder)
      -> reward learner (step | segment | pt) -> relabel (normalizer) -> offline policy -> normalized score

The policy never sees the dataset's true rewards unless `reward="true"` (the oracle column of the tables). Every
stage writes into one run folder: config.json, prefs/, reward/, policy/, summary.json. The inputs (options, the
dataset, the labels) are checked before anything is written: a run that fails on its inputs leaves no folder behind.
`run_record(config, out_dir)` is the sweep runner (see pbrl.sweep); its grid rows keep the teacher options flat
(`{"teacher": "stochastic", "beta": 1.0}`).

Seeds: `run_pipelines(cfgs)` runs configs that differ only by seed (and run folder) in one process: each seed's
labels, reward and relabeled dataset in turn, then the policies of every seed as one batched model
(`pbrl.policies.trainer.train_seeds` with one dataset per seed: the Pb-* seeds train on data that differ in their
rewards) where the algorithm allows it. `pbrl pipeline ... --seeds 0 1 2` and sweeps that group a column's seeds
(`run_record.run_seeds`) go through it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

import numpy as np
import tyro

from pbrl.data.teachers import TeacherConfig
from pbrl.errors import PbrlError, ResumeRefused
from pbrl.policies.base import AlgoName as Algo
from pbrl.rewards.learner import LearnerName
from pbrl.rewards.normalizers import NormalizerName, ShiftName
from pbrl.utils import (
    atomic_write_json,
    check_fresh_out,
    dumps_json,
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
    shift: ShiftName = "none"
    """After the normalizer: minmax maps the relabeled rewards onto [0, 1] (a survival incentive where episodes
    terminate, which equal-length segment labels cannot teach; pbrl.rewards.normalizers)."""
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
    seeds: list[int] | None = None
    """Run these seeds instead of `seed`, each into OUT/seed_<s>/ (its own labels, reward and policy); their
    policies train as one batched model where the algorithm allows it (`pbrl train --seeds`)."""
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
    resume: bool = False
    """Continue the stopped run in OUT (same config): its labels and reward model are reused, and its policy
    continues from its last checkpoint (or starts, if it had none)."""

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
        choices = {"algo": get_args(Algo), "reward": get_args(RewardChoice), "normalize": get_args(NormalizerName),
                   "shift": get_args(ShiftName)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise PbrlError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if self.resume and self.overwrite:
            raise PbrlError("give resume or overwrite, not both")
        if self.seeds is not None and not self.seeds:
            raise PbrlError("seeds: give at least one seed")
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise PbrlError(f"seeds: give each seed once, got {self.seeds}")
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
        if self.seeds is None:
            outs = [(self, run_pipeline(self))]
        else:
            cfgs = self.per_seed()
            outs = list(zip(cfgs, run_pipelines(cfgs)))
        for cfg, s in outs:
            score = s["policy"].get("last_score")
            print(
                (f"seed {cfg.seed}: " if self.seeds is not None else "")
                + f"{cfg.algo} on {s['dataset_name']} with {cfg.reward} reward: last normalized score "
                f"{'n/a' if score is None else f'{score:.4g}'} (best {round_floats(s['policy'].get('best_score'))}); "
                f"see {cfg.out}"
            )

    def per_seed(self) -> list[PipelineConfig]:
        """`seeds` as one config per seed, seed s's run in OUT/seed_<s>/ (as `pbrl train --seeds`)."""
        self.check()
        if self.seeds is None:
            raise PbrlError("per_seed: the config has no seeds")
        return [dataclasses.replace(self, seed=int(s), seeds=None, out=os.path.join(self.out, f"seed_{int(s)}"))
                for s in self.seeds]


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


RESUME_MAY_DIFFER = ("out", "threads", "progress", "overwrite", "resume", "git_revision")
"""The config fields a resumed run may change: where and how it runs, not what it computes."""


def resume_blocker(cfg: PipelineConfig) -> str | None:
    """Why `cfg` cannot resume the run in `cfg.out` (None: it can): the folder must hold a run of the same config
    whose labels and reward model were saved (a learned reward); its policy may or may not have checkpointed."""
    path = os.path.join(cfg.out, "config.json")
    if not os.path.isfile(path):
        return f"no run to resume ({path} does not exist)"
    try:
        with open(path) as f:
            saved = json.load(f)
        if not isinstance(saved, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as e:
        return f"{path} is not a pipeline config ({type(e).__name__})"
    ours = json.loads(dumps_json(dataclasses.asdict(cfg)))
    differ = sorted(k for k in set(ours) | set(saved) if k not in RESUME_MAY_DIFFER and saved.get(k) != ours.get(k))
    if differ:
        return f"its config.json differs in {differ}"
    if cfg.reward != "true":
        for name in ("prefs/prefs.npz", "reward/summary.json"):
            if not os.path.isfile(os.path.join(cfg.out, name)):
                return f"its reward stage did not finish (no {name})"
    return None


def _resumed(cfg: PipelineConfig, ds: Any) -> tuple[dict[str, Any], Any, int, float]:
    """What a resumed run takes from its folder: the summary's dataset facts, the saved labels (None for the
    true reward), the torch threads of the first call (its relabeling is repeated with them, bit for bit as the
    policy checkpoint's data fingerprint needs) and the seconds its reward stage took."""
    from pbrl.data import PreferencePairs

    with open(os.path.join(cfg.out, "config.json")) as f:
        saved_threads = int(json.load(f).get("threads") or 1)
    pairs, reward_s = None, 0.0
    if cfg.reward != "true":
        pairs = PreferencePairs.load(os.path.join(cfg.out, "prefs"))
        # the reward stage runs once, between the run's config.json (written at its start) and the reward summary
        reward_s = max(0.0, os.path.getmtime(os.path.join(cfg.out, "reward", "summary.json"))
                       - os.path.getmtime(os.path.join(cfg.out, "config.json")))
    return _facts(cfg, ds), pairs, saved_threads, reward_s


def _facts(cfg: PipelineConfig, ds: Any) -> dict[str, Any]:
    from pbrl.policies.trainer import dataset_fingerprint

    return {
        "dataset": cfg.dataset,
        "dataset_name": ds.name,
        "dataset_transitions": ds.num_transitions,
        "dataset_episodes": ds.num_episodes,
        "dataset_sha256": dataset_fingerprint(ds),  # the source data's build, before relabeling
    }


def _start(cfg: PipelineConfig, ds: Any, stale: list[str], threads: int) -> dict[str, Any]:
    """The run folder afresh (the old run removed whole, so no stage of it is mixed with the new one), its
    config.json, and the summary's dataset facts."""
    remove_paths(stale)
    os.makedirs(cfg.out, exist_ok=True)
    atomic_write_json(os.path.join(cfg.out, "config.json"),
                      {**dataclasses.asdict(cfg), "threads": threads, "git_revision": git_revision()})
    return _facts(cfg, ds)


def _reward_stage(cfg: PipelineConfig, ds: Any, pairs: Any, summary: dict[str, Any],
                  resumed_threads: int | None = None) -> Any:
    """prefs -> reward -> relabel into the run folder; returns the dataset the policy trains on (the dataset
    itself for the true reward). Adds the labels' and the reward's facts to `summary`. `resumed_threads`: the run
    resumes; its saved reward model relabels the data under the first call's torch threads."""
    if pairs is None:
        return ds
    import torch

    from pbrl.rewards.relabel import relabel
    from pbrl.rewards.report import reward_report
    from pbrl.rewards.train import RewardConfig, load_reward_model, train_reward

    if resumed_threads is None:
        pairs.save(os.path.join(cfg.out, "prefs"))
        rcfg = RewardConfig(model=cfg.reward, ensemble=cfg.ensemble, epochs=cfg.reward_epochs, seed=cfg.seed,
                            device=cfg.device)
        model = train_reward(ds, pairs, rcfg, out_dir=os.path.join(cfg.out, "reward"), progress=cfg.progress,
                             overwrite=False)  # the folder is new: emptied by _start
    else:
        model = load_reward_model(os.path.join(cfg.out, "reward"), device=cfg.device)
    threads = torch.get_num_threads()
    torch.set_num_threads(resumed_threads or threads)
    try:
        train_ds = relabel(ds, model, cfg.normalize, provenance={"source": cfg.dataset}, shift=cfg.shift)
    finally:
        torch.set_num_threads(threads)
    summary["prefs"] = pairs.stats()
    final = model.info.get("final", {})
    summary["reward"] = {
        "val_accuracy": final.get("reward/val_accuracy"),
        "train_accuracy": final.get("reward/train_accuracy"),
        "epochs_run": model.info.get("epochs_run"),
        # correlations of learned and true rewards (the true ones are hidden from the policy, not from us)
        "report": reward_report(ds, model, seed=cfg.seed),
    }
    return train_ds


def _policy_args(cfg: PipelineConfig, ds: Any, resume: bool = False) -> dict[str, Any]:
    """What `train_policy` / `train_seeds` get from the pipeline besides the data, seed and folder. `resume`:
    continue the policy's checkpoint; else the policy folder is new (emptied by _start) or, in a resumed run
    whose policy had not checkpointed yet, replaced."""
    return dict(steps=cfg.steps, eval_every=cfg.eval_every, eval_episodes=cfg.eval_episodes, device=cfg.device,
                env_id=ds.env_id, progress=cfg.progress, resume=resume, overwrite=not resume)


def _policy_checkpointed(cfg: PipelineConfig) -> bool:
    return cfg.resume and os.path.isfile(os.path.join(cfg.out, "policy", "checkpoint.pt"))


def _finish(cfg: PipelineConfig, summary: dict[str, Any], pol: dict[str, Any], t0: float,
            reward_s: float = 0.0) -> dict[str, Any]:
    """The run summary; `wall_s` counts the earlier calls of a resumed run too (its reward stage `reward_s` and
    its policy's time up to the checkpoint it continued)."""
    summary["policy"] = pol
    earlier = reward_s + ((pol.get("resumed") or {}).get("earlier_s") or 0.0) if cfg.resume else 0.0
    summary["wall_s"] = round(time.time() - t0 + earlier, 1)
    summary["resumed"] = {"earlier_s": round(earlier, 1), "policy_at_step": (pol.get("resumed") or {}).get("at_step")} \
        if cfg.resume else None
    atomic_write_json(os.path.join(cfg.out, "summary.json"), summary)
    return summary


def _check_resume(cfg: PipelineConfig) -> None:
    reason = resume_blocker(cfg)
    if reason is not None:
        raise PbrlError(f"{cfg.out}: cannot resume: {reason}")


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    """Run every stage; returns (and writes) the run summary."""
    from pbrl.data import load_dataset
    from pbrl.policies.base import default_config
    from pbrl.policies.trainer import train_policy

    t0 = time.time()
    # every input is checked before the run folder is written: options, the dataset, the labels, the policy config
    cfg.check()
    if cfg.seeds is not None:
        raise PbrlError("run_pipeline runs one seed; for several: run_pipelines(cfg.per_seed())")
    if cfg.resume:
        _check_resume(cfg)
    else:
        stale = check_fresh_out(cfg.out, PIPELINE_FILES, cfg.overwrite, "pass --overwrite to replace it "
                                "or --resume to continue it")
    threads, note = use_threads(cfg.threads)
    if cfg.progress:
        print(f"pipeline {cfg.algo} on {cfg.dataset} with {cfg.reward} reward: {cfg.steps} steps, "
              f"{threads_line(threads, note)}{', resumed' if cfg.resume else ''}", flush=True)
    ds = load_dataset(cfg.dataset)
    pcfg = default_config(cfg.algo, **cfg.policy)
    if cfg.resume:
        summary, pairs, saved_threads, reward_s = _resumed(cfg, ds)
        train_ds = _reward_stage(cfg, ds, pairs, summary, resumed_threads=saved_threads)
    else:
        pairs = _labels(cfg, ds) if cfg.reward != "true" else None
        summary, reward_s = _start(cfg, ds, stale, threads), 0.0
        train_ds = _reward_stage(cfg, ds, pairs, summary)
    pol = train_policy(cfg.algo, train_ds, pcfg, seed=cfg.seed, out_dir=os.path.join(cfg.out, "policy"),
                       **_policy_args(cfg, ds, resume=_policy_checkpointed(cfg)))
    return _finish(cfg, summary, pol, t0, reward_s)


def run_pipelines(cfgs: list[PipelineConfig]) -> list[dict[str, Any]]:
    """`run_pipeline` for configs that differ only by `seed` and `out`, in one process; returns their summaries.

    Each seed's labels, reward model and relabeled dataset come as in its own run (seed after seed); then every
    seed's policy trains on its own dataset in one `train_seeds` call, as one batched model where the algorithm
    allows it (else seed after seed, as separate runs). Each run folder holds what `run_pipeline` writes there,
    with the same numbers up to float rounding; its summary's `wall_s` is the whole call's (the seeds' policies
    trained side by side). Every config and folder is checked before the first is written.
    """
    from pbrl.data import load_dataset
    from pbrl.policies.base import default_config
    from pbrl.policies.trainer import train_seeds

    t0 = time.time()
    if not cfgs:
        raise PbrlError("run_pipelines: give at least one config")
    first = cfgs[0]
    for cfg in cfgs:
        cfg.check()
        if cfg.seeds is not None:
            raise PbrlError("run_pipelines: one config per seed (`seeds` is for the command line: per_seed())")
        differ = sorted(k for k, v in dataclasses.asdict(cfg).items()
                        if k not in ("seed", "out", "resume", "overwrite") and v != dataclasses.asdict(first)[k])
        if differ:
            raise PbrlError(f"run_pipelines: the configs may differ only by seed and out; {differ} differ")
    seeds = [cfg.seed for cfg in cfgs]
    if len(set(seeds)) != len(seeds) or len({os.path.abspath(c.out) for c in cfgs}) != len(cfgs):
        raise PbrlError(f"run_pipelines: each seed once, each into its own folder; got seeds {seeds}")
    stale: list[list[str]] = []
    for cfg in cfgs:  # each seed resumes its own stopped run, or starts in an empty folder (or --overwrite)
        if cfg.resume:
            _check_resume(cfg)
        stale.append([] if cfg.resume else check_fresh_out(cfg.out, PIPELINE_FILES, cfg.overwrite,
                                                            "pass --overwrite to replace it or --resume to continue it"))
    threads, note = use_threads(first.threads)
    if first.progress:
        print(f"pipeline {first.algo} on {first.dataset} with {first.reward} reward: {first.steps} steps x "
              f"{len(cfgs)} seeds {seeds}, {threads_line(threads, note)}"
              + (f", resumed: seeds {[c.seed for c in cfgs if c.resume]}" if any(c.resume for c in cfgs) else ""),
              flush=True)
    ds = load_dataset(first.dataset)
    pcfg = default_config(first.algo, **first.policy)
    summaries, train_sets, reward_s = [], [], []
    for i, cfg in enumerate(cfgs):
        if cfg.resume:
            summary, pairs, saved_threads, spent = _resumed(cfg, ds)
            train_sets.append(_reward_stage(cfg, ds, pairs, summary, resumed_threads=saved_threads))
        else:
            pairs = _labels(cfg, ds) if cfg.reward != "true" else None
            summary, spent = _start(cfg, ds, stale[i], threads), 0.0
            train_sets.append(_reward_stage(cfg, ds, pairs, summary))
        summaries.append(summary)
        reward_s.append(spent)
    say = (lambda line: print(line, flush=True)) if first.progress else (lambda _: None)
    # the seeds whose policies checkpointed continue as one model, the others start as one (a resumed group of
    # seeds trained one after another stopped part-way through its seeds)
    pols: dict[int, dict[str, Any]] = {}
    for resume in (True, False):
        part = [i for i, c in enumerate(cfgs) if _policy_checkpointed(c) == resume]
        if part:
            got = train_seeds(first.algo, [train_sets[i] for i in part], pcfg, seeds=[seeds[i] for i in part],
                              out_dirs=[os.path.join(cfgs[i].out, "policy") for i in part], log=say,
                              **_policy_args(first, ds, resume=resume))
            pols.update(zip(part, got))
    return [_finish(cfg, summaries[i], pols[i], t0, reward_s[i]) for i, cfg in enumerate(cfgs)]


def _sweep_config(config: dict[str, Any], out_dir: str) -> PipelineConfig:
    """A grid row as a pipeline config into the sweep's run folder."""
    import torch

    if "seeds" in config:
        raise PbrlError("grid config: seeds are an axis of the grid (\"axes\": {\"seed\": [0, 1, 2]}), not a field")
    # the sweep owns its run folders and has set the worker's threads: a stopped run of this config continues
    # (its reward reused, its policy from its last checkpoint), anything else in the folder is replaced
    config = {"threads": torch.get_num_threads(), **config}
    cfg = PipelineConfig.from_dict({**config, "out": out_dir, "progress": False}, source="grid config")
    cfg.check()
    cfg.resume = resume_blocker(cfg) is None
    cfg.overwrite = not cfg.resume
    return cfg


def _record(s: dict[str, Any]) -> dict[str, Any]:
    """What the tables read from a pipeline summary."""
    pol = s["policy"]
    curve = [[e["step"], e["eval/normalized_score"]] for e in pol.get("evaluations", []) if e.get("eval/normalized_score") is not None]
    return {
        "dataset_name": s["dataset_name"],
        "dataset_transitions": s["dataset_transitions"],
        "dataset_episodes": s.get("dataset_episodes"),
        "dataset_sha256": s.get("dataset_sha256"),
        "last_score": pol.get("last_score"),
        "best_score": pol.get("best_score"),
        "last_return_mean": pol.get("last_return_mean"),
        "curve": curve,
        "reward": s.get("reward"),
        "steps_per_s": pol.get("perf/steps_per_s"),
        "wall_s": s["wall_s"],
        # a resumed run: the seconds of its earlier calls, which the sweep adds to its record's wall time
        "earlier_s": (s.get("resumed") or {}).get("earlier_s"),
    }


def _afresh_if_refused(run: Any, cfgs: list[PipelineConfig]) -> list[dict[str, Any]]:
    """`run(cfgs)`; when a resume is refused (a policy checkpoint that does not fit, e.g. written by other code),
    the runs start afresh in their folders instead."""
    try:
        return run(cfgs)
    except ResumeRefused:
        if not any(c.resume for c in cfgs):
            raise
        return run([dataclasses.replace(c, resume=False, overwrite=True) for c in cfgs])


def run_record(config: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """Sweep runner: a pipeline run from a grid config; returns what the tables read. Runs that differ only by
    seed go through `run_seeds` (one process, the policies as one batched model) when the sweep groups them."""
    return _record(_afresh_if_refused(lambda cfgs: [run_pipeline(cfgs[0])], [_sweep_config(config, out_dir)])[0])


def _run_seeds(configs: list[dict[str, Any]], out_dirs: list[str]) -> list[dict[str, Any]]:
    """`run_record` for grid configs that differ only by seed: one `run_pipelines` call, one result per config."""
    cfgs = [_sweep_config(c, d) for c, d in zip(configs, out_dirs)]
    return [_record(s) for s in _afresh_if_refused(run_pipelines, cfgs)]


def _batches_seeds(config: dict[str, Any]) -> bool:
    """The configs whose seeds the sweep groups: those whose policy `train_seeds` batches (phase-written
    algorithms without actor dropout, not CQL on a CPU: `pbrl.policies.trainer.run_record.batches_seeds`), on
    the true reward and on learned ones alike (each seed trains on its own relabeled data)."""
    from pbrl.policies.trainer import run_record as policy_record

    return bool(policy_record.batches_seeds(config))


def _run_key(config: dict[str, Any]) -> str:
    """A grid row as the run it computes: its pipeline config resolved (defaults filled in), less where and how
    it runs (pbrl.sweep.run_key: a field given at its default is the same run as one left out)."""
    cfg = PipelineConfig.from_dict({**config, "out": ""}, source="grid config")
    resolved = json.loads(dumps_json(dataclasses.asdict(cfg)))
    return json.dumps({k: v for k, v in resolved.items() if k not in RESUME_MAY_DIFFER}, sort_keys=True)


def _progress(run_dir: str) -> tuple[str | None, float]:
    """Where a pipeline run is, for the sweep's progress lines: its policy's last logged update, the run's
    updates and their rate; or its reward stage. With the time its folder last changed."""
    from pbrl.runs import training_progress

    where, changed = training_progress(os.path.join(run_dir, "policy"))
    if where is not None:
        return where, changed
    for stage in ("reward", "prefs"):
        folder = os.path.join(run_dir, stage)
        if os.path.isdir(folder):
            return f"{stage} stage", max([os.path.getmtime(folder)] + [
                os.path.getmtime(os.path.join(folder, n)) for n in os.listdir(folder)])
    return None, 0.0


# the sweep's seed-batching protocol (pbrl.sweep.seed_groups) and what makes two grid rows one run
run_record.run_seeds = _run_seeds  # type: ignore[attr-defined]
run_record.batches_seeds = _batches_seeds  # type: ignore[attr-defined]
run_record.run_key = _run_key  # type: ignore[attr-defined]
run_record.progress = _progress  # type: ignore[attr-defined]
