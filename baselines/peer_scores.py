"""Peer score check: pbrl's IQL and TD3+BC beside d3rlpy's on the same suite dataset, budget and evaluation episodes.

    PYTHONPATH=. PBRL_D3RLPY_PYTHON=PY python baselines/peer_scores.py --budget peer   # 100k updates, 3 seeds
    PYTHONPATH=. PBRL_D3RLPY_PYTHON=PY python baselines/peer_scores.py --budget ci     # minutes: 2k updates, 1 seed

PY is an interpreter with d3rlpy 2.8.1 that also sees pbrl's packages (d3rlpy pins gymnasium 1.0, so it stays out of
pbrl's environment; the set-up is in `baselines/policy_throughput.py`'s docstring). The d3rlpy runs read the same
dataset through `pbrl.data.load_dataset` and are evaluated by the same `pbrl.policies.evaluation.evaluate`, with the
same episode seeds as pbrl's trainer (seed + 10000, seed + 10001, ...), so only the training differs.

Each library runs at its own published settings for D4RL locomotion, which is what its users would run:
- pbrl: `pbrl train iql|td3bc` defaults (observations z-scored, actions in [-1, 1]; IQL's actor lr cosine-decayed);
  the column pbrl-IQL-rscale also scales the rewards as d3rlpy's IQL does (the one setting the IQL recipes differ in).
- d3rlpy: its reproduction scripts (`reproductions/offline/iql.py`, `td3_plus_bc.py`): IQL with
  `ReturnBasedRewardScaler(multiplier=1000)` and a cosine actor lr over the run, TD3+BC with
  `StandardObservationScaler`. Both: lr 3e-4, batch 256, 256x256 MLPs, tau 0.005, gamma 0.99.

Runs go through the resumable sweep (finished runs are skipped; records under runs/sweeps/peer_scores-<budget>/, copied
to results/records/ to commit) and the table is written from the records: results/peer_scores-<budget>.md, mean ±
std over seeds per column (`pbrl table results/records/peer_scores-<budget>` regenerates it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
D3RLPY_ENV = "PBRL_D3RLPY_PYTHON"
EVAL_SEED_OFFSET = 10_000  # pbrl's trainer evaluates with seed + 10000 (pbrl.policies.trainer)

BUDGETS: dict[str, dict[str, Any]] = {
    "ci": {"datasets": ["hopper-medium"], "seeds": [0], "steps": 2_000, "eval_every": 1_000, "eval_episodes": 3},
    "peer": {"datasets": ["hopper-medium"], "seeds": [0, 1, 2], "steps": 100_000, "eval_every": 10_000,
             "eval_episodes": 10},
}
COLUMNS = [
    {"name": "pbrl-IQL", "lib": "pbrl", "algo": "iql"},
    {"name": "d3rlpy-IQL", "lib": "d3rlpy", "algo": "iql"},
    {"name": "pbrl-TD3BC", "lib": "pbrl", "algo": "td3bc"},
    {"name": "d3rlpy-TD3BC", "lib": "d3rlpy", "algo": "td3bc"},
    # pbrl's IQL on rewards scaled as d3rlpy's and CORL's IQL scale them (x 1000 / (max - min episode return)):
    # isolates the one setting in which the two IQL recipes differ
    {"name": "pbrl-IQL-rscale", "lib": "pbrl", "algo": "iql", "reward_scale": True},
    # pbrl's IQL with d3rlpy's floor of the actor's log std (-5; pbrl's and CORL's: -20), the IQL recipes' other
    # difference (found reading both side by side). Measured: the log std stays near -1.5, so neither floor binds
    # and this column is pbrl's IQL rerun (results/README.md, Peer scores)
    {"name": "pbrl-IQL-logstd5", "lib": "pbrl", "algo": "iql", "policy": {"log_std_min": -5.0}},
    # the IQL recipes' remaining difference: d3rlpy's IQL trains on raw observations, pbrl's (and CORL's) z-scores
    # them (the TD3+BC recipes both z-score, and their scores agree). Each library run the other way:
    {"name": "pbrl-IQL-rscale-rawobs", "lib": "pbrl", "algo": "iql", "reward_scale": True,
     "policy": {"normalize_obs": False}},
    {"name": "d3rlpy-IQL-zscore", "lib": "d3rlpy", "algo": "iql", "obs_scaler": True},
]

# the comparisons the check exists for (Welch's t-test in the table); rscale is the like-for-like IQL recipe
PAIRS = [["pbrl-IQL", "d3rlpy-IQL"], ["pbrl-IQL-rscale", "d3rlpy-IQL"], ["pbrl-TD3BC", "d3rlpy-TD3BC"],
         ["pbrl-IQL-logstd5", "d3rlpy-IQL"], ["pbrl-IQL-logstd5", "pbrl-IQL"],
         ["pbrl-IQL-rscale-rawobs", "d3rlpy-IQL"], ["d3rlpy-IQL-zscore", "d3rlpy-IQL"],
         ["pbrl-IQL-rscale-rawobs", "pbrl-IQL-rscale"], ["d3rlpy-IQL-zscore", "pbrl-IQL-rscale"]]


def d3rlpy_arrays(ds) -> dict[str, np.ndarray]:
    """The flat arrays d3rlpy's MDPDataset takes: every episode's last transition is marked as its end (a
    termination, else a timeout), since d3rlpy splits episodes on terminals | timeouts."""
    n = ds.num_transitions
    terminals = ds.terminations.astype(np.float32)
    timeouts = ds.truncations.astype(np.float32)
    ends = ds.episode_starts[1:] - 1  # [E] the last transition of each episode
    timeouts[ends] = np.where(terminals[ends] > 0, 0.0, 1.0)
    return {
        "observations": ds.observations.reshape(n, -1).astype(np.float32),
        "actions": ds.actions.reshape(n, -1).astype(np.float32),
        "rewards": ds.rewards.astype(np.float32),
        "terminals": terminals,
        "timeouts": timeouts,
    }


class D3rlpyPolicy:
    """What `pbrl.policies.evaluation.evaluate` calls (spec, reset, act) around a d3rlpy algorithm: its greedy
    action, clipped to the action space's bounds."""

    def __init__(self, algo: Any, spec: Any) -> None:
        self.algo, self.spec = algo, spec
        self.low, self.high = np.asarray(spec.action_low), np.asarray(spec.action_high)

    def reset(self, n: int) -> None:
        pass

    def act(self, obs: np.ndarray) -> np.ndarray:
        a = self.algo.predict(np.asarray(obs, dtype=np.float32).reshape(len(obs), -1))  # [n, A]
        return np.clip(a, self.low, self.high)


def _d3rlpy_train(config: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """One d3rlpy run (called inside the d3rlpy interpreter): train, evaluate every eval_every updates."""
    import d3rlpy
    import torch

    from pbrl.data import load_dataset
    from pbrl.policies.base import PolicySpec
    from pbrl.policies.evaluation import evaluate, normalize_returns

    torch.set_num_threads(int(config.get("threads", 1)))
    ds = load_dataset(config["dataset"])
    spec = PolicySpec.from_dataset(ds)
    mdp = d3rlpy.dataset.MDPDataset(**d3rlpy_arrays(ds))
    d3rlpy.seed(int(config["seed"]))
    steps, every = int(config["steps"]), int(config["eval_every"])
    common = dict(actor_learning_rate=3e-4, critic_learning_rate=3e-4, batch_size=256)
    if config["algo"] == "iql":
        cosine = d3rlpy.optimizers.CosineAnnealingLRFactory(T_max=steps)
        algo = d3rlpy.algos.IQLConfig(
            **common, weight_temp=3.0, max_weight=100.0, expectile=0.7,
            reward_scaler=d3rlpy.preprocessing.ReturnBasedRewardScaler(multiplier=1000.0),
            actor_optim_factory=d3rlpy.optimizers.AdamFactory(lr_scheduler_factory=cosine),
            observation_scaler=d3rlpy.preprocessing.StandardObservationScaler() if config.get("obs_scaler") else None,
        ).create(device="cpu")
    elif config["algo"] == "td3bc":
        algo = d3rlpy.algos.TD3PlusBCConfig(
            **common, target_smoothing_sigma=0.2, target_smoothing_clip=0.5, alpha=2.5, update_actor_interval=2,
            observation_scaler=d3rlpy.preprocessing.StandardObservationScaler(),
        ).create(device="cpu")
    else:
        raise ValueError(f"algo: expected iql or td3bc, got {config['algo']!r}")
    policy = D3rlpyPolicy(algo, spec)
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    train_s = 0.0
    fitter = algo.fitter(mdp, n_steps=steps, n_steps_per_epoch=every, show_progress=False, save_interval=10**9,
                         logger_adapter=d3rlpy.logging.NoopAdapterFactory(), with_timestamp=False)
    t_epoch = time.perf_counter()
    for epoch, _metrics in fitter:
        train_s += time.perf_counter() - t_epoch
        returns = evaluate(policy, spec.env_id or ds.env_id, int(config["eval_episodes"]),
                           seed=int(config["seed"]) + EVAL_SEED_OFFSET)
        scores = normalize_returns(policy, returns)
        history.append({"step": epoch * every, "return_mean": float(returns.mean()),
                        "score": None if scores is None else float(scores.mean())})
        score = history[-1]["score"]
        print(f"d3rlpy {config['algo']} seed {config['seed']}: {epoch * every}/{steps} updates, "
              f"{epoch * every / train_s:.0f} updates/s, score {'-' if score is None else f'{score:.1f}'}", flush=True)
        t_epoch = time.perf_counter()
    last = history[-1]
    return {
        "dataset_name": ds.name,
        "dataset_transitions": ds.num_transitions,
        "last_score": last["score"],
        "best_score": max(h["score"] for h in history) if last["score"] is not None else None,
        "last_return_mean": last["return_mean"],
        "curve": [[h["step"], h["score"]] for h in history],
        "steps_per_s": steps / train_s,
        "wall_s": time.perf_counter() - t0,
        "library": f"d3rlpy {d3rlpy.__version__}",
    }


def run_record(config: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """Sweep runner: one run of either library; returns what the tables read."""
    import torch

    config = {"threads": torch.get_num_threads(), **config}
    if config["lib"] == "d3rlpy":
        py = os.environ.get(D3RLPY_ENV)
        if not py:
            raise RuntimeError(f"set {D3RLPY_ENV} to an interpreter with d3rlpy 2.8.1 (see this script's docstring)")
        result_file = os.path.join(out_dir, "result.json")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        # the worker's progress lines (updates, rate, score per evaluation) go to this process's stdout
        proc = subprocess.run([py, "-m", "baselines.peer_scores", "--d3rlpy-worker", json.dumps(config), out_dir],
                              cwd=ROOT, env=env, stdout=None, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"d3rlpy worker failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        with open(result_file, encoding="utf-8") as f:
            return json.load(f)

    import pbrl
    from pbrl.data import load_dataset
    from pbrl.policies.trainer import record_result, train_or_resume

    ds = load_dataset(config["dataset"])
    if config.get("reward_scale"):
        from pbrl.policies.iql import return_range_scale

        # the same factor as `--set reward_scale=true`, applied to the data (the column predates the option)
        ds = ds.with_rewards(ds.rewards * return_range_scale(ds.episode_returns()),
                             provenance={"reward_scale": "x 1000 / (max - min episode return)"})
    from pbrl.policies.base import default_config

    pcfg = default_config(config["algo"], **config.get("policy", {}))
    s = train_or_resume(config["algo"], ds, pcfg, steps=int(config["steps"]), seed=int(config["seed"]),
                        out_dir=out_dir, eval_every=int(config["eval_every"]),
                        eval_episodes=int(config["eval_episodes"]), progress=False)
    return {**record_result(ds, s), "library": f"pbrl {pbrl.__version__}"}


def make_grid(budget: str, columns: list[dict[str, Any]] | None = None, seeds: list[int] | None = None) -> Any:
    """The budget's grid: every column (or `columns`) and the budget's seeds (or `seeds`). The committed records'
    grid.json is this grid with every column, so `pbrl table` tables them all."""
    from baselines.dtr_table1 import dataset_id
    from pbrl.sweep import Grid

    b = BUDGETS[budget]
    return Grid(
        name=f"peer_scores-{budget}",
        runner="baselines.peer_scores:run_record",
        budget=budget,
        base={k: b[k] for k in ("steps", "eval_every", "eval_episodes")},
        axes={"dataset": [dataset_id(n) for n in b["datasets"]], "seed": seeds or b["seeds"]},
        columns=columns or COLUMNS,
        meta={
            "title": f"Peer score check: pbrl vs d3rlpy 2.8.1 — budget {budget}",
            "pairs": PAIRS,
            "reference_note": "Both libraries at their published D4RL-locomotion settings on pbrl's hopper-medium "
            "(built locally on gymnasium v5), the same evaluation episodes and seeds; "
            f"{b['steps']} updates, batch 256, {b['eval_episodes']} evaluation episodes every {b['eval_every']} "
            "updates, CPU, 1 thread per run.",
        },
    )


def _progress(run_dir: str) -> tuple[str | None, float]:
    """The sweep's progress line for a pbrl column's run folder (d3rlpy's worker reports through its stdout)."""
    from pbrl.runs import training_progress

    return training_progress(run_dir)


run_record.progress = _progress  # type: ignore[attr-defined]


def main() -> None:
    from baselines.dtr_table1 import ensure_built, positive_int
    from pbrl.errors import fail
    from pbrl.sweep import sweep_and_table

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", choices=sorted(BUDGETS), default="ci")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=positive_int, default=None,
                    help="torch threads per worker (the committed records: 1)")
    ap.add_argument("--out", default="runs/sweeps", help="sweep folder (its records/ are committed under "
                    "results/records/)")
    ap.add_argument("--results", default="results")
    ap.add_argument("--columns", nargs="+", metavar="NAME", help="run only these columns (the run ids, and so the "
                    "records, are those of the whole grid: the table from all records is `pbrl table`'s)")
    ap.add_argument("--seeds", nargs="+", type=int, help="run only these of the budget's seeds")
    ap.add_argument("--d3rlpy-worker", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.d3rlpy_worker:
        config, out = json.loads(args.d3rlpy_worker[0]), args.d3rlpy_worker[1]
        os.makedirs(out, exist_ok=True)
        result = _d3rlpy_train(config, out)
        tmp = os.path.join(out, "result.json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(result, f)
        os.replace(tmp, os.path.join(out, "result.json"))
        return
    b = dict(BUDGETS[args.budget])
    columns = COLUMNS
    if args.columns:
        unknown = sorted(set(args.columns) - {c["name"] for c in COLUMNS})
        if unknown:
            fail(f"--columns: unknown {', '.join(unknown)} (known: {', '.join(c['name'] for c in COLUMNS)})")
        columns = [c for c in COLUMNS if c["name"] in args.columns]
    if any(c["lib"] == "d3rlpy" for c in columns) and not os.environ.get(D3RLPY_ENV):
        fail(f"set {D3RLPY_ENV} to an interpreter with d3rlpy 2.8.1 (see --help), or run only pbrl's columns "
             "(--columns)")
    if args.seeds:
        if not set(args.seeds) <= set(b["seeds"]):
            fail(f"--seeds: the {args.budget} budget's seeds are {b['seeds']}")
        b["seeds"] = [s for s in b["seeds"] if s in args.seeds]
    ensure_built(b["datasets"])
    runs = len(b["datasets"]) * len(b["seeds"]) * len(columns)
    print(f"peer_scores-{args.budget}: {runs} runs of {b['steps']} updates; at about 100 (pbrl) and 70 (d3rlpy) "
          f"updates/s on one thread this takes hours — it resumes where it stopped", flush=True)
    grid = make_grid(args.budget, columns, b["seeds"])
    for path in sweep_and_table(grid, args.out, args.results, workers=args.workers, threads=args.threads).values():
        print(f"wrote {path}")


if __name__ == "__main__":
    if "--d3rlpy-worker" in sys.argv:  # d3rlpy's interpreter: pbrl's dependencies need not be there
        main()
    else:
        from pbrl.errors import run_script

        run_script(main)
