"""pbrl llm lions: the three stages on a tiny chat-data folder, each in its own run folder; re-running does no work;
a stopped stage resumes; a subset of the offline pairs; bad input refused before anything is written."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from pbrl.errors import PbrlError
from pbrl.llm.dpo import DpoConfig
from pbrl.llm.lions import LionsConfig, dpo_subset, final_model, lions
from pbrl.llm.models import TinyLMConfig
from pbrl.llm.odpo import OdpoConfig
from pbrl.llm.sft import SftConfig
from pbrl.runs import is_run_folder

TINY = TinyLMConfig(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64,
                    max_position=256)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from pbrl_envs.commands import ChatData

    out = tmp_path_factory.mktemp("chat") / "data"
    ChatData(out=str(out), corpus_docs=10, train_tasks=40, heldout_tasks=5, seed=0).run()
    return out


def chars(_row, response: str) -> float:
    """Toy judge: the response's length in characters (a random tiny model's samples differ in it; the chat
    task's scorer gives them all 0, which would leave no pair)."""
    return float(len(response))


def _cfg(data, out, **kw) -> LionsConfig:
    return LionsConfig(
        data=str(data), out=str(out), model=TINY, vocab_size=300, progress=False,
        device="cpu", threads=1,
        sft=SftConfig(max_length=128, batch_size=8, steps=3, warmup_steps=1, lr=1e-3),
        dpo=DpoConfig(batch_size=8, max_steps=2, lr=1e-3),
        odpo=OdpoConfig(n=3, temperature=1.0, max_new_tokens=6, prompts_per_round=8, final_eval=False,
                        chosen_must_finish=False,  # a random tiny model seldom ends a turn in 6 tokens
                        dpo=DpoConfig(batch_size=4, epochs=1, lr=1e-3)),
        **kw)


def _no_work(monkeypatch):
    import pbrl.llm.dpo as dpo_mod
    import pbrl.llm.lions as lions_mod
    import pbrl.llm.odpo as odpo_mod
    import pbrl.llm.sft as sft_mod

    for mod, name in ((sft_mod, "train_sft"), (dpo_mod, "train_dpo"), (odpo_mod, "online_dpo"),
                      (lions_mod, "estimate_seconds")):
        monkeypatch.setattr(mod, name, lambda *a, _n=name, **k: pytest.fail(f"{_n} called on a finished run"))


def test_three_stages_end_to_end_then_a_rerun_does_no_work(data, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    lines: list[str] = []
    s = lions(_cfg(data, out), chars, log=lines.append)
    assert s["done"] and list(s["stages"]) == ["sft", "dpo", "odpo"]
    assert lines[0].startswith("lions: estimate ~") and "sft ~" in lines[0] and "odpo at most ~" in lines[0]
    assert is_run_folder(out) and (out / "tokenizer" / "tokenizer.json").is_file()
    for stage in ("sft", "dpo", "odpo"):
        assert is_run_folder(out / stage) and (out / stage / "stage.json").is_file()
    assert (out / "sft/model/config.json").is_file() and (out / "dpo/model/config.json").is_file()
    assert (out / "dpo/ref_logps.pt").is_file()  # the reference log-probs of the SFT model, computed once
    assert s["model"] == str(out / "odpo/round_1/model") == str(final_model(_cfg(data, out)))
    # each stage starts from the previous stage's model
    assert json.loads((out / "dpo/config.json").read_text())["config"]["model_path"] == str(out / "sft/model")
    assert json.loads((out / "odpo/config.json").read_text())["config"]["model_path"] == str(out / "dpo/model")
    assert s["stages"]["dpo"]["pairs"] == s["stages"]["dpo"]["pairs_available"] > 0
    assert [r["stage"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())] == \
        ["sft", "dpo", "odpo"]

    _no_work(monkeypatch)
    lines.clear()
    again = lions(_cfg(data, out), chars, log=lines.append)
    assert again["stages"] == s["stages"] and "nothing to do" in lines[0]
    # other settings are refused with one line naming the key, before anything is written
    with pytest.raises(PbrlError, match="cannot resume, seed differs"):
        lions(_cfg(data, out, seed=1), chars, log=lines.append)


def test_a_stopped_stage_resumes_and_later_stages_run_from_a_given_model(data, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    cfg = _cfg(data, out, stages=("sft",))
    stopped = lions(dataclasses.replace(cfg, sft=dataclasses.replace(cfg.sft, stop_after=2)), log=lambda m: None)
    assert not stopped["done"] and not (out / "sft/stage.json").exists()
    assert len((out / "sft/metrics.jsonl").read_text().splitlines()) == 2
    s = lions(cfg, log=lambda m: None)  # resumes at step 2 of 3
    assert s["done"] and s["stages"]["sft"]["final"]["step"] == 3
    assert [json.loads(x)["step"] for x in (out / "sft/metrics.jsonl").read_text().splitlines()] == [1, 2, 3]

    # preference stages alone from that SFT model, on half of the offline pairs
    pref = lions(_cfg(data, tmp_path / "pref", stages=("dpo",), model_path=str(out / "sft/model"),
                      dpo_fraction=0.5), log=lambda m: None)
    row = pref["stages"]["dpo"]
    assert row["pairs"] == -(-row["pairs_available"] // 2)


def test_dpo_subset_is_nested_and_seeded():
    a, b = dpo_subset(10, 0.25, seed=3), dpo_subset(10, 0.5, seed=3)
    assert len(a) == 3 and len(b) == 5 and set(a) <= set(b) and a == sorted(a)
    assert dpo_subset(10, 1.0, seed=3) == list(range(10))
    assert dpo_subset(10, 0.5, seed=4) != b


def test_bad_input_is_refused_before_anything_is_written(data, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(PbrlError, match="is not a folder"):
        lions(_cfg(tmp_path / "nope", out))
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "sft.jsonl").write_text((data / "sft.jsonl").read_text())
    with pytest.raises(PbrlError, match=r"prefs.jsonl: missing \(stage dpo"):
        lions(_cfg(partial, out))
    with pytest.raises(PbrlError, match="judge: the odpo stage needs a judge"):
        lions(_cfg(data, out))
    with pytest.raises(PbrlError, match="stages: expected each at most once in the order"):
        lions(_cfg(data, out, stages=("dpo", "sft")))
    with pytest.raises(PbrlError, match="model_path: stage dpo needs a model"):
        lions(_cfg(data, out, stages=("dpo",)))
    with pytest.raises(PbrlError, match="dpo_fraction"):
        lions(_cfg(data, out, dpo_fraction=0.0))
    assert not out.exists()


def test_command_parses_nested_stage_flags(data, tmp_path):
    from pbrl.cli import parse
    from pbrl.llm.lions import LlmLions

    cmd = parse(LlmLions, [str(data), "--out", str(tmp_path / "r"), "--judge", "pbrl_envs.chat:judge",
                           "--sft.steps", "5", "--odpo.dpo.lr", "2e-5", "--stages", "sft", "dpo"],
                "pbrl llm lions", "LIONs")
    assert cmd.sft.steps == 5 and cmd.odpo.dpo.lr == 2e-5 and cmd.stages == ("sft", "dpo")
