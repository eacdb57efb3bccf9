"""One run folder for every trainer (policy, reward, DPO, and the LM trainers built on them).

    config.json    the resolved config, git revision, device, and the fingerprint a resume must match
    metrics.jsonl  one strict-JSON object per row, appended and flushed line by line (readable after a crash)
    <checkpoint>   written atomically (temporary file + rename), read back with `weights_only=True`
    summary.json   the final summary (strict JSON)
    tb/            only with `tensorboard=True`: every logged row's finite numbers as TensorBoard scalars

A trainer opens its folder once: `run = RunFolder(out, config, fingerprint=..., resume=...)`. A fresh run empties
`metrics.jsonl`; a resumed one first checks that the stored fingerprint equals the new one (a different dataset,
config or seed is refused with one line naming the key), then `run.rewind(step)` drops the rows logged after the
checkpoint it continues from, so no step appears twice (in TensorBoard too: the writer reopened after a rewind
purges the events past that step). `pbrl plot RUN...` draws a folder's metrics.jsonl (pbrl.plot).

Before a run-folder command reads any input it checks its --out (`check_out_folder`, through `command_config`): a
folder holding other files or another command's run is refused unless --overwrite.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from pbrl.errors import PbrlError, ResumeRefused
from pbrl.utils import (
    TMP_PREFIX,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    dumps_json,
    git_revision,
    safe_torch_load,
)

CONFIG_NAME, METRICS_NAME, SUMMARY_NAME = "config.json", "metrics.jsonl", "summary.json"
TENSORBOARD_DIR = "tb"
C = TypeVar("C")


@dataclasses.dataclass
class RunSettings:
    """The run settings every LLM and recommender trainer's config shares (pretrain, SFT, DPO, PPO, hyperfit,
    LIONs, SRPO): one copy of the fields and their docstrings. A trainer's config subclasses it, so these are its
    first fields (config.json and the flags keep their names)."""

    resume: bool = True
    """Continue the run in --out when it holds one (it must match the saved fingerprint); --no-resume starts it
    again from its beginning."""
    seed: int = 0
    """Seed of every random draw of the run (model initialisation, data order, sampling): a seeded CPU run is
    deterministic, and a resumed one continues the same draws."""
    device: str = "auto"
    """cpu, cuda, or auto (cuda when available)."""
    progress: bool = True
    """Show a progress bar (with its rate)."""
    threads: int | None = None
    """Torch CPU threads, set once before any work (the command's default: the free cores, i.e. the cores minus
    the 1-minute load average, see pbrl.utils.choose_threads; in the library, None leaves torch's setting)."""


def is_run_folder(path: str | os.PathLike) -> bool:
    """Whether `path` holds a trainer's or a pipeline's run: config.json beside metrics.jsonl or summary.json."""
    p = Path(path)
    return (p / CONFIG_NAME).is_file() and ((p / METRICS_NAME).is_file() or (p / SUMMARY_NAME).is_file())


def read_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl file ([] when it is missing). A line that is not JSON (the torn last line of a
    killed writer) is skipped, as is a line that is not an object."""
    p = Path(path)
    if not p.is_file():
        return []
    out = []
    for line in p.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            out.append(row)
    return out


def tail_rows(path: str | os.PathLike, nbytes: int = 16384) -> list[dict[str, Any]]:
    """The whole JSON rows among the last `nbytes` of a metrics.jsonl (a row being written is skipped): what a
    progress report reads of a long run without reading its whole log."""
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - nbytes))
        lines = f.read().decode("utf-8", "replace").splitlines()
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def training_progress(folder: str | os.PathLike, what: str = "policy") -> tuple[str | None, float]:
    """Where the policy run in `folder` is (its config.json's `steps`, its metrics.jsonl's last step and update
    rate), e.g. `policy 45000/100000 updates, 52/s`, with the time the log last changed; (None, 0) without a log."""
    metrics = Path(folder) / METRICS_NAME
    if not metrics.is_file():
        return None, 0.0
    rows = [r for r in tail_rows(metrics) if "step" in r]
    rates = [r["perf/steps_per_s"] for r in rows if r.get("perf/steps_per_s")]
    config = Path(folder) / CONFIG_NAME
    steps = json.loads(config.read_text()).get("steps") if config.is_file() else "?"
    text = f"{what} {rows[-1]['step'] if rows else 0}/{steps} updates" + (f", {rates[-1]:.3g}/s" if rates else "")
    return text, metrics.stat().st_mtime


def scalar_items(row: dict[str, Any], skip: tuple[str, ...] = ("step",)) -> list[tuple[str, float]]:
    """The (key, value) pairs of a row that are finite numbers (bools, None, lists and strings left out)."""
    return [
        (k, float(v))
        for k, v in row.items()
        if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ]


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
    settings, kept where readers of earlier releases look for them). `tensorboard=True` also writes each logged
    row's finite numbers as scalars (`SummaryWriter.add_scalar(key, value, row["step"])`) into `<path>/tb/`;
    it needs the optional tensorboard package (one PbrlError before anything is written when it is missing)."""

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
        tensorboard: bool = False,
        added_fields: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """added_fields: per fingerprint key holding a dict (e.g. `config`), the values a saved run written before
        a field existed is taken to have had (the field's default: the behaviour it had before it was a field)."""
        self.path, self.write = Path(path), write
        self.added_fields = json.loads(dumps_json(added_fields or {}))
        self.tensorboard = tensorboard and write
        self._tb: Any = None  # the SummaryWriter, opened at the first logged row
        self._tb_purge: int | None = None  # after a rewind: events from this step on are dropped by the new writer
        if self.tensorboard:
            _summary_writer_class()  # a missing package is refused before the folder is touched
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
                if self.tensorboard:  # a fresh run's curves must not mix with an earlier run's event files
                    for old in (self.path / TENSORBOARD_DIR).glob("events.out.tfevents.*"):
                        old.unlink()

    def _check_resumable(self, cfg_path: Path) -> None:
        try:
            saved = json.loads(cfg_path.read_text()).get("fingerprint")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
            raise ResumeRefused(f"{cfg_path}: cannot resume, unreadable run config ({type(e).__name__})") from None
        if saved is None:  # written before fingerprints existed: nothing to compare
            return
        for key, defaults in self.added_fields.items():
            if isinstance(saved.get(key), dict):
                saved = {**saved, key: {**defaults, **saved[key]}}
        for key in sorted(set(saved) | set(self.fingerprint)):
            if saved.get(key) != self.fingerprint.get(key):
                raise ResumeRefused(
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
        if self.tensorboard:
            self._log_tensorboard(row)

    def _log_tensorboard(self, row: dict[str, Any]) -> None:
        if self._tb is None:
            self._tb = _summary_writer_class()(log_dir=str(self.path / TENSORBOARD_DIR), purge_step=self._tb_purge)
            self._tb_purge = None
        step = row.get("step")
        step = int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else None
        for k, v in scalar_items(row):
            self._tb.add_scalar(k, v, global_step=step)
        self._tb.flush()  # like metrics.jsonl: what was logged is on disk if the process dies

    def close(self) -> None:
        """Close the TensorBoard writer (if any); a later `log` opens a new one."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def rows(self) -> list[dict[str, Any]]:
        """The rows of metrics.jsonl (a torn last line, left by a killed process, is skipped)."""
        return read_rows(self.path / METRICS_NAME)

    def rewind(self, step: int, key: str = "step") -> list[dict[str, Any]]:
        """Keep only the rows with `row[key] <= step` (the ones a checkpoint at `step` has seen); returns them."""
        rows = [r for r in self.rows() if r.get(key, 0) <= step]
        if self.write:
            atomic_write_text(str(self.path / METRICS_NAME), "".join(dumps_json(r) + "\n" for r in rows))
            if self.tensorboard:  # the next writer hides the events a killed run wrote past `step`
                self.close()
                self._tb_purge = step + 1
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
        self.close()  # the run is over: its event file is complete


def check_out_folder(path: str | os.PathLike, fields: Iterable[str], command: str, *, overwrite: bool = False,
                     own: Iterable[str] = ()) -> None:
    """The guard a run-folder command (`pbrl llm sft`, `pbrl rec srpo`, ...) runs on its --out before it reads an
    input or writes a file: one PbrlError unless the folder is missing, empty, or holds a run of this command
    (which the trainer then resumes or, with --no-resume, restarts; `RunFolder` refuses a resume whose fingerprint
    differs). Refused:

    - a path that is not a folder;
    - a folder without a run's config.json holding anything but `own` (names the command writes before its
      config.json) or atomic-write temporaries: a user's files, another command's outputs;
    - a config.json that is not a pbrl run's (no "config" object: e.g. an HF model folder);
    - the run of another command: its saved config lacks some of `fields` (this command's config fields).

    `overwrite` lets the run be written there anyway (the command then restarts it: resume off)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise PbrlError(f"{p}: exists and is not a folder (--out is the run's folder)")
    if overwrite or not p.is_dir():
        return
    names = sorted(e.name for e in p.iterdir())
    if not names:
        return
    again = "use a new --out, or pass --overwrite to"
    cfg_path = p / CONFIG_NAME
    if not cfg_path.is_file():
        foreign = [n for n in names if n not in set(own) and not n.startswith(TMP_PREFIX)]
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise PbrlError(f"{p}: holds files that are not a `pbrl {command}` run ({shown}); {again} write the "
                            "run beside them")
        return
    try:
        saved = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PbrlError(f"{cfg_path}: unreadable ({type(e).__name__}), not a pbrl run's config; {again} write the "
                        "run there anyway") from None
    config = saved.get("config") if isinstance(saved, dict) else None
    if not isinstance(config, dict):
        raise PbrlError(f"{cfg_path}: not a pbrl run's config (no \"config\" object); {again} write the run there "
                        "anyway")
    missing = [f for f in fields if f not in config]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise PbrlError(f"{p}: holds the run of another command, not of `pbrl {command}` (its config.json has no "
                        f"{shown}); {again} replace it")


def command_config(cmd: Any, cls: type[C], command: str, own: Iterable[str] = ()) -> C:
    """The library config `cls` of a run-folder command `cmd` (a subclass of `cls` with an `overwrite` flag): its
    fields copied once `check_out_folder` passed on `cmd.out`; `--overwrite` restarts the run (resume off)."""
    names = [f.name for f in dataclasses.fields(cls)]
    check_out_folder(cmd.out, names, command, overwrite=cmd.overwrite, own=own)
    cfg = cls(**{n: getattr(cmd, n) for n in names})
    return dataclasses.replace(cfg, resume=False) if cmd.overwrite else cfg


def _summary_writer_class() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise PbrlError("tensorboard logging needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter


def _short(v: Any, n: int = 80) -> str:
    s = json.dumps(v, sort_keys=True)
    return s if len(s) <= n else s[: n - 3] + "..."
