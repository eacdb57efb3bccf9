"""Seed-batched training (`train_seeds`, `pbrl train --seeds`) against separate runs of the same seeds.

Tolerance: per-step losses, final weights and evaluation returns within RTOL (relative, with ATOL for values near
zero) after STEPS updates. Measured on the test machine: float32 differences up to ~4e-6 relative (a batched
matmul sums in another order); bitwise equal in several cases. CQL runs with bf16 off here: with bf16 autocast
the proposals' matmuls round to bf16 differently in batched and single kernels (~1e-3 relative after 50 updates).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import small_config

from pbrl.cli import main
from pbrl.errors import PbrlError
from pbrl.policies.base import load_policy
from pbrl.policies.trainer import train_policy, train_seeds

STEPS = 50
RTOL, ATOL = 1e-5, 1e-6
SEEDS = [3, 7]
CASES = [
    ("iql", "pendulum", {}),
    ("iql", "cartpole", {}),
    ("iql", "pendulum", {"deterministic_actor": True}),
    ("iql", "pendulum", {"actor_after_critic": True, "normalize_obs": False}),
    ("td3bc", "pendulum", {}),
    ("bc", "pendulum", {}),
    ("bc", "cartpole", {"top_fraction": 0.5}),
    ("cql", "pendulum", {"bf16": "off", "bc_steps": 10}),
    ("cql", "cartpole", {}),
]


def _rows(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _close(a, b) -> bool:
    return bool(np.allclose(a, b, rtol=RTOL, atol=ATOL))


@pytest.mark.parametrize("algo,data,kw", CASES, ids=[f"{a}-{d}-{'-'.join(k) or 'default'}" for a, d, k in CASES])
def test_batched_seeds_equal_separate_runs(algo, data, kw, request, tmp_path):
    ds = request.getfixturevalue(data)
    cfg = small_config(algo, **kw)
    common = dict(steps=STEPS, eval_every=25, eval_episodes=2, log_every=1, progress=False)
    lines: list[str] = []
    batched = train_seeds(algo, ds, cfg, seeds=SEEDS, out_dir=tmp_path / "b", log=lines.append, **common)
    assert lines == [f"{algo}: training seeds {SEEDS} as one batched model"]
    for seed, summary in zip(SEEDS, batched):
        single = train_policy(algo, ds, cfg, seed=seed, out_dir=tmp_path / f"s{seed}", **common)
        b_dir, s_dir = tmp_path / "b" / f"seed_{seed}", tmp_path / f"s{seed}"
        rows_b, rows_s = _rows(b_dir), _rows(s_dir)
        assert [sorted(r) for r in rows_b] == [sorted(r) for r in rows_s]  # the same rows, keys and steps
        for rb, rs in zip(rows_b, rows_s):
            for key, value in rs.items():
                if key != "perf/steps_per_s" and isinstance(value, float | list):
                    assert _close(rb[key], value), (rb["step"], key, rb[key], value)
        assert summary["seed"] == seed and summary["steps_done"] == STEPS
        assert _close(summary["last_returns"], single["last_returns"])
        pb, _ = load_policy(b_dir / "policy.pt")
        ps, _ = load_policy(s_dir / "policy.pt")
        sb, ss = pb.state_dict(), ps.state_dict()
        assert sb.keys() == ss.keys()
        for key in ss:
            assert torch.allclose(sb[key], ss[key], rtol=RTOL, atol=ATOL), key
        cb = json.loads((b_dir / "config.json").read_text())
        cs = json.loads((s_dir / "config.json").read_text())
        assert cb == cs  # the same run settings and fingerprint: either folder resumes as the other would
    # the two seeds did differ (their own init, batches and noise)
    assert _rows(tmp_path / "b" / "seed_3")[0] != _rows(tmp_path / "b" / "seed_7")[0]


def test_batched_resume_and_separate_resume_of_a_batched_checkpoint(pendulum, tmp_path):
    cfg = small_config("td3bc")
    common = dict(steps=40, eval_every=0, eval_episodes=0, log_every=5, progress=False, log=lambda _: None)
    train_seeds("td3bc", pendulum, cfg, seeds=SEEDS, out_dir=tmp_path / "whole", **common)
    train_seeds("td3bc", pendulum, cfg, seeds=SEEDS, out_dir=tmp_path / "cut", stop_at=15, **common)
    resumed = train_seeds("td3bc", pendulum, cfg, seeds=SEEDS, out_dir=tmp_path / "cut", resume=True, **common)
    assert [s["steps_done"] for s in resumed] == [40, 40]
    for seed in SEEDS:
        a = load_policy(tmp_path / "whole" / f"seed_{seed}" / "policy.pt")[0].state_dict()
        b = load_policy(tmp_path / "cut" / f"seed_{seed}" / "policy.pt")[0].state_dict()
        assert all(torch.allclose(a[k], b[k], rtol=RTOL, atol=ATOL) for k in a)
        assert _rows(tmp_path / "whole" / f"seed_{seed}")[-1]["step"] == 40
        assert [r["step"] for r in _rows(tmp_path / "cut" / f"seed_{seed}")] == list(range(5, 41, 5))
    # a batched checkpoint is a separate run's checkpoint: train_policy continues it (noise stream included)
    train_seeds("td3bc", pendulum, cfg, seeds=SEEDS, out_dir=tmp_path / "one", stop_at=15, **common)
    kw = {k: v for k, v in common.items() if k != "log"}
    single = train_policy("td3bc", pendulum, cfg, seed=7, out_dir=tmp_path / "one" / "seed_7", resume=True, **kw)
    assert single["steps_done"] == 40
    a = load_policy(tmp_path / "whole" / "seed_7" / "policy.pt")[0].state_dict()
    b = load_policy(tmp_path / "one" / "seed_7" / "policy.pt")[0].state_dict()
    assert all(torch.allclose(a[k], b[k], rtol=RTOL, atol=ATOL) for k in a)
    # checkpoints at different steps: the seeds are resumed one by one, each exactly
    lines: list[str] = []
    common["log"] = lines.append
    out = train_seeds("td3bc", pendulum, cfg, seeds=SEEDS, out_dir=tmp_path / "one", resume=True, **common)
    assert "one after another (their checkpoints are at different steps" in lines[0]
    assert [s["steps_done"] for s in out] == [40, 40]
    a = load_policy(tmp_path / "whole" / "seed_3" / "policy.pt")[0].state_dict()
    b = load_policy(tmp_path / "one" / "seed_3" / "policy.pt")[0].state_dict()
    assert all(torch.allclose(a[k], b[k], rtol=RTOL, atol=ATOL) for k in a)


def test_unbatchable_algorithms_train_one_seed_after_another(pendulum, tmp_path):
    lines: list[str] = []
    cfg = small_config("iql", actor_dropout=0.1)  # dropout masks come from inside the update
    out = train_seeds("iql", pendulum, cfg, seeds=[0, 1], out_dir=tmp_path, steps=4, eval_episodes=0,
                      progress=False, log=lines.append)
    assert lines == ["iql: training 2 seeds one after another (dropout draws its masks inside the update "
                     "(each seed needs its own stream))"]
    single = train_policy("iql", pendulum, cfg, seed=1, steps=4, eval_episodes=0, progress=False,
                          out_dir=tmp_path / "ref")
    assert out[1]["seed"] == 1 and _rows(tmp_path / "seed_1")[-1] == {
        **_rows(tmp_path / "ref")[-1], "perf/steps_per_s": _rows(tmp_path / "seed_1")[-1]["perf/steps_per_s"]}
    assert single["steps_done"] == 4


def test_seed_arguments_are_checked(pendulum, tmp_path):
    with pytest.raises(PbrlError, match="each seed once"):
        train_seeds("bc", pendulum, small_config("bc"), seeds=[1, 1], steps=2, progress=False)
    with pytest.raises(PbrlError, match="at least one seed"):
        train_seeds("bc", pendulum, small_config("bc"), seeds=[], steps=2, progress=False)
    train_seeds("bc", pendulum, small_config("bc"), seeds=[0, 1], out_dir=tmp_path, steps=2, eval_episodes=0,
                progress=False, log=lambda _: None)
    before = (tmp_path / "seed_1" / "metrics.jsonl").read_text()
    with pytest.raises(PbrlError, match="seed_1: holds a run already"):  # refused before any seed is touched
        train_seeds("bc", pendulum, small_config("bc"), seeds=[1, 0], out_dir=tmp_path, steps=2, progress=False,
                    overwrite=False)
    assert (tmp_path / "seed_1" / "metrics.jsonl").read_text() == before


def test_train_command_with_seeds(pendulum, tmp_path, capsys):
    pendulum.to_minari("pbrl/pendulum-seeds/random-v0")
    out = tmp_path / "run"
    args = ["train", "iql", "pbrl/pendulum-seeds/random-v0", "--steps", "6", "--eval-every", "3",
            "--eval-episodes", "2", "--out", str(out), "--set", "hidden=[16,16]", "batch_size=8", "--threads", "1",
            "--seeds", "0", "2"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "6 steps x 2 seeds" in text and "training seeds [0, 2] as one batched model" in text
    for seed in (0, 2):
        summary = json.loads((out / f"seed_{seed}" / "summary.json").read_text())
        assert summary["seed"] == seed and summary["steps_done"] == 6 and len(summary["last_returns"]) == 2
        assert f"seed {seed}: iql on" in text
    assert main(args) == 2  # a second run into the same folders is refused
    assert "holds a run already" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0  # finished seeds: resuming is a no-op
    assert main(["train", "iql", "pbrl/pendulum-seeds/random-v0", "--seeds", "1", "1", "--out", str(out)]) == 2
    assert "--seeds: give each seed once" in capsys.readouterr().err


def test_seed_batch_refuses_data_of_other_shapes_and_unbatchable_policies(pendulum, cartpole):
    from pbrl.policies.base import PolicySpec, make_policy
    from pbrl.policies.seeds import SeedBatch

    spec = PolicySpec.from_dataset(pendulum)
    cfg = small_config("bc")
    a, b = make_policy("bc", spec, cfg, 10), make_policy("bc", spec, cfg, 10)
    sa = a.make_sampler(pendulum, torch.Generator().manual_seed(0))
    sb = b.make_sampler(pendulum, torch.Generator().manual_seed(1))
    # rows of another width: no stacked copy holds both (data of the same shapes may differ: test_seed_batch_data)
    sb.data = type(sb.data)(**{**sb.data.__dict__, "observations": sb.data.observations[:, :2]})
    with pytest.raises(PbrlError, match="every seed's observations of one shape"):
        SeedBatch([a, b], [sa, sb], [torch.Generator(), torch.Generator()])
    dt = make_policy("dt", spec, small_config("dt"), 10)
    with pytest.raises(PbrlError, match="dt cannot train seeds as one batched model"):
        SeedBatch([dt], [sa], [torch.Generator()])
