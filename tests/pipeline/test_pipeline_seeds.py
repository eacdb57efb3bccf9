"""Seeds of a pipeline column in one process (`run_pipelines`, `pbrl pipeline --seeds`, a sweep grouping a column's
seeds): each seed learns its own reward from its own labels, and the policies train as one batched model on the
seeds' own relabeled datasets. Records equal separate runs' to RTOL 1e-5 relative / 1e-6 absolute (the batched
matmuls' float rounding, as tests/policies/test_seed_batching.py)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from pbrl.cli import main
from pbrl.data import collect_episodes
from pbrl.errors import PbrlError
from pbrl.pipeline import PipelineConfig, run_pipelines, run_record
from pbrl.sweep import Grid, expand, run_sweep, seed_groups

RTOL, ATOL = 1e-5, 1e-6
DATA = "pbrl/test/pendulum-pipeline-seeds-v0"
BASE = {"dataset": DATA, "steps": 20, "eval_every": 10, "eval_episodes": 2, "queries": 40, "length": 10,
        "ensemble": 2, "reward_epochs": 2, "policy": {"hidden": [16, 16], "batch_size": 16}}


@pytest.fixture
def data() -> str:  # each test has its own dataset folder (tests/conftest.py)
    torch.set_num_threads(1)
    collect_episodes("Pendulum-v1", num_episodes=4, seed=0, env_kwargs={"max_episode_steps": 50}).to_minari(
        DATA, ref_min_score=-1500.0, ref_max_score=-150.0)
    return DATA


def test_a_sweep_batches_each_pb_columns_seeds_and_equals_separate_runs(data, tmp_path):
    grid = Grid(name="pb", runner="pbrl.pipeline:run_record", base=BASE, axes={"seed": [0, 1]},
                columns=[{"name": "Pb-TD3BC", "algo": "td3bc", "reward": "step"},
                         {"name": "Oracle-IQL", "algo": "iql", "reward": "true"}])
    groups = seed_groups(expand(grid), grid.runner)
    assert sorted(len(g) for g in groups) == [2, 2]  # one process per column, its two seeds together
    batched = run_sweep(grid, str(tmp_path / "b"), log=lambda _: None)
    separate = run_sweep(grid, str(tmp_path / "s"), batch_seeds=False, log=lambda _: None)
    assert all(r["status"] == "ok" for r in batched + separate), [r.get("error") for r in batched + separate]
    assert all(len(r["seed_batch"]) == 2 for r in batched) and all("seed_batch" not in r for r in separate)
    by_id = {r["run_id"]: r for r in separate}
    for rb in batched:
        rs = by_id[rb["run_id"]]
        a, b = rb["result"], rs["result"]
        assert a["last_score"] == pytest.approx(b["last_score"], rel=RTOL, abs=ATOL)
        assert [c[0] for c in a["curve"]] == [10, 20]
        for (_, x), (_, y) in zip(a["curve"], b["curve"]):
            assert x == pytest.approx(y, rel=RTOL, abs=ATOL)
        assert a["reward"] == b["reward"]  # the reward stage is the seed's own, as in its separate run
        run_b = tmp_path / "b" / "runs" / rb["run_id"]
        run_s = tmp_path / "s" / "runs" / rb["run_id"]
        rows_b = [json.loads(x) for x in (run_b / "policy" / "metrics.jsonl").read_text().splitlines()]
        rows_s = [json.loads(x) for x in (run_s / "policy" / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows_b] == [r["step"] for r in rows_s]
        for x, y in zip(rows_b, rows_s):
            for k, v in y.items():
                if k != "perf/steps_per_s" and isinstance(v, float):
                    assert x[k] == pytest.approx(v, rel=RTOL, abs=ATOL), (k, x["step"])
        # the policy trained on the seed's own relabeled data: its run fingerprint is the separate run's
        fb = json.loads((run_b / "policy" / "config.json").read_text())
        fs = json.loads((run_s / "policy" / "config.json").read_text())
        assert fb == fs
    # each Pb seed has its own reward model and relabeled data (different fingerprints), the oracle seeds share
    sha = {}
    for rb in batched:
        cfg = json.loads((tmp_path / "b" / "runs" / rb["run_id"] / "policy" / "config.json").read_text())
        sha.setdefault(rb["column"], set()).add(cfg["fingerprint"]["dataset_sha256"])
    assert len(sha["Pb-TD3BC"]) == 2 and len(sha["Oracle-IQL"]) == 1


def test_transformer_and_cpu_cql_columns_run_one_seed_per_process(data):
    grid = Grid(name="seq", runner="pbrl.pipeline:run_record", base=BASE, axes={"seed": [0, 1]},
                columns=[{"name": "Pb-DT", "algo": "dt", "reward": "step"},
                         {"name": "Pb-CQL", "algo": "cql", "reward": "step"},
                         {"name": "Pb-IQL", "algo": "iql", "reward": "step"}])
    groups = seed_groups(expand(grid), grid.runner)
    assert sorted((g[0].column, len(g)) for g in groups) == [
        ("Pb-CQL", 1), ("Pb-CQL", 1), ("Pb-DT", 1), ("Pb-DT", 1), ("Pb-IQL", 2)]


def test_pipeline_command_with_seeds(data, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["pipeline", data, "--algo", "iql", "--steps", "6", "--eval-every", "3", "--eval-episodes", "1",
            "--queries", "30", "--length", "10", "--ensemble", "2", "--reward-epochs", "1", "--out", str(out),
            "--threads", "1", "--seeds", "0", "2"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "iql: training seeds [0, 2] as one batched model (each on its own data: rewards differ)" in text
    for seed in (0, 2):
        s = json.loads((out / f"seed_{seed}" / "summary.json").read_text())
        assert s["policy"]["seed"] == seed and s["policy"]["steps_done"] == 6 and s["prefs"]["pairs"] == 30
        assert json.loads((out / f"seed_{seed}" / "config.json").read_text())["seed"] == seed
        assert f"seed {seed}: iql on" in text
    assert main(args) == 2  # a second run into the same folders is refused, nothing replaced
    assert "holds a run already" in capsys.readouterr().err
    assert main(["pipeline", data, "--seeds", "1", "1", "--out", str(tmp_path / "dup")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pbrl: error: seeds: give each seed once") and err.count("\n") == 1
    assert not (tmp_path / "dup").exists()


def test_run_pipelines_refuses_configs_that_differ_beyond_the_seed(data, tmp_path):
    a = PipelineConfig(data, algo="bc", steps=2, seed=0, out=str(tmp_path / "a"), progress=False)
    b = PipelineConfig(data, algo="bc", steps=3, seed=1, out=str(tmp_path / "b"), progress=False)
    with pytest.raises(PbrlError, match=r"differ only by seed and out; \['steps'\] differ"):
        run_pipelines([a, b])
    c = PipelineConfig(data, algo="bc", steps=2, seed=0, out=str(tmp_path / "c"), progress=False)
    with pytest.raises(PbrlError, match="each seed once"):
        run_pipelines([a, c])
    with pytest.raises(PbrlError, match="seeds are an axis"):
        run_record({**BASE, "algo": "bc", "seeds": [0, 1]}, str(tmp_path / "r"))
    assert not any(os.path.exists(tmp_path / n) for n in "abcr")


def test_a_stopped_seed_group_resumes_each_seed_from_where_it_stopped(data, tmp_path, monkeypatch):
    import pbrl.pipeline as pipeline

    configs = [{**BASE, "algo": "td3bc", "reward": "step", "seed": s} for s in (0, 1)]
    full = run_record.run_seeds(configs, [str(tmp_path / f"full{s}") for s in (0, 1)])
    outs = [str(tmp_path / f"part{s}") for s in (0, 1)]
    args = pipeline._policy_args
    with monkeypatch.context() as m:  # the group killed after its checkpoint at step 10
        m.setattr(pipeline, "_policy_args", lambda *a, **k: {**args(*a, **k), "stop_at": 10})
        run_record.run_seeds(configs, outs)
    for out in outs:
        os.remove(os.path.join(out, "summary.json"))
    os.remove(os.path.join(outs[1], "policy", "checkpoint.pt"))  # seed 1 had not checkpointed yet
    resumed = run_record.run_seeds(configs, outs)
    assert resumed[0]["earlier_s"] > 0 and resumed[1]["earlier_s"] > 0  # both reused their reward stage
    assert json.loads(open(os.path.join(outs[0], "summary.json")).read())["resumed"]["policy_at_step"] == 10
    assert json.loads(open(os.path.join(outs[1], "summary.json")).read())["resumed"]["policy_at_step"] is None
    for a, b in zip(resumed, full):
        assert a["reward"] == b["reward"] and [c[0] for c in a["curve"]] == [10, 20]
        for (_, x), (_, y) in zip(a["curve"], b["curve"]):
            assert x == pytest.approx(y, rel=RTOL, abs=ATOL)
