"""The one copy of small helpers every part of pbrl shares: atomic writes, seeding, run provenance."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import random
import subprocess
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported lazily: the CLI starts without it
    import torch


TMP_PREFIX = ".tmp-"
"""Name prefix of atomic-write temporaries: `.tmp-<pid>-<host tag>-<random>` (the writer is recorded in the name so
a later writer can tell a dead writer's leftovers from a live one's file)."""
STALE_AFTER_S = 3600.0
"""A temporary whose writer cannot be checked (another host, or an old name without a pid) is stale after this."""


@functools.cache
def _host_tag() -> str:
    import hashlib
    import socket

    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def temp_name_prefix(prefix: str = TMP_PREFIX) -> str:
    """`<prefix><pid>-<host tag>-`: what this process's temporaries are named with (see `sweep_stale_temporaries`)."""
    return f"{prefix}{os.getpid()}-{_host_tag()}-"


def current_umask() -> int:
    """The process umask, read without changing it (Linux /proc), else via the os.umask set-and-restore dance."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_folder(folder: str) -> None:
    """fsync a folder, so a rename inside it survives a power cut (file systems that cannot fsync one are skipped)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: a process of another user holds that pid
        return True
    return True


def sweep_stale_temporaries(folder: str, prefix: str = TMP_PREFIX, max_age_s: float = STALE_AFTER_S) -> list[str]:
    """Remove the leftovers of killed writers in `folder`: entries named `<prefix><pid>-<host tag>-...` whose pid
    is gone on this host, and, older than `max_age_s`, those whose writer cannot be checked (written on another
    host, or named the way earlier versions did: `<prefix>` + 8-12 random characters, no pid). Returns the removed
    paths. A live writer's file is kept, and so is any other name (a user's own `.tmp-notes`)."""
    import re
    import shutil
    import time

    pattern = re.compile(re.escape(prefix) + r"(\d+)-([0-9a-f]{8})-")
    legacy = re.compile(re.escape(prefix) + r"[a-z0-9_]{8,12}")  # mkstemp's 8 characters, or 12 hex digits
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        m = pattern.match(entry.name)
        try:
            if m and m.group(2) == _host_tag():
                stale = not _writer_alive(int(m.group(1)))
            elif m or legacy.fullmatch(entry.name):
                stale = now - entry.stat(follow_symlinks=False).st_mtime > max_age_s
            else:
                continue
            if not stale:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(entry.path)
        except OSError:  # another writer swept it first, or it is not ours to remove
            continue
    return removed


@contextlib.contextmanager
def atomic_output(path: str):
    """Yield a temporary path next to `path` for a writer that needs a file name (h5py, ...); on success the file
    gets the umask's mode (0o666 & ~umask, as `open` would give it; mkstemp gives 0o600), is fsynced, renamed over
    `path` and its folder fsynced; on failure it is removed. Stale temporaries of killed writers are swept first."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    sweep_stale_temporaries(folder)
    fd, tmp = tempfile.mkstemp(prefix=temp_name_prefix(), dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_folder(folder)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync it, then rename into place (no half-written outputs,
    and the new file survives a crash right after the call); see `atomic_output`."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


@functools.cache
def _renameat2() -> Any:
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not glibc >= 2.28
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


def _rename_flags(src: str, dst: str, flags: int) -> bool:
    """renameat2(src, dst, flags); False when the system or file system does not offer it, OSError on failure."""
    import ctypes
    import errno

    fn = _renameat2()
    if fn is None:
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), dst)


def rename_no_replace(src: str, dst: str) -> None:
    """Rename `src` to `dst`, raising FileExistsError if `dst` exists; atomic (RENAME_NOREPLACE) on Linux. Elsewhere
    a check then rename, which callers make exclusive with `folder_lock`."""
    if _rename_flags(src, dst, 1):  # RENAME_NOREPLACE
        return
    if os.path.lexists(dst):
        raise FileExistsError(dst)
    os.rename(src, dst)


def exchange_paths(a: str, b: str) -> bool:
    """Swap two existing paths in one atomic step (RENAME_EXCHANGE, Linux); False where that is not offered."""
    return _rename_flags(a, b, 2)


@contextlib.contextmanager
def folder_lock(folder: str):
    """An exclusive advisory lock (flock) on a folder itself, held for the block: writers that check-then-rename
    into the folder hold it so that two of them cannot both see "absent" and both rename. No lock file is left."""
    import fcntl

    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, dumps_json(obj, indent=2) + "\n")


def strict_json(obj: Any) -> Any:
    """`obj` with every non-finite float (NaN, inf) replaced by None, so the JSON written is strict (RFC 8259)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def dumps_json(obj: Any, **kw: Any) -> str:
    """json.dumps that writes strict JSON: numpy values become Python ones and NaN / inf become null."""
    return json.dumps(strict_json(json.loads(json.dumps(obj, default=json_default))), allow_nan=False, **kw)


def atomic_torch_save(obj: Any, path: str) -> None:
    """torch.save through a temporary file; read back with torch.load(path, weights_only=True)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_json_lines(path: str | os.PathLike, whole: bool = False) -> Iterator[tuple[int, Any]]:
    """(line number, object) for each non-empty line of a JSONL file (`whole`: the file is one JSON document, line 1).
    A line that is not UTF-8 or not JSON raises one PbrlError naming the file and line."""
    from pbrl.errors import PbrlError

    with open(path, "rb") as f:  # bytes, so a line that is not UTF-8 is reported with its number
        chunks = [f.read()] if whole else list(f)
    for n, raw in enumerate(chunks, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise PbrlError(f"{path}:{n}: not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r})") from None
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as e:
            raise PbrlError(f"{path}:{n}: invalid JSON ({e.msg})") from None


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu", what: str = "checkpoint") -> Any:
    """The one `torch.load` of pbrl: tensors and plain containers only (`weights_only=True`, so a crafted file cannot
    run code), and any unreadable file (missing, truncated, foreign, crafted) raises one PbrlError naming it."""
    import torch

    from pbrl.errors import PbrlError

    if not os.path.isfile(path):
        raise PbrlError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001  every failure of an untrusted file is the user's input error
        raise PbrlError(f"{path}: unreadable {what} ({type(e).__name__}: {_load_reason(e)})") from None


def _load_reason(e: Exception) -> str:
    """A short reason for a refused load. torch's own message for a file that needs pickled objects advises
    re-loading with weights_only=False: wrong advice for an untrusted file, so that case gets its own words."""
    text = str(e)
    if "weights_only" in text or "Unsupported global" in text:
        return "it holds objects other than tensors and plain containers; pbrl never unpickles those"
    first = text.strip().splitlines()[0] if text.strip() else "unreadable"
    return first[:200]


def resolve_device(device: str, field: str = "device") -> torch.device:
    """`device` as a torch.device, refused with one line when torch does not know it or this machine lacks it."""
    import torch

    from pbrl.errors import PbrlError

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise PbrlError(f"{field}: unknown torch device {device!r}; expected cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise PbrlError(f"{field}: {device!r} asked for, but torch sees no CUDA device here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise PbrlError(f"{field}: {device!r} asked for, but there are {torch.cuda.device_count()} CUDA devices")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise PbrlError(f"{field}: 'mps' asked for, but torch sees no MPS device here")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise PbrlError(f"{field}: unsupported torch device {device!r}; expected cpu, cuda, cuda:N or mps")
    return dev


def cpu_load() -> tuple[float, int]:
    """(1-minute load average, cores): the load is 0.0 where the system does not report one (Windows)."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        load = 0.0
    return load, cores


def load_note() -> str | None:
    """`load 5.1/2 cores` when the 1-minute load average is above the cores (the machine is oversubscribed and
    every thread runs a fraction of the time), else None. For progress-bar postfixes."""
    load, cores = cpu_load()
    return f"load {load:.1f}/{cores} cores" if load > cores else None


def choose_threads(requested: int | None) -> tuple[int, str | None]:
    """The torch CPU thread count for a command, and a short note when the machine is oversubscribed.

    `requested` wins when given (a positive count). The default is the cores that are free: cores minus the
    1-minute load average, rounded, at least 1 and at most the cores. Why: torch's default (one thread per core)
    collapses when other processes hold the cores: its threads wait for each other at every parallel region, so
    DPO fell from 314 to 1 samples/s and IQL from 44 to 1.8 steps/s on a busy 2-core machine, where fewer threads
    than cores keep running.
    """
    from pbrl.errors import PbrlError

    load, cores = cpu_load()
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise PbrlError(f"threads: expected a positive whole number, got {requested!r}")
        n = requested
    else:
        n = max(1, min(cores, round(cores - load)))
    return n, load_note()


def use_threads(requested: int | None) -> tuple[int, str | None]:
    """`choose_threads`, then `torch.set_num_threads` with its count (once per command, before any work)."""
    import torch

    n, note = choose_threads(requested)
    torch.set_num_threads(n)
    return n, note


def threads_line(n: int, note: str | None) -> str:
    """How a command's first line names its threads: `2 threads` or `1 thread (load 5.1/2 cores)`."""
    return f"{n} thread{'s' if n != 1 else ''}" + (f" ({note})" if note else "")


LONG_RUN_S = 600.0
"""Runs estimated above this (10 minutes) are called long in their time estimate."""


def format_duration(seconds: float) -> str:
    """`40 s`, `3.2 min`, `31.0 h`: one unit, the largest that keeps the number readable."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_line(seconds: float, work: str, rate: str, extra: str = "", shorten: str = "") -> str:
    """One line of a time estimate: `about 31.0 h for 100000 steps at 0.9 steps/s` (+ `extra`), and when it is
    over `LONG_RUN_S` a plain warning with how to shorten the run (`shorten`, e.g. `pass fewer --steps`)."""
    line = f"about {format_duration(seconds)} for {work} at {rate}{extra}"
    if seconds > LONG_RUN_S:
        line += f"; over {LONG_RUN_S / 60:.0f} minutes" + (f" ({shorten})" if shorten else "")
    return line


def round_floats(obj: Any, digits: int = 4) -> Any:
    """`obj` with every float rounded to `digits` significant digits (what a terminal summary prints; files keep
    full precision). Non-finite floats stay as they are."""
    if isinstance(obj, bool):
        return obj
    if isinstance(obj, float | np.floating):
        x = float(obj)
        return float(f"{x:.{digits}g}") if math.isfinite(x) else x
    if isinstance(obj, dict):
        return {k: round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [round_floats(v, digits) for v in obj]
    return obj


RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "checkpoint.pt", "policy.pt")
"""What a policy run folder holds (a folder with any of them holds a run)."""


def check_fresh_out(folder: str | os.PathLike, names: tuple[str, ...], overwrite: bool, hint: str) -> list[str]:
    """The paths of `names` that exist in `folder` (a run already written there). Unless `overwrite`, any such
    path is refused with one line naming the folder and `hint` (the flags that write there on purpose): a new run
    never silently replaces an old one. The caller removes the returned paths (`remove_paths`) once its inputs are
    checked, so a refused or failed input check leaves the old run whole."""
    from pbrl.errors import PbrlError

    found = [os.path.join(folder, n) for n in names if os.path.lexists(os.path.join(folder, n))]
    if found and not overwrite:
        shown = ", ".join(os.path.basename(p) for p in found[:3])
        raise PbrlError(f"{folder}: holds a run already ({shown}); {hint}")
    return found


def refuse_existing(path: str, overwrite: bool) -> None:
    """One line, before any work, when a command's output file exists and `overwrite` is off: no silent replace."""
    from pbrl.errors import PbrlError

    if os.path.lexists(path) and not overwrite:
        raise PbrlError(f"{path}: exists already (pass --overwrite to replace it)")


def remove_paths(paths: list[str]) -> None:
    """Remove files and folders (an old run's outputs before a fresh run writes over them)."""
    import shutil

    for p in paths:
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        elif os.path.lexists(p):
            os.unlink(p)


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (CPU runs are then deterministic)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def git_revision(where: str | None = None) -> str | None:
    """The commit of the checkout holding `where` (default: pbrl's own), with '+dirty' when it has changes, or None
    outside a git checkout.

    Changes under results/ do not count: records and tables copied in while a sweep runs change nothing that runs."""
    here = where or os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--", ":(top)", ":(top,exclude)results"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if hasattr(x, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(x)
    return str(x)


def bf16_enabled(setting: str, device: torch.device) -> bool:
    """A `bf16: auto|on|off` setting resolved for `device`: auto = on CUDA, or on a CPU with AMX bf16 units."""
    if setting == "auto":
        return device.type == "cuda" or (device.type == "cpu" and cpu_has_amx_bf16())
    return setting == "on"


@functools.cache
def cpu_has_amx_bf16() -> bool:
    """Whether this CPU has AMX bf16 tile units (Linux /proc/cpuinfo flag `amx_bf16`), which run bf16 matmuls
    several times faster than float32 ones (`baselines/reward_throughput.py` measures it)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " amx_bf16" in line for line in f)
    except OSError:
        return False


@contextlib.contextmanager
def denormals_flushed():
    """Flush float denormals to zero on CPU inside the block (or the decorated function), then restore the state.

    Why: once a loss saturates, backward can carry denormal values (magnitudes below 1.2e-38), and x86 arithmetic on
    them is 10-100x slower. One CPU DPO step went from 4 s to 34 s on one batch, and IQL on pendulum ran 25% faster
    with flushing; only values below that size change. The trainers are decorated with it.
    """
    import torch

    was_on = bool((torch.tensor([1e-39]) * 1.0)[0] == 0)  # torch has no getter: probe with a denormal
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_on)


def reuse_freed_heap() -> bool:
    """Serve large CPU allocations from the heap and keep freed memory there for reuse (glibc only; process-wide).

    Why: glibc gives every allocation above its mmap threshold (at most 32 MB) a fresh mmap and unmaps it on free,
    so a training step whose activations exceed 32 MB page-faults all of them in again on every step; the system
    time reached half of a CPU DPO step. With M_MMAP_MAX = 0 and a large M_TRIM_THRESHOLD, freed blocks go back to
    the heap and the next step reuses them, which is what caching allocators (jemalloc, tcmalloc, torch's CUDA
    allocator) do. The cost: the process keeps its peak heap until it exits. Only code that owns its process calls
    it: the `pbrl` command line before a command, and `run_sweep`'s process-pool workers. Returns whether glibc
    accepted both settings.
    """
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # malloc.h
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


def heap_in_use_bytes() -> int | None:
    """Bytes glibc's malloc has handed out and not had back (mallinfo2); None off glibc. Resident memory can grow
    with fragmentation alone once freed blocks stay in the heap (`reuse_freed_heap`); this counts live blocks, so a
    leak shows here first (the memory soak benchmark and its tests read it)."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (n, ctypes.c_size_t)
            for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
        ]

    libc = ctypes.CDLL("libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def adam(params: Any, lr: float, *, weight_decay: float = 0.0, decoupled: bool = False) -> torch.optim.Optimizer:
    """Adam (or AdamW when `decoupled`) with torch's fused kernel where it has one (CPU and CUDA floating tensors).

    Why: on CPU torch's default is a per-tensor loop; the fused step is several times faster on large models (the
    same update up to float rounding). HF's Trainer defaults to it as well (adamw_torch_fused).
    """
    import torch

    params = list(params)
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in tensors)
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
