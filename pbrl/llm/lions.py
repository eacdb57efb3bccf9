"""The LIONs pipeline end to end: SFT -> offline DPO -> online DPO rounds (`pbrl llm lions DATA_DIR --out RUN_DIR`).

Yu et al. 2024 (arXiv 2407.06542), "LIONs: An Empirically Optimized Approach to Align Language Models":

    stage sft    pi_SFT  = SFT(pi_0; sft.jsonl)                  assistant-only loss, packing (pbrl.llm.sft)
    stage dpo    pi_DPO  = DPO(pi_SFT; prefs.jsonl, ref = pi_SFT)  the reference log-probs are computed once with
                                                                  pi_SFT before training (ref_logps.pt), so no
                                                                  reference model stays in memory (pbrl.llm.dpo)
    stage odpo   pi_k    = DPO(pi_{k-1}; best-vs-worst of n samples judged, ref = pi_{k-1}),  k = 1..R,
                 pi_0 = pi_DPO                                    (pbrl.llm.odpo)

DATA_DIR is a `pbrl llm chat-data` folder: sft.jsonl ({messages}), prefs.jsonl ({prompt, chosen, rejected}) and
prompts.jsonl (the online rounds' prompts, rows the judge reads). The base model is ``model_path`` (e.g. the
model/ of `pbrl llm pretrain`, tokenizer with a chat template included) or, without one, a tiny model of ``model``
built at random with a byte-level BPE chat tokenizer trained on DATA_DIR's texts (RUN_DIR/tokenizer).

Layout of RUN_DIR::

    config.json, metrics.jsonl, summary.json   the pipeline's RunFolder: one row per finished stage
    tokenizer/                                 only for a built model: the trained chat tokenizer
    sft/, dpo/, odpo/                          each stage's own run folder (checkpoints, metrics, model/), plus
                                               stage.json, written when the stage has finished

Resume: a stage whose stage.json exists is skipped (re-running a finished pipeline trains, samples and loads no
model); a stopped stage resumes from its own checkpoint (the trainers' resume). A resume with other settings or
other data is refused with one line naming the key (the fingerprint in config.json), before anything is written.

``stages`` runs a subset (each stage starts from the model of the last one run, or from ``model_path``): e.g.
``--stages dpo odpo --model-path RUN/sft/model`` re-runs preference learning from an existing SFT model.
``dpo_fraction`` trains the offline stage on a seeded share of prefs.jsonl (the LIONs "more DPO data" ablation).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tyro

from pbrl.errors import PbrlError
from pbrl.llm.dpo import DpoConfig
from pbrl.llm.models import TinyLMConfig
from pbrl.llm.odpo import OdpoConfig
from pbrl.llm.sft import SftConfig
from pbrl.runs import RunFolder, RunSettings, fingerprint_file
from pbrl.utils import atomic_write_json, format_duration, read_json_lines

Stage = Literal["sft", "dpo", "odpo"]
STAGES: tuple[str, ...] = ("sft", "dpo", "odpo")
DATA_FILES = {"sft": "sft.jsonl", "dpo": "prefs.jsonl", "odpo": "prompts.jsonl"}
STAGE_DONE = "stage.json"

# stage-config fields the pipeline sets itself (the rest are the user's)
_SET = {"sft": ("data", "out", "model_path", "tokenizer_path", "resume", "seed", "threads", "device", "progress"),
        "dpo": ("data", "out", "model_path", "tokenizer_path", "ref_logps", "resume", "seed", "threads", "device",
                "progress"),
        "odpo": ("prompts", "model_path", "tokenizer_path", "out", "judge", "resume", "seed")}


@dataclass
class LionsConfig(RunSettings):
    """The three LIONs stages on a chat-data folder, each in its own run folder under ``out``."""

    data: str = ""
    """A `pbrl llm chat-data` folder: sft.jsonl, prefs.jsonl, prompts.jsonl."""
    out: str = "runs/lions"
    """RUN_DIR: the pipeline's run folder and sft/, dpo/, odpo/ (see the module docstring)."""
    model_path: str | None = None
    """The base model folder (with a chat tokenizer, e.g. `pbrl llm pretrain`'s model/); default: a tiny model of
    ``model`` built at random with a BPE chat tokenizer trained on the data."""
    model: TinyLMConfig = field(default_factory=TinyLMConfig)
    """Shape of the model built when no model_path is given (vocab_size follows the tokenizer)."""
    vocab_size: int = 512
    """Vocabulary of the BPE chat tokenizer trained when no model_path is given."""
    stages: tuple[Stage, ...] = STAGES  # type: ignore[assignment]
    """Stages to run, in the order sft, dpo, odpo; each starts from the last one's model (or model_path)."""
    judge: str | None = None
    """The online rounds' judge as module:function (e.g. pbrl_envs.chat:judge for chat-data folders)."""
    dpo_fraction: float = 1.0
    """Share of prefs.jsonl the offline DPO stage trains on (a seeded subset), in (0, 1]."""
    sft: SftConfig = field(default_factory=SftConfig)
    """SFT settings (data, out, model_path, tokenizer_path, resume, seed, threads, device, progress are set here)."""
    dpo: DpoConfig = field(default_factory=DpoConfig)
    """Offline DPO settings (the reference is the SFT model; data, out, paths, resume, seed, ... are set here)."""
    odpo: OdpoConfig = field(default_factory=OdpoConfig)
    """Online DPO settings (rounds, n, temperature, its dpo settings; prompts, paths, resume, seed set here)."""
    device: str = "auto"
    """cpu, cuda, or auto, for every stage."""
    progress: bool = True
    """Progress bars inside the stages (the stage lines and the estimate are printed either way)."""
    resume: bool = True
    """Skip finished stages and resume a stopped one; False runs every stage again from its start."""

    def check(self) -> None:
        """One PbrlError naming the field or file for a bad setting or a missing input (nothing written yet)."""
        if not self.data or not Path(self.data).is_dir():
            raise PbrlError(f"data: {self.data!r} is not a folder (expected a `pbrl llm chat-data` folder with "
                            "sft.jsonl, prefs.jsonl, prompts.jsonl)")
        if not self.stages:
            raise PbrlError("stages: expected at least one of sft, dpo, odpo")
        bad = [s for s in self.stages if s not in STAGES]
        if bad:
            raise PbrlError(f"stages: unknown stage(s) {bad}; expected sft, dpo, odpo")
        if list(self.stages) != [s for s in STAGES if s in self.stages]:
            raise PbrlError(f"stages: expected each at most once in the order sft, dpo, odpo, got {list(self.stages)}")
        for s in self.stages:
            if not (Path(self.data) / DATA_FILES[s]).is_file():
                raise PbrlError(f"{Path(self.data) / DATA_FILES[s]}: missing (stage {s} reads it; expected a "
                                "`pbrl llm chat-data` folder)")
        if self.model_path is not None and not Path(self.model_path).is_dir():
            raise PbrlError(f"model_path: {self.model_path} is not a model folder")
        if self.stages[0] != "sft" and self.model_path is None:
            raise PbrlError(f"model_path: stage {self.stages[0]} needs a model to start from (a built model is "
                            "only trained from scratch by the sft stage)")
        if not 0 < self.dpo_fraction <= 1:
            raise PbrlError(f"dpo_fraction: expected in (0, 1], got {self.dpo_fraction}")
        if "odpo" in self.stages:
            dataclasses.replace(self.odpo, prompts="p", model_path="m").check()


# ----------------------------------------------------------------------------------------------- stage configs
def stage_configs(cfg: LionsConfig, start: str | None, tokenizer_path: str | None) -> dict[str, Any]:
    """Each stage's trainer config: the user's settings with the pipeline's paths, seed, resume, device and
    progress; stage k starts from stage k-1's model/ (or ``start``)."""
    out = Path(cfg.out)
    data = Path(cfg.data)
    configs: dict[str, Any] = {}
    prev = start
    for s in cfg.stages:
        if s == "sft":
            c: Any = dataclasses.replace(cfg.sft, data=str(data / "sft.jsonl"), out=str(out / "sft"),
                                         model_path=prev, tokenizer_path=tokenizer_path if prev is None else None,
                                         model=cfg.model, resume=cfg.resume,
                                         seed=cfg.seed, threads=None, device=cfg.device, progress=cfg.progress)
            prev = str(out / "sft" / "model")
        elif s == "dpo":
            c = dataclasses.replace(cfg.dpo, data=str(data / "prefs.jsonl"), out=str(out / "dpo"), model_path=prev,
                                    tokenizer_path=prev, ref_logps=None, resume=cfg.resume, seed=cfg.seed,
                                    threads=None, device=cfg.device, progress=cfg.progress)
            prev = str(out / "dpo" / "model")
        else:
            odpo_dpo = dataclasses.replace(cfg.odpo.dpo, device=cfg.device, progress=cfg.progress, threads=None)
            c = dataclasses.replace(cfg.odpo, prompts=str(data / "prompts.jsonl"), model_path=prev,
                                    tokenizer_path=None, out=str(out / "odpo"), judge=cfg.judge, resume=cfg.resume,
                                    seed=cfg.seed, dpo=odpo_dpo)
            prev = str(out / "odpo" / f"round_{cfg.odpo.rounds}" / "model")
        configs[s] = c
    return configs


def final_model(cfg: LionsConfig) -> Path:
    """The model folder the last stage of ``cfg`` writes."""
    c = stage_configs(cfg, cfg.model_path, None)[cfg.stages[-1]]
    return Path(c.out) / (f"round_{c.rounds}/model" if cfg.stages[-1] == "odpo" else "model")


def dpo_subset(n: int, fraction: float, seed: int) -> list[int]:
    """Indices of the offline pairs the dpo stage trains on: the first ceil(fraction n) of a seeded permutation,
    in file order (so a smaller share is a subset of a larger one at one seed)."""
    import numpy as np

    k = max(1, math.ceil(fraction * n))
    return sorted(np.random.default_rng(seed).permutation(n)[:k].tolist())


# ----------------------------------------------------------------------------------------------- estimate
def estimate_seconds(cfg: LionsConfig, configs: dict[str, Any], start: str | None, tokenizer_path: str | None,
                     todo: list[str]) -> dict[str, float]:
    """Seconds each stage of ``todo`` should take, from a short probe of the starting model on this machine: one
    SFT optimizer step's forward and backward (timed after a warm-up), and one sampler call of 4 new tokens.

        sft    steps x (step time)
        dpo    (pairs x epochs / batch) x (step time x DPO tokens per step / SFT tokens per step) + 1/3 of one pass
               (the reference log-probs, forward only)
        odpo   rounds x (ceil(prompts / sample_batch) x max_new_tokens x (time per sampled position)
               + the DPO round on at most one pair per prompt): an upper bound, as a turn that ends at the
               end-of-turn token frees its row early (the 2-core tiny-budget run took about 1/6 of it)

    The probe's model is the starting one (a later stage's model has the same shape, so the same speed)."""
    import torch

    from pbrl.llm.dpo import resolve_backend
    from pbrl.llm.models import build_model, load_model
    from pbrl.llm.odpo import _sample, load_prompts, prompt_ids
    from pbrl.llm.prefs_data import load_preferences, tokenize_records
    from pbrl.llm.sft import encode_chats, example_nll, read_chats, sft_batch
    from pbrl.llm.tokenizer import load_tokenizer

    sc = configs.get("sft") or SftConfig()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" \
        else torch.device(cfg.device)
    tok = load_tokenizer(start or tokenizer_path, chat=True)  # type: ignore[arg-type]
    backend = resolve_backend(sc.backend, sc.layout, device)
    if start:
        model = load_model(start, backend=backend).to(device)
    else:
        model = build_model(dataclasses.replace(cfg.model, vocab_size=len(tok)), backend=backend).to(device)
    chats = read_chats(Path(cfg.data) / "sft.jsonl")
    examples, _ = encode_chats(tok, chats[: 4 * sc.batch_size], max_length=sc.max_length, loss_on=sc.loss_on)
    batch_examples = examples[: sc.batch_size] or examples
    sft_tokens = sum(len(e.ids) for e in batch_examples)
    pack = sc.pack_length or -(-sc.max_length // sc.pad_to_multiple) * sc.pad_to_multiple
    step_s = math.inf
    for _ in range(2):  # the first call pays one-time costs
        t = time.perf_counter()
        batch = sft_batch(batch_examples, sc.layout, pack_length=pack, pad_to_multiple=sc.pad_to_multiple,
                          pad_id=tok.pad_token_id).to(device)
        example_nll(model, batch).sum().backward()
        step_s = min(step_s, time.perf_counter() - t)
    model.zero_grad(set_to_none=True)
    per_token = step_s / max(1, sft_tokens)
    est: dict[str, float] = {}
    if "sft" in todo:
        n_steps = sc.steps if sc.steps is not None else sc.epochs * max(1, len(chats) // sc.batch_size)
        est["sft"] = n_steps * step_s
    if "dpo" in todo:
        dc = configs["dpo"]
        records = load_preferences(Path(cfg.data) / "prefs.jsonl")
        n = len(dpo_subset(len(records), cfg.dpo_fraction, cfg.seed))
        sample = tokenize_records(records[:64], tok)
        per_pair = sum(len(p.prompt) + len(p.chosen) + len(p.rejected) + 1 for p in sample) / len(sample)
        n_steps = dc.max_steps if dc.max_steps is not None else dc.epochs * max(1, n // dc.batch_size)
        est["dpo"] = per_token * per_pair * (n_steps * dc.batch_size + n / 3)
    if "odpo" in todo:
        oc = configs["odpo"]
        rows = load_prompts(oc.prompts)
        m = len(rows) if oc.prompts_per_round is None else min(len(rows), oc.prompts_per_round)
        probe = dataclasses.replace(oc, max_new_tokens=4)
        model.eval()
        t = time.perf_counter()
        with torch.no_grad():
            _sample(model, tok, rows[: oc.sample_batch], probe, seed=0)
        per_position = (time.perf_counter() - t) / 4
        prompt_len = sum(len(prompt_ids(tok, r)) for r in rows[:64]) / min(64, len(rows))
        per_pair = prompt_len + 2 * oc.max_new_tokens + 1
        dpo_steps = oc.dpo.epochs * max(1, m // oc.dpo.batch_size)
        rounds_left = oc.rounds - sum((Path(oc.out) / f"round_{k}" / "round.json").is_file()
                                      for k in range(1, oc.rounds + 1))
        est["odpo"] = rounds_left * (math.ceil(m / oc.sample_batch) * oc.max_new_tokens * per_position
                                     + per_token * per_pair * (dpo_steps * oc.dpo.batch_size + m / 3))
    return est


# ----------------------------------------------------------------------------------------------- the pipeline
def _fingerprint(cfg: LionsConfig) -> dict[str, Any]:
    fp = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("data", "out", "threads", "progress",
                                                                           "resume", "device")}
    for k in ("sft", "dpo", "odpo"):  # the fields the pipeline sets are not the user's settings
        fp[k] = {f: v for f, v in fp[k].items()
                 if f not in _SET[k] + ("threads", "device", "progress", "stop_after", "checkpoint_every")}
    fp["odpo"]["dpo"] = {f: v for f, v in fp["odpo"]["dpo"].items() if f not in ("threads", "device", "progress")}
    fp["data_sha256"] = {s: fingerprint_file(Path(cfg.data) / DATA_FILES[s]) for s in cfg.stages}
    if cfg.model_path:
        fp["model_sha256"] = {p.name: fingerprint_file(p) for p in sorted(Path(cfg.model_path).glob("*"))
                              if p.is_file()}
    return fp


def _chat_tokenizer(cfg: LionsConfig) -> str:
    """RUN_DIR/tokenizer: a BPE chat tokenizer trained on the data's texts (reused when it exists)."""
    from pbrl.llm.tokenizer import bpe_tokenizer

    path = Path(cfg.out) / "tokenizer"
    if (path / "tokenizer.json").is_file():
        return str(path)
    texts: list[str] = []
    for _, obj in read_json_lines(Path(cfg.data) / "sft.jsonl"):
        for m in obj.get("messages", []) if isinstance(obj, dict) else []:
            if isinstance(m, dict) and isinstance(m.get("content"), str):
                texts.append(m["content"])
    if not texts:
        raise PbrlError(f"{Path(cfg.data) / 'sft.jsonl'}: no message texts to train a tokenizer on")
    tok = bpe_tokenizer(texts, cfg.vocab_size, chat=True)
    tmp = path.with_name("tokenizer.tmp")
    tok.save_pretrained(tmp)
    tmp.rename(path)
    return str(path)


def lions(cfg: LionsConfig, judge=None, log=print) -> dict[str, Any]:
    """Run (or resume) the stages of ``cfg`` (module docstring). ``judge``: a callable for the online rounds
    (default: ``cfg.judge`` resolved); ``log``: where the estimate and the stage lines go. Returns the summary
    written to RUN_DIR/summary.json: per stage its row (seconds, estimate, final metrics, model folder), the
    last stage's model, and ``ran``: the stages this call ran (the others were finished before)."""
    from pbrl.llm.dpo import train_dpo
    from pbrl.llm.odpo import online_dpo, resolve_judge
    from pbrl.llm.prefs_data import load_preferences, tokenize_records
    from pbrl.llm.sft import train_sft
    from pbrl.llm.tokenizer import load_tokenizer
    from pbrl.utils import use_threads

    cfg.check()
    if "odpo" in cfg.stages and judge is None:
        if not cfg.judge:
            raise PbrlError("judge: the odpo stage needs a judge as module:function (for a chat-data folder: "
                            "pbrl_envs.chat:judge)")
        judge = resolve_judge(cfg.judge)
    if judge is not None and cfg.judge is None:  # a callable: its name goes into the config and fingerprint
        cfg = dataclasses.replace(cfg, judge=f"{getattr(judge, '__module__', '?')}:"
                                            f"{getattr(judge, '__qualname__', type(judge).__name__)}")
    if cfg.threads is not None:
        use_threads(cfg.threads)
    out = Path(cfg.out)
    run = RunFolder(out, dataclasses.asdict(cfg), fingerprint=_fingerprint(cfg), resume=cfg.resume,
                    write=False)  # a resume of another run is refused before anything is written
    if not cfg.resume:  # every stage runs again (each trainer with resume=False), the tokenizer is trained again
        for s in STAGES:
            (out / s / STAGE_DONE).unlink(missing_ok=True)
        shutil.rmtree(out / "tokenizer", ignore_errors=True)
    done = {s: dict(next(read_json_lines(out / s / STAGE_DONE, whole=True))[1])
            for s in cfg.stages if (out / s / STAGE_DONE).is_file()}
    todo = [s for s in cfg.stages if s not in done]
    tokenizer_path = _chat_tokenizer(cfg) if cfg.model_path is None and "sft" in todo else None
    if cfg.model_path is None and tokenizer_path is None and (out / "tokenizer").is_dir():
        tokenizer_path = str(out / "tokenizer")
    configs = stage_configs(cfg, cfg.model_path, tokenizer_path)
    run = RunFolder(out, dataclasses.asdict(cfg), fingerprint=_fingerprint(cfg), resume=cfg.resume,
                    device=cfg.device)
    run.rewind(0)
    for s in cfg.stages:
        if s in done:
            run.log({"step": STAGES.index(s) + 1, **done[s]})
    if not todo:
        log(f"lions: all stages of {out} are finished ({', '.join(cfg.stages)}); nothing to do")
    else:
        est = estimate_seconds(cfg, configs, cfg.model_path if todo[0] == "sft" else configs[todo[0]].model_path,
                               tokenizer_path, todo)
        total = sum(est.values())
        skipped = f" ({', '.join(done)} finished, skipped)" if done else ""
        log(f"lions: estimate ~{format_duration(total)} for {', '.join(todo)}{skipped}: "
            + ", ".join(f"{s} ~{format_duration(v)}" if s != "odpo" else
                        f"odpo at most ~{format_duration(v)} (every sample to max_new_tokens)" for s, v in est.items())
            + " (from a probe of one SFT step and one sampler call on this machine)")
    t_all = time.perf_counter()
    for s in todo:
        c = configs[s]
        t0 = time.perf_counter()
        log(f"lions: [{time.perf_counter() - t_all:5.0f} s] stage {s} -> {c.out} (estimated ~"
            f"{format_duration(est[s])})")
        if s == "sft":
            res = train_sft(c)
            if not res["done"]:
                log(f"lions: stage sft stopped at step {res['step']} of {res['total_steps']}; run again to resume")
                return {"stages": done, "done": False, "ran": todo[: todo.index(s) + 1]}
            final, extra = res["final"], {"data": res["data"]}
        elif s == "dpo":
            tok = load_tokenizer(c.tokenizer_path)
            records = load_preferences(c.data)
            keep = dpo_subset(len(records), cfg.dpo_fraction, cfg.seed)
            pairs = tokenize_records([records[i] for i in keep], tok, max_prompt_length=c.max_prompt_length,
                                     max_completion_length=c.max_completion_length)
            res = train_dpo(c, pairs=pairs, tokenizer=tok)
            final, extra = res["final"], {"pairs": len(pairs), "pairs_available": len(records)}
        else:
            res = online_dpo(c, judge)
            final, extra = res["rounds"][-1], {"rounds": res["rounds"]}
        model = Path(c.out) / (f"round_{c.rounds}/model" if s == "odpo" else "model")
        row = {"stage": s, "seconds": time.perf_counter() - t0, "estimated_seconds": est[s], "model": str(model),
               "final": final, **extra}
        atomic_write_json(str(Path(c.out) / STAGE_DONE), row)
        done[s] = row
        run.log({"step": STAGES.index(s) + 1, **row})
        log(f"lions: [{time.perf_counter() - t_all:5.0f} s] stage {s} done in {format_duration(row['seconds'])}: "
            + _line(s, row))
    last = done[cfg.stages[-1]]["model"]
    summary = {"stages": done, "done": True, "model": last, "ran": todo}
    run.write_summary(summary)
    return summary


def _line(stage: str, row: dict[str, Any]) -> str:
    f = row["final"]
    if stage == "sft":
        return f"loss {f.get('sft/loss', float('nan')):.3f}, model {row['model']}"
    if stage == "dpo":
        return (f"{row['pairs']} pairs, loss {f.get('dpo/loss', float('nan')):.3f}, reward accuracy "
                f"{f.get('dpo/reward_accuracy', float('nan')):.2f}, model {row['model']}")
    return (f"{len(row['rounds'])} round(s), last: {f.get('odpo/pairs')} pairs, sampled mean score "
            f"{f.get('odpo/mean_score', float('nan')):.3f}, model {row['model']}")


# ----------------------------------------------------------------------------------------------- command
@dataclass
class LlmLions(LionsConfig):
    """The LIONs pipeline on a chat-data folder: SFT -> offline DPO (reference log-probs precomputed with the SFT
    model) -> online DPO rounds (``--judge module:function``), each stage in RUN_DIR/sft, dpo, odpo; re-running
    skips finished stages and resumes a stopped one."""

    data: tyro.conf.Positional[str] = ""
    """A `pbrl llm chat-data` folder: sft.jsonl, prefs.jsonl, prompts.jsonl."""
    overwrite: bool = False
    """Write the run into --out even when the folder holds other files or another command's run, and restart a run
    of this command there (resume off)."""

    def run(self) -> None:
        import json

        from pbrl.runs import command_config
        from pbrl.utils import choose_threads, threads_line

        # the shared tokenizer is written before the run's config.json
        cfg = command_config(self, LionsConfig, "llm lions", own=("tokenizer",))
        n, note = choose_threads(self.threads)
        print(f"pbrl llm lions on {self.data}: {threads_line(n, note)}", flush=True)
        summary = lions(dataclasses.replace(cfg, threads=n), log=lambda m: print(m, flush=True))
        if summary["done"]:
            print(json.dumps({s: round(r["seconds"], 1) for s, r in summary["stages"].items()}))
            print(f"wrote {self.out}/summary.json; final model {summary['model']}")


__all__ = ["LionsConfig", "LlmLions", "STAGES", "dpo_subset", "estimate_seconds", "final_model", "lions",
           "stage_configs"]
