"""The one training loop for every offline policy.

`train_policy(algo, dataset, config, steps=..., out_dir=...)`: sample batch -> `policy.update` -> metrics; periodic
vectorized evaluation with normalized scores; checkpoints; resume; `metrics.jsonl` and a final `summary.json`.

Output folder:
  config.json     algorithm, resolved config, run settings, dataset, git revision
  metrics.jsonl   one JSON object per logged step (`step`, namespaced losses, `perf/steps_per_s`, `eval/...`)
  checkpoint.pt   the latest training state (weights, optimizers, step, RNG states) — what `resume` reads
  policy.pt       the final policy (same format; `pbrl eval` reads either)
  summary.json    last_score / best_score (normalized 0-100, None without reference scores), raw returns
Resume: the checkpoint carries the sampler's and torch's RNG states and evaluation forks the RNG, so a resumed
run reaches bit-for-bit the same weights as an uninterrupted one with the same seed (on CPU).

`train_seeds(algo, dataset, config, seeds=[0, 1, 2], out_dir=OUT)`: the same runs for several seeds in one process,
one folder each (`OUT/seed_<s>/`, the files above), trained as one batched model where the algorithm allows it
(`pbrl.policies.seeds`), else one seed after another. `dataset` may be one dataset per seed (of the same
environment, spaces and size: e.g. one dataset relabeled with each seed's own learned reward).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pbrl.data import EpisodeDataset
from pbrl.errors import PbrlError, ResumeRefused
from pbrl.policies.base import Policy, PolicySpec, default_config, make_policy
from pbrl.policies.evaluation import check_env_fits, evaluate, normalize_returns
from pbrl.runs import RunFolder, training_progress
from pbrl.utils import (
    RUN_FILES,
    check_fresh_out,
    denormals_flushed,
    dumps_json,
    estimate_line,
    git_revision,
    load_note,
    remove_paths,
    resolve_device,
    safe_torch_load,
    set_seed,
)

ESTIMATE_AFTER = 200
"""Updates timed before the time estimate is printed (fewer for short runs: 5% of the steps; or 20 s of updates)."""
ESTIMATE_AFTER_S = 20.0


def dataset_fingerprint(ds: EpisodeDataset) -> str:
    """sha256 over the dataset's arrays (observations, actions, rewards, terminations, truncations, episode
    offsets): a resume must continue on the same data, whatever file or id it was read from."""
    h = hashlib.sha256()
    for name in ("observations_all", "actions", "rewards", "terminations", "truncations", "episode_starts"):
        a = getattr(ds, name, None)
        if a is None:
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def config_defaults(config: Any) -> dict[str, Any]:
    """The defaults of a config dataclass's fields (JSON values): what a checkpoint written before a field
    existed ran with, so that it still resumes (fields without a default, or resolved per run, are left out)."""
    out = {}
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING and f.default is not None:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return json.loads(dumps_json(out))


@dataclasses.dataclass
class _Settings:
    """What every seed of one training call shares (checked once)."""

    algo: str
    dataset: EpisodeDataset
    config: Any
    steps: int
    eval_every: int
    eval_episodes: int
    device: str
    torch_device: torch.device
    env_id: str | None
    do_eval: bool
    checkpoint_every: int
    resume: bool
    tensorboard: bool
    progress: bool
    log_every: int
    stop_at: int | None


def _settings(
    algo: str, dataset: EpisodeDataset, config: Any, *, steps: int, eval_every: int, eval_episodes: int, device: str,
    env_id: str | None, resume: bool, checkpoint_every: int | None, log_every: int, stop_at: int | None,
    progress: bool, tensorboard: bool, has_out: bool,
) -> _Settings:
    if steps < 1:
        raise PbrlError(f"steps must be >= 1, got {steps}")
    if eval_every < 0 or eval_episodes < 0:
        raise PbrlError("eval_every and eval_episodes must be >= 0")
    if resume and not has_out:
        raise PbrlError("resume needs out_dir (the folder holding checkpoint.pt)")
    env_id = env_id or dataset.env_id
    return _Settings(
        algo=algo, dataset=dataset, config=config, steps=steps, eval_every=eval_every, eval_episodes=eval_episodes,
        device=device, torch_device=torch.device("cpu"), env_id=env_id,
        do_eval=eval_episodes > 0 and env_id is not None,
        checkpoint_every=checkpoint_every or eval_every or max(1, steps // 10), resume=resume,
        tensorboard=tensorboard, progress=progress, log_every=log_every, stop_at=stop_at,
    )


class _SeedRun:
    """One seed's run on its dataset (the call's, or its own): its policy (built right after seeding, as every run
    of that seed builds it), sampling generator, torch RNG state, run folder, evaluation history and checkpoints."""

    def __init__(self, st: _Settings, seed: int, spec: PolicySpec, out: Path | None, stale: list[str],
                 dataset: EpisodeDataset | None = None) -> None:
        self.st, self.seed, self.out = st, seed, out
        self.dataset = dataset = st.dataset if dataset is None else dataset
        set_seed(seed)
        self.policy: Policy = make_policy(st.algo, spec, st.config, total_steps=st.steps).to(st.torch_device)
        self.torch_rng: torch.Tensor = torch.get_rng_state()  # the stream the updates continue
        self.generator = torch.Generator().manual_seed(seed)  # batch sampling (CPU; indices are moved to the device)
        self.sampler = self.policy.make_sampler(dataset, self.generator)
        self.run_info = {
            "algo": st.algo,
            "config": dataclasses.asdict(self.policy.config),  # effective (run-length defaults resolved)
            "steps": st.steps,
            "seed": seed,
            "eval_every": st.eval_every,
            "eval_episodes": st.eval_episodes,
            "device": st.device,
            "env_id": st.env_id,
            "dataset": dataset.name,
            "dataset_metadata": json.loads(dumps_json(dataset.metadata)),
            "git_revision": git_revision(),
            "threads": torch.get_num_threads(),  # the torch CPU threads the run used (pbrl.utils.choose_threads)
        }
        run_info = self.run_info
        # what a resume must match (the device may change: CPU and GPU runs continue each other)
        fingerprint = {
            **{k: run_info[k] for k in ("algo", "config", "steps", "seed", "eval_every", "eval_episodes", "env_id")},
            "dataset": dataset.name,
            "dataset_sha256": dataset_fingerprint(dataset),
        }
        self.history: list[dict[str, Any]] = []  # eval records
        self.start = 0
        self.wall_before = 0.0  # wall seconds of the earlier calls up to the checkpoint this call resumes
        self.run: RunFolder | None = None
        if out is None:
            return
        ckpt = out / "checkpoint.pt"
        if st.resume and not ckpt.is_file():
            raise ResumeRefused(f"nothing to resume: {ckpt} does not exist")
        state = None
        added = config_defaults(self.policy.config)
        if st.resume:
            state = safe_torch_load(ckpt, map_location=st.torch_device, what="training checkpoint")
            try:
                saved = json.loads(state["extra"]["run"])
                saved_core = {key: saved[key] for key in ("algo", "config", "steps", "seed")}
                # a config field added after the checkpoint was written ran at its default before it existed
                saved_core["config"] = {**added, **saved_core["config"]}
            except (TypeError, KeyError, ValueError):
                raise ResumeRefused(f"{ckpt}: not a pbrl training checkpoint (no run settings)") from None
            for key, value in saved_core.items():  # checkpoints of runs that predate config fingerprints
                if value != json.loads(dumps_json(run_info[key])):
                    raise ResumeRefused(f"{ckpt}: cannot resume, {key} differs ({value} vs {run_info[key]})")
            # checkpoints that predate `wall_s`: the span from the run's start (its config.json, rewritten below)
            # to its last checkpoint
            config_file = out / "config.json"
            started = config_file.stat().st_mtime if config_file.is_file() else ckpt.stat().st_mtime
            self.wall_before = max(0.0, ckpt.stat().st_mtime - started)
        remove_paths(stale)  # --overwrite: the old run's checkpoint, policy and summary go before the new run writes
        # checks the saved fingerprint (resume), then writes config.json and (fresh run) empties metrics.jsonl
        # the keys readers of earlier releases use (algo, steps, dataset, ...) stay at the top level
        self.run = RunFolder(out, run_info["config"], fingerprint=fingerprint, resume=st.resume, device=st.device,
                             extra=run_info, tensorboard=st.tensorboard, added_fields={"config": added})
        if state is not None:
            try:
                self.policy.load_training_state(state["state"])
                self.generator.set_state(state["extra"]["generator"])
                torch.Generator().set_state(state["extra"]["torch_rng"])  # a malformed state fails here
                self.torch_rng = state["extra"]["torch_rng"]
                self.history = json.loads(state["extra"]["history"])
                self.wall_before = float(state["extra"].get("wall_s", self.wall_before))
            except (TypeError, KeyError, ValueError, RuntimeError) as e:
                msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
                raise ResumeRefused(f"{ckpt}: not a pbrl training checkpoint ({type(e).__name__}: {msg})") from None
            self.start = self.policy.step
            self.run.rewind(self.start)  # rows logged after the checkpoint were lost with the killed run: they come again

    def save_checkpoint(self, path: Path, torch_rng: torch.Tensor, call_s: float) -> None:
        """`call_s`: this call's wall seconds so far; the checkpoint keeps the run's total (earlier calls too)."""
        self.policy.save(
            path,
            extra={
                "run": json.dumps(self.run_info),
                "generator": self.generator.get_state(),
                "torch_rng": torch_rng,
                "history": json.dumps(self.history),
                "wall_s": self.wall_before + call_s,
            },
        )

    def log(self, row: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.log(row)

    def run_eval(self, step: int, desc: str) -> dict[str, Any]:
        st = self.st
        returns = evaluate(self.policy, st.env_id, st.eval_episodes, seed=self.seed + 10_000, progress=st.progress,
                           desc=desc)
        scores = normalize_returns(self.policy, returns)
        rec = {
            "step": step,
            "eval/return_mean": float(returns.mean()),
            "eval/return_std": float(returns.std()),
            "eval/normalized_score": None if scores is None else float(scores.mean()),
            "eval/returns": returns.tolist(),
        }
        self.history.append(rec)
        return rec

    def summary(self, start: int, elapsed: float, call_s: float) -> dict[str, Any]:
        history, policy, st = self.history, self.policy, self.st
        scores = [r["eval/normalized_score"] for r in history]
        last = history[-1] if history else None
        best = max(history, key=lambda r: r["eval/return_mean"]) if history else None
        summary = {
            "algo": st.algo,
            "dataset": self.dataset.name,
            "env_id": st.env_id,
            "seed": self.seed,
            "steps": st.steps,
            "steps_done": policy.step,
            "finished": policy.step >= st.steps,
            "last_score": None if last is None else last["eval/normalized_score"],
            "best_score": None if best is None or None in scores else max(scores),
            "last_return_mean": None if last is None else last["eval/return_mean"],
            "best_return_mean": None if best is None else best["eval/return_mean"],
            "best_step": None if best is None else best["step"],
            "last_returns": None if last is None else last["eval/returns"],
            "evaluations": [{k: v for k, v in r.items() if k != "eval/returns"} for r in history],
            # None when this call ran no update (e.g. resuming a finished run): there is no throughput to report
            "perf/steps_per_s": (policy.step - start) / max(elapsed, 1e-9) if policy.step > start else None,
            # the run's wall time over every call (training, evaluation, checkpoints); a resumed call's start
            "wall_s": round(self.wall_before + call_s, 3),
            "resumed": {"at_step": start, "earlier_s": round(self.wall_before, 3)} if start else None,
        }
        return summary


def _loop(
    st: _Settings,
    runs: list[_SeedRun],
    update: Callable[[], list[dict[str, float]]],
    sync: Callable[[], None],
    torch_rng: Callable[[int], torch.Tensor],
) -> list[dict[str, Any]]:
    """The training loop over runs at the same step: `update()` advances every run by one step (one metrics dict
    each), `sync()` brings their policies up to date before they are evaluated or saved, `torch_rng(i)` is run i's
    torch RNG state for its checkpoint. Returns the runs' summaries (also written to their folders)."""
    steps, start = st.steps, runs[0].start
    many = len(runs) > 1
    stop = min(steps, st.stop_at) if st.stop_at is not None else steps
    bar = None
    if st.progress:
        from tqdm.auto import tqdm

        desc = f"{st.algo} x{len(runs)} seeds" if many else st.algo
        bar = tqdm(total=steps, initial=start, desc=desc, unit="step", dynamic_ncols=True, mininterval=1.0)
    # the evaluations this call will run, for the time estimate
    n_evals = sum(1 for s_ in range(start + 1, stop + 1) if (st.eval_every and s_ % st.eval_every == 0) or s_ == steps)
    n_evals = n_evals * len(runs) if st.do_eval else 0
    probe = min(ESTIMATE_AFTER, max(1, steps // 20))
    estimate: dict[str, float] = {}  # update rate, then the seconds of one evaluation

    def say_estimate() -> None:
        rate, todo = estimate["rate"], stop - start
        total = todo / rate
        if "eval_s" in estimate:
            total += n_evals * estimate["eval_s"]
            extra = f" and {n_evals} evaluation{'s' if n_evals != 1 else ''} of {estimate['eval_s']:.2g} s"
        else:
            extra = ", evaluation not yet timed" if n_evals else ""
        line = estimate_line(total, f"{todo} steps", f"{rate:.3g} steps/s", extra, "pass fewer --steps")
        if bar is not None:
            bar.write(line)

    # throughput counts update time only: evaluation and checkpoint time is kept out
    t0, window_t, window_n, paused, paused_window = time.perf_counter(), time.perf_counter(), 0, 0.0, 0.0
    steps_per_s: float | None = None
    for step in range(start + 1, stop + 1):
        metrics_all = update()
        window_n += 1
        if "rate" not in estimate and step < stop:
            spent = time.perf_counter() - t0 - paused
            if step - start >= probe or (spent >= ESTIMATE_AFTER_S and step - start >= 5):
                estimate["rate"] = (step - start) / max(spent, 1e-9)
                say_estimate()
        if step % st.log_every == 0 or step == steps:
            now = time.perf_counter()
            steps_per_s = window_n / max(now - window_t - paused_window, 1e-9)
            window_t, window_n, paused_window = now, 0, 0.0
            for run, metrics in zip(runs, metrics_all):
                run.log({"step": step, **metrics, "perf/steps_per_s": steps_per_s})
            if bar is not None:
                short = [f"{k.split('/')[-1]}={v:.3g}" for k, v in list(metrics_all[0].items())[:3]]
                note = load_note()  # the machine is oversubscribed: every thread runs part of the time
                short.append(f"sps={steps_per_s:.3g}")  # updates only (the bar's own rate counts evaluations too)
                bar.set_postfix_str(", ".join(short + ([note] if note else [])))
        if st.do_eval and ((st.eval_every and step % st.eval_every == 0) or step == steps):
            t_eval = time.perf_counter()
            sync()
            for run in runs:
                rec = run.run_eval(step, f"eval @{step}" + (f" seed {run.seed}" if many else ""))
                run.log(rec)
                if bar is not None:
                    bar.write(
                        (f"seed {run.seed}, " if many else "")
                        + f"step {step}: return {rec['eval/return_mean']:.1f}"
                        + (
                            f", score {rec['eval/normalized_score']:.1f}"
                            if rec["eval/normalized_score"] is not None
                            else ""
                        )
                    )
            if "eval_s" not in estimate:
                estimate["eval_s"] = (time.perf_counter() - t_eval) / len(runs)
                if "rate" in estimate and n_evals > 1:
                    say_estimate()
            paused_window += time.perf_counter() - t_eval
            paused += time.perf_counter() - t_eval
        if bar is not None:
            bar.update(1)
        if step % st.checkpoint_every == 0 or step == stop:
            t_save = time.perf_counter()
            if any(run.out is not None for run in runs):
                sync()
            for i, run in enumerate(runs):
                if run.out is not None:
                    run.save_checkpoint(run.out / "checkpoint.pt", torch_rng(i), time.perf_counter() - t0)
            paused_window += time.perf_counter() - t_save
            paused += time.perf_counter() - t_save
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t0 - paused
    sync()
    summaries = []
    for i, run in enumerate(runs):
        summary = run.summary(start, elapsed, time.perf_counter() - t0)
        if run.run is not None and run.out is not None:
            if run.policy.step >= steps:
                run.save_checkpoint(run.out / "policy.pt", torch_rng(i), time.perf_counter() - t0)
            run.run.write_summary(summary)
        summaries.append(json.loads(dumps_json(summary)))
    return summaries


@denormals_flushed()
def train_policy(
    algo: str,
    dataset: EpisodeDataset,
    config: Any = None,
    *,
    steps: int = 100_000,
    seed: int = 0,
    out_dir: str | Path | None = None,
    eval_every: int = 5000,
    eval_episodes: int = 10,
    device: str = "cpu",
    env_id: str | None = None,
    resume: bool = False,
    checkpoint_every: int | None = None,
    log_every: int = 100,
    stop_at: int | None = None,
    progress: bool = True,
    overwrite: bool = True,
    tensorboard: bool = False,
) -> dict[str, Any]:
    """Train `algo` on `dataset` for `steps` updates and return the summary dict (also written to summary.json).

    config: the algorithm's config dataclass (None = defaults, e.g. `default_config("iql", expectile=0.9)`).
    eval_every: evaluate every this many updates and after the last (0 = only after the last; eval_episodes=0 or
      no env id = never). env_id: the environment to evaluate in (default: the dataset's).
    resume: continue from out_dir/checkpoint.pt. stop_at: stop after this many updates (a later resume continues).
    checkpoint_every: default eval_every (or 10% of steps when that is 0).
    tensorboard: also log every metrics row as TensorBoard scalars in out_dir/tb (needs `pip install tensorboard`).
    overwrite: without `resume`, whether an out_dir that holds a run may be replaced (its files are removed once
      the settings are checked); False refuses it with one line (the command line's default, `--overwrite`).
    progress: a bar over the updates (unit, rate, the first losses, and `load x/n cores` when the machine is
      oversubscribed), one bar per evaluation, and a time estimate once the first updates (`ESTIMATE_AFTER`) and
      the first evaluation are timed.

    Every setting is checked before the first update (and before anything is written): the device, the config,
    the evaluation environment (made once, its spaces checked against the dataset's), and on resume the
    checkpoint and the run's fingerprint (algorithm, config, steps, seed, evaluation settings, dataset contents).
    """
    st = _settings(algo, dataset, config, steps=steps, eval_every=eval_every, eval_episodes=eval_episodes,
                   device=device, env_id=env_id, resume=resume, checkpoint_every=checkpoint_every,
                   log_every=log_every, stop_at=stop_at, progress=progress, tensorboard=tensorboard,
                   has_out=out_dir is not None)
    stale: list[str] = []
    if out_dir is not None and not resume:  # refused before any work; removed once every setting is checked
        stale = check_fresh_out(str(out_dir), RUN_FILES, overwrite, "pass --resume to continue it or --overwrite to "
                                "start it afresh")
    st.torch_device = resolve_device(device)
    st.config = default_config(algo) if config is None else config
    out = Path(out_dir) if out_dir is not None else None

    set_seed(seed)
    spec = PolicySpec.from_dataset(dataset, env_id=st.env_id)
    if st.do_eval:  # an unknown env id or one whose spaces do not fit fails now, not after training
        check_env_fits(spec, st.env_id)
    run = _SeedRun(st, seed, spec, out, stale)
    torch.set_rng_state(run.torch_rng)  # a resumed run continues its stream (a fresh one: no change)
    policy, sampler = run.policy, run.sampler
    return _loop(st, [run], lambda: [policy.update(sampler())], lambda: None, lambda i: torch.get_rng_state())[0]


def seed_folder(out_dir: str | Path, seed: int) -> Path:
    """Where `train_seeds` writes seed `seed`'s run: OUT/seed_<seed>."""
    return Path(out_dir) / f"seed_{seed}"


@denormals_flushed()
def train_seeds(
    algo: str,
    dataset: EpisodeDataset | Sequence[EpisodeDataset],
    config: Any = None,
    *,
    seeds: Sequence[int],
    out_dir: str | Path | None = None,
    out_dirs: Sequence[str | Path] | None = None,
    steps: int = 100_000,
    eval_every: int = 5000,
    eval_episodes: int = 10,
    device: str = "cpu",
    env_id: str | None = None,
    resume: bool = False,
    checkpoint_every: int | None = None,
    log_every: int = 100,
    stop_at: int | None = None,
    progress: bool = True,
    overwrite: bool = True,
    tensorboard: bool = False,
    batched: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """`train_policy` for each of `seeds`, in one process; returns their summaries in seed order.

    dataset: one dataset for every seed, or one per seed (in seed order) of the same environment, spaces and
      number of transitions, e.g. one dataset relabeled with each seed's own learned reward; seed s then trains
      on its own dataset exactly as `train_policy(dataset=its dataset, seed=s)` does.
    Seed s's run goes to `seed_folder(out_dir, s)` (OUT/seed_<s>/), or to the i-th of `out_dirs` (one folder per
    seed, e.g. a sweep's run folders), and holds what `train_policy(seed=s)` writes there: the same config, metrics rows, checkpoints (`pbrl train --resume` continues either) and summary, with
    the same numbers up to float rounding. The seeds train as one batched model (`pbrl.policies.seeds.SeedBatch`)
    when the algorithm's update is written as phases and `batched`; otherwise, or when resumed checkpoints are
    at different steps, one after another (said through `log`). Each seed keeps its own batches, noise and
    evaluation episodes (seed + 10000, as a separate run). The metrics rows' `perf/steps_per_s` is the batched
    model's update rate (every seed advances at it).
    """
    from pbrl.policies.seeds import SeedBatch, seed_batchable

    say = log or (lambda line: print(line, flush=True))
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise PbrlError("seeds: give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise PbrlError(f"seeds: each seed once, got {seeds}")
    datasets = _seed_datasets(dataset, seeds)
    st = _settings(algo, datasets[0], config, steps=steps, eval_every=eval_every, eval_episodes=eval_episodes,
                   device=device, env_id=env_id, resume=resume, checkpoint_every=checkpoint_every,
                   log_every=log_every, stop_at=stop_at, progress=progress, tensorboard=tensorboard,
                   has_out=out_dir is not None or out_dirs is not None)
    if out_dirs is not None:
        if out_dir is not None or len(out_dirs) != len(seeds):
            raise PbrlError("out_dirs: one folder per seed, and no out_dir beside it")
        outs: list[Path | None] = [Path(o) for o in out_dirs]
    else:
        outs = [seed_folder(out_dir, s) if out_dir is not None else None for s in seeds]
    stale: list[list[str]] = [[] for _ in seeds]
    if outs[0] is not None and not resume:  # every seed's folder is checked before any work
        stale = [check_fresh_out(str(o), RUN_FILES, overwrite, "pass --resume to continue it or --overwrite to "
                                 "start it afresh") for o in outs]
    st.torch_device = resolve_device(device)
    st.config = default_config(algo) if config is None else config

    def one_by_one(why: str) -> list[dict[str, Any]]:
        say(f"{algo}: training {len(seeds)} seeds one after another ({why})")
        return [
            train_policy(algo, ds, st.config, steps=steps, seed=s, out_dir=o, eval_every=eval_every,
                         eval_episodes=eval_episodes, device=device, env_id=env_id, resume=resume,
                         checkpoint_every=checkpoint_every, log_every=log_every, stop_at=stop_at, progress=progress,
                         overwrite=overwrite, tensorboard=tensorboard)
            for s, o, ds in zip(seeds, outs, datasets)
        ]

    # each seed's spec from its own data (its return range follows its rewards), as its separate run's
    specs = [PolicySpec.from_dataset(ds, env_id=st.env_id) for ds in datasets]
    if st.do_eval:  # the datasets share their spaces: one check serves every seed
        check_env_fits(specs[0], st.env_id)
    if not batched or len(seeds) == 1:
        return one_by_one("batching off" if not batched else "one seed")
    why = seed_batchable(make_policy(algo, specs[0], st.config, total_steps=steps))
    if why is not None:
        return one_by_one(why)
    if resume:  # checkpoints at different steps (a run killed while saving) cannot share one model
        at = {}
        for s, o in zip(seeds, outs):
            assert o is not None
            ckpt = o / "checkpoint.pt"
            if not ckpt.is_file():
                raise ResumeRefused(f"nothing to resume: {ckpt} does not exist")
            at[s] = int(safe_torch_load(ckpt, map_location="cpu", what="training checkpoint").get("state", {})
                        .get("step", -1))
        if len(set(at.values())) != 1:
            return one_by_one(f"their checkpoints are at different steps: {at}")
    runs = [_SeedRun(st, s, spec, o, stale_s, ds)
            for s, spec, o, stale_s, ds in zip(seeds, specs, outs, stale, datasets)]
    noise = []
    for run in runs:  # each seed's own torch stream: a CPU generator (a CUDA one seeded like a separate run's)
        g = torch.Generator()
        g.set_state(run.torch_rng)
        if st.torch_device.type == "cuda":
            g = torch.Generator(st.torch_device).manual_seed(run.seed)
        noise.append(g)
    batch = SeedBatch([r.policy for r in runs], [r.sampler for r in runs], noise)
    own = f" (each on its own data: {', '.join(sorted(batch.own))} differ)" if batch.own else ""
    say(f"{algo}: training seeds {seeds} as one batched model{own}")

    def rng(i: int) -> torch.Tensor:
        return noise[i].get_state() if noise[i].device.type == "cpu" else runs[i].torch_rng

    return _loop(st, runs, batch.update, batch.unstack, rng)


def _seed_datasets(dataset: EpisodeDataset | Sequence[EpisodeDataset], seeds: list[int]) -> list[EpisodeDataset]:
    """One dataset per seed: the one given for all, or the given list, checked to be seeds of one run (same
    environment, observation and action spaces, number of transitions); a PbrlError names what differs."""
    if isinstance(dataset, EpisodeDataset):
        return [dataset] * len(seeds)
    datasets = list(dataset)
    if len(datasets) != len(seeds):
        raise PbrlError(f"datasets: one per seed, got {len(datasets)} for seeds {seeds}")
    if not all(isinstance(d, EpisodeDataset) for d in datasets):
        raise PbrlError("datasets: expected EpisodeDataset objects, one per seed")
    first = datasets[0]

    def facts(d: EpisodeDataset) -> dict[str, Any]:
        return {
            "env id": d.env_id,
            "number of transitions": d.num_transitions,
            "observation shape": tuple(d.observations_all.shape[1:]),
            "observation dtype": str(d.observations_all.dtype),
            "action space": repr(d.action_space),
            "action shape": tuple(d.actions.shape[1:]),
        }

    want = facts(first)
    for s, d in zip(seeds[1:], datasets[1:]):
        for what, value in facts(d).items():
            if value != want[what]:
                raise PbrlError(f"datasets: seed {s}'s dataset {d.name!r} has {what} {value}, seed {seeds[0]}'s "
                                f"{first.name!r} {want[what]}; seeds trained together need datasets of one "
                                f"environment, spaces and size")
    return datasets


# ---------------------------------------------------------------- sweep runner
RECORD_KEYS = ("algo", "dataset", "steps", "seed", "eval_every", "eval_episodes", "policy", "device", "env_id")
"""What a grid row of `run_record` may set (`policy`: config overrides, e.g. {"hidden": [64, 64]})."""


def _record_args(config: dict[str, Any]) -> dict[str, Any]:
    from pbrl.policies.base import check_overrides

    unknown = sorted(set(config) - set(RECORD_KEYS) - {"threads"})
    if unknown or "algo" not in config or "dataset" not in config:
        raise PbrlError(f"grid config: run_record needs algo and dataset and may set {list(RECORD_KEYS)}; "
                        f"unknown {unknown}")
    algo = str(config["algo"])
    return dict(
        algo=algo,
        config=default_config(algo, **check_overrides(algo, dict(config.get("policy", {})), "policy")),
        steps=int(config.get("steps", 100_000)),
        eval_every=int(config.get("eval_every", 5000)),
        eval_episodes=int(config.get("eval_episodes", 10)),
        device=str(config.get("device", "cpu")),
        env_id=config.get("env_id"),
    )


def record_result(ds: EpisodeDataset, s: dict[str, Any]) -> dict[str, Any]:
    """What the tables read from one run's summary (`pbrl.tables`): scores, curve, throughput."""
    return {
        "dataset_name": ds.name,
        "dataset_transitions": ds.num_transitions,
        "dataset_episodes": ds.num_episodes,
        "dataset_sha256": dataset_fingerprint(ds),  # which build of the dataset (tables.build_lines)
        "last_score": s.get("last_score"),
        "best_score": s.get("best_score"),
        "last_return_mean": s.get("last_return_mean"),
        "curve": [[e["step"], e["eval/normalized_score"]] for e in s.get("evaluations", [])
                  if e.get("eval/normalized_score") is not None],
        "steps_per_s": s.get("perf/steps_per_s"),
    }


def train_or_resume(algo: str, dataset: EpisodeDataset, config: Any, *, out_dir: str | Path,
                    **kw: Any) -> dict[str, Any]:
    """`train_policy` for a sweep's run folder: a stopped run of the same settings and data continues from its
    checkpoint; anything else in the folder (no checkpoint, another config or data) is replaced by a fresh run."""
    if (Path(out_dir) / "checkpoint.pt").is_file():
        try:
            return train_policy(algo, dataset, config, out_dir=out_dir, resume=True, **kw)
        except ResumeRefused:
            pass
    return train_policy(algo, dataset, config, out_dir=out_dir, overwrite=True, **kw)


def run_record(config: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """Sweep runner (`"runner": "pbrl.policies.trainer:run_record"`): one policy trained on a dataset's own rewards;
    returns what the tables read. Grid rows set `RECORD_KEYS`. Runs that differ only by seed go through
    `run_seeds` (one batched process) when the sweep groups them."""
    from pbrl.data import load_dataset

    args = _record_args(config)
    ds = load_dataset(str(config["dataset"]))
    algo, cfg = args.pop("algo"), args.pop("config")
    s = train_or_resume(algo, ds, cfg, seed=int(config.get("seed", 0)), out_dir=out_dir, progress=False, **args)
    return record_result(ds, s)


def _run_seeds(configs: list[dict[str, Any]], out_dirs: list[str]) -> list[dict[str, Any]]:
    """`run_record` for configs that differ only by seed: one `train_seeds` call, one result per config."""
    from pbrl.data import load_dataset

    args = _record_args(configs[0])
    ds = load_dataset(str(configs[0]["dataset"]))
    algo, cfg = args.pop("algo"), args.pop("config")
    seeds = [int(c.get("seed", 0)) for c in configs]
    kw = dict(seeds=seeds, out_dirs=out_dirs, progress=False, log=lambda _: None, **args)
    summaries = None
    if all((Path(d) / "checkpoint.pt").is_file() for d in out_dirs):  # the stopped group continues
        try:
            summaries = train_seeds(algo, ds, cfg, resume=True, **kw)
        except ResumeRefused:
            pass
    if summaries is None:
        summaries = train_seeds(algo, ds, cfg, overwrite=True, **kw)
    return [record_result(ds, s) for s in summaries]


def _batches_seeds(config: dict[str, Any]) -> bool:
    """Whether the sweep should group this config's seeds: algorithms whose update is written as phases, without
    actor dropout (see `pbrl.policies.seeds.seed_batchable`), and not CQL on a CPU; others run one process per
    seed."""
    from pbrl.policies.base import algorithm

    try:
        cls, _ = algorithm(str(config.get("algo")))
    except PbrlError:
        return False  # the run itself reports the bad name
    if str(config.get("algo")) == "cql" and str(config.get("device", "cpu")) == "cpu":
        return False  # batched CQL on a CPU runs below separate runs' aggregate rate (results/seed_batching.md)
    return cls.phases is not Policy.phases and not dict(config.get("policy", {})).get("actor_dropout", 0)


# the sweep's seed-batching protocol (pbrl.sweep.seed_groups)
run_record.run_seeds = _run_seeds  # type: ignore[attr-defined]
run_record.batches_seeds = _batches_seeds  # type: ignore[attr-defined]
run_record.progress = training_progress  # type: ignore[attr-defined]  # a run folder's updates and rate
