"""The --out guard of the run-folder commands (pbrl.runs.check_out_folder / command_config): a folder holding other
files, a config.json that is not a run's, or another command's run is refused with one line before any input is
read, and written to with --overwrite (which restarts the run); a run of the same command resumes as before."""

from __future__ import annotations

import json

import pytest
import torch

from pbrl.cli import main
from pbrl.errors import PbrlError
from pbrl.runs import RunFolder, check_out_folder


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


FIELDS = ("out", "seed", "lr")


def test_check_out_folder_by_hand(tmp_path):
    check_out_folder(tmp_path / "missing", FIELDS, "x")  # a new folder
    (tmp_path / "empty").mkdir()
    check_out_folder(tmp_path / "empty", FIELDS, "x")
    (tmp_path / "file").write_text("")
    with pytest.raises(PbrlError, match="file: exists and is not a folder"):
        check_out_folder(tmp_path / "file", FIELDS, "x", overwrite=True)
    d = tmp_path / "d"
    d.mkdir()
    (d / ".tmp-123-host-abcdefgh").write_text("")  # a killed atomic write's temporary
    (d / "tokenizer").mkdir()  # what the command writes before its config.json
    check_out_folder(d, FIELDS, "x", own=("tokenizer",))
    with pytest.raises(PbrlError, match=r"d: holds files that are not a `pbrl x` run \(tokenizer\); use a new --out"):
        check_out_folder(d, FIELDS, "x")
    for i in range(5):
        (d / f"f{i}").write_text("")
    with pytest.raises(PbrlError, match=r"\(f0, f1, f2 and 2 more\)"):
        check_out_folder(d, FIELDS, "x", own=("tokenizer",))
    check_out_folder(d, FIELDS, "x", overwrite=True)
    (d / "config.json").write_text("{not json")
    with pytest.raises(PbrlError, match="config.json: unreadable"):
        check_out_folder(d, FIELDS, "x")
    (d / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(PbrlError, match="not a pbrl run's config"):
        check_out_folder(d, FIELDS, "x")
    RunFolder(d, {"out": str(d), "seed": 0, "steps": 3})
    with pytest.raises(PbrlError, match=r"holds the run of another command, not of `pbrl x` \(its config.json has no "
                                        r"lr\)"):
        check_out_folder(d, FIELDS, "x")
    RunFolder(d, {"out": str(d), "seed": 0, "lr": 0.1, "model_dir": "m"})  # extra saved keys: the same command's
    check_out_folder(d, FIELDS, "x")  # the user's files beside a run do not stop it


COMMANDS = [
    (["llm", "pretrain", "corpus.txt", "--threads", "1"], "llm pretrain"),
    (["llm", "sft", "chat.jsonl", "--threads", "1"], "llm sft"),
    (["llm", "dpo", "prefs.jsonl", "--threads", "1"], "llm dpo"),
    (["llm", "odpo", "prompts.jsonl", "--model-path", "m", "--dpo.threads", "1"], "llm odpo"),
    (["llm", "ppo", "prompts.jsonl", "--model-path", "m", "--threads", "1"], "llm ppo"),
    (["llm", "hyperfit", "m", "corpus.txt", "--threads", "1"], "llm hyperfit"),
    (["llm", "lions", "data", "--threads", "1"], "llm lions"),
    (["rec", "srpo", "m", "rl.jsonl", "--ids", "ids.json", "--threads", "1"], "rec srpo"),
]


@pytest.mark.parametrize("args,name", COMMANDS, ids=[c[1] for c in COMMANDS])
def test_every_run_folder_command_refuses_a_foreign_out_before_reading_its_inputs(tmp_path, monkeypatch, capsys,
                                                                                  args, name):
    monkeypatch.chdir(tmp_path)  # the inputs named above do not exist: a refusal comes before they are read
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")

    def run(*extra):
        capsys.readouterr()
        code = main([*args, "--out", str(out), *extra])
        return code, capsys.readouterr().err.strip().splitlines()

    code, err = run()
    assert code == 2 and len(err) == 1 and err[0].startswith("pbrl: error:"), err
    assert f"holds files that are not a `pbrl {name}` run (notes.txt)" in err[0]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    # another command's run
    (out / "notes.txt").unlink()
    RunFolder(out, {"out": str(out), "an_other_command": True})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for extra in ((), ("--no-resume",)):
        code, err = run(*extra)
        assert code == 2 and len(err) == 1 and f"not of `pbrl {name}`" in err[0], err
    # --overwrite passes the guard; the missing inputs are what stops it now, and nothing was written
    code, err = run("--overwrite")
    assert code == 2 and len(err) == 1 and "another command" not in err[0], err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_finished_dpo_run_resumes_and_restarts_with_overwrite(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    assert main(["llm", "synth", str(data), "--profile", "tldr", "--num", "16", "--scale", "0.05"]) == 0
    out = tmp_path / "run"
    args = ["llm", "dpo", str(data), "--out", str(out), "--batch-size", "8", "--max-steps", "2",
            "--model.hidden-size", "32", "--no-progress", "--threads", "1"]

    def steps():
        return [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]

    assert main(args) == 0 and steps() == [1, 2]
    first = json.loads((out / "config.json").read_text())
    assert main(args) == 0 and steps() == [1, 2]  # resumed: finished, nothing trained again
    assert main([*args, "--beta", "0.5"]) == 2  # other settings: a resume is refused
    assert "beta differs" in capsys.readouterr().err
    assert main([*args, "--beta", "0.5", "--overwrite"]) == 0  # restarted with them
    assert steps() == [1, 2]
    again = json.loads((out / "config.json").read_text())
    assert again["config"]["beta"] == 0.5 and first["config"]["beta"] != 0.5
    assert again["fingerprint"] != first["fingerprint"]
