"""The run settings the trainer configs share (pbrl.runs.RunSettings): the same names and defaults in every config,
one docstring read by the command-line help, and a run saved with the fields in their earlier order (run settings
last) still resumes (the fingerprint is compared key by key, not as text)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json

import pytest

from pbrl.errors import PbrlError
from pbrl.llm.dpo import DpoConfig
from pbrl.llm.hyperfit import HyperfitConfig
from pbrl.llm.lions import LionsConfig
from pbrl.llm.ppo import PpoConfig
from pbrl.llm.pretrain import PretrainConfig
from pbrl.llm.sft import SftConfig
from pbrl.rec.srpo import SrpoConfig
from pbrl.runs import RunFolder, RunSettings

CONFIGS = [PretrainConfig, SftConfig, DpoConfig, PpoConfig, HyperfitConfig, LionsConfig, SrpoConfig]
SHARED = {"resume": True, "seed": 0, "device": "auto", "progress": True, "threads": None}


@pytest.mark.parametrize("cls", CONFIGS, ids=[c.__name__ for c in CONFIGS])
def test_every_trainer_config_has_the_shared_settings_and_defaults(cls):
    assert issubclass(cls, RunSettings)
    saved = dataclasses.asdict(cls())
    assert {k: saved[k] for k in SHARED} == SHARED
    assert saved["out"].startswith("runs/")  # the trainer's own fields follow


def test_the_help_shows_the_shared_docstring():
    from pbrl.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        main(["llm", "pretrain", "--help"])
    text = " ".join(buf.getvalue().split())
    assert "Seed of every random draw of the run" in text and "--no-resume" in text and "--threads" in text


def test_a_run_saved_with_the_earlier_field_order_resumes(tmp_path):
    cfg = dataclasses.asdict(SrpoConfig(out=str(tmp_path)))
    earlier = {k: cfg[k] for k in [*(k for k in cfg if k not in SHARED), *SHARED]}  # run settings last
    assert list(earlier) != list(cfg) and earlier == cfg
    RunFolder(tmp_path, earlier)
    assert list(json.loads((tmp_path / "config.json").read_text())["fingerprint"])[-1] == "threads"
    RunFolder(tmp_path, cfg, resume=True)  # the same settings in the new order: resumed
    with pytest.raises(PbrlError, match="cannot resume, seed differs"):
        RunFolder(tmp_path, {**cfg, "seed": 1}, resume=True)
