"""Online (iterative) DPO: sample from the current policy, judge, pair best against worst, one DPO round; repeat.

One round k = 1..R (the LIONs recipe, Yu et al. 2024, section on online preference learning, with n = 5 samples at
temperature 0.8):

    sample   y_{p,1..n} ~ pi_{k-1}( . | x_p)   for every prompt x_p   (``HFSampler``; a turn ends at the chat
             template's end-of-turn token, ``pbrl.llm.tokenizer.end_of_turn_id``)
    judge    s_{p,i} = J(row_p, text(y_{p,i}))                    (J: any callable, see ``Judge``)
    pair     chosen = argmax_i s_{p,i} over the samples that ended at the end-of-turn token (a response cut at
             max_new_tokens as chosen would teach the model not to stop; TRL's missing_eos_penalty serves the
             same end), rejected = argmin_i s_{p,i} over all samples (the first index on ties); a prompt whose
             samples are all identical, all scored alike (max = min), or none finished gives no pair and is
             counted as dropped
    DPO      pi_k = DPO(pi_{k-1}; pairs, reference = pi_{k-1})      (``pbrl.llm.dpo.train_dpo``, Rafailov et al.
             2023, eq. 7, on the sampled token ids themselves, so the pairs are exactly on-policy)

Layout of ``out``::

    config.json, metrics.jsonl   the run's RunFolder: one row per round (step = round)
    round_k/                     round k's DPO RunFolder (config.json, metrics.jsonl, ref_logps.pt, checkpoint/,
                                 model/ with the tokenizer), plus samples.jsonl (every sample, its text and
                                 score), pairs.jsonl (the chosen/rejected records with scores) and round.json
                                 (written last: the round is complete)
    summary.json                 per-round rows and, with ``final_eval``, the mean score of the final model

Resume: completed rounds (round.json present) are skipped; an interrupted round reuses its samples.jsonl and its
DPO run resumes from its own checkpoint.

The judge of the command is a ``module:function`` string resolved with importlib when the run starts (the library
never names a task package); the verifiable chat task provides ``pbrl_envs.chat:judge`` (a row of its held-out
prompts file and a response text -> the task's graded score in [0, 1]). In the library, pass any callable.
A pbrl reward model becomes a judge by wrapping its sequence score in such a function.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import tyro

from pbrl.errors import PbrlError
from pbrl.llm.dpo import DpoConfig
from pbrl.runs import RunFolder, fingerprint_file
from pbrl.utils import (
    atomic_write_json,
    atomic_write_text,
    dumps_json,
    read_json_lines,
    resolve_device,
    set_seed,
)

Judge = Callable[[Any, str], float]
"""``judge(row, response) -> score``: ``row`` is the prompt's JSONL row (a dict, e.g. {"messages": [...], ...}) or
whatever ``make_pairs`` was given as prompt; ``response`` the decoded completion. Higher is better."""

# DpoConfig fields the online loop sets itself for each round
_DPO_SET_BY_ROUND = ("data", "out", "model_path", "tokenizer_path", "ref_logps", "resume", "seed", "threads")


# ----------------------------------------------------------------------------------------------- config
@dataclass
class OdpoConfig:
    """Online DPO run: ``rounds`` x (sample n per prompt, judge, best-vs-worst pairs, DPO)."""

    prompts: str = ""
    """Prompts JSONL: one object per line with ``messages`` (a list of {role, content}) or ``prompt`` (a string,
    sent as one user turn when the tokenizer has a chat template); other fields are passed to the judge."""
    model_path: str = ""
    """The local HF model folder to start from (e.g. an SFT model)."""
    tokenizer_path: str | None = None
    """A local tokenizer folder (default: the model folder)."""
    out: str = "runs/odpo"
    """Output folder (see the module docstring)."""
    judge: str | None = None
    """The judge as ``module:function`` (imported when the run starts); the library call may pass a callable."""
    n: int = 5
    """Samples per prompt (LIONs: 5)."""
    temperature: float = 0.8
    """Sampling temperature (LIONs: 0.8)."""
    top_p: float = 1.0
    """Nucleus mass of the sampler."""
    max_new_tokens: int = 64
    """Longest sampled response; a turn ends earlier at the end-of-turn token."""
    rounds: int = 1
    """Sample -> judge -> DPO rounds; round k starts from round k-1's model."""
    prompts_per_round: int | None = None
    """Prompts used per round: None = all every round, else round k takes the k-th block of this many (wrapping)."""
    sample_batch: int = 16
    """Prompts per sampler call (their n samples decode together)."""
    chosen_must_finish: bool = True
    """Only a sample that ended at the end-of-turn token can be chosen (rejected ones may be cut at
    max_new_tokens); False picks among all samples."""
    final_eval: bool = True
    """After the last round, sample round 1's prompts once more from the final model and report its mean score."""
    dpo: DpoConfig = field(default_factory=DpoConfig)
    """DPO settings of every round (data, out, model_path, tokenizer_path, ref_logps, resume, seed and threads are
    set by the online loop)."""
    seed: int = 0
    """Seed of sampling and of each round's DPO."""
    resume: bool = True
    """Skip completed rounds and resume an interrupted one; False recomputes every round."""

    def check(self) -> None:
        """One PbrlError naming the field for a setting out of range."""
        if not self.prompts:
            raise PbrlError("prompts: expected a JSONL file of prompts (rows with messages or prompt)")
        if not self.model_path:
            raise PbrlError("model_path: expected a local HF model folder to start from")
        for name, lo in (("max_new_tokens", 1), ("rounds", 1), ("sample_batch", 1)):
            if getattr(self, name) < lo:
                raise PbrlError(f"{name}: expected >= {lo}, got {getattr(self, name)}")
        if self.n < 2:
            raise PbrlError(f"n: expected >= 2 samples per prompt to form a pair, got {self.n}")
        if not self.temperature > 0:
            raise PbrlError(f"temperature: expected > 0 (greedy samples of a prompt are all identical), "
                            f"got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise PbrlError(f"top_p: expected in (0, 1], got {self.top_p}")
        if self.prompts_per_round is not None and self.prompts_per_round < 1:
            raise PbrlError(f"prompts_per_round: expected >= 1 or None, got {self.prompts_per_round}")


# ----------------------------------------------------------------------------------------------- pairing (pure)
@dataclass(frozen=True)
class JudgedPair:
    """One online preference: the best (``chosen``) and worst (``rejected``) of a prompt's samples. The
    ``prompt``/``chosen``/``rejected`` fields read like a ``pbrl.llm.prefs_data.PreferenceRecord``."""

    prompt: Any
    chosen: Any
    rejected: Any
    prompt_index: int
    chosen_index: int
    rejected_index: int
    chosen_score: float
    rejected_score: float


def judge_all(prompts: Sequence[Any], generations: Sequence[Sequence[Any]], judge: Judge) -> list[list[float]]:
    """``scores[p][i] = judge(prompts[p], generations[p][i])``; a score that is not a finite number is refused."""
    if len(prompts) != len(generations):
        raise PbrlError(f"generations: expected one group per prompt ({len(prompts)}), got {len(generations)}")
    out = []
    for p, (prompt, group) in enumerate(zip(prompts, generations)):
        row = []
        for i, g in enumerate(group):
            s = judge(prompt, g)
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
                raise PbrlError(f"judge: prompt {p} sample {i}: expected a finite number, got {s!r:.60}")
            row.append(float(s))
        out.append(row)
    return out


def make_pairs(
    prompts: Sequence[Any],
    generations: Sequence[Sequence[Hashable]],
    judge: Judge,
    *,
    scores: Sequence[Sequence[float]] | None = None,
    finished: Sequence[Sequence[bool]] | None = None,
) -> tuple[list[JudgedPair], dict[str, int]]:
    """Best-vs-worst pairs of each prompt's samples and the counts
    ``{prompts, pairs, dropped_identical, dropped_tied, dropped_unfinished}``.

    chosen = the first sample with the highest score, rejected = the first with the lowest. A group whose samples
    are all equal is dropped as identical (checked first: it is tied too); a group whose scores are all equal is
    dropped as tied. ``scores`` (as from ``judge_all``) skips calling the judge again. ``finished[p][i]``
    (the sample ended at the end-of-turn token): only finished samples can be chosen; a group with none, or whose
    best finished sample scores no higher than its worst sample, is dropped as unfinished.
    """
    if scores is None:
        scores = judge_all(prompts, generations, judge)
    if len(scores) != len(prompts) or len(generations) != len(prompts):
        raise PbrlError(f"generations/scores: expected one group per prompt ({len(prompts)})")
    pairs: list[JudgedPair] = []
    counts = {"prompts": len(prompts), "pairs": 0, "dropped_identical": 0, "dropped_tied": 0,
              "dropped_unfinished": 0}
    if finished is not None and len(finished) != len(prompts):
        raise PbrlError(f"finished: expected one group per prompt ({len(prompts)}), got {len(finished)}")
    for p, (group, s) in enumerate(zip(generations, scores)):
        if len(group) != len(s) or not group:
            raise PbrlError(f"generations[{p}]: expected one score per sample and at least one sample")
        if all(g == group[0] for g in group):
            counts["dropped_identical"] += 1
            continue
        worst = min(range(len(s)), key=lambda i: (s[i], i))
        if s[max(range(len(s)), key=lambda i: s[i])] == s[worst]:
            counts["dropped_tied"] += 1
            continue
        can_choose = [i for i in range(len(s)) if finished is None or finished[p][i]]
        best = max(can_choose, key=lambda i: (s[i], -i), default=None)
        if best is None or s[best] <= s[worst]:
            counts["dropped_unfinished"] += 1
            continue
        pairs.append(JudgedPair(prompts[p], group[best], group[worst], p, best, worst, float(s[best]),
                                float(s[worst])))
    counts["pairs"] = len(pairs)
    return pairs, counts


# ----------------------------------------------------------------------------------------------- IO helpers
def resolve_judge(spec: str | None) -> Judge:
    """The function named by ``module:function`` (imported now); one PbrlError line when it cannot be."""
    if not spec or ":" not in spec:
        raise PbrlError(f"judge: expected module:function (a callable (row, response) -> score), got {spec!r}")
    module, _, name = spec.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise PbrlError(f"judge: cannot import {module!r} ({type(e).__name__}: {e})") from None
    fn = mod
    for part in name.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise PbrlError(f"judge: {module!r} has no attribute {name!r}")
    if not callable(fn):
        raise PbrlError(f"judge: {spec} is not callable")
    return fn  # type: ignore[return-value]


def load_prompts(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a prompts JSONL file; each must hold ``messages`` (list of {role, content}) or ``prompt``."""
    path = Path(path)
    if not path.is_file():
        raise PbrlError(f"{path}: no such prompts file (expected JSONL rows with messages or prompt)")
    rows = []
    for line, obj in read_json_lines(path):
        if not isinstance(obj, dict):
            raise PbrlError(f"{path}:{line}: expected an object with messages or prompt")
        msgs = obj.get("messages")
        if msgs is not None:
            if not (isinstance(msgs, list) and msgs and all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in msgs)):
                raise PbrlError(f"{path}:{line}: field 'messages': expected a non-empty list of {{role, content}}")
        elif not isinstance(obj.get("prompt"), str):
            raise PbrlError(f"{path}:{line}: expected a field 'messages' (list) or 'prompt' (string)")
        rows.append(obj)
    if not rows:
        raise PbrlError(f"{path}: no prompts")
    return rows


def prompt_ids(tokenizer, row: dict[str, Any]) -> list[int]:
    """Token ids of a prompt row: the chat template's rendering with the generation prompt (a ``prompt`` string
    as one user turn) when the tokenizer has one, else the plain prompt text; with the tokenizer's <bos>."""
    from pbrl.llm.tokenizer import render_chat

    if getattr(tokenizer, "chat_template", None):
        msgs = row.get("messages") or [{"role": "user", "content": row["prompt"]}]
        text = render_chat(tokenizer, msgs, add_generation_prompt=True)
    elif "prompt" in row:
        text = row["prompt"]
    else:
        raise PbrlError("prompts: rows with messages need a tokenizer with a chat template")
    return tokenizer(text, add_special_tokens=True)["input_ids"]


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    atomic_write_text(str(path), "".join(dumps_json(r) + "\n" for r in rows))


# ----------------------------------------------------------------------------------------------- the loop
def _sample(model, tokenizer, rows: list[dict[str, Any]], cfg: OdpoConfig, seed: int) -> dict[str, Any]:
    """n samples of every row: token ids, decoded texts, prompt ids, and sampled tokens per second."""
    from pbrl.llm.sampler import HFSampler, SamplingConfig
    from pbrl.llm.tokenizer import end_of_turn_id

    eot = end_of_turn_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eot
    sampler = HFSampler(model)
    model.eval()
    prompts = [prompt_ids(tokenizer, r) for r in rows]
    tokens: list[list[list[int]]] = []
    reasons: list[list[str]] = []
    t0, count = time.perf_counter(), 0
    for b in range(0, len(prompts), cfg.sample_batch):
        sc = SamplingConfig(n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p,
                            max_new_tokens=cfg.max_new_tokens, eos_token_id=eot, pad_token_id=pad,
                            seed=seed + b)  # each batch its own stream: a batch's draws do not depend on another's
        gen = sampler.generate(prompts[b : b + cfg.sample_batch], sc)
        tokens += gen.tokens
        reasons += gen.finish_reasons
        count += gen.num_tokens
    dt = time.perf_counter() - t0
    texts = [[tokenizer.decode(s, skip_special_tokens=True) for s in group] for group in tokens]
    return {"prompt_ids": prompts, "tokens": tokens, "texts": texts, "reasons": reasons,
            "tokens_per_s": count / dt if dt > 0 else float("nan")}


def _round_rows(rows: list[dict[str, Any]], cfg: OdpoConfig, k: int) -> list[int]:
    """Indices of the prompts of round k (1-based)."""
    m = cfg.prompts_per_round
    if m is None or m >= len(rows):
        return list(range(len(rows)))
    start = (k - 1) * m
    return [(start + i) % len(rows) for i in range(m)]


def _device(cfg: OdpoConfig) -> torch.device:
    if cfg.dpo.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return resolve_device(cfg.dpo.device, "dpo.device")


def _load_policy(path: str | Path, cfg: OdpoConfig, device: torch.device):
    from pbrl.llm.models import load_model

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}[cfg.dpo.dtype]
    return load_model(path, dtype=dtype).to(device)


def online_dpo(cfg: OdpoConfig, judge: Judge | None = None) -> dict[str, Any]:
    """Run ``cfg.rounds`` rounds of online DPO (module docstring); ``judge`` defaults to ``cfg.judge`` resolved.
    Returns the summary written to ``out/summary.json``."""
    from pbrl.llm.prefix_sharing import TokenizedPair
    from pbrl.llm.tokenizer import load_tokenizer

    cfg.check()
    judge_name = cfg.judge
    if judge is None:
        judge = resolve_judge(cfg.judge)
    elif judge_name is None:
        judge_name = f"{getattr(judge, '__module__', '?')}:{getattr(judge, '__qualname__', type(judge).__name__)}"
    if cfg.dpo.threads is not None:  # once, before any tensor work
        from pbrl.utils import use_threads

        use_threads(cfg.dpo.threads)
    rows = load_prompts(cfg.prompts)
    tokenizer = load_tokenizer(cfg.tokenizer_path or cfg.model_path)
    out = Path(cfg.out)
    config = dataclasses.asdict(cfg) | {"judge": judge_name}
    # what a resume must match: everything but where it writes, how long it runs and how it reports
    fp = {k: v for k, v in config.items() if k not in ("out", "resume", "rounds", "final_eval")}
    fp["dpo"] = {k: v for k, v in config["dpo"].items() if k not in (*_DPO_SET_BY_ROUND, "progress", "device",
                                                                     "checkpoint_every")}
    fp["prompts_sha256"] = fingerprint_file(cfg.prompts)
    device = _device(cfg)
    run = RunFolder(out, config, fingerprint=fp, resume=cfg.resume, device=str(device))

    from pbrl.llm.dpo import train_dpo

    run.rewind(0)  # metrics.jsonl holds exactly the rounds, in order (skipped completed rounds are logged again)
    history: list[dict[str, Any]] = []
    model_path: str | Path = cfg.model_path
    for k in range(1, cfg.rounds + 1):
        rdir = out / f"round_{k}"
        done = rdir / "round.json"
        if cfg.resume and done.is_file():
            history.append(dict(next(read_json_lines(done, whole=True))[1]))
            run.log(history[-1])
            model_path = rdir / "model"
            continue
        idx = _round_rows(rows, cfg, k)
        round_rows = [rows[i] for i in idx]
        samples_path = rdir / "samples.jsonl"
        if cfg.resume and samples_path.is_file():  # an interrupted round: its DPO run resumes on the same pairs
            saved = [obj for _, obj in read_json_lines(samples_path)]
            if [s.get("row") for s in saved] != idx:
                raise PbrlError(f"{samples_path}: does not hold round {k}'s prompts; use a new --out")
            prompts = [s["prompt_ids"] for s in saved]
            tokens = [s["tokens"] for s in saved]
            texts = [s["texts"] for s in saved]
            scores = [s["scores"] for s in saved]
            reasons = [s["finish_reasons"] for s in saved]
            tok_s = float("nan")
        else:
            set_seed(cfg.seed + k)
            model = _load_policy(model_path, cfg, device)
            smp = _sample(model, tokenizer, round_rows, cfg, seed=cfg.seed * 1_000_003 + 7919 * k)
            del model
            prompts, tokens, texts, tok_s = smp["prompt_ids"], smp["tokens"], smp["texts"], smp["tokens_per_s"]
            reasons = smp["reasons"]
            scores = judge_all(round_rows, texts, judge)
            rdir.mkdir(parents=True, exist_ok=True)
            _write_jsonl(samples_path, [
                {"row": i, "prompt_ids": p, "tokens": t, "texts": x, "scores": s, "finish_reasons": r}
                for i, p, t, x, s, r in zip(idx, prompts, tokens, texts, scores, reasons)])
        # identity on the sampled token ids (what DPO trains on), so two spellings of one text stay two samples
        finished = [[r == "eos" for r in g] for g in reasons] if cfg.chosen_must_finish else None
        pairs, counts = make_pairs(round_rows, [[tuple(t) for t in g] for g in tokens], judge, scores=scores,
                                   finished=finished)
        _write_jsonl(rdir / "pairs.jsonl", [
            {"prompt": round_rows[q.prompt_index].get("messages") or round_rows[q.prompt_index]["prompt"],
             "chosen": texts[q.prompt_index][q.chosen_index], "rejected": texts[q.prompt_index][q.rejected_index],
             "chosen_score": q.chosen_score, "rejected_score": q.rejected_score, "row": idx[q.prompt_index]}
            for q in pairs])
        if not pairs:
            raise PbrlError(f"round {k}: all {counts['prompts']} prompts' samples were identical, tied or "
                            f"unfinished ({counts['dropped_identical']} identical, {counts['dropped_tied']} tied, "
                            f"{counts['dropped_unfinished']} with no finished sample better than the worst); no "
                            "pairs to train on (raise n, temperature or max_new_tokens)")
        tpairs = [TokenizedPair(prompts[q.prompt_index], list(q.chosen), list(q.rejected)) for q in pairs]
        dcfg = dataclasses.replace(cfg.dpo, data="", out=str(rdir), model_path=str(model_path), tokenizer_path=None,
                                   ref_logps=None, resume=cfg.resume, seed=cfg.seed + k, threads=None)
        result = train_dpo(dcfg, pairs=tpairs, tokenizer=tokenizer)
        steps = result["history"]
        flat = [s for g in scores for s in g]
        row = {
            "step": k,
            "odpo/mean_score": sum(flat) / len(flat),
            "odpo/best_score": sum(max(g) for g in scores) / len(scores),
            "odpo/chosen_score": sum(q.chosen_score for q in pairs) / len(pairs),
            "odpo/rejected_score": sum(q.rejected_score for q in pairs) / len(pairs),
            "odpo/prompts": counts["prompts"],
            "odpo/pairs": counts["pairs"],
            "odpo/dropped_identical": counts["dropped_identical"],
            "odpo/dropped_tied": counts["dropped_tied"],
            "odpo/dropped_unfinished": counts["dropped_unfinished"],
            "odpo/unfinished_samples": sum(r != "eos" for g in reasons for r in g),
            "odpo/mean_response_tokens": sum(len(t) for g in tokens for t in g) / len(flat),
            "dpo/steps": len(steps),
            "dpo/final_loss": steps[-1]["dpo/loss"] if steps else None,
            "dpo/mean_reward_accuracy": sum(s["dpo/reward_accuracy"] for s in steps) / len(steps) if steps else None,
            "dpo/final_reward_accuracy": steps[-1]["dpo/reward_accuracy"] if steps else None,
            "perf/sample_tokens_per_s": tok_s,
        }
        atomic_write_json(str(done), row)
        history.append(row)
        run.log(row)
        model_path = rdir / "model"
    summary: dict[str, Any] = {"rounds": history, "model": str(model_path), "judge": judge_name}
    if cfg.final_eval:
        first = [rows[i] for i in _round_rows(rows, cfg, 1)]
        model = _load_policy(model_path, cfg, device)
        smp = _sample(model, tokenizer, first, cfg, seed=cfg.seed * 1_000_003 + 7919 * (cfg.rounds + 1))
        flat = [s for g in judge_all(first, smp["texts"], judge) for s in g]
        summary["final_mean_score"] = sum(flat) / len(flat)
    run.write_summary(summary)
    return summary


# ----------------------------------------------------------------------------------------------- command
@dataclass
class LlmOdpo(OdpoConfig):
    """Online DPO: n samples per prompt from the current model, scored by a judge (``--judge module:function``,
    e.g. ``pbrl_envs.chat:judge`` for the verifiable chat task's held-out prompts), best vs worst, a DPO round;
    several rounds, each starting from the last one's model."""

    prompts: tyro.conf.Positional[str] = ""
    """Prompts JSONL: one object per line with ``messages`` or ``prompt``; other fields are passed to the judge."""
    overwrite: bool = False
    """Write the run into --out even when the folder holds other files or another command's run, and restart a run
    of this command there (resume off)."""

    def run(self) -> None:
        import json

        from pbrl.runs import command_config
        from pbrl.utils import choose_threads, threads_line

        cfg = command_config(self, OdpoConfig, "llm odpo")
        n, note = choose_threads(self.dpo.threads)  # the free cores by default
        print(f"pbrl llm odpo on {self.prompts}: {threads_line(n, note)}", flush=True)
        cfg = dataclasses.replace(cfg, dpo=dataclasses.replace(cfg.dpo, threads=n))
        summary = online_dpo(cfg)
        keys = ("step", "odpo/mean_score", "odpo/pairs", "odpo/dropped_identical", "odpo/dropped_tied",
                "odpo/dropped_unfinished",
                "dpo/final_reward_accuracy")
        for row in summary["rounds"]:
            print(json.dumps({k: row.get(k) for k in keys}))
        if "final_mean_score" in summary:
            print(json.dumps({"final_mean_score": summary["final_mean_score"]}))
        print(f"wrote {self.out}/summary.json; final model {summary['model']}")


__all__ = ["JudgedPair", "LlmOdpo", "OdpoConfig", "judge_all", "load_prompts", "make_pairs", "online_dpo",
           "prompt_ids", "resolve_judge"]
