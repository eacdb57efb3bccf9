"""Seed-batched training on per-seed data (`train_seeds` with one dataset per seed): seeds whose datasets differ
only in their rewards (each Pb-* seed's own relabeled data) train as one batched model and equal separate runs.

Tolerance as in test_seed_batching.py: RTOL 1e-5 relative, ATOL 1e-6 absolute (a batched matmul may sum in
another order than a single one; measured differences up to ~4e-6 relative).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import small_config

from pbrl.data import collect_episodes
from pbrl.errors import PbrlError
from pbrl.policies.base import load_policy
from pbrl.policies.trainer import train_policy, train_seeds

STEPS = 40
RTOL, ATOL = 1e-5, 1e-6
SEEDS = [3, 7]


def _rows(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _close(a, b) -> bool:
    return bool(np.allclose(a, b, rtol=RTOL, atol=ATOL))


def _own_rewards(ds, seed: int):
    """`ds` with rewards of its own per seed (as each seed's learned reward gives): the true rewards plus seeded
    noise large enough that the episodes' returns rank differently from seed to seed."""
    rng = np.random.default_rng(seed)
    r = ds.rewards + rng.normal(0.0, 20.0, ds.num_transitions)
    return ds.with_rewards(r.astype(np.float32), provenance={"test": f"rewards of seed {seed}"})


CASES = [("iql", {}), ("td3bc", {}), ("bc", {}), ("bc", {"top_fraction": 0.5})]


@pytest.mark.parametrize("algo,kw", CASES, ids=[f"{a}-{'-'.join(k) or 'default'}" for a, k in CASES])
def test_batched_seeds_on_their_own_data_equal_separate_runs(algo, kw, pendulum, tmp_path):
    datasets = [_own_rewards(pendulum, s) for s in SEEDS]
    assert not np.allclose(datasets[0].rewards, datasets[1].rewards)
    cfg = small_config(algo, **kw)
    common = dict(steps=STEPS, eval_every=20, eval_episodes=2, log_every=1, progress=False)
    lines: list[str] = []
    batched = train_seeds(algo, datasets, cfg, seeds=SEEDS, out_dir=tmp_path / "b", log=lines.append, **common)
    assert len(lines) == 1 and lines[0].startswith(f"{algo}: training seeds {SEEDS} as one batched model (each on "
                                                   "its own data: ")
    if not kw:  # the observations are kept once, the rewards per seed
        assert lines[0].endswith("own data: rewards differ)")
    else:  # BC's top half of the episodes by return: each seed keeps other episodes, so every field is its own
        assert "observations" in lines[0] and "rewards" in lines[0]
    for seed, ds, summary in zip(SEEDS, datasets, batched):
        single = train_policy(algo, ds, cfg, seed=seed, out_dir=tmp_path / f"s{seed}", **common)
        b_dir, s_dir = tmp_path / "b" / f"seed_{seed}", tmp_path / f"s{seed}"
        rows_b, rows_s = _rows(b_dir), _rows(s_dir)
        assert [sorted(r) for r in rows_b] == [sorted(r) for r in rows_s]
        for rb, rs in zip(rows_b, rows_s):
            for key, value in rs.items():
                if key != "perf/steps_per_s" and isinstance(value, float | list):
                    assert _close(rb[key], value), (rb["step"], key, rb[key], value)
        assert summary["steps_done"] == STEPS and _close(summary["last_returns"], single["last_returns"])
        sb = load_policy(b_dir / "policy.pt")[0].state_dict()
        ss = load_policy(s_dir / "policy.pt")[0].state_dict()
        assert sb.keys() == ss.keys()
        assert all(torch.allclose(sb[k], ss[k], rtol=RTOL, atol=ATOL) for k in ss)
        # the same run settings and fingerprint (its own data's sha256): either folder resumes as the other would
        assert json.loads((b_dir / "config.json").read_text()) == json.loads((s_dir / "config.json").read_text())
    # the seeds' runs did train on different rewards: a run on the other seed's data ends elsewhere
    cross = train_policy(algo, datasets[1], cfg, seed=SEEDS[0], out_dir=tmp_path / "cross", **common)
    if algo != "bc" or kw:  # plain BC never reads rewards; its top fraction and the critics do
        w = load_policy(tmp_path / "b" / f"seed_{SEEDS[0]}" / "policy.pt")[0].state_dict()
        wc = load_policy(tmp_path / "cross" / "policy.pt")[0].state_dict()
        assert any(not torch.allclose(w[k], wc[k], rtol=RTOL, atol=ATOL) for k in w)
    assert cross["steps_done"] == STEPS


def test_batched_resume_on_own_data_continues_each_seed(pendulum, tmp_path):
    datasets = [_own_rewards(pendulum, s) for s in SEEDS]
    cfg = small_config("td3bc")
    common = dict(steps=30, eval_every=0, eval_episodes=0, log_every=5, progress=False, log=lambda _: None)
    train_seeds("td3bc", datasets, cfg, seeds=SEEDS, out_dir=tmp_path / "whole", **common)
    train_seeds("td3bc", datasets, cfg, seeds=SEEDS, out_dir=tmp_path / "cut", stop_at=10, **common)
    train_seeds("td3bc", datasets, cfg, seeds=SEEDS, out_dir=tmp_path / "cut", resume=True, **common)
    for seed in SEEDS:
        a = load_policy(tmp_path / "whole" / f"seed_{seed}" / "policy.pt")[0].state_dict()
        b = load_policy(tmp_path / "cut" / f"seed_{seed}" / "policy.pt")[0].state_dict()
        assert all(torch.allclose(a[k], b[k], rtol=RTOL, atol=ATOL) for k in a)
    # a seed's checkpoint carries its own data's fingerprint: resuming it on the other seed's data is refused
    with pytest.raises(PbrlError, match="dataset_sha256"):
        train_seeds("td3bc", datasets[::-1], cfg, seeds=SEEDS, out_dir=tmp_path / "cut", resume=True, **common)


def test_mismatched_datasets_are_refused_with_one_line(pendulum, cartpole, tmp_path):
    short = collect_episodes("Pendulum-v1", num_episodes=5, seed=1, env_kwargs={"max_episode_steps": 50})
    cfg = small_config("bc")
    kw = dict(seeds=SEEDS, steps=2, eval_episodes=0, progress=False, out_dir=tmp_path / "x")
    with pytest.raises(PbrlError, match=r"^datasets: one per seed, got 3 for seeds \[3, 7\]$"):
        train_seeds("bc", [pendulum] * 3, cfg, **kw)
    with pytest.raises(PbrlError) as e:
        train_seeds("bc", [pendulum, cartpole], cfg, **kw)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("datasets: seed 7's dataset") and "env id" in msg
    with pytest.raises(PbrlError, match="seed 7's dataset .* has number of transitions 250, seed 3's .* 300;"):
        train_seeds("bc", [pendulum, short], cfg, **kw)
    assert not (tmp_path / "x").exists()  # refused before anything was written
