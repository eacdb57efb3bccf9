"""Bad input through the real command line: every case exits 2 with exactly one `pbrl: error:` line on stderr that
names the file or field, no traceback, and nothing left behind in the folder it ran in.

The inputs (a tiny pendulum dataset as D4RL hdf5, a trained tiny policy, a DPO run, broken copies of each) are built
once for the module. The cases run through `pbrl.cli.main` in their own processes, each in its own folder with its
own stdout/stderr files and exit status: one launcher process (`python -c LAUNCHER`) imports the heavy libraries
once and forks a child per case, two at a time, since a fresh interpreter per case spends about 2.5 s of CPU on
imports alone and the module must stay near a minute on two cores. Every case fails before any training.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    """Command-line words after `pbrl`; {in} is the shared inputs folder."""
    names: str
    """Text the error line must contain (the file or field), case-insensitive."""
    prepare: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    """(source under inputs, destination under the case folder) copied in before the run."""
    absent: tuple[str, ...] = ()
    """Paths (under the case folder) that must not exist afterwards."""


class _Payload:  # a pickle that would run code if loaded unsafely
    def __reduce__(self):
        return (os.system, ("echo payload-ran > payload.txt",))


CASES = [
    # ---- argument parsing (tyro)
    Case("missing-positional", ("train", "bc"), "spec"),
    Case("steps-not-int", ("train", "bc", "{in}/ds.hdf5", "--steps", "abc"), "steps"),
    # ---- datasets
    Case("data-info-truncated-hdf5", ("data", "info", "{in}/truncated.hdf5"), "truncated.hdf5"),
    Case("train-truncated-hdf5", ("train", "bc", "{in}/truncated.hdf5", "--out", "run"), "truncated.hdf5", absent=("run",)),
    Case("train-d4rl-truncated", ("train", "bc", "d4rl:{in}/truncated.hdf5", "--out", "run"), "truncated.hdf5",
         absent=("run",)),
    Case("train-missing-hdf5", ("train", "bc", "missing.hdf5", "--out", "run"), "missing.hdf5", absent=("run",)),
    Case("train-nan-observations", ("train", "bc", "{in}/nan.hdf5", "--out", "run"), "observations", absent=("run",)),
    # ---- checkpoints
    Case("resume-crafted-checkpoint",
         ("train", "bc", "{in}/ds.hdf5", "--steps", "4", "--eval-episodes", "0", "--out", "run", "--resume",
          "--set", "hidden=[8,8]", "batch_size=8"),
         "checkpoint.pt", prepare=(("run", "run"), ("crafted.pt", "run/checkpoint.pt"))),
    Case("resume-truncated-checkpoint",
         ("train", "bc", "{in}/ds.hdf5", "--steps", "4", "--eval-episodes", "0", "--out", "run", "--resume",
          "--set", "hidden=[8,8]", "batch_size=8"),
         "checkpoint.pt", prepare=(("run", "run"), ("truncated.pt", "run/checkpoint.pt"))),
    Case("resume-empty-checkpoint",
         ("train", "bc", "{in}/ds.hdf5", "--steps", "4", "--eval-episodes", "0", "--out", "run", "--resume",
          "--set", "hidden=[8,8]", "batch_size=8"),
         "checkpoint.pt", prepare=(("run", "run"), ("empty.pt", "run/checkpoint.pt"))),
    Case("resume-other-data",
         ("train", "bc", "{in}/other.hdf5", "--steps", "4", "--eval-episodes", "0", "--out", "run", "--resume",
          "--set", "hidden=[8,8]", "batch_size=8"),
         "dataset", prepare=(("run", "run"),)),
    Case("eval-crafted", ("eval", "{in}/crafted.pt"), "crafted.pt"),
    Case("eval-truncated", ("eval", "{in}/truncated.pt"), "truncated.pt"),
    Case("eval-foreign", ("eval", "{in}/foreign.pt"), "foreign.pt"),
    Case("eval-env-mismatch", ("eval", "{in}/policy.pt", "--env-id", "CartPole-v1", "--episodes", "1"), "CartPole-v1"),
    Case("eval-device", ("eval", "{in}/policy.pt", "--device", "tpu"), "device"),
    # ---- settings of `pbrl train`
    Case("set-float-abc", ("train", "iql", "{in}/ds.hdf5", "--set", "expectile=abc", "--out", "run"), "expectile",
         absent=("run",)),
    Case("set-hidden-int", ("train", "iql", "{in}/ds.hdf5", "--set", "hidden=5", "--out", "run"), "hidden",
         absent=("run",)),
    Case("set-unknown-key", ("train", "iql", "{in}/ds.hdf5", "--set", "nosuch=1", "--out", "run"), "nosuch",
         absent=("run",)),
    Case("device-tpu", ("train", "bc", "{in}/ds.hdf5", "--device", "tpu", "--out", "run"), "device", absent=("run",)),
    Case("env-id-mismatch", ("train", "bc", "{in}/ds.hdf5", "--env-id", "CartPole-v1", "--out", "run"), "CartPole-v1",
         absent=("run",)),
    Case("env-id-unknown", ("train", "bc", "{in}/ds.hdf5", "--env-id", "NoSuchEnv-v9", "--out", "run"), "NoSuchEnv-v9",
         absent=("run",)),
    # ---- pipeline: a failure leaves no config.json
    Case("pipeline-device", ("pipeline", "{in}/ds.hdf5", "--length", "5", "--device", "tpu", "--out", "p"), "device", absent=("p",)),
    Case("pipeline-missing-labels", ("pipeline", "{in}/ds.hdf5", "--length", "5", "--labels", "nolabels", "--out", "p"), "nolabels",
         absent=("p",)),
    # ---- llm dpo
    Case("dpo-not-utf8", ("llm", "dpo", "{in}/latin1.jsonl", "--out", "run"), "latin1.jsonl:2", absent=("run",)),
    Case("dpo-not-json", ("llm", "dpo", "{in}/notjson.jsonl", "--out", "run"), "notjson.jsonl:1", absent=("run",)),
    Case("dpo-missing-field", ("llm", "dpo", "{in}/nofield.jsonl", "--out", "run"), "rejected", absent=("run",)),
    Case("dpo-crafted-ref-logps",
         ("llm", "dpo", "{in}/prefs.jsonl", "--ref-logps", "{in}/crafted.pt", "--out", "run", "--no-progress"),
         "crafted.pt", absent=("run",)),
    Case("dpo-missing-ref-logps",
         ("llm", "dpo", "{in}/prefs.jsonl", "--ref-logps", "nothere.pt", "--out", "run", "--no-progress"),
         "nothere.pt", absent=("run",)),
    Case("dpo-resume-other-data",
         ("llm", "dpo", "{in}/prefs2.jsonl", "--out", "dpo", "--batch-size", "8", "--max-steps", "2",
          "--model.hidden-size", "16", "--model.intermediate-size", "32", "--no-progress"),
         "data_sha256", prepare=(("dpo", "dpo"),)),
    Case("dpo-device", ("llm", "dpo", "{in}/prefs.jsonl", "--device", "tpu", "--out", "run"), "device",
         absent=("run",)),
    # ---- sweep
    Case("sweep-axes-list", ("sweep", "{in}/grid_axes_list.json", "--out", "o"), "axes", absent=("o",)),
    Case("sweep-name-escapes", ("sweep", "{in}/grid_escape.json", "--out", "a/b"), "name", absent=("a", "x")),
]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from pbrl.data import collect_episodes
    from pbrl.data.d4rl_io import write_d4rl
    from pbrl.llm.dpo import DpoConfig, train_dpo
    from pbrl.llm.models import TinyLMConfig
    from pbrl.llm.prefs_data import save_preferences, synthetic_records
    from pbrl.policies.base import default_config
    from pbrl.policies.trainer import train_policy

    root = tmp_path_factory.mktemp("adversarial")
    inp = root / "inputs"
    inp.mkdir()
    torch.set_num_threads(1)
    ds = collect_episodes("Pendulum-v1", num_episodes=2, seed=0, env_kwargs={"max_episode_steps": 20})
    n = ds.num_transitions

    def hdf5(path: Path, obs: np.ndarray, rewards: np.ndarray) -> None:
        write_d4rl(str(path), obs, ds.actions, rewards, ds.terminations, ds.truncations)

    hdf5(inp / "ds.hdf5", ds.observations, ds.rewards)
    hdf5(inp / "other.hdf5", ds.observations, np.asarray(ds.rewards) + 1.0)
    nan_obs = np.array(ds.observations, dtype=np.float32)
    nan_obs[3, 1] = np.nan
    hdf5(inp / "nan.hdf5", nan_obs, ds.rewards)
    good = (inp / "ds.hdf5").read_bytes()
    (inp / "truncated.hdf5").write_bytes(good[: len(good) // 2])

    # a stopped training run (checkpoint at step 2 of 4) on ds.hdf5, and a finished policy with its env
    from pbrl.data import load_dataset

    cfg = default_config("bc", hidden=(8, 8), batch_size=8)
    train_policy("bc", load_dataset(str(inp / "ds.hdf5")), cfg, steps=4, stop_at=2, out_dir=inp / "run",
                 eval_every=0, eval_episodes=0, progress=False)
    train_policy("bc", ds, cfg, steps=2, out_dir=root / "policy", eval_every=0, eval_episodes=0, progress=False)
    shutil.copy(root / "policy" / "policy.pt", inp / "policy.pt")
    ckpt = (inp / "policy.pt").read_bytes()
    (inp / "truncated.pt").write_bytes(ckpt[: len(ckpt) // 2])
    (inp / "empty.pt").write_bytes(b"")
    torch.save({"weights": torch.zeros(3)}, inp / "foreign.pt")
    torch.save({"algo": "bc", "x": _Payload()}, inp / "crafted.pt")
    assert n > 0

    # preference files: good ones, and one broken each way
    save_preferences(synthetic_records("tldr", 16, seed=0, scale=0.05), inp / "prefs.jsonl")
    save_preferences(synthetic_records("tldr", 16, seed=1, scale=0.05), inp / "prefs2.jsonl")
    line = '{"prompt": "a", "chosen": "b", "rejected": "c"}\n'
    (inp / "latin1.jsonl").write_bytes(line.encode() + '{"prompt": "caf\xe9"}\n'.encode("latin-1"))
    (inp / "notjson.jsonl").write_text('{"prompt": "a",\n')
    (inp / "nofield.jsonl").write_text('{"prompt": "a", "chosen": "b"}\n')
    train_dpo(DpoConfig(data=str(inp / "prefs.jsonl"), out=str(inp / "dpo"), batch_size=8, max_steps=1,
                        model=TinyLMConfig(hidden_size=16, intermediate_size=32), progress=False))
    # grids
    (inp / "grid_axes_list.json").write_text(json.dumps({"name": "g", "runner": "m:f", "axes": ["seed", [0]]}))
    (inp / "grid_escape.json").write_text(json.dumps({"name": "../../x", "runner": "m:f"}))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINARI_DATASETS_PATH": str(root / "minari")}
    before_inputs = _snapshot(inp)

    jobs, before = [], {}
    for case in CASES:
        folder = root / "cases" / case.id
        folder.mkdir(parents=True)
        for src, dst in case.prepare:
            s, d = inp / src, folder / dst
            if s.is_dir():
                shutil.copytree(s, d)
            else:
                d.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(s, d)
        before[case.id] = _snapshot(folder)
        jobs.append({"id": case.id, "cwd": str(folder), "args": [a.replace("{in}", str(inp)) for a in case.args]})
    (root / "jobs.json").write_text(json.dumps(jobs))
    subprocess.run([sys.executable, "-c", LAUNCHER, str(root / "jobs.json"), str(root / "io")], env=env,
                   check=True, timeout=600)
    out = {}
    for case in CASES:
        folder = root / "cases" / case.id
        io = root / "io" / case.id
        out[case.id] = {
            "rc": int((io / "rc").read_text()),
            "stderr": (io / "stderr").read_text(errors="replace"),
            "before": before[case.id],
            "after": _snapshot(folder),
            "folder": folder,
        }
    out["__inputs_changed__"] = _snapshot(inp) != before_inputs
    return out


# Imports what the commands use, then runs each job in a forked child: cwd set, stdout/stderr to files, argv as the
# `pbrl` entry point sets it, exit status = what `pbrl.cli.main` returns (or the exception's, if it escapes).
LAUNCHER = r"""
import json, os, sys
import torch, gymnasium, h5py, transformers  # noqa: F401  the slow imports, paid once
import pbrl.cli, pbrl.policies.commands, pbrl.data.commands, pbrl.llm.commands, pbrl.pipeline, pbrl.commands  # noqa
jobs, io = json.load(open(sys.argv[1])), sys.argv[2]
running = {}
def reap():
    pid, status = os.wait()
    job = running.pop(pid)
    with open(os.path.join(io, job, "rc"), "w") as f:
        f.write(str(os.waitstatus_to_exitcode(status)))
for job in jobs:
    if len(running) >= 2:
        reap()
    d = os.path.join(io, job["id"])
    os.makedirs(d)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(job["cwd"])
            for fd, name in ((1, "stdout"), (2, "stderr")):
                out = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(out, fd)
            sys.argv = ["pbrl", *job["args"]]
            code = pbrl.cli.main(job["args"])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    running[pid] = job["id"]
while running:
    reap()
"""


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(results, case):
    r = results[case.id]
    stderr = r["stderr"]
    err_lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr[-2000:]
    assert r["rc"] == 2, (r["rc"], stderr[-2000:])
    assert len(err_lines) == 1 and err_lines[0].startswith("pbrl: error:"), stderr[-2000:]
    assert case.names.lower() in err_lines[0].lower(), err_lines[0]
    # nothing left behind: the folder is as it was (no new or rewritten files, no temporary files)
    assert r["after"] == r["before"], sorted(set(r["after"]) ^ set(r["before"])) or "a file was rewritten"
    assert not list(r["folder"].rglob(".tmp-*")) and not list(r["folder"].rglob("*.tmp"))
    assert not (r["folder"] / "payload.txt").exists()
    for name in case.absent:
        assert not (r["folder"] / name).exists(), name


def test_inputs_were_not_modified(results):
    assert not results["__inputs_changed__"]
