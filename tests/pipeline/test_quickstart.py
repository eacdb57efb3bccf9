"""`pbrl quickstart` at a tiny budget: builds its dataset once, reuses it, and refuses a dataset built otherwise."""

import pytest

from pbrl.commands import Quickstart
from pbrl.data.recipes import build_recipe
from pbrl.errors import PbrlError


def _tiny(out, **kw):
    return Quickstart(out=str(out), dataset="pendulum-random", steps=40, queries=20, length=10, **kw)


def test_quickstart_builds_once_then_reuses_the_dataset(tmp_path, capsys):
    _tiny(tmp_path / "a").run()
    first = capsys.readouterr().out
    assert "built in" in first and "| true reward (oracle) |" in first
    _tiny(tmp_path / "b").run()  # the second run reuses the dataset: nothing is rebuilt
    assert "already built: reusing it" in capsys.readouterr().out
    with pytest.raises(PbrlError, match="--overwrite"):  # its run folders are not silently replaced
        _tiny(tmp_path / "b").run()


def test_quickstart_refuses_a_dataset_built_at_another_seed(tmp_path):
    build_recipe("pendulum-random", size=500, seed=3)
    with pytest.raises(PbrlError, match="seed|size"):
        _tiny(tmp_path / "c").run()
