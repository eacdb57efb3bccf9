"""baselines/grpo_throughput.py: the rate arithmetic and the shared reward, by hand (the benchmark itself runs
minutes, so it is not run here)."""

from __future__ import annotations

import numpy as np
import pytest

from baselines.grpo_throughput import best_rates, exact


def test_best_rates_by_hand():
    steps = [{"rollout": 2.0, "rest": 8.0, "tokens": 800}, {"rollout": 4.0, "rest": 4.0, "tokens": 800}]
    r = best_rates(steps)
    assert r["rollout"] == 400.0  # the best step of each stage: 800 / 2
    assert r["rest"] == 200.0  # 800 / 4
    assert r["all"] == pytest.approx(1 / (1 / 400 + 1 / 200))  # the best per-token times added: 133.3


def test_exact_reward_names_the_target_only():
    from pbrl.rec.semantic_ids import SemanticIds

    ids = SemanticIds(codes=np.array([[1, 2], [2, 1], [1, 2]]), dedup=np.array([1, 0, 2]), k=2)
    assert exact(ids, "<|a_2|><|b_1|>", 1) == 1.0
    assert exact(ids, "<|a_2|><|b_1|>", 0) == 0.0
    assert exact(ids, "<|a_1|><|b_2|><|c_2|>", 2) == 1.0
    assert exact(ids, "<|a_1|><|b_2|>", 0) == 0.0  # a colliding code without its dedup token names no item
    assert exact(ids, "no id", 0) == 0.0
