"""Sweeps: a grid of independent runs, locally in a process pool (default) or on a Ray cluster.

A grid file (JSON) names a runner function and the runs:

    {"name": "dtr_table1", "budget": "small",
     "runner": "pbrl.pipeline:run_record",            # fn(config: dict, out_dir: str) -> dict of results
     "base": {"steps": 20000, "eval_episodes": 10},    # shared by every run
     "axes": {"dataset": ["pbrl/hopper/medium-replay-v0"], "seed": [0, 1, 2]},   # cartesian product
     "columns": [{"name": "Oracle-IQL", "algo": "iql", "reward": "true"},        # one column of the table each
                 {"name": "Pb-IQL", "algo": "iql", "reward": "step"}]}

Each run gets an id from its column and config hash, an output folder `<out>/runs/<id>/`, and, once it finished, a
record `<out>/records/<id>.json` (config, git revision, device, budget, wall time, and what the runner returned:
metrics, last and best normalized score, curve). Runs with a record are skipped, so a killed sweep resumes where it
stopped; a run stopped part-way is the runner's to continue (the pipeline runner resumes its policy from its last
checkpoint, its reward reused, and reports the earlier calls' seconds as `earlier_s`, which the record's wall time
adds). Records are written by the driver, so on a Ray cluster only the run folders live on the workers.

Reuse: `run_sweep(..., reuse=[other sweep folders])` copies a finished record of the same run (the runner's
`run_key(config)`, else the config itself) instead of training it again, with `reused_from` naming the original.
Progress: every `progress_every` seconds the driver logs the runs recorded and, for each running run, the runner's
`progress(run_dir) -> (text, last change time)` (the pipeline's and the policy runner's: updates done and their rate).

Seed batching: a runner function with a `run_seeds(configs, out_dirs) -> results` attribute trains several runs
of one column that differ only by `seed` in one process (as one batched model, `pbrl.policies.trainer.train_seeds`);
the sweep groups such runs among those still to run (`seed_groups`), so finished seeds stay skipped, and writes
one record per run as before (with `seed_batch`: the run ids trained together). `batches_seeds(config) -> bool`
on the runner, when present, says which configs may be grouped. The pipeline runner (`pbrl.pipeline:run_record`)
groups the seeds of every column whose policy batches, the Pb-* columns included: each seed learns its own reward,
then the policies train as one model, each on its own relabeled data (`pbrl.pipeline.run_pipelines`).
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import json
import os
import platform
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pbrl.errors import PbrlError
from pbrl.utils import (
    atomic_write_json,
    choose_threads,
    format_duration,
    git_revision,
    reuse_freed_heap,
    threads_line,
)


@dataclass(frozen=True)
class Grid:
    """A sweep: the cartesian product of `axes`, times every column, each merged over `base`."""

    name: str
    runner: str
    base: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    columns: list[dict[str, Any]] = field(default_factory=lambda: [{"name": "run"}])
    budget: str = "custom"
    meta: dict[str, Any] = field(default_factory=dict)
    """Free-form facts for the tables (e.g. the paper's numbers to print beside ours)."""


@dataclass(frozen=True)
class RunSpec:
    run_id: str
    column: str
    config: dict[str, Any]


def load_grid(path: str) -> Grid:
    """A grid file read and checked field by field (one PbrlError naming the file and the field)."""
    if not os.path.isfile(path):
        raise PbrlError(f"grid file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except UnicodeDecodeError:
        raise PbrlError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise PbrlError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise PbrlError(f"{path}: a grid is a JSON object, got {type(raw).__name__}")
    unknown = set(raw) - {"name", "runner", "base", "axes", "columns", "budget", "meta"}
    if unknown or "name" not in raw or "runner" not in raw:
        raise PbrlError(f"{path}: a grid needs 'name' and 'runner' and may have base/axes/columns/budget/meta; got {sorted(raw)}")
    for key, kind in (("name", str), ("runner", str), ("budget", str), ("base", dict), ("axes", dict),
                      ("meta", dict), ("columns", list)):
        if key in raw and not isinstance(raw[key], kind):
            raise PbrlError(f"{path}: {key!r} must be a JSON {_JSON_NAMES[kind]}, got {type(raw[key]).__name__}")
    check_grid_name(raw["name"], f"{path}: 'name'")
    for k, v in raw.get("axes", {}).items():
        if not isinstance(v, list) or not v:
            raise PbrlError(f"{path}: axis {k!r} must be a non-empty list")
    for i, c in enumerate(raw.get("columns", [{"name": "run"}])):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise PbrlError(f"{path}: column {i} must be an object with a string 'name'")
    return Grid(**raw)


_JSON_NAMES = {str: "string", dict: "object", list: "list"}


def check_grid_name(name: object, where: str = "grid name") -> str:
    """A grid's name becomes a folder under --out: it must be one plain path component (letters, digits, '.',
    '_', '-'; not '.' or '..'), so no name writes outside the output folder."""
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or any(not (ch.isascii() and (ch.isalnum() or ch in "._-")) for ch in name)
    ):
        raise PbrlError(f"{where}: expected one folder name of letters, digits, '.', '_' or '-', got {name!r}")
    return name


def _slug(x: Any) -> str:
    s = str(x).rsplit("/", 1)[-1] if isinstance(x, str) else str(x)
    return "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in s)[:40]


def expand(grid: Grid) -> list[RunSpec]:
    """Every run of the grid, in a stable order (axes in file order, then columns)."""
    keys = list(grid.axes)
    runs = []
    for values in itertools.product(*(grid.axes[k] for k in keys)):
        point = dict(zip(keys, values))
        for col in grid.columns:
            config = {**grid.base, **point, **{k: v for k, v in col.items() if k != "name"}}
            digest = hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]
            label = "-".join(_slug(point[k]) for k in keys)
            run_id = f"{_slug(col['name'])}-{label}-{digest}" if label else f"{_slug(col['name'])}-{digest}"
            runs.append(RunSpec(run_id, col["name"], config))
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise PbrlError(f"grid {grid.name!r} has duplicate runs (two columns with the same config?)")
    return runs


def select_runs(runs: list[RunSpec], only: str | None) -> list[RunSpec]:
    """The runs `only` picks: each of its space-separated words appears in the run's id or in one of its config's
    text values. Run ids keep only a dataset id's last part ("medium-replay-v0" for every family), so
    "Pb-QT-minmax walker2d" picks that column's walker2d runs through the dataset value."""
    words = (only or "").split()
    def texts(r: RunSpec) -> list[str]:
        return [r.run_id] + [v for v in r.config.values() if isinstance(v, str)]
    return [r for r in runs if all(any(w in t for t in texts(r)) for w in words)]


def _import(target: str) -> Callable[[dict[str, Any], str], dict[str, Any]]:
    module, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise PbrlError(f"cannot import runner {target!r}: {e}") from None


def execute(spec: RunSpec, runner: str, out_dir: str, threads: int = 1) -> dict[str, Any]:
    """Run one spec (in whatever process or Ray worker calls this) and return its record."""
    import torch

    torch.set_num_threads(max(1, threads))
    run_dir = os.path.join(out_dir, "runs", spec.run_id)
    os.makedirs(run_dir, exist_ok=True)
    t0 = time.time()
    record = _record_head(spec)
    try:
        record["result"] = _import(runner)(dict(spec.config), run_dir)
        record["status"] = "ok"
    except Exception as e:  # a failed run is recorded and the sweep goes on
        _failed(record, e)
    record["wall_s"] = round(time.time() - t0 + _earlier_s([record]), 2)
    return record


def _earlier_s(records: list[dict[str, Any]]) -> float:
    """The seconds a resumed run (or seed group) spent in its earlier, stopped calls: a runner's result may say
    so (`earlier_s`); the record's wall time counts them, so a table's compute is the run's, not its last call's."""
    spent = [float((r.get("result") or {}).get("earlier_s") or 0.0) for r in records]
    return max(spent, default=0.0)


def execute_group(specs: list[RunSpec], runner: str, out_dir: str, threads: int = 1) -> list[dict[str, Any]]:
    """Run specs that differ only by seed in this process through the runner's `run_seeds`; one record each
    (a failure of the whole group is recorded for each of its runs). A group of one is `execute`."""
    if len(specs) == 1:
        return [execute(specs[0], runner, out_dir, threads)]
    import torch

    torch.set_num_threads(max(1, threads))
    run_dirs = [os.path.join(out_dir, "runs", spec.run_id) for spec in specs]
    for d in run_dirs:
        os.makedirs(d, exist_ok=True)
    t0 = time.time()
    records = [_record_head(spec) for spec in specs]
    try:
        results = _import(runner).run_seeds([dict(spec.config) for spec in specs], run_dirs)
        if len(results) != len(specs):
            raise RuntimeError(f"run_seeds returned {len(results)} results for {len(specs)} runs")
        for record, result in zip(records, results):
            record["result"], record["status"] = result, "ok"
    except Exception as e:  # the group failed as a whole: every run of it is recorded as failed
        for record in records:
            _failed(record, e)
    wall = round(time.time() - t0 + _earlier_s(records), 2)
    for record in records:
        record["wall_s"] = wall  # the group's wall time: its runs trained side by side
        record["seed_batch"] = [spec.run_id for spec in specs]
    return records


def seed_groups(runs: list[RunSpec], runner: str) -> list[list[RunSpec]]:
    """`runs` in groups for `execute_group`: runs of one column whose configs differ only by `seed`, when the
    runner has `run_seeds` (and its `batches_seeds(config)`, if any, accepts them); every other run alone.
    Groups keep the order of their first run."""
    fn = _import(runner)
    if not callable(getattr(fn, "run_seeds", None)):
        return [[r] for r in runs]
    accepts = getattr(fn, "batches_seeds", None)
    groups: dict[str, list[RunSpec]] = {}
    for r in runs:
        if "seed" not in r.config or (accepts is not None and not accepts(dict(r.config))):
            key = f"alone:{r.run_id}"
        else:
            rest = {k: v for k, v in r.config.items() if k != "seed"}
            key = json.dumps([r.column, rest], sort_keys=True, default=str)
        groups.setdefault(key, []).append(r)
    return list(groups.values())


def _record_head(spec: RunSpec) -> dict[str, Any]:
    import torch

    return {
        "run_id": spec.run_id,
        "column": spec.column,
        "config": spec.config,
        "host": socket.gethostname(),
        "device": spec.config.get("device", "cpu"),
        "device_name": _device_name(spec.config.get("device", "cpu")),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _failed(record: dict[str, Any], e: Exception) -> None:
    record["status"] = "failed"
    record["error"] = f"{type(e).__name__}: {e}"
    record["traceback"] = traceback.format_exc()


def _device_name(device: str) -> str:
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores)"


def _execute_star(args: tuple[list[RunSpec], str, str, int]) -> list[dict[str, Any]]:
    return execute_group(*args)


def _execute_ray(spec: RunSpec, runner: str, out_dir: str, threads: int) -> dict[str, Any]:
    """`execute` in a Ray worker: the worker process is the sweep's, so it keeps freed heap blocks as the local
    workers do (see `pbrl.utils.reuse_freed_heap`)."""
    reuse_freed_heap()
    return execute(spec, runner, out_dir, threads)


def _execute_ray_group(specs: list[RunSpec], runner: str, out_dir: str, threads: int) -> list[dict[str, Any]]:
    """`execute_group` in a Ray worker (freed heap blocks reused, as `_execute_ray`)."""
    reuse_freed_heap()
    return execute_group(specs, runner, out_dir, threads)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _worker_init(parent_pid: int) -> None:
    """Process-pool worker start: reuse freed heap blocks, and die with the driver.

    A killed driver (SIGKILL, OOM) cannot shut its pool down, and its workers would finish runs nobody records.
    On Linux the kernel sends the worker SIGKILL when its parent dies (prctl PR_SET_PDEATHSIG); elsewhere, and as a
    second line, a daemon thread polls the parent pid once a second and exits the worker when it changed.
    """
    reuse_freed_heap()
    if platform.system() == "Linux":
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the driver died before prctl took effect
        os._exit(1)

    def watchdog() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watchdog, name="pbrl-sweep-watchdog", daemon=True).start()


def pending_runs(runs: list[RunSpec], out_dir: str) -> list[RunSpec]:
    """The runs without a record in `out_dir/records/` (what a sweep into `out_dir` still has to run)."""
    return [r for r in runs if not os.path.isfile(os.path.join(out_dir, "records", f"{r.run_id}.json"))]


def run_key(runner: str, config: dict[str, Any]) -> str:
    """What makes two runs the same run: the runner's `run_key(config)` when it has one (e.g. the pipeline's
    resolved config, so a field set to its default matches a field left out), else the config itself."""
    key = getattr(_import(runner), "run_key", None)
    return key(dict(config)) if callable(key) else json.dumps(config, sort_keys=True, default=str)


def reuse_records(grid: Grid, todo: list[RunSpec], rec_dir: str, sources: list[str],
                  log: Callable[[str], None] = print) -> list[RunSpec]:
    """Copy, for each run of `todo`, a finished record of the same run (`run_key`, same runner) from another
    sweep's folder in `sources` (a sweep folder or its records folder) into `rec_dir` under this grid's run id,
    with `reused_from` naming the original; returns the runs still to train. One configuration shared by two
    tables (e.g. Table 1's DTR column and the ablation's default column) then trains once."""
    found: dict[str, dict[str, Any]] = {}
    for src in sources:
        folder = os.path.join(src, "records") if os.path.isdir(os.path.join(src, "records")) else src
        if not os.path.isdir(folder) or os.path.abspath(folder) == os.path.abspath(rec_dir):
            continue
        try:  # a sweep folder names its runner in grid.json: another runner's runs are other runs
            with open(os.path.join(os.path.dirname(folder), "grid.json"), encoding="utf-8") as f:
                if json.load(f).get("runner") != grid.runner:
                    continue
        except (OSError, ValueError, AttributeError):
            pass
        for name in sorted(os.listdir(folder)):
            if not name.endswith(".json") or name.endswith(".failed.json"):
                continue
            try:
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    rec = json.load(f)
            except (OSError, ValueError):
                continue
            if isinstance(rec, dict) and rec.get("status") == "ok" and isinstance(rec.get("config"), dict):
                try:
                    found.setdefault(run_key(grid.runner, rec["config"]), rec)
                except PbrlError:  # not a config of this runner
                    continue
    left = []
    for spec in todo:
        rec = found.get(run_key(grid.runner, spec.config)) if found else None
        if rec is None:
            left.append(spec)
            continue
        copy = {**rec, "run_id": spec.run_id, "column": spec.column, "config": spec.config, "sweep": grid.name,
                "reused_from": f"{rec.get('sweep')}/{rec.get('run_id')}"}
        atomic_write_json(os.path.join(rec_dir, f"{spec.run_id}.json"), copy)
        log(f"  reused {copy['reused_from']} as {spec.run_id} (the same run)")
    return left


PROGRESS_EVERY_S = 600.0
"""How often a sweep says where its running runs are (the runs of a table sweep take minutes to hours)."""


def _progress_lines(grid: Grid, runs: list[RunSpec], out_dir: str, started: float, recent_s: float) -> list[str]:
    """What a sweep is doing now: runs recorded, and each run whose folder changed in the last `recent_s` seconds
    as the runner's `progress(run_dir)` says it (e.g. `policy 45000/100000 updates, 52/s`)."""
    say = getattr(_import(grid.runner), "progress", None)
    rec_dir = os.path.join(out_dir, "records")
    done = sum(os.path.isfile(os.path.join(rec_dir, f"{r.run_id}.json")) for r in runs)
    lines = [f"sweep {grid.name}: {done}/{len(runs)} runs recorded, {format_duration(time.time() - started)} in"]
    if not callable(say):
        return lines
    now = time.time()
    for r in runs:
        run_dir = os.path.join(out_dir, "runs", r.run_id)
        if os.path.isfile(os.path.join(rec_dir, f"{r.run_id}.json")) or not os.path.isdir(run_dir):
            continue
        try:
            where, changed = say(run_dir)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if where and now - changed <= recent_s:
            lines.append(f"  running {r.run_id}: {where}")
    return lines


def _reporter(grid: Grid, runs: list[RunSpec], out_dir: str, every_s: float, log: Callable[[str], None]) -> threading.Event:
    """A daemon thread that logs `_progress_lines` every `every_s` seconds until the returned event is set."""
    stop, started = threading.Event(), time.time()

    def loop() -> None:
        while not stop.wait(every_s):
            for line in _progress_lines(grid, runs, out_dir, started, recent_s=every_s):
                log(line)

    threading.Thread(target=loop, name="pbrl-sweep-progress", daemon=True).start()
    return stop


def run_sweep(
    grid: Grid,
    out_dir: str,
    *,
    workers: int = 1,
    ray_address: str | None = None,
    use_ray: bool = False,
    only: str | None = None,
    log: Callable[[str], None] = print,
    threads: int | None = None,
    batch_seeds: bool | None = None,
    reuse: list[str] | None = None,
    progress_every: float = PROGRESS_EVERY_S,
) -> list[dict[str, Any]]:
    """Run every run of `grid` that has no record yet; returns the new records (failed ones included).

    threads: torch CPU threads of each local worker; default the free cores (`pbrl.utils.choose_threads`) shared
    among the workers, at least 1 (Ray workers get 1, as each asks Ray for one CPU).
    batch_seeds: train the runs still to run that differ only by seed in one process each, when the runner can
    (`seed_groups`); False runs every run in its own task; None (default) batches with one local worker only:
    on a CPU a batched model of 256-wide MLPs runs at about the aggregate rate of separate runs
    (results/seed_batching.md), so with several workers separate runs side by side finish sooner.
    reuse: other sweeps' folders whose finished runs of the same config stand in for this grid's (`reuse_records`).
    progress_every: seconds between the lines saying where the running runs are (0: none); a runner's
    `progress(run_dir) -> (text, last change time)` gives each run's (the pipeline's: its stage and updates/s)."""
    check_grid_name(grid.name)
    runs = expand(grid)
    runs = select_runs(runs, only)
    rec_dir = os.path.join(out_dir, "records")
    os.makedirs(rec_dir, exist_ok=True)
    atomic_write_json(os.path.join(out_dir, "grid.json"), grid.__dict__)
    todo = pending_runs(runs, out_dir)
    if reuse:
        todo = reuse_records(grid, todo, rec_dir, reuse, log)
    log(f"sweep {grid.name}: {len(runs)} runs, {len(runs) - len(todo)} already done, {len(todo)} to run")
    if not todo:
        return []
    rev = git_revision()
    if threads is None:
        free, note = choose_threads(None)
        threads = max(1, free // max(1, workers))
    else:
        threads, note = choose_threads(threads)
    log(f"sweep {grid.name}: {max(1, workers)} worker(s) x {threads_line(threads, note)}")
    if batch_seeds is None:
        batch_seeds = workers <= 1 and not (use_ray or ray_address)
    groups = seed_groups(todo, grid.runner) if batch_seeds else [[r] for r in todo]
    if len(groups) < len(todo):
        log(f"sweep {grid.name}: seeds batched: {len(todo)} runs in {len(groups)} processes")

    def finish(rec: dict[str, Any]) -> dict[str, Any]:
        rec.update(sweep=grid.name, budget=grid.budget, git_revision=rev)
        if rec["status"] == "ok":
            atomic_write_json(os.path.join(rec_dir, f"{rec['run_id']}.json"), rec)
            res = rec["result"]
            log(f"  done {rec['run_id']} in {rec['wall_s']:.0f}s: last {res.get('last_score')} best {res.get('best_score')}")
        else:
            atomic_write_json(os.path.join(rec_dir, f"{rec['run_id']}.failed.json"), rec)
            log(f"  FAILED {rec['run_id']}: {rec['error']}")
        return rec

    records = []
    stop = _reporter(grid, todo, out_dir, progress_every, log) if progress_every > 0 else None
    try:
        _run_groups(grid, groups, out_dir, threads, workers, use_ray, ray_address, finish, records)
    finally:
        if stop is not None:
            stop.set()
    failed = sum(r["status"] != "ok" for r in records)
    log(f"sweep {grid.name}: {len(records) - failed} finished, {failed} failed; records in {rec_dir}")
    return records


def _run_groups(grid: Grid, groups: list[list[RunSpec]], out_dir: str, threads: int, workers: int, use_ray: bool,
                ray_address: str | None, finish: Callable[[dict[str, Any]], dict[str, Any]],
                records: list[dict[str, Any]]) -> None:
    """Run the groups on Ray, in this process, or in a process pool; each record goes through `finish`."""
    if use_ray or ray_address:
        import ray

        ray.init(address=ray_address, ignore_reinit_error=True, log_to_driver=False)
        remote = ray.remote(num_cpus=1)(_execute_ray)
        remote_group = ray.remote(num_cpus=1)(_execute_ray_group)
        where = os.path.abspath(out_dir)
        pending = [remote.remote(g[0], grid.runner, where, 1) if len(g) == 1 else
                   remote_group.remote(g, grid.runner, where, 1) for g in groups]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            got = ray.get(ready[0])
            records += [finish(rec) for rec in (got if isinstance(got, list) else [got])]
    elif workers <= 1:
        for g in groups:
            records += [finish(rec) for rec in execute_group(g, grid.runner, out_dir, threads)]
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: torch and forked thread pools do not mix; the workers are ours, so they reuse freed heap blocks
        # as the command line does, and they die with this process (see _worker_init)
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=mp.get_context("spawn"),
            initializer=_worker_init,
            initargs=(os.getpid(),),
        ) as pool:
            futures = [pool.submit(_execute_star, (g, grid.runner, out_dir, threads)) for g in groups]
            for fut in as_completed(futures):
                records += [finish(rec) for rec in fut.result()]


def sweep_and_table(
    grid: Grid, out: str, results: str, *, workers: int = 1, ray_address: str | None = None,
    threads: int | None = None, reuse: list[str] | None = None, only: str | None = None,
) -> dict[str, str]:
    """What every baseline script does: write the grid, run it (skipping finished runs), write its table.
    `threads`: torch threads per local worker (default: the free cores shared among the workers). `reuse`:
    other sweeps' folders whose finished runs of the same config are copied instead of trained. `only`: run just
    the runs it picks (`select_runs`; the table still holds every record)."""
    from pbrl.tables import load_records, make_table

    run_dir = os.path.join(out, grid.name)
    records = run_sweep(grid, run_dir, workers=workers, ray_address=ray_address, threads=threads, reuse=reuse,
                        only=only)
    if any(r["status"] != "ok" for r in records):
        raise PbrlError(f"some runs failed; see {run_dir}/records/*.failed.json")
    cols = [c["name"] for c in grid.columns]
    return make_table(
        load_records([run_dir]),
        results,
        grid.name,
        columns=cols,
        reference=grid.meta.get("reference"),
        reference_note=grid.meta.get("reference_note", ""),
        title=grid.meta.get("title"),
        pairs=grid.meta.get("pairs"),
        reference_columns=grid.meta.get("reference_columns"),
    )
