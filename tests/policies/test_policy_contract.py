"""The contract every algorithm meets: finite float losses, parameters change, save/load round trip, action shapes
and bounds, seeded determinism, and resume == uninterrupted."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import obs_batch, small_config

from pbrl.errors import PbrlError
from pbrl.policies.base import PolicySpec, load_policy, make_policy
from pbrl.policies.trainer import train_policy

CONTINUOUS = ["bc", "iql", "td3bc", "cql", "dt", "dtr", "qt"]
DISCRETE = ["bc", "iql", "cql", "dt", "dtr"]


def _build(algo, ds, steps=10):
    torch.manual_seed(0)
    policy = make_policy(algo, PolicySpec.from_dataset(ds), small_config(algo), total_steps=steps)
    return policy, policy.make_sampler(ds, torch.Generator().manual_seed(0))


def _contract(algo, ds, tmp_path):
    policy, sampler = _build(algo, ds)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    for _ in range(4):
        metrics = policy.update(sampler())
        assert metrics and all(isinstance(v, float) and math.isfinite(v) for v in metrics.values()), metrics
        assert all(k.count("/") == 1 for k in metrics)
    changed = [
        k
        for k, v in policy.state_dict().items()
        if v.dtype.is_floating_point and not torch.equal(v, before[k])
    ]
    trainable = {k for k, _ in policy.named_parameters()}
    assert trainable & set(changed), "no trainable parameter changed"

    obs = obs_batch(ds)
    policy.reset(len(obs))
    act = policy.act(obs)
    if policy.spec.discrete:
        assert (
            act.shape == (5,) and act.dtype.kind == "i" and act.min() >= 0 and act.max() < ds.action_space.n
        )
    else:
        assert act.shape == (5, *ds.action_space.shape)
        assert np.all(act >= ds.action_space.low - 1e-6) and np.all(act <= ds.action_space.high + 1e-6)

    path = tmp_path / f"{algo}.pt"
    policy.save(path)
    loaded, _ = load_policy(path)
    assert type(loaded) is type(policy) and loaded.config == policy.config and loaded.step == policy.step
    for k, v in policy.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    policy.reset(len(obs))
    loaded.reset(len(obs))
    torch.manual_seed(1)
    a1 = policy.act(obs)
    torch.manual_seed(1)
    np.testing.assert_array_equal(a1, loaded.act(obs))
    # optimizer states survive too: one more identical update from both
    b = sampler()
    torch.manual_seed(2)
    m1 = policy.update(b)
    torch.manual_seed(2)
    m2 = loaded.update(b)
    assert m1 == m2


@pytest.mark.parametrize("algo", CONTINUOUS)
def test_contract_continuous(algo, pendulum, tmp_path):
    _contract(algo, pendulum, tmp_path)


@pytest.mark.parametrize("algo", DISCRETE)
def test_contract_discrete(algo, cartpole, tmp_path):
    _contract(algo, cartpole, tmp_path)


def test_td3bc_rejects_discrete(cartpole):
    with pytest.raises(PbrlError, match="continuous"):
        _build("td3bc", cartpole)


def _weights(out_dir):
    policy, _ = load_policy(out_dir / "checkpoint.pt")
    return policy.state_dict()


@pytest.mark.parametrize("algo", CONTINUOUS)
def test_seeded_runs_are_identical(algo, pendulum, tmp_path):
    kw = dict(steps=6, eval_every=0, eval_episodes=0, progress=False)
    train_policy(algo, pendulum, small_config(algo), seed=3, out_dir=tmp_path / "a", **kw)
    train_policy(algo, pendulum, small_config(algo), seed=3, out_dir=tmp_path / "b", **kw)
    train_policy(algo, pendulum, small_config(algo), seed=4, out_dir=tmp_path / "c", **kw)
    a, b, c = _weights(tmp_path / "a"), _weights(tmp_path / "b"), _weights(tmp_path / "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("algo", ["iql", "td3bc", "cql", "dtr"])
def test_resume_equals_uninterrupted(algo, pendulum, tmp_path):
    # evaluation in the middle (it forks the RNG) and a stop at a checkpoint, then resume
    kw = dict(steps=8, eval_every=4, eval_episodes=2, checkpoint_every=2, progress=False, seed=5)
    full = train_policy(algo, pendulum, small_config(algo), out_dir=tmp_path / "full", **kw)
    part = train_policy(algo, pendulum, small_config(algo), out_dir=tmp_path / "part", stop_at=6, **kw)
    assert not part["finished"] and part["steps_done"] == 6
    resumed = train_policy(algo, pendulum, small_config(algo), out_dir=tmp_path / "part", resume=True, **kw)
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed["last_returns"] == full["last_returns"]
    assert resumed["best_score"] == full["best_score"]
    # the run's wall time counts the stopped call's seconds (kept in its checkpoint) and this call's
    assert full["resumed"] is None and resumed["resumed"]["at_step"] == 6
    assert resumed["resumed"]["earlier_s"] <= part["wall_s"]
    assert resumed["wall_s"] >= resumed["resumed"]["earlier_s"] > 0
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    full_steps = [
        json.loads(ln)["step"] for ln in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == full_steps


def test_resume_rejects_other_config(pendulum, tmp_path):
    kw = dict(steps=4, eval_every=0, eval_episodes=0, progress=False)
    train_policy("bc", pendulum, small_config("bc"), out_dir=tmp_path, stop_at=2, **kw)
    with pytest.raises(PbrlError, match="config differs"):
        train_policy("bc", pendulum, small_config("bc", lr=1.0), out_dir=tmp_path, resume=True, **kw)


def test_summary_and_outputs(pendulum, tmp_path):
    s = train_policy(
        "bc",
        pendulum,
        small_config("bc"),
        steps=4,
        eval_every=2,
        eval_episodes=2,
        out_dir=tmp_path,
        progress=False,
        log_every=1,
    )
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(s))
    assert len(s["last_returns"]) == 2
    # normalized with the dataset's reference returns (-400, 0)
    assert s["last_score"] == pytest.approx(100 * (np.mean(s["last_returns"]) + 400) / 400)
    assert s["best_score"] == max(e["eval/normalized_score"] for e in s["evaluations"])
    assert [e["step"] for e in s["evaluations"]] == [2, 4]
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["algo"] == "bc" and cfg["config"]["hidden"] == [32, 32] and "git_revision" in cfg
    assert (tmp_path / "policy.pt").is_file() and not list(tmp_path.glob("*.tmp"))


def test_load_policy_errors(tmp_path):
    with pytest.raises(PbrlError, match="not found"):
        load_policy(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(PbrlError, match="bad.pt: unreadable pbrl policy checkpoint"):
        load_policy(bad)


def test_load_policy_refuses_truncated_foreign_and_crafted_files(pendulum, tmp_path):
    policy = make_policy("bc", PolicySpec.from_dataset(pendulum), small_config("bc"), total_steps=2)
    good = tmp_path / "good.pt"
    policy.save(good)
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")  # a torch file, not a policy

    class Payload:
        def __reduce__(self):
            return (print, ("payload ran",))

    torch.save({"algo": "bc", "x": Payload()}, tmp_path / "crafted.pt")
    # a policy file whose weights do not fit its own config
    obj = torch.load(good, weights_only=True)
    obj["config"] = json.dumps({**json.loads(obj["config"]), "hidden": [7]})
    torch.save(obj, tmp_path / "mismatched.pt")
    for name in ("truncated.pt", "empty.pt", "foreign.pt", "crafted.pt", "mismatched.pt"):
        with pytest.raises(PbrlError, match=f"{name}: .*pbrl policy checkpoint"):
            load_policy(tmp_path / name)


def test_resume_from_a_bad_checkpoint_is_one_error(pendulum, tmp_path):
    kw = dict(steps=4, eval_every=0, eval_episodes=0, progress=False)
    train_policy("bc", pendulum, small_config("bc"), out_dir=tmp_path, stop_at=2, **kw)
    ckpt = tmp_path / "checkpoint.pt"
    good = ckpt.read_bytes()
    before = sorted(p.name for p in tmp_path.iterdir())
    config_before = (tmp_path / "config.json").read_text()
    for content in (good[:100], b"", None):
        if content is None:  # a torch file of the wrong layout
            torch.save({"state": {}}, ckpt)
        else:
            ckpt.write_bytes(content)
        with pytest.raises(PbrlError, match="checkpoint.pt: .*(unreadable|not a pbrl) training checkpoint"):
            train_policy("bc", pendulum, small_config("bc"), out_dir=tmp_path, resume=True, **kw)
        assert sorted(p.name for p in tmp_path.iterdir()) == before
        assert (tmp_path / "config.json").read_text() == config_before


def test_resume_refuses_other_data_and_rewinds_metrics(pendulum, cartpole, tmp_path):
    kw = dict(steps=6, eval_every=0, eval_episodes=0, progress=False, log_every=1, checkpoint_every=2)
    train_policy("bc", pendulum, small_config("bc"), out_dir=tmp_path, stop_at=4, **kw)
    other = pendulum.with_rewards(np.asarray(pendulum.rewards) + 1.0)
    with pytest.raises(PbrlError, match="cannot resume, dataset_sha256 differs"):
        train_policy("bc", other, small_config("bc"), out_dir=tmp_path, resume=True, **kw)
    # a killed run logged steps 5 and 6 after its last checkpoint (step 4): the resume must not repeat them
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 5, "bc/loss": 0.0}) + "\n" + json.dumps({"step": 6, "bc/loss": 0.0}) + "\n")
    train_policy("bc", pendulum, small_config("bc"), out_dir=tmp_path, resume=True, **kw)
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["algo"] == "bc" and cfg["fingerprint"]["dataset_sha256"] and cfg["steps"] == 6


def test_resuming_a_finished_run_writes_strict_json(pendulum, tmp_path):
    kw = dict(steps=2, eval_every=0, eval_episodes=0, progress=False, log_every=1)
    train_policy("bc", pendulum, small_config("bc"), out_dir=tmp_path, **kw)
    again = train_policy("bc", pendulum, small_config("bc"), out_dir=tmp_path, resume=True, **kw)
    text = (tmp_path / "summary.json").read_text()
    assert "NaN" not in text and json.loads(text)["perf/steps_per_s"] is None and again["steps_done"] == 2


def test_nan_losses_are_written_as_null(pendulum, tmp_path):
    # a learning rate this large drives the losses to inf / NaN within a few steps
    kw = dict(steps=4, eval_every=0, eval_episodes=0, progress=False, log_every=1)
    s = train_policy("bc", pendulum, small_config("bc", lr=1e38), out_dir=tmp_path, **kw)
    text = (tmp_path / "metrics.jsonl").read_text()
    rows = [json.loads(ln) for ln in text.splitlines()]  # strict parse: json.loads accepts NaN, so check the text
    assert "NaN" not in text and [r["bc/loss"] is None for r in rows] == [False, True, True, True]
    assert s["evaluations"] == [] and "NaN" not in (tmp_path / "summary.json").read_text()


def test_bad_device_and_env_fail_before_training(pendulum, cartpole, tmp_path):
    kw = dict(steps=2, eval_every=0, eval_episodes=1, progress=False)
    with pytest.raises(PbrlError, match="device: unknown torch device 'tpu'"):
        train_policy("bc", pendulum, small_config("bc"), out_dir=tmp_path / "a", device="tpu", **kw)
    if not torch.cuda.is_available():
        with pytest.raises(PbrlError, match="no CUDA device"):
            train_policy("bc", pendulum, small_config("bc"), out_dir=tmp_path / "a", device="cuda", **kw)
    with pytest.raises(PbrlError, match="env 'CartPole-v1': observations of size 4"):
        train_policy("bc", pendulum, small_config("bc"), out_dir=tmp_path / "a", env_id="CartPole-v1", **kw)
    with pytest.raises(PbrlError, match="cannot make environment"):
        train_policy("bc", pendulum, small_config("bc"), out_dir=tmp_path / "a", env_id="NoSuchEnv-v9", **kw)
    assert not (tmp_path / "a").exists()


def test_check_overrides_types():
    from pbrl.policies.base import check_overrides

    assert check_overrides("iql", {"expectile": 1, "hidden": [8, 8], "actor_cosine": False}) == {
        "expectile": 1.0,
        "hidden": (8, 8),
        "actor_cosine": False,
    }
    with pytest.raises(PbrlError, match="expectile: expected float, got 'abc'"):
        check_overrides("iql", {"expectile": "abc"})
    with pytest.raises(PbrlError, match="hidden: expected a list of int, got 5"):
        check_overrides("iql", {"hidden": 5})
    with pytest.raises(PbrlError, match="nosuch: iql config has no field"):
        check_overrides("iql", {"nosuch": 1})
    with pytest.raises(PbrlError, match="batch_size: expected int, got 3.5"):
        check_overrides("bc", {"batch_size": 3.5})


def test_unknown_algorithm(pendulum):
    with pytest.raises(PbrlError, match="unknown algorithm"):
        train_policy("sac", pendulum, steps=1, progress=False)


def test_previous_release_checkpoint_loads_and_acts_the_same():
    """policy.pt written by the previous release (tests/fixtures/policy_v1, see make_fixture.py) still loads, acts
    the same on fixed observations, and evaluates to the same returns."""
    from pathlib import Path

    from pbrl.policies.evaluation import evaluate

    here = Path(__file__).resolve().parent.parent / "fixtures" / "policy_v1"
    expected = json.loads((here / "expected.json").read_text())
    policy, _ = load_policy(here / "policy.pt")
    obs = np.asarray(expected["observations"], dtype=np.float32)
    # float32 kernels of another CPU vector width round differently (1.2e-7 measured on one action): equal up to
    # float32 rounding, not bit for bit
    np.testing.assert_allclose(policy.act(obs), np.asarray(expected["actions"], dtype=np.float32), rtol=1e-5,
                               atol=1e-6)
    returns = evaluate(policy, policy.spec.env_id, len(expected["eval_returns"]), seed=expected["eval_seed"])
    np.testing.assert_allclose(returns, expected["eval_returns"], rtol=1e-4)


def test_a_checkpoint_from_before_a_config_field_existed_still_resumes(pendulum, tmp_path):
    # IQL's log_std_min was the constant -20 before it was a field: a run saved then resumes at that default
    kw = dict(steps=6, eval_every=0, eval_episodes=0, checkpoint_every=2, progress=False, seed=1)
    train_policy("iql", pendulum, small_config("iql"), out_dir=tmp_path, stop_at=4, **kw)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    run = json.loads(ckpt["extra"]["run"])
    del run["config"]["log_std_min"]
    ckpt["extra"]["run"] = json.dumps(run)
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    cfg = json.loads((tmp_path / "config.json").read_text())
    del cfg["fingerprint"]["config"]["log_std_min"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PbrlError, match="config differs"):  # the field at another value is another run
        train_policy("iql", pendulum, small_config("iql", log_std_min=-5.0), out_dir=tmp_path, resume=True, **kw)
    s = train_policy("iql", pendulum, small_config("iql"), out_dir=tmp_path, resume=True, **kw)
    assert s["finished"] and s["resumed"]["at_step"] == 4
    assert json.loads((tmp_path / "config.json").read_text())["fingerprint"]["config"]["log_std_min"] == -20.0


def test_iql_actor_log_std_floor():
    from pbrl.policies.nets import GaussianActor

    for floor in (-20.0, -5.0):
        actor = GaussianActor(3, 2, (8,), log_std_min=floor)
        with torch.no_grad():
            actor.log_std.fill_(-10.0)
        assert torch.allclose(actor(torch.zeros(4, 3)).stddev, torch.full((4, 2), math.exp(max(floor, -10.0))))


def test_a_sweeps_policy_run_resumes_when_it_can_and_starts_afresh_when_not(pendulum, tmp_path):
    from pbrl.policies.trainer import train_or_resume

    kw = dict(steps=6, eval_every=0, eval_episodes=0, checkpoint_every=2, progress=False, seed=1)
    train_policy("bc", pendulum, small_config("bc"), out_dir=tmp_path, stop_at=4, **kw)
    assert train_or_resume("bc", pendulum, small_config("bc"), out_dir=tmp_path, **kw)["resumed"]["at_step"] == 4
    train_policy("bc", pendulum, small_config("bc"), out_dir=tmp_path, stop_at=4, overwrite=True, **kw)
    other = train_or_resume("bc", pendulum, small_config("bc", lr=1e-2), out_dir=tmp_path, **kw)  # another config
    assert other["resumed"] is None and other["finished"]
