"""DTR Table 1 at the papers' budget on one CUDA device: measure, estimate, then run what fits and resume later.

    PYTHONPATH=. python baselines/dtr_table1_gpu.py --out $OUT/dtr_table1-paper --estimate-only
    PYTHONPATH=. python baselines/dtr_table1_gpu.py --out $OUT/dtr_table1-paper --budget-minutes 8
    PYTHONPATH=. python baselines/dtr_table1_gpu.py --device cpu --smoke --out runs/smoke   # the logic, in seconds
    PYTHONPATH=. python baselines/dtr_table1_gpu.py --out $OUT/x --steps-fraction 0.01 --budget-minutes 6  # a check

At the papers' budget one unit (a column on a dataset, 5 seeds) takes longer than a 10-minute device call (50k
DTR updates at the release's size alone), so the full table needs hours of device time: the estimate says how many.
Resuming on a fresh machine: put the committed records back first, e.g.
`mkdir -p $OUT/t/records && cp results/records/dtr_table1-paper/*.json $OUT/t/records/`, then `--out $OUT/t`.

The budget is `baselines/dtr_table1.py`'s `paper` entry, from the papers (see dtr.md):
- datasets: hopper / walker2d / halfcheetah x medium / medium-replay / medium-expert (pbrl's suite), 5 seeds;
- updates: Oracle-IQL, Pb-IQL, Pb-TD3BC, Pb-CQL 1M (CORL); Pb-DT 100k (CORL's DT); Pb-QT and DTR 50k (DTR release);
- transformers: DT at CORL's size (embed 128, 3 layers, 1 head, batch 64, K 20); QT / DTR at the release's (embed
  256, 4 layers, 4 heads, n_inner 1024, batch 256, K 20, dropout 0.1);
- rewards: 2000 scripted queries of 200 steps (exact teacher, tie band 10), the 3-member step MLP ensemble, 50
  epochs at most, DTR's member z-score; evaluation every 5000 updates, 10 episodes, the last one reported.

What it does, in order:
1. builds the first dataset if it is missing (timed: the build of every other missing one is estimated from it);
2. measures each column on the device: updates/s over `--measure-updates` updates after a warm-up (the seed-batched
   rate for columns whose seeds train as one model), one evaluation (the per-step cost of acting and stepping
   `eval_episodes` environments, times the environment's time limit, 1000 steps for locomotion: an upper bound,
   as episodes that end early are cheaper) and the reward stage (training for 1 and 2 epochs gives its fixed and per-epoch cost; the estimate
   charges all 50 epochs, another upper bound: training stops early at 0.968 train accuracy); the rates are kept
   in OUT/estimate.json and reused by later invocations on the same device (`--remeasure` to measure again);
3. prints the wall-time estimate per column and in total for the runs still to run, and with `--estimate-only`
   stops there;
4. runs the table in its order (dataset by dataset, column by column; each unit = one column on one dataset with
   all its seeds) through the resumable sweep (`pbrl.sweep.run_sweep`: runs with a record are skipped), with
   `--budget-minutes M` only the units whose estimate still fits into M minutes from the start; a later invocation
   resumes with the next unit. Records go to OUT/records/ (copy them to results/records/dtr_table1-paper/; `pbrl
   table results/records/dtr_table1-paper` tables them), and the table of what is done so far to --results.

Batching: the seeds of one MLP column (Oracle-IQL, Pb-IQL, Pb-TD3BC, Pb-CQL) run in one process and their policies
train as one batched model (`pbrl.pipeline.run_pipelines` -> `pbrl.policies.trainer.train_seeds`): every Pb-* seed
first learns its own reward from its own labels (seed after seed, as the estimate charges it), then the policies
train together, each on its own relabeled dataset (`SeedBatch` keeps the observations once and each seed's
rewards apart). DT / QT / DTR train with dropout inside the update and are not written as loss phases
(`seed_batchable`): their seeds run side by side in `--workers` processes on the one device. Datasets never batch
(different environments). The estimate assumes that a unit's parallel processes do not slow each other down:
compare it with the records' `wall_s` after the first budgeted run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "baselines")):  # the runner is imported as baselines.dtr_table1_gpu
    if p not in sys.path:
        sys.path.insert(0, p)

from dtr_table1 import BUDGETS, CI_DT, PAPER, columns, dataset_id  # noqa: E402  (baselines/dtr_table1.py)

from pbrl.errors import PbrlError, run_script  # noqa: E402

SMOKE = {
    "datasets": ["pendulum-medium-replay"],
    "seeds": [0, 1],
    "base": {"steps": 20, "eval_every": 10, "eval_episodes": 1, "queries": 20, "length": 10, "reward_epochs": 1},
}
"""A budget of seconds on a CPU for the logic (tests): the ci transformer, 20 updates."""
ESTIMATE_FILE = "estimate.json"
EVAL_HORIZON = 1000  # the suite's locomotion time limit (pendulum: 200); the estimate takes the env spec's


# ---------------------------------------------------------------- the estimate (pure arithmetic, tested by hand)
@dataclass(frozen=True)
class ColumnCost:
    """What one column costs on the device, measured."""

    steps_per_s: float
    """Updates per second of one run, or of the whole seed batch when `batched` (every seed advances at it)."""
    eval_s: float
    """Seconds of one evaluation of one run."""
    reward_fixed_s: float = 0.0
    """Seconds of the reward stage that do not scale with epochs (labels, relabel, report); 0 for the true reward."""
    reward_epoch_s: float = 0.0
    """Seconds per reward training epoch."""
    batched: bool = False
    """The column's seeds train as one batched model in one process."""


def evaluations(steps: int, eval_every: int) -> int:
    """Evaluations of a run: every `eval_every` updates and after the last (`pbrl.policies.trainer`)."""
    if eval_every <= 0:
        return 1
    return steps // eval_every + (1 if steps % eval_every else 0)


def run_seconds(cost: ColumnCost, steps: int, eval_every: int, reward_epochs: int) -> float:
    """One run alone: reward stage + steps / rate + evaluations x one evaluation."""
    reward = cost.reward_fixed_s + reward_epochs * cost.reward_epoch_s
    return reward + steps / cost.steps_per_s + evaluations(steps, eval_every) * cost.eval_s


def unit_seconds(cost: ColumnCost, seeds: int, workers: int, steps: int, eval_every: int, reward_epochs: int) -> float:
    """One column on one dataset with `seeds` seeds still to run.

    Batched: one process; its updates advance every seed at `steps_per_s`, its reward stages and evaluations run
    seed after seed. Otherwise the seeds run `workers` at a time side by side, each as fast as alone."""
    if seeds <= 0:
        return 0.0
    if cost.batched and seeds > 1:
        reward = cost.reward_fixed_s + reward_epochs * cost.reward_epoch_s
        return seeds * (reward + evaluations(steps, eval_every) * cost.eval_s) + steps / cost.steps_per_s
    return math.ceil(seeds / max(1, workers)) * run_seconds(cost, steps, eval_every, reward_epochs)


@dataclass(frozen=True)
class Unit:
    """One column on one dataset: the runs of its seeds that have no record yet."""

    dataset: str
    column: str
    run_ids: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int
    eval_every: int
    reward_epochs: int


def unit_estimate(unit: Unit, costs: dict[str, ColumnCost], workers: int) -> float:
    return unit_seconds(costs[unit.column], len(unit.seeds), workers, unit.steps, unit.eval_every, unit.reward_epochs)


def fitting_units(units: list[Unit], costs: dict[str, ColumnCost], workers: int, seconds_left: float) -> list[Unit]:
    """The longest prefix of `units` (the table's order) whose estimates add up to at most `seconds_left`."""
    out, total = [], 0.0
    for u in units:
        total += unit_estimate(u, costs, workers)
        if total > seconds_left:
            break
        out.append(u)
    return out


# ---------------------------------------------------------------- the grid and its runner
def budget_spec(smoke: bool) -> dict[str, Any]:
    return SMOKE if smoke else BUDGETS["paper"]


def table_columns(smoke: bool) -> list[dict[str, Any]]:
    """The paper budget's columns (dtr_table1.columns("paper")); the smoke budget shrinks every model."""
    cols = columns("paper")
    if not smoke:
        return cols
    tiny_mlp = {"hidden": [16, 16], "batch_size": 32}
    return [{**c, "policy": dict(CI_DT) if c["algo"] in ("dt", "qt", "dtr") else dict(tiny_mlp),
             **({"steps": SMOKE["base"]["steps"]} if "steps" in c else {})} for c in cols]


def scaled(steps: int, fraction: float) -> dict[str, int]:
    """A run's updates times `fraction` (at least 2) and two evaluations (half-way and last): a fraction of the
    budget checks the pipeline and the estimate, and its evaluations do not outweigh its updates."""
    n = max(2, round(steps * fraction))
    return {"steps": n, "eval_every": max(1, n // 2)}


def make_grid(smoke: bool, device: str, names: list[str] | None = None, only_columns: list[str] | None = None,
              fraction: float = 1.0) -> Any:
    """The table's grid; `fraction` < 1 scales every column's updates (budget `paper-x<fraction>`, its own run ids
    and records, never mixed with the paper budget's)."""
    from pbrl.sweep import Grid

    b = budget_spec(smoke)
    names = names or b["datasets"]
    cols = table_columns(smoke)
    if only_columns:
        unknown = sorted(set(only_columns) - {c["name"] for c in cols})
        if unknown:
            raise PbrlError(f"--columns: unknown {unknown}; known {[c['name'] for c in cols]}")
        cols = [c for c in cols if c["name"] in only_columns]
    if not 0 < fraction <= 1:
        raise PbrlError(f"--steps-fraction must be in (0, 1], got {fraction}")
    budget = "smoke" if smoke else "paper"
    if fraction < 1:
        cols = [{**c, **scaled(int(c.get("steps", b["base"]["steps"])), fraction)} for c in cols]
        budget = f"{budget}-x{fraction:g}"
    return Grid(
        name=f"dtr_table1-{budget}",
        runner="baselines.dtr_table1_gpu:run_record",
        budget=budget,
        base={**b["base"], "device": device},
        axes={"dataset": [dataset_id(n) for n in names], "seed": list(b["seeds"])},
        columns=cols,
        meta={
            "title": f"DTR Table 1 on pbrl's suite — budget {budget} ({device})",
            "reference": {k: v for k, v in PAPER.items() if k in names},
            "reference_note": "DTR Table 1 (crowdsourced Uni-RLHF labels on D4RL -v2) and CORL IQL (true reward); "
            "pbrl's datasets are built locally on gymnasium v5 with scripted labels, so the datasets differ. "
            "Updates: MLP algorithms 1M, DT 100k, QT / DTR 50k; transformers at CORL's (DT) and the DTR release's "
            "(QT, DTR) sizes.",
        },
    )


def run_record(config: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """Sweep runner: one pipeline run (`pbrl.pipeline.run_record`)."""
    from pbrl.pipeline import run_record as pipeline_record

    return pipeline_record(config, out_dir)


def _run_seeds(configs: list[dict[str, Any]], out_dirs: list[str]) -> list[dict[str, Any]]:
    """A column's seeds in one process, the policies as one batched model (`pbrl.pipeline.run_record.run_seeds`):
    the oracle seeds on the dataset's own reward, the Pb-* seeds each on its own relabeled data."""
    from pbrl.pipeline import run_record as pipeline_record

    return pipeline_record.run_seeds(configs, out_dirs)


def _batches_seeds(config: dict[str, Any]) -> bool:
    """The columns whose seeds `train_seeds` batches (`pbrl.pipeline.run_record.batches_seeds`): the MLP
    algorithms (CQL only on a GPU), on the true reward and on learned ones."""
    from pbrl.pipeline import run_record as pipeline_record

    return bool(pipeline_record.batches_seeds(config))


run_record.run_seeds = _run_seeds  # type: ignore[attr-defined]
run_record.batches_seeds = _batches_seeds  # type: ignore[attr-defined]


# ---------------------------------------------------------------- measuring on the device
def _sync(device: str) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn: Any, n: int, device: str) -> float:
    """Seconds per call of `fn` over n calls (after the device finished its queue)."""
    _sync(device)
    t = time.perf_counter()
    for _ in range(n):
        fn()
    _sync(device)
    return (time.perf_counter() - t) / max(1, n)


def measure_column(col: dict[str, Any], base: dict[str, Any], ds: Any, device: str, seeds: int, updates: int,
                   warmup: int, eval_steps: int, batched: bool) -> tuple[float, float]:
    """(updates/s, seconds of one evaluation) of column `col` on `ds`."""
    import gymnasium as gym
    import numpy as np
    import torch

    from pbrl.data import make_env
    from pbrl.policies.base import PolicySpec, default_config, make_policy
    from pbrl.policies.seeds import SeedBatch
    from pbrl.utils import set_seed

    algo, steps = col["algo"], int(col.get("steps", base["steps"]))
    cfg = default_config(algo, **dict(col.get("policy", {})))
    spec = PolicySpec.from_dataset(ds)
    dev = torch.device(device)
    if batched and seeds > 1:
        policies, samplers, noise = [], [], []
        for s in range(seeds):
            set_seed(s)
            p = make_policy(algo, spec, cfg, steps).to(dev)
            policies.append(p)
            samplers.append(p.make_sampler(_seed_rewards(ds, s) if col.get("reward", "step") != "true" else ds,
                                           torch.Generator().manual_seed(s)))
            noise.append(torch.Generator(dev).manual_seed(s) if dev.type == "cuda" else torch.Generator().manual_seed(s))
        batch = SeedBatch(policies, samplers, noise)
        step = batch.update
        policy = policies[0]
    else:
        set_seed(0)
        policy = make_policy(algo, spec, cfg, steps).to(dev)
        sample = policy.make_sampler(ds, torch.Generator().manual_seed(0))

        def step() -> None:
            policy.update(sample())
    _timed(step, warmup, device)
    rate = 1.0 / _timed(step, updates, device)
    if batched and seeds > 1:
        batch.unstack()
    episodes = int(base["eval_episodes"])
    envs = gym.vector.SyncVectorEnv([lambda: make_env(ds.env_id) for _ in range(episodes)])
    horizon = getattr(envs.envs[0].spec, "max_episode_steps", None) or EVAL_HORIZON
    obs, _ = envs.reset(seed=list(range(episodes)))
    policy.reset(episodes)
    state = {"obs": obs}

    def act_and_step() -> None:  # what `evaluate` does per step (done envs reset themselves: the cost stays)
        with torch.random.fork_rng(devices=[]):
            a = policy.act(state["obs"])
        if not policy.spec.discrete:
            a = np.asarray(a).reshape((episodes, *envs.single_action_space.shape))
        state["obs"], *_ = envs.step(a)

    act_and_step()
    per_step = _timed(act_and_step, eval_steps, "cpu")  # act() returns numpy: the device has synchronized
    envs.close()
    return rate, per_step * horizon


def _seed_rewards(ds: Any, seed: int) -> Any:
    """`ds` with rewards of its own for seed `seed` (the true ones plus seeded noise): a Pb-* column's seeds train
    on data that differ in their rewards, which the batched model keeps per seed; the rate is timed on that
    layout. Only the timing reads these rewards."""
    import numpy as np

    noise = np.random.default_rng(seed).normal(0.0, 1.0, ds.num_transitions).astype(ds.rewards.dtype)
    return ds.with_rewards(ds.rewards + noise)


def measure_reward(base: dict[str, Any], ds: Any, device: str) -> tuple[float, float]:
    """(fixed seconds, seconds per epoch) of the reward stage of one Pb-* run: labels, training, relabel, report."""
    from pbrl.data import scripted_preferences
    from pbrl.data.teachers import TeacherConfig
    from pbrl.rewards.relabel import relabel
    from pbrl.rewards.report import reward_report
    from pbrl.rewards.train import RewardConfig, train_reward

    def stage(epochs: int) -> float:
        t = time.perf_counter()
        teacher = TeacherConfig(name="exact", tie_threshold=base.get("tie_threshold"))
        pairs = scripted_preferences(ds, int(base["queries"]), int(base["length"]), teacher, 0)
        cfg = RewardConfig(model="step", epochs=epochs, early_stop=False, device=device)
        model = train_reward(ds, pairs, cfg, progress=False)
        relabel(ds, model, "member-zscore")
        reward_report(ds, model, seed=0)
        _sync(device)
        return time.perf_counter() - t

    stage(1)  # warm-up: kernels, scipy import
    one, two = stage(1), stage(2)
    per_epoch = max(0.0, two - one)
    return max(0.0, one - per_epoch), per_epoch


def measure(grid: Any, ds: Any, device: str, updates: int, warmup: int, eval_steps: int,
            log: Any = print) -> dict[str, ColumnCost]:
    """Every column's ColumnCost on `ds` (the first dataset), measured on `device`."""
    import torch

    torch.manual_seed(0)
    base, seeds = grid.base, len(grid.axes["seed"])
    reward = None
    costs = {}
    for col in grid.columns:
        t = time.perf_counter()
        batched = _batches_seeds({**base, **col})
        rate, eval_s = measure_column(col, base, ds, device, seeds, updates, warmup, eval_steps, batched)
        fixed = per_epoch = 0.0
        if col.get("reward", "step") != "true":
            if reward is None:  # the reward stage is the same for every Pb-* column
                reward = measure_reward(base, ds, device)
            fixed, per_epoch = reward
        costs[col["name"]] = ColumnCost(rate, eval_s, fixed, per_epoch, batched)
        log(f"  measured {col['name']:<11} {rate:9.1f} updates/s{' (seeds batched)' if batched else '':<16} "
            f"evaluation {eval_s:6.1f} s, reward stage {fixed:5.1f} s + {per_epoch:5.2f} s/epoch "
            f"({time.perf_counter() - t:.0f} s to measure)")
    return costs


# ---------------------------------------------------------------- plan, estimate, run
def plan(grid: Any, out_dir: str) -> list[Unit]:
    """The runs without a record, as units in the table's order (dataset by dataset, then the columns)."""
    from pbrl.sweep import expand

    rec_dir = os.path.join(out_dir, "records")
    todo = [r for r in expand(grid) if not os.path.isfile(os.path.join(rec_dir, f"{r.run_id}.json"))]
    units = []
    for d in grid.axes["dataset"]:
        for col in grid.columns:
            runs = [r for r in todo if r.column == col["name"] and r.config["dataset"] == d]
            if runs:
                c = runs[0].config
                units.append(Unit(d, col["name"], tuple(r.run_id for r in runs),
                                  tuple(int(r.config["seed"]) for r in runs), int(c["steps"]), int(c["eval_every"]),
                                  int(c.get("reward_epochs", 0)) if c.get("reward", "step") != "true" else 0))
    return units


def estimate_lines(units: list[Unit], costs: dict[str, ColumnCost], workers: int, build_s: float,
                   unbuilt: int) -> list[str]:
    by_col: dict[str, list[float]] = {}
    for u in units:
        by_col.setdefault(u.column, []).append(unit_estimate(u, costs, workers))
    lines = [f"estimate for the {sum(len(u.seeds) for u in units)} runs still to run ({workers} process(es) per "
             f"unit, seeds batched where marked):"]
    for col, secs in by_col.items():
        c = costs[col]
        lines.append(f"  {col:<11} {len(secs)} unit(s): {sum(secs) / 3600:7.2f} h  ({c.steps_per_s:.1f} updates/s"
                     f"{', batched' if c.batched else ''})")
    total = sum(sum(v) for v in by_col.values()) + build_s * unbuilt
    if unbuilt:
        lines.append(f"  building {unbuilt} missing dataset(s): {build_s * unbuilt / 3600:.2f} h "
                     f"({build_s:.0f} s each, as the first)")
    lines.append(f"  total: {total / 3600:.2f} h")
    return lines


def ensure_built_timed(names: list[str]) -> float:
    """Build the missing ones; seconds of the last build (0 when none was missing)."""
    from pbrl.data.minari_io import dataset_exists
    from pbrl_envs.commands import build

    took = 0.0
    for n in names:
        if not dataset_exists(dataset_id(n)):
            t = time.time()
            build(n)
            took = time.time() - t
    return took


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="sweep folder: records under OUT/records, run folders OUT/runs")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--estimate-only", action="store_true", help="measure, print the estimate and stop")
    ap.add_argument("--budget-minutes", type=float, default=None,
                    help="run only the units whose estimate fits into M minutes from the start")
    ap.add_argument("--smoke", action="store_true", help="a tiny budget on pendulum for the logic (CPU tests)")
    ap.add_argument("--workers", type=int, default=5, help="processes per unit (its seeds side by side)")
    ap.add_argument("--datasets", nargs="*", help="suite names overriding the budget's (table order kept)")
    ap.add_argument("--columns", nargs="*", help="only these columns")
    ap.add_argument("--steps-fraction", type=float, default=1.0,
                    help="scale every column's updates (two evaluations each; budget paper-x<F>): a device check of "
                         "the pipeline and of the estimate within one short call")
    ap.add_argument("--measure-updates", type=int, default=300)
    ap.add_argument("--measure-warmup", type=int, default=30)
    ap.add_argument("--measure-eval-steps", type=int, default=50)
    ap.add_argument("--remeasure", action="store_true", help="measure again though OUT/estimate.json has the rates")
    ap.add_argument("--results", default=None, help="write the table of the finished runs here (default OUT/table)")
    args = ap.parse_args(argv)
    t_start = time.time()
    from pbrl.data import load_dataset
    from pbrl.sweep import Grid, check_grid_name, run_sweep
    from pbrl.tables import load_records, make_table
    from pbrl.utils import atomic_write_json, resolve_device

    resolve_device(args.device, "--device")
    if args.budget_minutes is not None and args.budget_minutes <= 0:
        raise PbrlError(f"--budget-minutes must be > 0, got {args.budget_minutes}")
    b = budget_spec(args.smoke)
    names = args.datasets or b["datasets"]
    grid = make_grid(args.smoke, args.device, names, args.columns, args.steps_fraction)
    check_grid_name(grid.name)
    os.makedirs(args.out, exist_ok=True)
    build_s = ensure_built_timed(names[:1])
    from pbrl.data.minari_io import dataset_exists

    unbuilt = [n for n in names if not dataset_exists(dataset_id(n))]
    device_name = _device_label(args.device)
    est_path = os.path.join(args.out, ESTIMATE_FILE)
    # what the rates depend on: not a run's length (a fraction of the budget reuses the paper budget's rates when
    # its OUT holds a copy of that estimate.json)
    run_length = ("steps", "eval_every")
    key = {"device": device_name, "dataset": grid.axes["dataset"][0], "updates": args.measure_updates,
           "columns": [{k: v for k, v in c.items() if k not in run_length} for c in grid.columns],
           "base": {k: v for k, v in grid.base.items() if k not in run_length}}
    costs = None
    if os.path.isfile(est_path) and not args.remeasure:
        with open(est_path) as f:
            saved = json.load(f)
        if saved.get("key") == json.loads(json.dumps(key)):
            costs = {k: ColumnCost(**v) for k, v in saved["costs"].items()}
            build_s = build_s or float(saved.get("build_s", 0.0))
            print(f"rates measured before on {device_name} (from {est_path}); --remeasure to measure again")
    if costs is None:
        print(f"measuring every column on {device_name}: {args.measure_updates} updates after "
              f"{args.measure_warmup}, {args.measure_eval_steps} evaluation steps, on {names[0]}", flush=True)
        costs = measure(grid, load_dataset(grid.axes["dataset"][0]), args.device, args.measure_updates,
                        args.measure_warmup, args.measure_eval_steps)
        atomic_write_json(est_path, {"key": key, "build_s": build_s,
                                     "costs": {k: dataclasses.asdict(v) for k, v in costs.items()}})
    units = plan(grid, args.out)
    done_runs = len(grid.axes["dataset"]) * len(grid.axes["seed"]) * len(grid.columns) - sum(len(u.seeds) for u in units)
    print(f"{grid.name}: {done_runs} runs done, {sum(len(u.seeds) for u in units)} to run in {len(units)} units")
    for line in estimate_lines(units, costs, args.workers, build_s, len(unbuilt)):
        print(line)
    summary: dict[str, Any] = {"units_todo": len(units), "ran": [], "costs": costs,
                               "estimate_s": sum(unit_estimate(u, costs, args.workers) for u in units)}
    if args.budget_minutes is not None:
        left = args.budget_minutes * 60 - (time.time() - t_start)
        fits = fitting_units(units, costs, args.workers, left)
        print(f"budget {args.budget_minutes:g} min ({max(0.0, left) / 60:.1f} left): {len(fits)} of {len(units)} "
              f"units fit" + (f", up to {fits[-1].column} on {fits[-1].dataset}" if fits else ""))
        summary["fits"] = len(fits)
    if args.estimate_only or not units:
        return summary
    for u in units:  # each unit checked again against the clock: the last one may have run over its estimate
        left = (args.budget_minutes * 60 - (time.time() - t_start)) if args.budget_minutes else math.inf
        est = unit_estimate(u, costs, args.workers)
        if est > left:
            print(f"stopping: {u.column} on {u.dataset} needs about {est / 60:.1f} min, {max(0.0, left) / 60:.1f} "
                  f"min of the budget left; run again to resume")
            break
        short = next(n for n in names if dataset_id(n) == u.dataset)
        ensure_built_timed([short])
        sub = Grid(name=grid.name, runner=grid.runner, budget=grid.budget, base=grid.base,
                   axes={"dataset": [u.dataset], "seed": list(u.seeds)},
                   columns=[c for c in grid.columns if c["name"] == u.column], meta=grid.meta)
        t = time.time()
        print(f"unit {u.column} on {u.dataset}, seeds {list(u.seeds)}: estimated {est / 60:.1f} min", flush=True)
        records = run_sweep(sub, args.out, workers=min(args.workers, len(u.seeds)), batch_seeds=True)
        failed = [r for r in records if r["status"] != "ok"]
        print(f"unit {u.column} on {u.dataset}: {time.time() - t:.0f} s measured against {est:.0f} s estimated"
              + (f"; {len(failed)} run(s) failed" if failed else ""), flush=True)
        summary["ran"].append({"unit": dataclasses.asdict(u), "wall_s": time.time() - t, "estimate_s": est,
                               "failed": len(failed)})
    atomic_write_json(os.path.join(args.out, "grid.json"), grid.__dict__)  # the whole grid, not the last unit's
    try:
        records = load_records([os.path.join(args.out, "records")])
    except PbrlError:
        return summary
    results = args.results or os.path.join(args.out, "table")
    paths = make_table(records, results, grid.name, columns=[c["name"] for c in grid.columns],
                       reference=grid.meta.get("reference"), reference_note=grid.meta.get("reference_note", ""),
                       title=grid.meta.get("title"))
    print(f"wrote {paths['md']}")
    summary["table"] = paths
    return summary


def _device_label(device: str) -> str:
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(0)})"
    return f"cpu ({os.cpu_count()} cores)"


if __name__ == "__main__":
    run_script(main)
