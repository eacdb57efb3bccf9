"""Shared helpers in pbrl.utils."""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import subprocess
import sys
import threading
import time

import pytest
import torch

from pbrl.utils import (
    adam,
    atomic_write_bytes,
    denormals_flushed,
    exchange_paths,
    folder_lock,
    rename_no_replace,
    temp_name_prefix,
)


def test_fused_adam_matches_the_reference_update():
    torch.manual_seed(0)
    w = torch.randn(64, 32)
    for decoupled, ref_cls in [(False, torch.optim.Adam), (True, torch.optim.AdamW)]:
        a, b = w.clone().requires_grad_(), w.clone().requires_grad_()
        opt = adam([a], 1e-2, weight_decay=0.1, decoupled=decoupled)
        ref = ref_cls([b], lr=1e-2, weight_decay=0.1, foreach=False)
        assert opt.defaults["fused"] and isinstance(opt, ref_cls)
        for _ in range(5):
            g = torch.randn_like(w)
            a.grad, b.grad = g.clone(), g.clone()
            opt.step()
            ref.step()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        # the state round-trips into a fresh optimizer (resume)
        again = adam([a], 1e-2, weight_decay=0.1, decoupled=decoupled)
        again.load_state_dict(opt.state_dict())
        assert int(again.state_dict()["state"][0]["step"]) == 5


def test_denormals_flushed_zeroes_denormals_inside_the_block_only():
    x = torch.tensor([1e-39, 1e-30, 1.0])  # 1e-39 is below float32's smallest normal (1.18e-38)
    assert (x * 1.0)[0] > 0
    with denormals_flushed():
        assert (x * 1.0).tolist() == [0.0, float(x[1]), 1.0]
        assert float(torch.tensor(1e-20) * torch.tensor(1e-20)) == 0.0  # a product that underflows into the range
    assert (x * 1.0)[0] > 0  # torch's default is back


def test_denormals_flushed_restores_the_state_it_found():
    x = torch.tensor([1e-39])
    with denormals_flushed():
        with denormals_flushed():  # a decorated trainer called inside another
            pass
        assert float(x * 1.0) == 0.0  # the outer block is still flushing
    try:
        torch.set_flush_denormal(True)  # a user's own setting survives the block
        with denormals_flushed():
            pass
        assert float(x * 1.0) == 0.0
    finally:
        torch.set_flush_denormal(False)


_KEPT = """
import os, sys
import numpy as np
from pbrl.utils import reuse_freed_heap
took = reuse_freed_heap() if sys.argv[1] == "on" else None
def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
a = np.empty(1 << 24, dtype=np.float32)  # 64 MB, touched, as a training step's large activation
a.fill(1.0)
before = rss()
del a
print(took, (before - rss()) >> 20)  # MB returned to the system by the free
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_reuse_freed_heap_keeps_a_large_freed_block_mapped_for_the_next_step():
    def returned_mb(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", _KEPT, mode], capture_output=True, text=True, check=True)
        took, mb = out.stdout.split()
        return took, int(mb)

    _, default = returned_mb("off")
    took, kept = returned_mb("on")
    assert took == "True"
    assert default >= 60  # glibc default: the block was its own mmap, unmapped on free (next step faults it in)
    assert kept < 4  # the block stayed in the heap, mapped, for the next allocation


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_bytes(str(tmp_path / "x.json"), b"{}")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "x.json").st_mode & 0o777 == mode
    assert os.listdir(tmp_path) == ["x.json"]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name fsynced descriptors")
def test_atomic_write_fsyncs_the_file_before_and_the_folder_after_the_rename(tmp_path, monkeypatch):
    synced: list[tuple[str, bool]] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), (tmp_path / "ckpt.pt").exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    atomic_write_bytes(str(tmp_path / "ckpt.pt"), b"weights")
    (tmp_name, published_then), (folder, published_after) = synced
    assert os.path.basename(tmp_name).startswith(temp_name_prefix()) and not published_then
    assert folder == str(tmp_path) and published_after


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_the_next_atomic_write_sweeps_killed_writers_temporaries_only(tmp_path):
    tag = temp_name_prefix().split("-")[2]  # this host's tag: .tmp-<pid>-<tag>-
    hour_ago = time.time() - 7200
    names = {
        f".tmp-{_dead_pid()}-{tag}-a": False,  # its writer is gone: swept
        f"{temp_name_prefix()}b": True,  # this live process's: kept
        ".tmp-12345-0badc0de-c": True,  # another host's, fresh: kept (its writer may be alive)
        ".tmp-12345-0badc0de-d": False,  # another host's, two hours old: swept
        ".tmp-k2j3h4x9": True,  # an earlier version's (no pid), fresh: kept
        ".tmp-q8w7e6r5": False,  # an earlier version's, two hours old: swept
        ".tmp-my.notes": True,  # not a name pbrl writes, however old: kept
        "actor_0000100.pt": True,  # not a temporary
    }
    for name, _ in names.items():
        (tmp_path / name).write_bytes(b"part")
    for name in (".tmp-12345-0badc0de-d", ".tmp-q8w7e6r5", ".tmp-my.notes"):
        os.utime(tmp_path / name, (hour_ago, hour_ago))
    atomic_write_bytes(str(tmp_path / "resume.pt"), b"new")
    assert sorted(os.listdir(tmp_path)) == sorted([n for n, kept in names.items() if kept] + ["resume.pt"])


def test_rename_no_replace_never_replaces_and_exchange_swaps(tmp_path):
    src, dst = tmp_path / "new", tmp_path / "old"
    src.mkdir()
    (src / "f").write_text("new")
    for existing in ("empty folder", "file", "full folder"):  # os.rename replaces the first two silently
        if existing == "file":
            dst.rmdir()
            dst.write_text("x")
        elif existing == "full folder":
            dst.unlink()
            dst.mkdir()
            (dst / "f").write_text("old")
        else:
            dst.mkdir()
        with pytest.raises(FileExistsError):
            rename_no_replace(str(src), str(dst))
        assert (src / "f").read_text() == "new"
    if exchange_paths(str(src), str(dst)):
        assert (dst / "f").read_text() == "new" and (src / "f").read_text() == "old"
    rename_no_replace(str(src), str(tmp_path / "free"))
    assert (tmp_path / "free" / "f").exists() and not src.exists()


def _hold_lock(folder: str, held, release) -> None:
    with folder_lock(folder):
        held.set()
        release.wait(10)


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_folder_lock_excludes_another_process(tmp_path):
    ctx = mp.get_context("fork")
    held, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(str(tmp_path), held, release))
    proc.start()
    assert held.wait(10)
    t0 = time.perf_counter()
    release_at = t0 + 0.3
    threading.Timer(0.3, release.set).start()
    with folder_lock(str(tmp_path)):
        waited = time.perf_counter()
    proc.join(10)
    assert waited >= release_at - 0.01  # got the lock only once the other process let go
    assert os.listdir(tmp_path) == []  # no lock file left


def _fake_load(monkeypatch, load: float, cores: int) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(os, "cpu_count", lambda: cores)


def test_choose_threads_defaults_to_the_free_cores(monkeypatch):
    from pbrl.utils import choose_threads

    _fake_load(monkeypatch, 0.2, 8)
    assert choose_threads(None) == (8, None)  # 7.8 free cores round to 8
    _fake_load(monkeypatch, 2.6, 8)
    assert choose_threads(None) == (5, None)  # 5.4 -> 5
    _fake_load(monkeypatch, 2.0, 2)
    assert choose_threads(None) == (1, None)  # no core free: still one thread, not oversubscribed (load == cores)
    _fake_load(monkeypatch, 5.1, 2)
    assert choose_threads(None) == (1, "load 5.1/2 cores")


def test_choose_threads_keeps_a_request_and_still_notes_the_load(monkeypatch):
    from pbrl.errors import PbrlError
    from pbrl.utils import choose_threads, threads_line

    _fake_load(monkeypatch, 5.1, 2)
    assert choose_threads(4) == (4, "load 5.1/2 cores")  # a request above the cores is the user's choice
    assert threads_line(4, "load 5.1/2 cores") == "4 threads (load 5.1/2 cores)"
    assert threads_line(1, None) == "1 thread"
    for bad in (0, -1, 1.5, True):
        with pytest.raises(PbrlError, match="threads"):
            choose_threads(bad)


def test_choose_threads_without_a_load_average(monkeypatch):
    from pbrl.utils import choose_threads

    def no_load():
        raise OSError("no load average here")

    monkeypatch.setattr(os, "getloadavg", no_load)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert choose_threads(None) == (3, None)


def test_git_revision_marks_changes_to_code_but_not_to_results(tmp_path):
    from pbrl.utils import git_revision

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "t.md").write_text("| a |\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert git_revision(str(tmp_path)) == head
    (tmp_path / "results" / "t.md").write_text("| b |\n")  # a table regenerated, a record copied in
    (tmp_path / "results" / "new.json").write_text("{}")
    assert git_revision(str(tmp_path)) == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_revision(str(tmp_path)) == head + "+dirty"
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "new_module.py").write_text("")  # an untracked file outside results/ may be imported
    assert git_revision(str(tmp_path)) == head + "+dirty"
    assert git_revision(str(tmp_path / "results")) == head + "+dirty"  # from a subfolder: the whole checkout
