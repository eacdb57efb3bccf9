"""baselines.dtr_table1.ensure_built: scripts started side by side may both build a suite dataset."""

from __future__ import annotations

import pytest

import pbrl.data.minari_io as minari_io
import pbrl_envs.commands as env_commands
from baselines.dtr_table1 import dataset_id, ensure_built
from pbrl.errors import PbrlError


def _race(monkeypatch: pytest.MonkeyPatch, published_by_other: bool) -> list[str]:
    """ensure_built with the dataset missing at the first check; `build` fails as write_minari does when another
    writer has just published the folder (or, if not published_by_other, for some other reason)."""
    checks = {"n": 0}
    built: list[str] = []

    def exists(_id: str) -> bool:
        checks["n"] += 1
        return published_by_other and checks["n"] > 1

    def build(name: str) -> None:
        built.append(name)
        raise PbrlError(f"Minari dataset {dataset_id(name)!r} already exists")

    monkeypatch.setattr(minari_io, "dataset_exists", exists)
    monkeypatch.setattr(env_commands, "build", build)
    ensure_built(["hopper-medium"])
    return built


def test_loser_of_a_build_race_uses_the_published_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _race(monkeypatch, published_by_other=True) == ["hopper-medium"]


def test_a_build_error_without_a_dataset_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PbrlError, match="already exists"):
        _race(monkeypatch, published_by_other=False)
