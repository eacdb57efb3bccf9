"""Minari datasets written by the previous release load with today's code to the same arrays and provenance.

(Reward folders: tests/rewards/test_reward_learner_protocol.py; policy checkpoints: tests/policies/
test_policy_contract.py — each against committed fixtures written by that release.)
"""

import os
import shutil

import numpy as np
import pytest

from pbrl.data import load_dataset
from pbrl.data.minari_io import datasets_root

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "minari_v1")
IDS = {"raw": "pbrl/fixture/pendulum-v0", "relabeled": "pbrl/fixture/pendulum-relabeled-v0"}


@pytest.fixture
def v1_root():
    root = datasets_root()  # this test's own temporary Minari root (tests/conftest.py)
    shutil.copytree(os.path.join(FIXTURE, "root"), root, dirs_exist_ok=True)
    return root


@pytest.mark.parametrize("key", sorted(IDS))
def test_v1_minari_datasets_load_to_the_same_arrays(v1_root, key):
    expected = np.load(os.path.join(FIXTURE, "expected.npz"))
    for spec in (IDS[key], os.path.join(v1_root, IDS[key])):  # by id and by folder path
        ds = load_dataset(spec)
        for name in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts"):
            np.testing.assert_array_equal(np.asarray(getattr(ds, name)), expected[f"{key}/{name}"], err_msg=name)
        np.testing.assert_array_equal(ds.episode_starts, expected[f"{key}/episode_starts"])
        assert ds.env_id == "Pendulum-v1"


def test_v1_relabeled_dataset_keeps_its_provenance(v1_root):
    steps = [p.get("step") for p in load_dataset(IDS["relabeled"]).metadata.get("provenance", [])]
    assert "relabel" in steps
