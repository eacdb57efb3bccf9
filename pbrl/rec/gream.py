"""GREAM end to end on a recommendation log: semantic IDs -> alignment data -> alignment SFT -> SRPO and/or binary
GRPO -> constrained-beam evaluation. `pbrl rec gream`.

    pbrl rec gream --out runs/gream-ml100k                        # MovieLens-100k from the recbole wheel
    pbrl rec gream --out runs/gream-ml100k --rl srpo grpo --seed 1

GREAM (Hong et al. 2025, arXiv 2510.20815; official code GRRM) in one resumable run folder, each stage the
project's own piece:

    ids/       ``pbrl.rec.semantic_ids``: item text -> sentence embedding -> residual balanced k-means (L x K codes)
               plus a dedup token for colliding items
    align/     ``pbrl.rec.align_data``: seqrec (history -> next ID, sliding over the leave-one-out training part),
               item2index, index2item, preference records; valid.jsonl (history -> the validation target); the
               BPE chat tokenizer with every ID token as one token
    sft/       ``pbrl.llm.sft.train_sft`` on align/sft.jsonl from a randomly initialised tiny Llama, with
               ``max_masked_fraction = 1.0`` (a seqrec answer is 3-4 tokens after ~100 masked ones: the default
               0.9 filter would drop every seqrec record)
    srpo/      ``pbrl.rec.srpo.train_srpo``: RSVR graded reward + BGAE (pass@k bonus, k = 4), dynamic sampling,
               dual-clip loss, KL loss; on valid.jsonl's prompts (each user's history before the validation
               target, so the test target is never trained on)
    grpo/      the same trainer with the binary exact-match reward and the GRPO z-score (the comparison)
    eval/      for every trained model (sft, srpo, grpo) and decoding (trie, levels): beam search
               (``pbrl.rec.decoding.constrained_beam_search``, 10 beams) on the test users' prompts (the <= 20
               items before each user's last item, validation item included), Recall@1/5/10 and NDCG@5/10 over
               the beams (a target outside the beams is a miss at every cut-off; beams that name no item are
               dropped from the ranking, the official ``--filter_items``), and each decoding's invalid-ID rate
    summary.json  every stage's settings, timings and metrics

Resume: a stage whose output exists is skipped (and its settings must match the ones asked for now, else one
line says which stage differs); the SFT and RL trainers also resume from their own checkpoints mid-stage. Each
stage prints one line with its rate, and the long stages (SFT, RL, evaluation) an estimate of their wall time
from their first measured steps.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pbrl.errors import PbrlError
from pbrl.rec.semantic_ids import DEFAULT_MODEL

RlName = Literal["srpo", "grpo"]
Decoding = Literal["trie", "levels"]
Task = Literal["seqrec", "item2index", "index2item", "preference"]
METRICS = ("rec/recall@1", "rec/recall@5", "rec/recall@10", "rec/ndcg@5", "rec/ndcg@10")
EVAL_PROMPT = 0  # the seqrec template of valid.jsonl (align_data.PROMPTS["seqrec"][0]) for the test prompts too


@dataclass
class GreamConfig:
    """One GREAM run on a log (module docstring). Defaults: the CPU budget of results/gream_llm.md."""

    out: str = "runs/gream"
    """Run folder: ids/, align/, sft/, srpo/, grpo/, eval/, summary.json."""
    log: str = "ml-100k"
    """`ml-100k` (from the recbole wheel) or a RecBole atomic dataset folder (.inter + .item)."""
    users: int | None = None
    """Use only the log's first this many users (None: all)."""
    # ---- semantic IDs
    levels: int = 3
    """Code levels L."""
    k: int = 16
    """Codes per level K."""
    max_dedup: int | None = None
    """Most items one L-level code may hold (default K)."""
    embed_model: str = DEFAULT_MODEL
    """Sentence embedding model (the offline MiniLM wheel, or a local sentence-transformers folder)."""
    ids_seed: int = 0
    """Seed of the k-means (kept apart from `seed`, so runs of several seeds can share one set of IDs)."""
    cache_dir: str | None = None
    """Keep the item embeddings here and reuse them (keyed by the model and the texts)."""
    # ---- alignment data
    tasks: tuple[Task, ...] = ("seqrec", "item2index", "index2item", "preference")
    """Alignment tasks in the SFT data."""
    max_history: int = 20
    """Items of history before each target (the protocol's 20)."""
    max_per_task: int | None = 12000
    """A seeded subset of at most this many records per task (ML-100k has ~97k seqrec windows; None: all)."""
    vocab_size: int = 2000
    """BPE vocabulary of the tokenizer before the ID tokens."""
    # ---- SFT model and run
    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    sft_epochs: int = 1
    sft_lr: float = 1e-3
    sft_batch_size: int = 32
    sft_warmup_steps: int = 20
    max_length: int = 256
    """Longest SFT conversation in tokens (longer ones are truncated)."""
    # ---- RL
    rl: tuple[RlName, ...] = ("srpo", "grpo")
    """RL stages, each from the SFT model: srpo (RSVR + BGAE) and/or grpo (binary reward + GRPO); none: ()."""
    rl_steps: int = 40
    prompts_per_step: int = 16
    rollouts: int = 10
    """Rollouts per prompt n."""
    rl_lr: float = 1e-4
    rl_decoding: Literal["trie", "levels", "none"] = "trie"
    """Rollout constraint."""
    # ---- evaluation
    eval_users: int | None = 300
    """Test users evaluated: a sample drawn with seed 0 (the same users for every run seed; None: all)."""
    num_beams: int = 10
    decodings: tuple[Decoding, ...] = ("trie", "levels")
    """Beam-search constraints evaluated: the catalog trie and the official per-level token sets."""
    eval_batch_size: int = 16
    """Prompts per beam-search batch."""
    # ---- run
    seed: int = 0
    """Seed of the SFT (initialisation, data order) and RL stages."""
    threads: int | None = None
    """Torch CPU threads (default: the free cores)."""
    device: str = "cpu"
    progress: bool = True

    def check(self) -> None:
        for name, lo in (("levels", 1), ("k", 2), ("max_history", 1), ("vocab_size", 260), ("hidden_size", 8),
                         ("num_layers", 1), ("num_heads", 1), ("num_kv_heads", 1), ("intermediate_size", 1),
                         ("sft_epochs", 1), ("sft_batch_size", 1), ("sft_warmup_steps", 0), ("max_length", 16),
                         ("rl_steps", 1), ("prompts_per_step", 1), ("rollouts", 2), ("num_beams", 1),
                         ("eval_batch_size", 1)):
            if getattr(self, name) < lo:
                raise PbrlError(f"{name}: expected >= {lo}, got {getattr(self, name)}")
        for name in ("users", "eval_users", "max_per_task", "max_dedup"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise PbrlError(f"{name}: expected >= 1 or None, got {v}")
        for name in ("sft_lr", "rl_lr"):
            if not getattr(self, name) > 0:
                raise PbrlError(f"{name}: expected > 0, got {getattr(self, name)}")
        if not self.tasks or "seqrec" not in self.tasks:
            raise PbrlError(f"tasks: seqrec is needed (it is what the recommender learns); got {list(self.tasks)}")
        if len(set(self.rl)) != len(self.rl) or any(r not in ("srpo", "grpo") for r in self.rl):
            raise PbrlError(f"rl: expected distinct names among srpo, grpo; got {list(self.rl)}")
        if not self.decodings or any(d not in ("trie", "levels") for d in self.decodings):
            raise PbrlError(f"decodings: expected some of trie, levels; got {list(self.decodings)}")


# ----------------------------------------------------------------------------------------------- stage helpers
def _stage_settings(cfg: GreamConfig, stage: str) -> dict[str, Any]:
    """The settings a stage's output depends on (what a resumed stage must match)."""
    c = dataclasses.asdict(cfg)
    ids = ["log", "users", "levels", "k", "max_dedup", "embed_model", "ids_seed"]
    align = ids + ["tasks", "max_history", "max_per_task", "vocab_size"]
    sft = align + ["hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size", "sft_epochs",
                   "sft_lr", "sft_batch_size", "sft_warmup_steps", "max_length", "seed"]
    rl = sft + ["rl_steps", "prompts_per_step", "rollouts", "rl_lr", "rl_decoding"]
    keys = {"ids": ids, "align": align, "sft": sft, "srpo": rl, "grpo": rl}[stage.split("/")[0]]
    out = {k: c[k] for k in keys}
    if stage.startswith("eval/"):
        out.update(eval_users=cfg.eval_users, num_beams=cfg.num_beams)
    return json.loads(json.dumps(out))


def _done(folder: Path, marker: str, settings: dict[str, Any], stage: str) -> bool:
    """True when the stage's marker file exists with these settings; a marker with other settings is refused."""
    path = folder / marker
    if not path.is_file():
        return False
    try:
        saved = json.loads(path.read_text(encoding="utf-8")).get("gream_settings")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        raise PbrlError(f"{path}: unreadable; remove the {stage} stage folder to redo it") from None
    if saved != settings:
        diff = sorted(k for k in set(saved or {}) | set(settings) if (saved or {}).get(k) != settings.get(k))
        raise PbrlError(f"{folder}: the {stage} stage was run with other settings ({', '.join(diff)}); use a new "
                        "--out or the same settings")
    return True


def _say(msg: str) -> None:
    print(msg, flush=True)


def _load(cfg: GreamConfig):
    from pbrl.rec.movielens import RecLog, leave_one_out, load_log

    log = load_log(cfg.log)
    if cfg.users is not None:
        log = RecLog(name=log.name, user_sequences=log.user_sequences[: cfg.users], item_texts=log.item_texts,
                     item_raw_ids=log.item_raw_ids, user_raw_ids=log.user_raw_ids[: cfg.users])
    split = leave_one_out(log.user_sequences, max_history=cfg.max_history)
    return log, split


def eval_sample(num_users: int, eval_users: int | None) -> np.ndarray:
    """Indices (sorted) of the evaluated test users: all, or `eval_users` drawn without replacement with seed 0."""
    if eval_users is None or eval_users >= num_users:
        return np.arange(num_users)
    return np.sort(np.random.default_rng(0).choice(num_users, size=eval_users, replace=False))


# ----------------------------------------------------------------------------------------------- stages
def _stage_ids(cfg: GreamConfig, out: Path, log) -> dict[str, Any]:
    from pbrl.rec.semantic_ids import embed_texts, embedding_cache_path, semantic_ids_from_embeddings
    from pbrl.utils import atomic_write_json

    folder, settings = out / "ids", _stage_settings(cfg, "ids")
    if _done(folder, "stage.json", settings, "ids"):
        info = json.loads((folder / "stage.json").read_text())
        _say(f"[ids] done already: {info['stats_line']}")
        return info
    cached = cfg.cache_dir is not None and embedding_cache_path(log.item_texts, cfg.embed_model,
                                                                cfg.cache_dir).is_file()
    t0 = time.perf_counter()
    emb = embed_texts(log.item_texts, model=cfg.embed_model, threads=None, progress=cfg.progress,
                      cache_dir=cfg.cache_dir)
    t1 = time.perf_counter()
    ids = semantic_ids_from_embeddings(emb, levels=cfg.levels, k=cfg.k, seed=cfg.ids_seed, max_dedup=cfg.max_dedup,
                                       model=cfg.embed_model, progress=cfg.progress)
    t2 = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    ids.save(folder / "semantic_ids.json")
    info = {"gream_settings": settings, "stats": ids.stats(), "stats_line": ids.stats_line(),
            "embeddings_cached": cached, "embed_s": t1 - t0, "cluster_s": t2 - t1}
    atomic_write_json(str(folder / "stage.json"), info)
    how = "read from the cache" if cached else f"embedded at {log.num_items / max(t1 - t0, 1e-9):.0f} items/s"
    _say(f"[ids] {ids.stats_line()}; {log.num_items} texts {how}, clustered in {t2 - t1:.1f} s")
    return info


def _stage_align(cfg: GreamConfig, out: Path, log, split, ids) -> dict[str, Any]:
    from pbrl.rec.align_data import alignment_tokenizer, write_alignment_data
    from pbrl.utils import atomic_write_json, read_json_lines

    folder, settings = out / "align", _stage_settings(cfg, "align")
    if _done(folder, "stage.json", settings, "align"):
        info = json.loads((folder / "stage.json").read_text())
        _say(f"[align] done already: {sum(info['counts']['sft'].values())} SFT records")
        return info
    t0 = time.perf_counter()
    counts = write_alignment_data(log, split, ids, folder, tasks=cfg.tasks, seed=cfg.ids_seed,
                                  max_history=cfg.max_history, max_per_task=cfg.max_per_task)
    records = [r for _, r in read_json_lines(folder / "sft.jsonl")]
    alignment_tokenizer(records, ids, vocab_size=cfg.vocab_size).save_pretrained(str(folder / "tokenizer"))
    dt = time.perf_counter() - t0
    info = {"gream_settings": settings, "counts": counts, "seconds": dt}
    atomic_write_json(str(folder / "stage.json"), info)
    total = sum(counts["sft"].values())
    _say(f"[align] {total} SFT records (" + ", ".join(f"{t} {c}" for t, c in counts["sft"].items()) +
         f"), {counts['valid']['seqrec']} valid prompts, tokenizer; {dt:.1f} s ({total / max(dt, 1e-9):.0f} "
         "records/s)")
    return info


def _sft_config(cfg: GreamConfig, out: Path, **over: Any):
    from pbrl.llm.models import TinyLMConfig
    from pbrl.llm.sft import SftConfig

    return SftConfig(
        data=str(out / "align" / "sft.jsonl"), out=str(out / "sft"), tokenizer_path=str(out / "align" / "tokenizer"),
        model=TinyLMConfig(hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
                           num_kv_heads=cfg.num_kv_heads, intermediate_size=cfg.intermediate_size,
                           max_position=max(cfg.max_length + 16, 512)),
        max_length=cfg.max_length, max_masked_fraction=1.0, batch_size=cfg.sft_batch_size, lr=cfg.sft_lr,
        warmup_steps=cfg.sft_warmup_steps, epochs=cfg.sft_epochs, seed=cfg.seed, device=cfg.device,
        progress=cfg.progress, checkpoint_every=50, **over)


def _stage_sft(cfg: GreamConfig, out: Path) -> dict[str, Any]:
    from pbrl.llm.sft import train_sft
    from pbrl.utils import atomic_write_json, estimate_line

    folder, settings = out / "sft", _stage_settings(cfg, "sft")
    if _done(folder, "stage.json", settings, "sft"):
        info = json.loads((folder / "stage.json").read_text())
        _say(f"[sft] done already: {info['steps']} steps, final loss {info['final_loss']:.4f}")
        return info
    t0 = time.perf_counter()
    # a few steps first (the trainer checkpoints and resumes on the same trajectory) to time the rest
    probe = train_sft(_sft_config(cfg, out, stop_after=5))
    if not probe["done"]:
        rows = probe["history"][-5:]
        rate = 1.0 / float(np.mean([1.0 / r["perf/steps_per_s"] for r in rows]))
        left = probe["total_steps"] - probe["step"]
        _say("[sft] " + estimate_line(left / rate, f"{left} more steps", f"{rate:.2f} steps/s",
                                      f" ({probe['num_parameters']:,} parameters, {cfg.sft_epochs} epochs of "
                                      f"{probe['data']['kept']} conversations)", "lower max_per_task or sft_epochs"))
        summary = train_sft(_sft_config(cfg, out))
    else:
        summary = probe
    dt = time.perf_counter() - t0
    hist = summary["history"]
    info = {"gream_settings": settings, "steps": summary["step"], "num_parameters": summary["num_parameters"],
            "data": summary["data"], "final_loss": float(hist[-1]["sft/loss"]), "seconds": dt,
            "first_loss": float(hist[0]["sft/loss"])}
    atomic_write_json(str(folder / "stage.json"), info)
    _say(f"[sft] {summary['step']} steps in {dt / 60:.1f} min ({summary['step'] / dt:.2f} steps/s), loss "
         f"{info['first_loss']:.3f} -> {info['final_loss']:.3f}, {summary['num_parameters']:,} parameters")
    return info


def _rl_config(cfg: GreamConfig, out: Path, name: str, steps: int):
    from pbrl.rec.srpo import SrpoConfig

    srpo = name == "srpo"
    return SrpoConfig(out=str(out / name), steps=steps, prompts_per_step=cfg.prompts_per_step, n=cfg.rollouts,
                      decoding=cfg.rl_decoding, advantage="bgae" if srpo else "grpo",
                      reward="rsvr" if srpo else "binary", lr=cfg.rl_lr, seed=cfg.seed, device=cfg.device,
                      progress=cfg.progress, checkpoint_every=10)


def _stage_rl(cfg: GreamConfig, out: Path, name: str, ids, tokenizer) -> dict[str, Any]:
    from pbrl.rec.srpo import read_targets, train_srpo
    from pbrl.utils import atomic_write_json, estimate_line

    folder, settings = out / name, _stage_settings(cfg, name)
    if _done(folder, "stage.json", settings, name):
        info = json.loads((folder / "stage.json").read_text())
        _say(f"[{name}] done already: {info['steps']} steps")
        return info
    model_dir = out / "sft" / "model"
    prompts, targets = read_targets(out / "align" / "valid.jsonl", ids, tokenizer)
    t0 = time.perf_counter()
    # the step count is not part of the trainer's fingerprint: 2 steps, timed, then the run resumes to the end
    probe_steps = min(2, cfg.rl_steps)
    summary = train_srpo(_rl_config(cfg, out, name, probe_steps), model_dir, prompts, targets, ids, tokenizer)
    if cfg.rl_steps > probe_steps:
        per = (time.perf_counter() - t0) / probe_steps
        left = cfg.rl_steps - probe_steps
        _say(f"[{name}] " + estimate_line(left * per, f"{left} more steps", f"{per:.1f} s/step",
                                          f" ({cfg.prompts_per_step} prompts x {cfg.rollouts} rollouts)",
                                          "lower rl_steps"))
        summary = train_srpo(_rl_config(cfg, out, name, cfg.rl_steps), model_dir, prompts, targets, ids, tokenizer)
    dt = time.perf_counter() - t0
    hist = summary["history"]
    keys = ("srpo/reward", "srpo/rsvr", "srpo/exact", "srpo/kept_groups")
    first = {k: float(np.mean([r[k] for r in hist[:5]])) for k in keys}
    last = {k: float(np.mean([r[k] for r in hist[-5:]])) for k in keys}
    tokens = int(sum(r["perf/generated_tokens"] for r in hist))
    info = {"gream_settings": settings, "steps": len(hist), "prompts": len(prompts), "seconds": dt,
            "first5": first, "last5": last, "generated_tokens": tokens}
    atomic_write_json(str(folder / "stage.json"), info)
    _say(f"[{name}] {len(hist)} steps in {dt / 60:.1f} min ({dt / len(hist):.1f} s/step, {tokens / dt:.0f} "
         f"generated tokens/s); rsvr {first['srpo/rsvr']:.3f} -> {last['srpo/rsvr']:.3f}, exact "
         f"{first['srpo/exact']:.3f} -> {last['srpo/exact']:.3f} (mean of the first / last 5 steps)")
    return info


def eval_prompts(split, ids, tokenizer, max_history: int, users: np.ndarray) -> tuple[list[list[int]], list[int]]:
    """Token ids of the seqrec prompt (valid.jsonl's template) over each chosen user's test history, and the
    test targets."""
    from pbrl.llm.odpo import prompt_ids
    from pbrl.rec.align_data import HISTORY_SEP, PROMPTS

    prompts, targets = [], []
    for u in users.tolist():
        hist = split.test_histories[u][-max_history:]
        text = PROMPTS["seqrec"][EVAL_PROMPT].format(inters=HISTORY_SEP.join(ids.item_text(int(i)) for i in hist))
        prompts.append(prompt_ids(tokenizer, {"messages": [{"role": "user", "content": text}]}))
        targets.append(int(split.test_targets[u]))
    return prompts, targets


def evaluate_model(model, prompts: Sequence[Sequence[int]], targets: Sequence[int], ids, tokenizer,
                   decoding: str, num_beams: int = 10, batch_size: int = 16, progress: bool = True,
                   label: str = "eval") -> dict[str, Any]:
    """Beam-search the prompts under `decoding` (trie or levels) and score the ranked beams against the targets
    (``beam_metrics``: Recall/NDCG, invalid-ID rates), with the users/s rate; a wall-time estimate from the first
    batch is printed when the whole would take over a minute."""
    from tqdm.auto import tqdm

    from pbrl.llm.sampler import TokenTrie
    from pbrl.llm.tokenizer import end_of_turn_id
    from pbrl.rec.decoding import IdVocab, beam_metrics, constrained_beam_search, level_sets_allowed
    from pbrl.utils import estimate_line

    vocab = IdVocab(ids, tokenizer)
    eos = end_of_turn_id(tokenizer)
    pad = tokenizer.pad_token_id
    if decoding == "trie":
        allowed: Any = TokenTrie(vocab.items)
    elif decoding == "levels":
        allowed = level_sets_allowed(ids, tokenizer, eos)
    else:
        raise PbrlError(f"decoding: expected trie or levels, got {decoding!r}")
    beams: list = []
    t0 = time.perf_counter()
    bar = tqdm(total=len(prompts), desc=label, unit="user", disable=not progress, leave=False)
    for b in range(0, len(prompts), batch_size):
        beams += constrained_beam_search(model, prompts[b: b + batch_size], allowed, vocab=vocab, eos_token_id=eos,
                                         num_beams=num_beams, pad_token_id=pad, batch_size=batch_size)
        bar.update(min(batch_size, len(prompts) - b))
        if b == 0 and len(prompts) > batch_size:
            per = (time.perf_counter() - t0) / len(beams)
            if per * len(prompts) > 60:
                _say(f"[{label}] " + estimate_line(per * len(prompts), f"{len(prompts)} users",
                                                   f"{1 / per:.1f} users/s", f" ({num_beams} beams)"))
    bar.close()
    dt = time.perf_counter() - t0
    metrics = beam_metrics(beams, targets)
    return {**metrics, "users": len(prompts), "seconds": dt, "users_per_s": len(prompts) / max(dt, 1e-9),
            "top1_items": [per[0].item if per else None for per in beams]}


def _stage_eval(cfg: GreamConfig, out: Path, model_name: str, decoding: str, split, ids) -> dict[str, Any]:
    from pbrl.llm.models import load_model
    from pbrl.llm.tokenizer import load_tokenizer
    from pbrl.utils import atomic_write_json

    stage = f"eval/{model_name}-{decoding}"
    folder = out / "eval"
    settings = {**_stage_settings(cfg, "sft" if model_name == "sft" else model_name), "decoding": decoding,
                "eval_users": cfg.eval_users, "num_beams": cfg.num_beams}
    marker = f"{model_name}-{decoding}.json"
    if _done(folder, marker, settings, stage):
        info = json.loads((folder / marker).read_text())
        _say(f"[{stage}] done already: NDCG@10 {info['metrics']['rec/ndcg@10']:.4f}")
        return info
    model_dir = out / model_name / "model"
    model = load_model(model_dir).to(cfg.device).eval()
    tokenizer = load_tokenizer(model_dir)
    users = eval_sample(len(split.test_targets), cfg.eval_users)
    prompts, targets = eval_prompts(split, ids, tokenizer, cfg.max_history, users)
    res = evaluate_model(model, prompts, targets, ids, tokenizer, decoding, cfg.num_beams, cfg.eval_batch_size,
                         cfg.progress, stage)
    top1 = res.pop("top1_items")
    metrics = {k: float(v) for k, v in res.items()}
    info = {"gream_settings": settings, "metrics": metrics, "users": users.tolist(),
            "distinct_top1": len({i for i in top1 if i is not None})}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(str(folder / marker), info)
    _say(f"[{stage}] " + ", ".join(f"{k.removeprefix('rec/')} {metrics[k]:.4f}" for k in METRICS) +
         f", invalid {metrics['rec/invalid_rate']:.3f} (top-1 {metrics['rec/invalid_top1']:.3f}); "
         f"{len(users)} users at {metrics['users_per_s']:.1f} users/s")
    return info


# ----------------------------------------------------------------------------------------------- the pipeline
def run_gream(cfg: GreamConfig) -> dict[str, Any]:
    """Run (or resume) every stage of `cfg` in `cfg.out`; returns the summary also written to out/summary.json:
    {"stages": per-stage info, "eval": {"<model>-<decoding>": metrics}, "config": cfg}."""
    from pbrl.llm.tokenizer import load_tokenizer
    from pbrl.rec.semantic_ids import SemanticIds
    from pbrl.utils import atomic_write_json, git_revision, load_note, threads_line, use_threads

    cfg.check()
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise PbrlError(f"{cfg.out}: exists and is not a folder")
    n, note = use_threads(cfg.threads)
    log, split = _load(cfg)
    _say(f"pbrl rec gream on {log.name}: {log.num_items} items, {log.num_users} users "
         f"({len(split.test_targets)} with a test target, {len(eval_sample(len(split.test_targets), cfg.eval_users))} "
         f"evaluated); {threads_line(n, note)}; stages ids, align, sft" + "".join(f", {r}" for r in cfg.rl) +
         f", eval ({'/'.join(cfg.decodings)})")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    stages: dict[str, Any] = {"ids": _stage_ids(cfg, out, log)}
    ids = SemanticIds.load(out / "ids" / "semantic_ids.json")
    if ids.num_items != log.num_items:
        raise PbrlError(f"{out / 'ids'}: IDs for {ids.num_items} items, but {cfg.log} has {log.num_items}")
    stages["align"] = _stage_align(cfg, out, log, split, ids)
    stages["sft"] = _stage_sft(cfg, out)
    tokenizer = load_tokenizer(out / "sft" / "model")
    for name in cfg.rl:
        stages[name] = _stage_rl(cfg, out, name, ids, tokenizer)
    evals: dict[str, Any] = {}
    for model_name in ("sft", *cfg.rl):
        for decoding in cfg.decodings:
            info = _stage_eval(cfg, out, model_name, decoding, split, ids)
            evals[f"{model_name}-{decoding}"] = {**info["metrics"], "distinct_top1": info["distinct_top1"]}
    summary = {"config": dataclasses.asdict(cfg), "stages": {k: {kk: vv for kk, vv in v.items()
                                                                 if kk != "gream_settings"}
                                                             for k, v in stages.items()},
               "eval": evals, "threads": n, "load_note": load_note(), "cores": os.cpu_count(),
               "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
               "seconds_this_call": time.perf_counter() - t0, "git_revision": git_revision()}
    atomic_write_json(str(out / "summary.json"), summary)
    _say(f"wrote {out / 'summary.json'} ({(time.perf_counter() - t0) / 60:.1f} min this call)")
    return summary


@dataclass
class RecGream(GreamConfig):
    """GREAM end to end in one resumable run folder: semantic IDs, alignment data, alignment SFT, SRPO and binary
    GRPO, and trie / per-level beam-search evaluation (Recall@1/5/10, NDCG@5/10, invalid-ID rates)."""

    def run(self) -> dict[str, Any]:
        cfg = GreamConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(GreamConfig)})
        return run_gream(cfg)


__all__ = ["GreamConfig", "RecGream", "eval_sample", "evaluate_model", "run_gream", "eval_prompts"]
