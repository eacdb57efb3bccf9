"""Test-wide settings: every test writes Minari datasets into its own temporary root and never touches a hub."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _minari_root(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("minari")))


@pytest.fixture(autouse=True)
def _torch_threads():
    # the CI machine has 2 cores; keep tests from oversubscribing them
    try:
        import torch

        torch.set_num_threads(min(2, torch.get_num_threads()))
    except ImportError:
        pass
