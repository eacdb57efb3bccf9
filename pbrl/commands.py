"""Top-level CLI commands: `pbrl sweep` and `pbrl table` (and, with the pipeline, `pbrl pipeline`/`quickstart`)."""

from __future__ import annotations

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
    """Run only runs whose id contains this text."""

    def run(self) -> None:
        from pbrl.sweep import load_grid, run_sweep

        grid = load_grid(self.grid)
        recs = run_sweep(
            grid,
            os.path.join(self.out, grid.name),
            workers=self.workers,
            use_ray=self.ray,
            ray_address=self.ray_address,
            only=self.only,
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
            load_records(self.records),
            self.out,
            name,
            columns=cols,
            reference=meta.get("reference"),
            reference_note=meta.get("reference_note", ""),
            title=meta.get("title"),
        )
        for p in paths.values():
            print(f"wrote {p}")
