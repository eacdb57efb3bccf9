"""Sweeps group the runs that differ only by seed into one process when the runner can train them together."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest

from pbrl.sweep import Grid, expand, run_sweep, seed_groups

TOY = textwrap.dedent(
    '''
    import os

    def _note(out_dir, line):
        with open(os.path.join(out_dir, "..", "..", "calls.txt"), "a") as f:
            f.write(line + "\\n")

    def run(config, out_dir):
        _note(out_dir, f"one {config['seed']}")
        return {"dataset_name": config["dataset"], "last_score": 10.0 * config["seed"], "curve": []}

    def run_seeds(configs, out_dirs):
        if any(c.get("fail") for c in configs):
            raise RuntimeError("group asked to fail")
        _note(out_dirs[0], "group " + " ".join(str(c["seed"]) for c in configs))
        return [run(c, d) for c, d in zip(configs, out_dirs)]

    run.run_seeds = run_seeds
    run.batches_seeds = lambda config: config.get("batch", True)
    '''
)


@pytest.fixture
def toy(tmp_path, monkeypatch):
    mod_dir = tmp_path / "mods"
    mod_dir.mkdir()
    (mod_dir / "toy_seeds.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(mod_dir))
    monkeypatch.setenv("PYTHONPATH", str(mod_dir) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    yield "toy_seeds:run"
    sys.modules.pop("toy_seeds", None)


def _grid(runner, **kw):
    return Grid(name="toy", runner=runner, axes={"dataset": ["a", "b"], "seed": [0, 1, 2]},
                columns=[{"name": "A"}, {"name": "B", "batch": False}], **kw)


def _calls(out):
    return open(os.path.join(out, "calls.txt")).read().splitlines()


def test_groups_are_one_column_and_config_without_the_seed(toy):
    runs = expand(_grid(toy))
    groups = seed_groups(runs, toy)
    batched = [[r.config["seed"] for r in g] for g in groups if g[0].column == "A"]
    assert batched == [[0, 1, 2], [0, 1, 2]]  # one per dataset
    assert {len(g) for g in groups if g[0].column == "B"} == {1}  # batches_seeds refused them
    assert sorted(r.run_id for g in groups for r in g) == sorted(r.run_id for r in runs)
    assert all(len(g) == 1 for g in seed_groups(runs, "json:dumps"))  # a runner without run_seeds


@pytest.mark.parametrize("workers", [1, 2])
def test_sweep_batches_seeds_and_resumes_per_seed(toy, tmp_path, workers):
    out = str(tmp_path / "sw")
    grid = _grid(toy)
    # seed 1 of dataset a in column A already finished: the group reruns only seeds 0 and 2
    done = next(r for r in expand(grid) if r.column == "A" and r.config == {"dataset": "a", "seed": 1})
    os.makedirs(os.path.join(out, "records"))
    with open(os.path.join(out, "records", f"{done.run_id}.json"), "w") as f:
        json.dump({"run_id": done.run_id, "status": "ok"}, f)
    lines = []
    recs = run_sweep(grid, out, workers=workers, log=lines.append, batch_seeds=True if workers > 1 else None)
    assert len(recs) == 11 and all(r["status"] == "ok" for r in recs)
    calls = _calls(out)
    assert sorted(c for c in calls if c.startswith("group")) == ["group 0 1 2", "group 0 2"]
    assert sum(c.startswith("one") for c in calls) == 11  # run() once per run (B alone, A inside its groups)
    assert "seeds batched: 11 runs in 8 processes" in " ".join(lines)
    by_id = {r["run_id"]: r for r in recs}
    group = [r for r in recs if r["column"] == "A" and r["config"]["dataset"] == "b"]
    assert all(r["seed_batch"] == [g["run_id"] for g in sorted(group, key=lambda x: x["config"]["seed"])]
               for r in group)
    assert by_id[group[2]["run_id"]]["result"]["last_score"] == 10.0 * group[2]["config"]["seed"]
    assert all("seed_batch" not in r for r in recs if r["column"] == "B")
    assert run_sweep(grid, out, log=lambda s: None) == []  # every seed has its record: nothing left
    # batch_seeds=False, and the default with several workers: one task per run
    for name, kw in (("plain", {"batch_seeds": False}), ("two", {"workers": 2})):
        run_sweep(grid, str(tmp_path / name), log=lambda s: None, **kw)
        assert not any(c.startswith("group") for c in _calls(str(tmp_path / name)))


def test_a_failed_group_records_each_of_its_runs(toy, tmp_path):
    out = str(tmp_path / "sw")
    grid = Grid(name="toy", runner=toy, axes={"dataset": ["a"], "seed": [0, 1]}, columns=[{"name": "F", "fail": True}])
    recs = run_sweep(grid, out, log=lambda s: None)
    assert [r["status"] for r in recs] == ["failed", "failed"]
    assert all("group asked to fail" in r["error"] for r in recs)
    assert all(os.path.isfile(os.path.join(out, "records", f"{r['run_id']}.failed.json")) for r in recs)


def test_policy_runner_batches_seeds_like_separate_runs(tmp_path):
    """pbrl.policies.trainer:run_record: a grouped sweep's records equal those of separate runs."""
    import torch

    from pbrl.data import collect_episodes
    from pbrl.policies.trainer import dataset_fingerprint

    torch.set_num_threads(1)
    ds = collect_episodes("Pendulum-v1", num_episodes=4, seed=0, env_kwargs={"max_episode_steps": 40},
                          metadata={"ref_min_score": -400.0, "ref_max_score": 0.0})
    path = "pbrl/pendulum-sweep-seeds/random-v0"
    ds.to_minari(path)
    grid = Grid(name="pol", runner="pbrl.policies.trainer:run_record",
                base={"algo": "td3bc", "dataset": path, "steps": 30, "eval_every": 15, "eval_episodes": 2,
                      "policy": {"hidden": [16, 16], "batch_size": 16}},
                axes={"seed": [0, 1]})
    batched = run_sweep(grid, str(tmp_path / "b"), log=lambda s: None)
    separate = run_sweep(grid, str(tmp_path / "s"), batch_seeds=False, log=lambda s: None)
    assert all(r["status"] == "ok" for r in batched + separate), [r.get("error") for r in batched + separate]
    assert all(len(r["seed_batch"]) == 2 for r in batched)
    for rb, rs in zip(sorted(batched, key=lambda r: r["run_id"]), sorted(separate, key=lambda r: r["run_id"])):
        assert rb["run_id"] == rs["run_id"]
        assert rb["result"]["last_score"] == pytest.approx(rs["result"]["last_score"], rel=1e-5, abs=1e-6)
        assert [c[0] for c in rb["result"]["curve"]] == [15, 30]
        # both name the build of the data they trained on: the same one
        assert rb["result"]["dataset_sha256"] == rs["result"]["dataset_sha256"] == dataset_fingerprint(ds)
