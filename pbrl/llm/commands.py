"""`pbrl llm dpo`, `pbrl llm synth`, `pbrl llm pretrain` and `pbrl llm sft`."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import tyro

from pbrl.llm.dpo import DpoConfig, train_dpo
from pbrl.llm.pretrain import PretrainConfig, pretrain
from pbrl.llm.sft import SftConfig, train_sft


def _config(cmd, cls, name: str, source: str):
    """The command's config as its library dataclass (once its --out passed `pbrl.runs.check_out_folder`), with the
    threads chosen (the free cores by default) and the command's first line printed (by the first process of a
    data-parallel launch)."""
    import os

    from pbrl.runs import command_config
    from pbrl.utils import choose_threads, threads_line

    cfg = command_config(cmd, cls, f"llm {name}")
    n, note = choose_threads(cmd.threads)
    if cmd.threads is None:  # the free cores are shared by the processes of a data-parallel launch on this machine
        n = max(1, n // max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1)))
    if int(os.environ.get("RANK") or 0) == 0:
        print(f"pbrl llm {name} on {source}: {threads_line(n, note)}", flush=True)
    return dataclasses.replace(cfg, threads=n)


def _report(result: dict, keys: tuple[str, ...], out: str) -> None:
    """The final metrics line and where the run's files are (or how to resume a stopped run)."""
    final = result["final"]
    print(json.dumps({"num_parameters": result["num_parameters"], "done": result["done"],
                      **{k: final.get(k) for k in keys}}))
    if result["done"]:
        print(f"wrote {out}/model, {out}/metrics.jsonl")
    else:
        print(f"stopped at step {result['step']} of {result['total_steps']}; run again to resume "
              f"(wrote {out}/checkpoint.pt, {out}/metrics.jsonl)")


@dataclass
class LlmDpo(DpoConfig):
    """DPO on preference records (JSONL or datasets folder) with prefix sharing, packing and a chosen backend."""

    data: tyro.conf.Positional[str] = ""
    """Preference records: a JSONL file or an HF datasets folder ({prompt, chosen, rejected})."""
    overwrite: bool = False
    """Write the run into --out even when the folder holds other files or another command's run, and restart a run
    of this command there (resume off)."""

    def run(self) -> None:
        import os

        from pbrl.runs import command_config
        from pbrl.utils import choose_threads, threads_line

        cfg = command_config(self, DpoConfig, "llm dpo")
        # the free cores by default, shared by the processes of a data-parallel CPU launch on this machine
        n, note = choose_threads(self.threads)
        if self.threads is None:
            n = max(1, n // max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1)))
        if self.data and int(os.environ.get("RANK") or 0) == 0:
            print(f"pbrl llm dpo on {self.data}: {threads_line(n, note)}", flush=True)
        result = train_dpo(dataclasses.replace(cfg, threads=n))
        if result["rank"] != 0:
            return
        final = result["final"]
        keys = ("step", "dpo/loss", "dpo/reward_accuracy", "dpo/reward_margin", "perf/samples_per_s",
                "perf/tokens_per_s")
        print(json.dumps({"num_parameters": result["num_parameters"], **{k: final.get(k) for k in keys}}))
        print(f"wrote {self.out}/model, {self.out}/metrics.jsonl")


@dataclass
class LlmSynth:
    """Write synthetic preference records (JSONL) whose lengths follow one of the paper's six dataset profiles."""

    out: tyro.conf.Positional[str]
    """Output JSONL file."""
    profile: str = "hh_rlhf"
    """capybara, hh_rlhf, metamath, tldr, tulu or ultrafeedback."""
    num: int = 256
    """Number of records."""
    scale: float = 1.0
    """Multiply the profile's lengths (e.g. 0.25 for quick CPU runs)."""
    vocab_words: int = 200
    """Distinct words (chosen responses use even word ids, rejected odd ones)."""
    seed: int = 0
    """Random seed."""

    def run(self) -> None:
        from pbrl.llm.prefs_data import save_preferences, synthetic_records

        records = synthetic_records(self.profile, self.num, vocab_words=self.vocab_words, seed=self.seed,
                                    scale=self.scale)
        save_preferences(records, self.out)
        print(f"wrote {len(records)} records ({self.profile}, scale {self.scale}) to {self.out}")


@dataclass
class LlmPretrain(PretrainConfig):
    """Pre-train a tiny base LM (and a byte-level BPE tokenizer with a ChatML chat template) on a text corpus."""

    corpus: tyro.conf.Positional[str] = ""
    """Text corpus: a .txt file (one document per line) or a .jsonl file (objects with a `text` field)."""
    overwrite: bool = False
    """Write the run into --out even when the folder holds other files or another command's run, and restart a run
    of this command there (resume off)."""

    def run(self) -> None:
        result = pretrain(_config(self, PretrainConfig, "pretrain", self.corpus))
        _report(result, ("step", "pretrain/loss", "perf/tokens_per_s"), self.out)


@dataclass
class LlmSft(SftConfig):
    """SFT on chat JSONL with assistant-only loss, best-fit-decreasing packing and document-masked attention."""

    data: tyro.conf.Positional[str] = ""
    """Chat data: a JSONL file of {messages} or {prompt, completion} objects (e.g. the sft.jsonl of chat-data)."""
    overwrite: bool = False
    """Write the run into --out even when the folder holds other files or another command's run, and restart a run
    of this command there (resume off)."""

    def run(self) -> None:
        result = train_sft(_config(self, SftConfig, "sft", self.data))
        if result["rank"] != 0:  # the first process reports for a data-parallel run
            return
        d = result["data"]
        print(f"data: {d['read']} conversations, {d['kept']} kept; {d['dropped_masked']} dropped as over "
              f"{self.max_masked_fraction:.0%} masked, {d['dropped_overlong']} dropped and {d['truncated']} "
              f"truncated as over max_length {self.max_length}")
        _report(result, ("step", "sft/loss", "sft/padding_fraction", "perf/tokens_per_s"), self.out)
