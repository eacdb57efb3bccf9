import json
import os

import numpy as np

from pbrl.cli import main
from pbrl.data import collect_episodes, load_dataset
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
    assert main(["pipeline", spec, "--algo", "bc", "--reward", "true", "--steps", "10", "--eval-episodes", "1",
                 "--out", str(tmp_path / "cli"), "--no-progress"]) == 0
    assert "bc on" in capsys.readouterr().out
