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
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pbrl.data import EpisodeDataset
from pbrl.errors import PbrlError
from pbrl.policies.base import PolicySpec, default_config, make_policy
from pbrl.policies.evaluation import check_env_fits, evaluate, normalize_returns
from pbrl.runs import RunFolder
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
    if steps < 1:
        raise PbrlError(f"steps must be >= 1, got {steps}")
    if eval_every < 0 or eval_episodes < 0:
        raise PbrlError("eval_every and eval_episodes must be >= 0")
    if resume and out_dir is None:
        raise PbrlError("resume needs out_dir (the folder holding checkpoint.pt)")
    stale: list[str] = []
    if out_dir is not None and not resume:  # refused before any work; removed once every setting is checked
        stale = check_fresh_out(str(out_dir), RUN_FILES, overwrite, "pass --resume to continue it or --overwrite to "
                                "start it afresh")
    torch_device = resolve_device(device)
    config = default_config(algo) if config is None else config
    out = Path(out_dir) if out_dir is not None else None
    env_id = env_id or dataset.env_id
    do_eval = eval_episodes > 0 and env_id is not None
    checkpoint_every = checkpoint_every or eval_every or max(1, steps // 10)

    set_seed(seed)
    spec = PolicySpec.from_dataset(dataset, env_id=env_id)
    if do_eval:  # an unknown env id or one whose spaces do not fit fails now, not after training
        check_env_fits(spec, env_id)
    policy = make_policy(algo, spec, config, total_steps=steps).to(torch_device)
    generator = torch.Generator().manual_seed(seed)  # batch sampling (CPU; indices are moved to the device)
    sampler = policy.make_sampler(dataset, generator)
    run_info = {
        "algo": algo,
        "config": dataclasses.asdict(config),
        "steps": steps,
        "seed": seed,
        "eval_every": eval_every,
        "eval_episodes": eval_episodes,
        "device": device,
        "env_id": env_id,
        "dataset": dataset.name,
        "dataset_metadata": json.loads(dumps_json(dataset.metadata)),
        "git_revision": git_revision(),
        "threads": torch.get_num_threads(),  # the torch CPU threads the run used (pbrl.utils.choose_threads)
    }
    # what a resume must match (the device may change: CPU and GPU runs continue each other)
    fingerprint = {
        **{k: run_info[k] for k in ("algo", "config", "steps", "seed", "eval_every", "eval_episodes", "env_id")},
        "dataset": dataset.name,
        "dataset_sha256": dataset_fingerprint(dataset),
    }

    history: list[dict[str, Any]] = []  # eval records
    start = 0
    run: RunFolder | None = None
    if out is not None:
        ckpt = out / "checkpoint.pt"
        if resume and not ckpt.is_file():
            raise PbrlError(f"nothing to resume: {ckpt} does not exist")
        state = None
        if resume:
            state = safe_torch_load(ckpt, map_location=torch_device, what="training checkpoint")
            try:
                saved = json.loads(state["extra"]["run"])
                saved_core = {key: saved[key] for key in ("algo", "config", "steps", "seed")}
            except (TypeError, KeyError, ValueError):
                raise PbrlError(f"{ckpt}: not a pbrl training checkpoint (no run settings)") from None
            for key, value in saved_core.items():  # checkpoints of runs that predate config fingerprints
                if value != json.loads(dumps_json(run_info[key])):
                    raise PbrlError(f"{ckpt}: cannot resume, {key} differs ({value} vs {run_info[key]})")
        remove_paths(stale)  # --overwrite: the old run's checkpoint, policy and summary go before the new run writes
        # checks the saved fingerprint (resume), then writes config.json and (fresh run) empties metrics.jsonl
        # the keys readers of earlier releases use (algo, steps, dataset, ...) stay at the top level
        run = RunFolder(out, run_info["config"], fingerprint=fingerprint, resume=resume, device=device, extra=run_info,
                        tensorboard=tensorboard)
        if state is not None:
            try:
                policy.load_training_state(state["state"])
                generator.set_state(state["extra"]["generator"])
                torch.set_rng_state(state["extra"]["torch_rng"])
                history = json.loads(state["extra"]["history"])
            except (TypeError, KeyError, ValueError, RuntimeError) as e:
                msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
                raise PbrlError(f"{ckpt}: not a pbrl training checkpoint ({type(e).__name__}: {msg})") from None
            start = policy.step
            run.rewind(start)  # rows logged after the checkpoint were lost with the killed run: they come again

    def save_checkpoint(path: Path) -> None:
        policy.save(
            path,
            extra={
                "run": json.dumps(run_info),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": json.dumps(history),
            },
        )

    def log(row: dict[str, Any]) -> None:
        if run is not None:
            run.log(row)

    def run_eval(step: int) -> dict[str, Any]:
        returns = evaluate(policy, env_id, eval_episodes, seed=seed + 10_000, progress=progress, desc=f"eval @{step}")
        scores = normalize_returns(policy, returns)
        rec = {
            "step": step,
            "eval/return_mean": float(returns.mean()),
            "eval/return_std": float(returns.std()),
            "eval/normalized_score": None if scores is None else float(scores.mean()),
            "eval/returns": returns.tolist(),
        }
        history.append(rec)
        return rec

    stop = min(steps, stop_at) if stop_at is not None else steps
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc=algo, unit="step", dynamic_ncols=True, mininterval=1.0)
    # the evaluations this call will run, for the time estimate
    n_evals = sum(1 for s_ in range(start + 1, stop + 1) if (eval_every and s_ % eval_every == 0) or s_ == steps)
    n_evals = n_evals if do_eval else 0
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
        metrics = policy.update(sampler())
        window_n += 1
        if "rate" not in estimate and step < stop:
            spent = time.perf_counter() - t0 - paused
            if step - start >= probe or (spent >= ESTIMATE_AFTER_S and step - start >= 5):
                estimate["rate"] = (step - start) / max(spent, 1e-9)
                say_estimate()
        if step % log_every == 0 or step == steps:
            now = time.perf_counter()
            steps_per_s = window_n / max(now - window_t - paused_window, 1e-9)
            window_t, window_n, paused_window = now, 0, 0.0
            log({"step": step, **metrics, "perf/steps_per_s": steps_per_s})
            if bar is not None:
                short = [f"{k.split('/')[-1]}={v:.3g}" for k, v in list(metrics.items())[:3]]
                note = load_note()  # the machine is oversubscribed: every thread runs part of the time
                short.append(f"sps={steps_per_s:.3g}")  # updates only (the bar's own rate counts evaluations too)
                bar.set_postfix_str(", ".join(short + ([note] if note else [])))
        if do_eval and ((eval_every and step % eval_every == 0) or step == steps):
            t_eval = time.perf_counter()
            rec = run_eval(step)
            log(rec)
            if "eval_s" not in estimate:
                estimate["eval_s"] = time.perf_counter() - t_eval
                if "rate" in estimate and n_evals > 1:
                    say_estimate()
            if bar is not None:
                bar.write(
                    f"step {step}: return {rec['eval/return_mean']:.1f}"
                    + (
                        f", score {rec['eval/normalized_score']:.1f}"
                        if rec["eval/normalized_score"] is not None
                        else ""
                    )
                )
            paused_window += time.perf_counter() - t_eval
            paused += time.perf_counter() - t_eval
        if bar is not None:
            bar.update(1)
        if out is not None and (step % checkpoint_every == 0 or step == stop):
            t_save = time.perf_counter()
            save_checkpoint(out / "checkpoint.pt")
            paused_window += time.perf_counter() - t_save
            paused += time.perf_counter() - t_save
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t0 - paused

    scores = [r["eval/normalized_score"] for r in history]
    last = history[-1] if history else None
    best = max(history, key=lambda r: r["eval/return_mean"]) if history else None
    summary = {
        "algo": algo,
        "dataset": dataset.name,
        "env_id": env_id,
        "seed": seed,
        "steps": steps,
        "steps_done": policy.step,
        "finished": policy.step >= steps,
        "last_score": None if last is None else last["eval/normalized_score"],
        "best_score": None if best is None or None in scores else max(scores),
        "last_return_mean": None if last is None else last["eval/return_mean"],
        "best_return_mean": None if best is None else best["eval/return_mean"],
        "best_step": None if best is None else best["step"],
        "last_returns": None if last is None else last["eval/returns"],
        "evaluations": [{k: v for k, v in r.items() if k != "eval/returns"} for r in history],
        # None when this call ran no update (e.g. resuming a finished run): there is no throughput to report
        "perf/steps_per_s": (policy.step - start) / max(elapsed, 1e-9) if policy.step > start else None,
    }
    if run is not None:
        if policy.step >= steps:
            save_checkpoint(out / "policy.pt")
        run.write_summary(summary)
    return json.loads(dumps_json(summary))
