"""One run folder for every trainer (policy, reward, DPO, and the LM trainers built on them).

    config.json    the resolved config, git revision, device, and the fingerprint a resume must match
    metrics.jsonl  one strict-JSON object per row, appended and flushed line by line (readable after a crash)
    <checkpoint>   written atomically (temporary file + rename), read back with `weights_only=True`
    summary.json   the final summary (strict JSON)

A trainer opens its folder once: `run = RunFolder(out, config, fingerprint=..., resume=...)`. A fresh run empties
`metrics.jsonl`; a resumed one first checks that the stored fingerprint equals the new one (a different dataset,
config or seed is refused with one line naming the key), then `run.rewind(step)` drops the rows logged after the
checkpoint it continues from, so no step appears twice.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pbrl.errors import PbrlError
from pbrl.utils import (
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    dumps_json,
    git_revision,
    safe_torch_load,
)

CONFIG_NAME, METRICS_NAME, SUMMARY_NAME = "config.json", "metrics.jsonl", "summary.json"


def fingerprint_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (what a resume checks its data against)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class RunFolder:
    """A trainer's output folder (see the module docstring). `write=False` (e.g. ranks > 0 of a data-parallel run)
    reads like the others and writes nothing. `extra` adds top-level keys to config.json (a trainer's own run
    settings, kept where readers of earlier releases look for them)."""

    def __init__(
        self,
        path: str | os.PathLike,
        config: dict[str, Any],
        *,
        fingerprint: dict[str, Any] | None = None,
        resume: bool = False,
        device: str | None = None,
        write: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.path, self.write = Path(path), write
        # what must match for a resume: JSON round-trip so tuples and lists compare equal
        self.fingerprint = json.loads(dumps_json(fingerprint if fingerprint is not None else config))
        cfg_path = self.path / CONFIG_NAME
        if resume and cfg_path.is_file():
            self._check_resumable(cfg_path)
        if write:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_json(
                str(cfg_path),
                {**(extra or {}), "config": config, "git_revision": git_revision(), "device": device,
                 "fingerprint": self.fingerprint},
            )
            if not resume:
                atomic_write_text(str(self.path / METRICS_NAME), "")

    def _check_resumable(self, cfg_path: Path) -> None:
        try:
            saved = json.loads(cfg_path.read_text()).get("fingerprint")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
            raise PbrlError(f"{cfg_path}: cannot resume, unreadable run config ({type(e).__name__})") from None
        if saved is None:  # written before fingerprints existed: nothing to compare
            return
        for key in sorted(set(saved) | set(self.fingerprint)):
            if saved.get(key) != self.fingerprint.get(key):
                raise PbrlError(
                    f"{self.path}: cannot resume, {key} differs from the saved run "
                    f"({_short(saved.get(key))} vs {_short(self.fingerprint.get(key))}); use a new --out"
                )

    # ------------------------------------------------------------------ metrics
    def log(self, row: dict[str, Any]) -> None:
        """Append one row to metrics.jsonl and flush it."""
        if not self.write:
            return
        with open(self.path / METRICS_NAME, "a") as f:
            f.write(dumps_json(row) + "\n")
            f.flush()

    def rows(self) -> list[dict[str, Any]]:
        """The rows of metrics.jsonl (a torn last line, left by a killed process, is skipped)."""
        p = self.path / METRICS_NAME
        if not p.is_file():
            return []
        out = []
        for line in p.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def rewind(self, step: int, key: str = "step") -> list[dict[str, Any]]:
        """Keep only the rows with `row[key] <= step` (the ones a checkpoint at `step` has seen); returns them."""
        rows = [r for r in self.rows() if r.get(key, 0) <= step]
        if self.write:
            atomic_write_text(str(self.path / METRICS_NAME), "".join(dumps_json(r) + "\n" for r in rows))
        return rows

    # ------------------------------------------------------------------ checkpoints and summary
    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    def save(self, name: str, state: Any) -> None:
        """torch.save `state` to `name` atomically."""
        if self.write:
            atomic_torch_save(state, str(self.path / name))

    def load(self, name: str, map_location: Any = "cpu", what: str = "checkpoint") -> Any:
        """`name` read back with the safe loader (one PbrlError for a missing, truncated or crafted file)."""
        return safe_torch_load(self.path / name, map_location=map_location, what=what)

    def write_summary(self, summary: dict[str, Any]) -> None:
        if self.write:
            atomic_write_json(str(self.path / SUMMARY_NAME), summary)


def _short(v: Any, n: int = 80) -> str:
    s = json.dumps(v, sort_keys=True)
    return s if len(s) <= n else s[: n - 3] + "..."
