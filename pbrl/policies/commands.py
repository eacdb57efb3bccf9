"""`pbrl train` and `pbrl eval`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from pbrl.errors import PbrlError
from pbrl.policies.base import AlgoName as Algo


def parse_overrides(items: list[str]) -> dict[str, object]:
    """`key=value` strings -> dict; values read as JSON when they parse (numbers, lists, true/false, null)."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PbrlError(f"--set expects key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
        if isinstance(out[key], list):
            out[key] = tuple(out[key])
    return out


@dataclass
class TrainCommand:
    """Train an offline policy on a dataset; writes config, metrics.jsonl, checkpoints and summary.json to --out."""

    algo: tyro.conf.Positional[Algo]
    """Algorithm (qt = DTR with a constant policy-improvement weight)."""
    spec: tyro.conf.Positional[str]
    """Dataset: a Minari id (it carries its env), d4rl:<path>, or a local path."""
    steps: int = 100_000
    """Gradient updates."""
    seed: int = 0
    """Seed of initialization, batches and evaluation."""
    seeds: list[int] | None = None
    """Train these seeds instead of --seed, in one process as one batched model (iql, td3bc, bc, cql; the others
    one after another), each into OUT/seed_<s>/ with its own batches, noise, evaluation and checkpoints. On a CPU
    it pays at small networks; at 256-wide ones it runs near separate runs' rate (results/seed_batching.md)."""
    eval_every: int = 5000
    """Evaluate every this many updates (and after the last; 0 = only after the last)."""
    eval_episodes: int = 10
    """Episodes per evaluation, run side by side in a vector env (0 = no evaluation)."""
    out: Annotated[str | None, tyro.conf.arg(metavar="DIR")] = None
    """Output folder (default runs/ALGO-DATASET-sSEED; with --seeds runs/ALGO-DATASET, one seed_<s>/ each)."""
    device: Annotated[str, tyro.conf.arg(metavar="DEVICE")] = "cpu"
    """Torch device."""
    env_id: Annotated[str | None, tyro.conf.arg(metavar="ENV_ID")] = None
    """Environment for evaluation (default: the dataset's)."""
    resume: bool = False
    """Continue from OUT/checkpoint.pt (same settings required)."""
    overwrite: bool = False
    """Replace the run already in OUT (without it, an OUT that holds a run is refused unless --resume)."""
    set: Annotated[list[str], tyro.conf.arg(name="set")] = field(default_factory=list)
    """Config overrides key=value, e.g. --set expectile=0.9 hidden=[512,512] (see the algorithm's config)."""
    threads: int | None = None
    """Torch CPU threads (default: the free cores, i.e. the cores minus the 1-minute load average)."""
    tensorboard: bool = False
    """Also log the metrics as TensorBoard scalars in OUT/tb (needs `pip install tensorboard`)."""

    def run(self) -> None:
        from pbrl.data import load_dataset
        from pbrl.policies.base import check_overrides, default_config
        from pbrl.policies.trainer import seed_folder, train_policy, train_seeds
        from pbrl.utils import RUN_FILES, check_fresh_out, resolve_device, threads_line, use_threads

        # settings first, before the (possibly large) dataset is read
        resolve_device(self.device, "--device")
        config = default_config(self.algo, **check_overrides(self.algo, parse_overrides(self.set)))
        hint = "pass --resume to continue it or --overwrite to start it afresh"
        seeds = self.seeds
        if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
            raise PbrlError(f"--seeds: give each seed once, got {seeds}")
        if self.out and not self.resume:
            for folder in [self.out] if seeds is None else [seed_folder(self.out, s) for s in seeds]:
                check_fresh_out(str(folder), RUN_FILES, self.overwrite, hint)
        n, note = use_threads(self.threads)
        what = f"{self.steps} steps" + ("" if seeds is None else f" x {len(seeds)} seeds")
        print(f"pbrl train {self.algo} on {self.spec}: {what}, {threads_line(n, note)}", flush=True)
        ds = load_dataset(self.spec)
        name = f"{self.algo}-{re.sub(r'[^A-Za-z0-9._-]+', '_', ds.name)}"
        out = self.out or str(Path("runs") / (name if seeds is not None else f"{name}-s{self.seed}"))
        common = dict(
            steps=self.steps,
            out_dir=out,
            eval_every=self.eval_every,
            eval_episodes=self.eval_episodes,
            device=self.device,
            env_id=self.env_id,
            resume=self.resume,
            overwrite=self.overwrite,
            tensorboard=self.tensorboard,
        )
        if seeds is not None:
            for summary in train_seeds(self.algo, ds, config, seeds=seeds, **common):
                print(f"seed {summary['seed']}: " + _summary_line(summary))
            print(f"outputs in {out}/seed_<s> for seeds {' '.join(map(str, seeds))}")
            return
        summary = train_policy(self.algo, ds, config, seed=self.seed, **common)
        print(_summary_line(summary))
        print(f"outputs in {out}")


@dataclass
class EvalCommand:
    """Evaluate a saved policy (checkpoint.pt or policy.pt) in its environment."""

    ckpt: tyro.conf.Positional[str]
    """Checkpoint file written by `pbrl train`."""
    episodes: int = 10
    """Episodes, run side by side in a vector env."""
    seed: int = 0
    """Seed of the first episode (episode i uses seed + i)."""
    env_id: Annotated[str | None, tyro.conf.arg(metavar="ENV_ID")] = None
    """Environment (default: the one the policy was trained for)."""
    device: Annotated[str, tyro.conf.arg(metavar="DEVICE")] = "cpu"
    """Torch device."""
    json_out: bool = False
    """Print one JSON object instead of a line of text."""
    threads: int | None = None
    """Torch CPU threads (default: the free cores, i.e. the cores minus the 1-minute load average)."""

    def run(self) -> None:
        import sys

        from pbrl.policies.base import load_policy
        from pbrl.policies.evaluation import check_env_fits, evaluate, normalize_returns
        from pbrl.utils import resolve_device, threads_line, use_threads

        resolve_device(self.device, "--device")
        n, note = use_threads(self.threads)
        # --json-out keeps stdout one JSON object: the first line goes to stderr there
        print(f"pbrl eval {self.ckpt}: {self.episodes} episodes, {threads_line(n, note)}",
              file=sys.stderr if self.json_out else sys.stdout, flush=True)
        policy, _ = load_policy(self.ckpt, device=self.device)
        env_id = self.env_id or policy.spec.env_id
        if not env_id:
            raise PbrlError(f"{self.ckpt}: the policy names no environment; pass --env-id")
        check_env_fits(policy.spec, env_id)
        returns = evaluate(policy, env_id, self.episodes, seed=self.seed, progress=True)
        scores = normalize_returns(policy, returns)
        result = {
            "checkpoint": self.ckpt,
            "env_id": env_id,
            "step": policy.step,
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "normalized_score": None if scores is None else float(scores.mean()),
            "returns": returns.tolist(),
        }
        if self.json_out:
            print(json.dumps(result))
            return
        line = f"{env_id}: return {returns.mean():.4g} +- {returns.std():.4g} over {self.episodes} episodes"
        if scores is not None:
            line += f", normalized score {scores.mean():.4g}"
        print(line)


def _summary_line(s: dict) -> str:
    """The run's summary in one line, floats to 4 significant digits (summary.json keeps them whole)."""
    sps = s["perf/steps_per_s"]
    speed = "no new updates" if sps is None else f"{sps:.4g} steps/s"
    parts = [f"{s['algo']} on {s['dataset']}: {s['steps_done']} steps, {speed}"]
    if s["last_return_mean"] is not None:
        parts.append(f"last return {s['last_return_mean']:.4g}")
    if s["last_score"] is not None:
        best = "n/a" if s["best_score"] is None else f"{s['best_score']:.4g}"
        parts.append(f"last score {s['last_score']:.4g}, best {best}")
    return "; ".join(parts)
