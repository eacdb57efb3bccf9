"""Top-level CLI commands: `pbrl sweep` and `pbrl table` (and, with the pipeline, `pbrl pipeline`/`quickstart`)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

import tyro

from pbrl.errors import PbrlError


@dataclass
class Sweep:
    """Run a grid of independent runs (skipping finished ones): local processes or a Ray cluster."""

    grid: tyro.conf.Positional[str]
    """Grid JSON file (see pbrl/sweep.py for the layout)."""
    out: str = "runs/sweeps"
    """Root folder; the sweep writes <out>/<grid name>/{runs,records}/."""
    workers: int = 1
    """Local worker processes."""
    ray: bool = False
    """Run on Ray (a local instance unless --ray-address is given)."""
    ray_address: str | None = None
    """Address of a running Ray cluster, e.g. auto or ray://host:10001."""
    only: str | None = None
    """Run only the runs whose id or config text values contain each of its words (e.g. 'Pb-IQL walker2d')."""
    threads: int | None = None
    """Torch CPU threads per local worker (default: the free cores, cores minus the 1-minute load, // workers)."""
    reuse: list[str] = dataclasses.field(default_factory=list)
    """Other sweeps' folders: their finished runs of the same config are copied, not trained again."""
    progress_every: float = 600.0
    """Seconds between the lines saying where the running runs are (0: none)."""

    def run(self) -> None:
        from pbrl.sweep import load_grid, run_sweep

        if self.progress_every < 0:
            raise PbrlError(f"--progress-every must be >= 0, got {self.progress_every}")
        for folder in self.reuse:  # a mistyped folder would reuse nothing without a word
            if not os.path.isdir(folder):
                raise PbrlError(f"--reuse: {folder} is not a folder (give a sweep's folder or its records folder)")

        grid = load_grid(self.grid)
        recs = run_sweep(
            grid,
            os.path.join(self.out, grid.name),
            workers=self.workers,
            use_ray=self.ray,
            ray_address=self.ray_address,
            only=self.only,
            threads=self.threads,
            reuse=self.reuse,
            progress_every=self.progress_every,
        )
        if any(r["status"] != "ok" for r in recs):
            raise PbrlError(f"some runs failed; see {os.path.join(self.out, grid.name, 'records')}/*.failed.json")


@dataclass
class Table:
    """Results tables (markdown, csv, figures) from run records."""

    records: tyro.conf.Positional[list[str]]
    """Record files or folders (a sweep's output folder works)."""
    out: str = "results"
    """Folder to write into."""
    name: str | None = None
    """Base name of the outputs (default: the sweep's grid name)."""

    def run(self) -> None:
        from pbrl.tables import load_records, make_table

        records = load_records(self.records)  # first: a run folder given by mistake is pointed to `pbrl plot`
        grid = None
        for p in self.records:
            g = os.path.join(p, "grid.json")
            if os.path.isdir(p) and os.path.isfile(g):
                with open(g) as f:
                    grid = json.load(f)
        name = self.name or (grid or {}).get("name")
        if not name:
            raise PbrlError("pass --name (no grid.json found beside the records)")
        meta = (grid or {}).get("meta", {})
        cols = [c["name"] for c in (grid or {}).get("columns", [])] or None
        paths = make_table(
            records,
            self.out,
            name,
            columns=cols,
            reference=meta.get("reference"),
            reference_note=meta.get("reference_note", ""),
            title=meta.get("title"),
            pairs=meta.get("pairs"),
            reference_columns=meta.get("reference_columns"),
        )
        for p in paths.values():
            print(f"wrote {p}")


QUICKSTART_DATASET = "pendulum-medium-replay"


@dataclass
class Quickstart:
    """The embedded default end to end: build the small pendulum dataset, learn a reward from scripted preferences,
    train IQL on it, and print its score next to IQL trained on the true reward."""

    out: str = "runs/quickstart"
    """Folder for both runs."""
    dataset: str = QUICKSTART_DATASET
    """A suite dataset name (`pbrl data list`); built at its default size if missing, reused if built so."""
    algo: str = "iql"
    """Offline algorithm for both runs (`pbrl train --help` lists them; a str keeps this module free of torch)."""
    steps: int = 5000
    """Policy updates per run."""
    queries: int = 200
    """Scripted preference queries."""
    length: int = 25
    """Segment length of the queries."""
    seed: int = 0
    threads: int = 1
    """Torch CPU threads (one is as fast for these small networks and robust to a busy machine)."""
    overwrite: bool = False
    """Replace the two runs already in OUT (without it, an OUT that holds them is refused)."""

    def run(self) -> None:
        import time

        from pbrl.data.recipes import build_recipe, get_recipe
        from pbrl.pipeline import PIPELINE_FILES, PipelineConfig, run_pipeline
        from pbrl.utils import check_fresh_out, threads_line, use_threads

        for reward in ("step", "true"):  # both folders are checked before anything runs
            check_fresh_out(os.path.join(self.out, reward), PIPELINE_FILES, self.overwrite,
                            "pass --overwrite to replace it")
        n, note = use_threads(self.threads)
        print(f"pbrl quickstart: {self.algo} on {self.dataset}, {self.steps} updates per run, {threads_line(n, note)}",
              flush=True)
        recipe = get_recipe(self.dataset)  # registered by the installed tasks packages
        # the same build as `pbrl data build`: a no-op when this recipe's default build exists, an error when the
        # dataset under its id was built at another size or seed (never silently used)
        t0 = time.time()
        print(f"dataset {recipe.dataset_id} ({recipe.default_size} transitions) ...", flush=True)
        card = build_recipe(self.dataset)
        print("already built: reusing it" if card.get("already_built") else f"built in {time.time() - t0:.0f}s")
        rows = []
        for reward in ("step", "true"):
            t0 = time.time()
            label = "learned (step-wise ensemble, member z-score)" if reward == "step" else "true reward (oracle)"
            print(f"\n== {self.algo} on {label}")
            s = run_pipeline(
                PipelineConfig(
                    recipe.dataset_id,
                    algo=self.algo,  # type: ignore[arg-type]  (checked by the pipeline)
                    reward=reward,  # type: ignore[arg-type]
                    queries=self.queries,
                    length=self.length,
                    steps=self.steps,
                    eval_every=max(1, self.steps // 5),
                    eval_episodes=10,
                    seed=self.seed,
                    threads=n,
                    out=os.path.join(self.out, reward),
                    overwrite=self.overwrite,
                )
            )
            acc = (s.get("reward") or {}).get("val_accuracy")
            rows.append((label, s["policy"]["last_score"], s["policy"]["best_score"], acc, time.time() - t0))
        print(f"\n{self.algo}, {self.steps} updates, seed {self.seed}, dataset {recipe.dataset_id}:")
        print("| reward | last normalized score | best | reward val. accuracy | wall |\n|---|---|---|---|---|")
        for label, last, best, acc, wall in rows:
            acc_s = "—" if acc is None else f"{acc:.3f}"
            print(f"| {label} | {last:.1f} | {best:.1f} | {acc_s} | {wall:.0f}s |")
        print(f"\nrun folders: {self.out}/step, {self.out}/true")
