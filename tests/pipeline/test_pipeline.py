import json
import os
import time

import numpy as np
import pytest

from pbrl.cli import main
from pbrl.data import PreferencePairs, TeacherConfig, collect_episodes, load_dataset
from pbrl.errors import PbrlError
from pbrl.pipeline import PipelineConfig, run_pipeline, run_record


def _dataset(tmp_path) -> str:
    collect_episodes("Pendulum-v1", num_transitions=2000, seed=0).to_minari(
        "pbrl/test/pendulum-random-v0", ref_min_score=-1500.0, ref_max_score=-150.0
    )
    return "pbrl/test/pendulum-random-v0"


def test_pipeline_runs_every_stage_and_hides_true_rewards(tmp_path):
    spec = _dataset(tmp_path)
    out = str(tmp_path / "run")
    cfg = PipelineConfig(spec, algo="td3bc", reward="step", queries=60, length=20, ensemble=2, reward_epochs=3,
                         steps=30, eval_every=0, eval_episodes=2, out=out, progress=False, policy={"batch_size": 32})
    s = run_pipeline(cfg)
    for f in ("config.json", "prefs/prefs.npz", "reward/reward.pt", "policy/summary.json", "summary.json"):
        assert os.path.isfile(os.path.join(out, f)), f
    assert s["prefs"]["pairs"] == 60 and s["dataset_transitions"] == 2000
    assert s["policy"]["steps_done"] == 30 and s["policy"]["last_score"] is not None
    assert 0.0 <= s["reward"]["val_accuracy"] <= 1.0
    assert "pearson_step" in json.dumps(s["reward"]["report"]) or s["reward"]["report"]
    # the relabeled rewards the policy trained on are not the true ones
    ds = load_dataset(spec)
    from pbrl.rewards.relabel import relabel
    from pbrl.rewards.train import load_reward_model

    new = relabel(ds, load_reward_model(os.path.join(out, "reward")), "member-zscore")
    assert not np.allclose(new.rewards, ds.rewards)
    assert abs(new.rewards.mean()) < 1e-4  # member z-score then mean: zero mean over the dataset


def test_run_record_and_cli(tmp_path, capsys):
    spec = _dataset(tmp_path)
    rec = run_record({"dataset": spec, "algo": "bc", "reward": "true", "steps": 20, "eval_every": 10,
                      "eval_episodes": 2, "policy": {"batch_size": 16}}, str(tmp_path / "rec"))
    assert rec["dataset_transitions"] == 2000 and len(rec["curve"]) == 2 and rec["reward"] is None
    # the record names the build of the data it trained on (the tables list the builds a table spans)
    from pbrl.policies.trainer import dataset_fingerprint

    ds = load_dataset(spec)
    assert rec["dataset_sha256"] == dataset_fingerprint(ds) and rec["dataset_episodes"] == ds.num_episodes
    assert main(["pipeline", spec, "--algo", "bc", "--reward", "true", "--steps", "10", "--eval-episodes", "1",
                 "--out", str(tmp_path / "cli"), "--no-progress"]) == 0
    assert "bc on" in capsys.readouterr().out


def test_a_pipeline_with_bad_inputs_leaves_nothing_behind(tmp_path, capsys):
    spec = _dataset(tmp_path)
    bad_labels = str(tmp_path / "bad-labels")
    PreferencePairs(np.array([0, 1995]), np.array([1, 2]), 10, np.array([1.0, 0.0])).save(bad_labels)
    cases = [
        (dict(dataset="pbrl/none/missing-v0"), "unknown local Minari dataset"),
        (dict(dataset=str(tmp_path / "missing.hdf5")), "file not found"),
        (dict(dataset=spec, labels=bad_labels), "start_a[1] = 1995"),
        (dict(dataset=spec, query_fraction=0.0), "query_fraction"),
        (dict(dataset=spec, policy={"hiddden": [8]}), "no field(s) ['hiddden']"),
        (dict(dataset=spec, normalize="zscore"), "normalize must be one of"),
        (dict(dataset=spec, teacher="oracle"), "unknown teacher 'oracle'"),
        (dict(dataset=spec, length=5000), "no window of 5000 steps"),
    ]
    for i, (kw, msg) in enumerate(cases):
        out = str(tmp_path / f"run{i}")
        with pytest.raises(PbrlError) as e:
            run_pipeline(PipelineConfig(**{"algo": "bc", "steps": 5, "out": out, "progress": False, **kw}))
        assert msg in str(e.value), (kw, str(e.value))
        assert not os.path.exists(out), kw
    out = str(tmp_path / "cli")
    assert main(["pipeline", spec, "--labels", bad_labels, "--out", out, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pbrl: error: ") and err.count("\n") == 1 and not os.path.exists(out)


def test_grid_rows_keep_flat_teacher_options(tmp_path):
    cfg = PipelineConfig.from_dict({"dataset": "x", "teacher": "stochastic", "beta": 1.0, "tie_threshold": 0.0})
    assert cfg.teacher == TeacherConfig("stochastic", tie_threshold=0.0, beta=1.0)
    nested = PipelineConfig.from_dict({"dataset": "x", "teacher": {"name": "stochastic", "beta": 1.0,
                                                                   "tie_threshold": 0.0}})
    assert nested == cfg and PipelineConfig("x", teacher="mistake").teacher == TeacherConfig("mistake")
    with pytest.raises(PbrlError, match=r"unknown pipeline fields in grid config: \['stepz'\]"):
        run_record({"dataset": "x", "stepz": 3}, str(tmp_path / "r"))
    assert not os.path.exists(tmp_path / "r")


def test_pipeline_command_line_takes_the_flat_teacher_flags():
    from pbrl.cli import parse

    cfg = parse(PipelineConfig, ["d", "--teacher", "mistake", "--epsilon", "0.2", "--tie-threshold", "10"],
                "pbrl pipeline", "")
    assert cfg.teacher == TeacherConfig("mistake", tie_threshold=10.0, epsilon=0.2)


def test_a_pipeline_into_an_existing_run_needs_overwrite(tmp_path, capsys, monkeypatch):
    spec = _dataset(tmp_path)
    out = tmp_path / "run"
    args = ["pipeline", spec, "--algo", "bc", "--reward", "step", "--queries", "40", "--length", "10", "--ensemble",
            "1", "--reward-epochs", "1", "--steps", "4", "--eval-episodes", "1", "--out", str(out), "--no-progress"]
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 3.0, 3.0))
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert main(args) == 0
    assert json.loads((out / "config.json").read_text())["threads"] == 1  # 4 cores - load 3 -> 1 free
    before = (out / "summary.json").read_bytes()
    capsys.readouterr()
    oracle = [a if a != "step" else "true" for a in args]
    assert main(oracle) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pbrl: error: ") and "holds a run already" in err and len(err.splitlines()) == 1
    assert (out / "summary.json").read_bytes() == before and (out / "reward" / "reward.pt").is_file()
    assert main([*oracle, "--overwrite", "--threads", "2"]) == 0
    # a fresh run: the learned-reward stages of the old run are gone, not mixed into the oracle run
    assert not (out / "reward").exists() and not (out / "prefs").exists()
    assert json.loads((out / "summary.json").read_text()).get("reward") is None
    assert json.loads((out / "config.json").read_text())["threads"] == 2
    rec = run_record({"dataset": spec, "algo": "bc", "reward": "true", "steps": 4, "eval_every": 0,
                      "eval_episodes": 1, "policy": {"batch_size": 8}}, str(out))  # the sweep reruns in place
    assert rec["dataset_transitions"] == 2000


def _stopped_run(monkeypatch, cfg: PipelineConfig, at: int) -> None:
    """A run of `cfg` killed after its policy's checkpoint at step `at`: its folder as the kill leaves it."""
    import pbrl.pipeline as pipeline

    args = pipeline._policy_args
    with monkeypatch.context() as m:
        m.setattr(pipeline, "_policy_args", lambda *a, **k: {**args(*a, **k), "stop_at": at})
        run_pipeline(cfg)
    os.remove(os.path.join(cfg.out, "summary.json"))
    os.remove(os.path.join(cfg.out, "policy", "summary.json"))


def test_a_stopped_pipeline_resumes_as_if_it_had_not_stopped(tmp_path, monkeypatch):
    import torch

    from pbrl.policies.base import load_policy

    spec = _dataset(tmp_path)
    kw = dict(algo="td3bc", reward="step", queries=40, length=20, ensemble=2, reward_epochs=2, steps=12,
              eval_every=4, eval_episodes=2, progress=False, policy={"batch_size": 16}, threads=1)
    full = run_pipeline(PipelineConfig(spec, out=str(tmp_path / "full"), **kw))
    cfg = PipelineConfig(spec, out=str(tmp_path / "part"), **kw)
    _stopped_run(monkeypatch, cfg, at=8)
    where, changed = run_record.progress(cfg.out)  # what the sweep's progress lines say of it
    assert where == "policy 8/12 updates" and changed <= time.time()  # (rates come with the rows logged every 100)
    reward_before = (tmp_path / "part" / "reward" / "reward.pt").read_bytes()
    # a plain rerun is refused (the folder holds a run); --resume continues it
    with pytest.raises(PbrlError, match="--resume to continue it"):
        run_pipeline(cfg)
    resumed = run_pipeline(PipelineConfig(spec, out=str(tmp_path / "part"), resume=True, **{**kw, "threads": 2}))
    # the reward was not trained again, and the policy went on from step 8 to the uninterrupted run's weights
    assert (tmp_path / "part" / "reward" / "reward.pt").read_bytes() == reward_before
    assert resumed["resumed"]["policy_at_step"] == 8 and resumed["resumed"]["earlier_s"] > 0
    assert resumed["wall_s"] >= resumed["resumed"]["earlier_s"]
    assert resumed["policy"]["last_returns"] == full["policy"]["last_returns"]
    assert resumed["prefs"] == full["prefs"] and resumed["reward"] == full["reward"]
    a, b = (load_policy(tmp_path / run / "policy" / "policy.pt")[0].state_dict() for run in ("full", "part"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the sweep's runner resumes a stopped run of its config and records the earlier seconds
    cfg3 = {"dataset": spec, **{k: v for k, v in kw.items() if k not in ("progress", "threads")}}
    _stopped_run(monkeypatch, PipelineConfig(spec, out=str(tmp_path / "sweep"), **kw), at=4)
    rec = run_record(cfg3, str(tmp_path / "sweep"))
    assert rec["earlier_s"] > 0 and rec["last_score"] == full["policy"]["last_score"]
    # a folder whose run has another config starts afresh
    rec = run_record({**cfg3, "steps": 4}, str(tmp_path / "sweep"))
    assert rec["earlier_s"] is None and len(rec["curve"]) == 1
    # so does one whose policy checkpoint its data no longer fits (the trainer refuses the resume)
    _stopped_run(monkeypatch, PipelineConfig(spec, out=str(tmp_path / "sweep2"), **kw), at=4)
    pol_cfg = tmp_path / "sweep2" / "policy" / "config.json"
    saved = json.loads(pol_cfg.read_text())
    saved["fingerprint"]["dataset_sha256"] = "0" * 64
    pol_cfg.write_text(json.dumps(saved))
    rec = run_record(cfg3, str(tmp_path / "sweep2"))
    assert rec["earlier_s"] is None and rec["last_score"] == full["policy"]["last_score"]


def test_resume_refusals_are_one_line(tmp_path, capsys):
    spec = _dataset(tmp_path)
    out = tmp_path / "run"
    args = ["pipeline", spec, "--algo", "bc", "--reward", "step", "--queries", "40", "--length", "10", "--ensemble",
            "1", "--reward-epochs", "1", "--steps", "4", "--eval-episodes", "1", "--out", str(out), "--no-progress"]
    for extra, match in ((["--resume"], "cannot resume: no run to resume"),
                         (["--resume", "--overwrite"], "give resume or overwrite, not both")):
        assert main([*args, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("pbrl: error: ") and match in err and len(err.splitlines()) == 1, err
    assert not out.exists()
    assert main(args) == 0
    os.remove(out / "reward" / "summary.json")  # killed while its reward trained
    for extra, match in ((["--resume"], "its reward stage did not finish (no reward/summary.json)"),
                         (["--resume", "--steps", "8"], "its config.json differs in ['steps']")):
        assert main([*args, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert match in err and len(err.splitlines()) == 1, err


def test_grid_rows_of_one_run_have_one_key():
    key = run_record.run_key
    row = {"dataset": "pbrl/hopper/medium-replay-v0", "algo": "dtr", "steps": 20000, "seed": 0}
    assert key(row) == key({**row, "normalize": "member-zscore", "threads": 4})  # a default, and how it runs
    assert key(row) == key({**row, "teacher": "exact", "queries": 500})
    assert key(row) != key({**row, "normalize": "direct"}) and key(row) != key({**row, "seed": 1})


def test_progress_reads_the_last_logged_update_and_rate(tmp_path):
    pol = tmp_path / "policy"
    pol.mkdir(parents=True)
    (pol / "config.json").write_text(json.dumps({"steps": 1000}))
    rows = [{"step": 100, "perf/steps_per_s": 40.0}, {"step": 200, "perf/steps_per_s": 52.5},
            {"step": 200, "eval/return_mean": 3.0}, {"step": 300}]
    (pol / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + '\n{"step": 4')  # a row half-written
    assert run_record.progress(str(tmp_path))[0] == "policy 300/1000 updates, 52.5/s"
    assert run_record.progress(str(tmp_path / "none")) == (None, 0.0)
