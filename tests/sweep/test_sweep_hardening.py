"""Sweep hardening: grid files checked field by field, grid names that cannot leave --out, workers that die with
their driver, and Ray tasks that keep freed heap blocks like the local workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pbrl.errors import PbrlError
from pbrl.sweep import Grid, check_grid_name, load_grid, run_sweep

SLEEPER = textwrap.dedent(
    '''
    import os, time

    def run(config, out_dir):
        with open(os.path.join(os.environ["PIDS_DIR"], f"{os.getpid()}.pid"), "w") as f:
            f.write(str(os.getpid()))
        time.sleep(120)
        return {"last_score": 0.0}
    '''
)


def _write(tmp_path: Path, obj: object) -> str:
    p = tmp_path / "grid.json"
    p.write_text(json.dumps(obj))
    return str(p)


@pytest.mark.parametrize(
    "grid, match",
    [
        ({"name": "g", "runner": "m:f", "axes": ["seed", [0, 1]]}, "'axes' must be a JSON object, got list"),
        ({"name": "g", "runner": "m:f", "axes": {"seed": 3}}, "axis 'seed' must be a non-empty list"),
        ({"name": "g", "runner": "m:f", "base": [1]}, "'base' must be a JSON object"),
        ({"name": "g", "runner": "m:f", "columns": {"name": "A"}}, "'columns' must be a JSON list"),
        ({"name": "g", "runner": "m:f", "columns": ["A"]}, "column 0 must be an object with a string 'name'"),
        ({"name": 3, "runner": "m:f"}, "'name' must be a JSON string"),
        ({"name": "../../x", "runner": "m:f"}, "'name': expected one folder name"),
        ({"name": "..", "runner": "m:f"}, "'name': expected one folder name"),
        ({"name": "/abs", "runner": "m:f"}, "'name': expected one folder name"),
        ([1, 2], "a grid is a JSON object, got list"),
    ],
)
def test_bad_grid_files_are_one_error(tmp_path, grid, match):
    with pytest.raises(PbrlError, match=match):
        load_grid(_write(tmp_path, grid))


def test_grid_names_stay_inside_out(tmp_path):
    assert check_grid_name("dtr_table1-small") == "dtr_table1-small"
    for bad in ("../x", "a/b", "", ".", "a\\b", "x\x00"):
        with pytest.raises(PbrlError, match="one folder name"):
            check_grid_name(bad)
    # the library entry refuses a Grid built in code, before writing anything
    with pytest.raises(PbrlError, match="one folder name"):
        run_sweep(Grid(name="../escape", runner="m:f"), str(tmp_path / "out"), log=lambda s: None)
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape").exists()


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by its new parent, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_workers_die_with_a_killed_driver(tmp_path):
    mods, pids = tmp_path / "mods", tmp_path / "pids"
    mods.mkdir()
    pids.mkdir()
    (mods / "sleeper.py").write_text(SLEEPER)
    grid = _write(tmp_path, {"name": "sleep", "runner": "sleeper:run", "axes": {"seed": [0, 1]}})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(mods), os.environ.get("PYTHONPATH", "")]),
           "PIDS_DIR": str(pids), "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen(
        [sys.executable, "-m", "pbrl.cli", "sweep", grid, "--workers", "2", "--out", str(tmp_path / "out")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while len(list(pids.glob("*.pid"))) < 2 and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.2)
        workers = [int(p.stem) for p in pids.glob("*.pid")]
        assert len(workers) == 2, "the workers did not start their runs"
        assert all(_alive(w) for w in workers)
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
        deadline = time.monotonic() + 5
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [w for w in workers if _alive(w)]
        assert not left, f"workers {left} outlived their driver"
        assert not list((tmp_path / "out" / "sleep" / "records").glob("*.json"))
    finally:
        if driver.poll() is None:
            driver.kill()
        for p in pids.glob("*.pid"):  # never leave a sleeper behind, whatever failed above
            try:
                os.kill(int(p.stem), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_ray_task_reuses_freed_heap(monkeypatch):
    import pbrl.sweep as sweep

    calls = []
    monkeypatch.setattr(sweep, "reuse_freed_heap", lambda: calls.append("heap") or True)
    monkeypatch.setattr(sweep, "execute", lambda *a: calls.append(("execute", a)) or {"status": "ok"})
    assert sweep._execute_ray("spec", "m:f", "/out", 1) == {"status": "ok"}
    assert calls == ["heap", ("execute", ("spec", "m:f", "/out", 1))]


def test_sweep_threads_per_worker_default_to_the_free_cores(tmp_path, monkeypatch):
    import torch

    (tmp_path / "threads_runner.py").write_text(
        "import torch\n\ndef run(config, out_dir):\n    return {'threads': torch.get_num_threads()}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(os, "getloadavg", lambda: (2.2, 2.2, 2.2))
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    was = torch.get_num_threads()
    lines: list[str] = []
    try:
        grid = Grid(name="t", runner="threads_runner:run", axes={"seed": [0]})
        (rec,) = run_sweep(grid, str(tmp_path / "a"), log=lines.append)
        assert rec["threads"] == 6 and rec["result"]["threads"] == 6  # round(8 - 2.2) free cores, one worker
        assert "1 worker(s) x 6 threads" in "\n".join(lines)
        (rec,) = run_sweep(grid, str(tmp_path / "b"), log=lines.append, threads=3)
        assert rec["result"]["threads"] == 3
    finally:
        torch.set_num_threads(was)


def test_sweep_refuses_a_missing_reuse_folder_and_a_negative_progress_period(tmp_path, capsys):
    from pbrl.cli import main

    grid = tmp_path / "g.json"
    grid.write_text(json.dumps({"name": "g", "runner": "x:y"}))
    for extra, match in ((["--reuse", str(tmp_path / "typo")], "--reuse: "), (["--progress-every", "-1"], "--progress-every")):
        assert main(["sweep", str(grid), "--out", str(tmp_path / "out"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("pbrl: error: ") and match in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()  # refused before anything is written
