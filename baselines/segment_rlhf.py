"""SegmentRM (Yin et al. 2025, arXiv 2501.02790) on the verifiable chat task at a CPU budget: bandit, token and
segment (entropy) reward models, then PPO against each.

    PYTHONPATH=. python baselines/segment_rlhf.py [--seeds 0] [--budget tiny] [--threads 1] [--fresh]

One data folder (`pbrl llm chat-data` through `pbrl_envs.commands.ChatData`, data seed 0) and one pre-trained
base + SFT model (model seed 0) are shared by all seeds. Preference pairs come from the task's scorer through a
B-Pref teacher (ChatData's default: the perfectly rational one). Per seed s (reward-model order and PPO seeds = s):

    reward models   `pbrl.rewards.lm` (registry `lm`) started from the SFT model, one member each:
                    bandit  (segmenter query: one segment ending at the stop token)
                    token   (segmenter step: every response token)
                    segment (segmenter entropy: a segment ends where the SFT model's next-token entropy exceeds
                             the entropy_quantile quantile of the training responses' entropies; reference = SFT)
    PPO             `pbrl.llm.ppo.train_ppo` from the SFT model with each reward model's dense rewards
                    (`ModelReward`: location-normalized segment rewards spread over their segments), and once
                    with the task's scorer itself at the last token (the oracle bandit reward, a reference)

Reward-model metrics on held-out pairs (the held-out prompts' responses at two corruption levels, labelled by the
same teacher; no held-out prompt is ever trained on):

    pair accuracy   share of pairs whose chosen response has the higher sequence score S(y) = (1/K) sum_k r(e_k)
    Spearman        the task exposes per-part credit with a position only for the positional families (sort,
                    transform: part i = word i of the response equals the reference's word i; the last part,
                    "exactly n items", has no position and is left out). Per word, the reward model's dense
                    rewards summed over the word's tokens against that word's credit (0 / 1), pooled over the
                    held-out responses of those families; other families' parts have no token position, so they
                    are not in this number
    boundary F1     segment ends found (response tokens before the stop token) against the true part
                    boundaries, the last token of each word, on the same positional-family responses (micro F1
                    pooled over responses: tp, fp, fn summed)

PPO metrics: each final policy's greedy responses to the first `eval_prompts` held-out prompts (stopped at the
end-of-turn token), `pbrl_envs.chat.score`; mean score and win rate vs the SFT policy (ties half), mean +- std
over seeds. Run folders under runs/segment_rlhf-<budget>/ (reused unless --fresh); per-seed rows under
results/records/segment_rlhf/<budget>/.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from baselines.lions_stages import ChatBudget, _ms, chat_args, greedy_eval, win_rate
from baselines.record import recorded
from pbrl.errors import PbrlError, run_script
from pbrl.llm.models import TinyLMConfig
from pbrl.llm.odpo import load_prompts
from pbrl.llm.ppo import PpoConfig, train_ppo
from pbrl.llm.pretrain import PretrainConfig, pretrain
from pbrl.llm.sft import SftConfig, train_sft
from pbrl.utils import atomic_write_text, dumps_json, use_threads
from pbrl_envs.chat import ChatTask, make_tasks, part_credits, write_pairs_jsonl
from pbrl_envs.commands import ChatData

POSITIONAL = ("sort", "transform")
"""Families whose parts are word positions (pbrl_envs.chat._positional): the only per-part credit with a place."""
KINDS = {"bandit": "query", "token": "step", "segment": "entropy"}
"""Reward model -> segmenter kind of `pbrl.rewards.lm`."""
ORACLE = "scorer (oracle)"
"""PPO against the task's scorer itself at the last token (`pbrl_envs.chat:judge`): what the budget's PPO reaches
with a perfect bandit reward, to tell a weak reward model from a PPO budget that does not help."""

# the paper's headline table (GPT-4o judge; AlpacaEval-2 LC / Arena-Hard / MT-Bench), per backbone: segment,
# token, bandit
PAPER = [
    ("Phi-3-mini", "31.05 / 34.0 / 7.65", "27.82 / 27.2 / 7.58", "27.05 / 31.3 / 7.46"),
    ("Llama-3.1-8B-Instruct", "40.97 / 49.7 / 8.03", "45.81 / 49.3 / 7.93", "40.77 / 36.6 / 7.76"),
    ("Llama-3-SFT-8B", "25.11 / 30.4 / 7.15", "23.84 / 26.0 / 7.13", "21.20 / 18.7 / 7.11"),
]


@dataclasses.dataclass(frozen=True)
class Budget(ChatBudget):
    """Sizes of one budget: the chat task's shared sizes plus the reward models' and PPO's (the header prints all)."""

    rm_epochs: int
    rm_batch: int
    rm_lr: float
    ppo_steps: int
    ppo_prompts_per_step: int
    ppo_n: int
    ppo_actor_lr: float
    ppo_critic_lr: float


BUDGETS = {
    "tiny": Budget(corpus_docs=3000, train_tasks=1200, heldout_tasks=300, eval_prompts=200,
                   model=TinyLMConfig(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                                      intermediate_size=128, max_position=256),
                   vocab_size=512, pretrain_steps=300, pretrain_batch=16, seq_length=128, sft_steps=150,
                   sft_batch=16, rm_epochs=2, rm_batch=32, rm_lr=3e-4, ppo_steps=6, ppo_prompts_per_step=8,
                   ppo_n=4, ppo_actor_lr=2e-5, ppo_critic_lr=1e-4, max_new_tokens=24),
    # the LIONs tiny model's shape with fewer pre-training steps, and longer PPO
    "small": Budget(corpus_docs=6000, train_tasks=2000, heldout_tasks=400, eval_prompts=300,
                    model=TinyLMConfig(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2,
                                       intermediate_size=256, max_position=256),
                    vocab_size=512, pretrain_steps=500, pretrain_batch=16, seq_length=128, sft_steps=300,
                    sft_batch=16, rm_epochs=3, rm_batch=32, rm_lr=3e-4, ppo_steps=24, ppo_prompts_per_step=8,
                    ppo_n=4, ppo_actor_lr=3e-5, ppo_critic_lr=1e-4, max_new_tokens=24),
}


# ----------------------------------------------------------------------------------------------- helpers
def token_words(decode, response: Sequence[int]) -> list[int]:
    """Per response token, the index of the whitespace-separated word it adds characters to (-1 for a token that
    adds none: whitespace or a special token). `decode(ids) -> text`; a token belongs to the word holding the
    last non-space character of the decoded prefix through it."""
    out, seen = [], 0
    for j in range(len(response)):
        words = decode(list(response[: j + 1])).split()
        chars = sum(len(w) for w in words)
        out.append(len(words) - 1 if chars > seen else -1)
        seen = chars
    return out


def word_ends(word_of: Sequence[int]) -> np.ndarray:
    """bool [R]: token j is the last token of its word (the true part boundaries of a positional response)."""
    w = np.asarray(word_of)
    last = {int(x): j for j, x in enumerate(w) if x >= 0}
    out = np.zeros(len(w), bool)
    out[list(last.values())] = True
    return out


def boundary_counts(pred: np.ndarray, true: np.ndarray) -> tuple[int, int, int]:
    """(tp, fp, fn) of predicted boundary positions against true ones (bool arrays of one length)."""
    pred, true = np.asarray(pred, bool), np.asarray(true, bool)
    return int((pred & true).sum()), int((pred & ~true).sum()), int((~pred & true).sum())


def f1(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall and F1 of summed counts (0 where a denominator is 0)."""
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def word_rewards(rewards: Sequence[float], word_of: Sequence[int]) -> dict[int, float]:
    """Dense token rewards summed per word index (tokens of no word are left out)."""
    out: dict[int, float] = {}
    for r, w in zip(rewards, word_of):
        if w >= 0:
            out[w] = out.get(w, 0.0) + float(r)
    return out


def positional_credits(task: ChatTask, response: str) -> list[float]:
    """The positional parts' credits of a sort / transform response: credit i for word i (the last part, the
    item count, has no position and is dropped)."""
    if task.family not in POSITIONAL:
        raise PbrlError(f"positional_credits: family {task.family!r} has no positional parts (only {POSITIONAL})")
    return part_credits(task, response)[:-1]


def spearman_pairs(per_response: Sequence[tuple[dict[int, float], list[float]]]) -> tuple[list[float], list[float]]:
    """(rewards, credits) pooled over responses: word i's summed reward beside credit i, for the words that the
    response has and the reference has a part for."""
    xs, ys = [], []
    for rw, credits in per_response:
        for i, c in enumerate(credits):
            if i in rw:
                xs.append(rw[i])
                ys.append(c)
    return xs, ys


# ----------------------------------------------------------------------------------------------- stages
def build_shared(work: Path, b: Budget, log) -> tuple[Path, Path, list[ChatTask]]:
    """Data folder, held-out pairs (with their tasks), pre-trained base and SFT model (seed 0, shared)."""
    data = work / "data"
    if not (data / "card.json").is_file():
        ChatData(out=str(data), corpus_docs=b.corpus_docs, train_tasks=b.train_tasks, heldout_tasks=b.heldout_tasks,
                 seed=0, overwrite=True).run()
    heldout = make_tasks(b.heldout_tasks, 1, "heldout")  # the tasks ChatData wrote to heldout.jsonl (seed + 1)
    if not (work / "heldout_prefs.jsonl").is_file():
        c = write_pairs_jsonl(work / "heldout_prefs.jsonl", heldout, seed=1, overwrite=True)
        log(f"held-out pairs: {c['pairs']} ({c['ties']} ties dropped)")
    if (work / "sft" / "summary.json").is_file():  # finished earlier: reused whole (a re-saved base would not
        log("pretrain and sft: reused from an earlier run")  # match the SFT run's fingerprint)
        return data, work / "sft" / "model", heldout
    t = time.perf_counter()
    pre = pretrain(PretrainConfig(corpus=str(data / "corpus.jsonl"), out=str(work / "pretrain"),
                                  vocab_size=b.vocab_size, model=b.model, seq_length=b.seq_length,
                                  batch_size=b.pretrain_batch, steps=b.pretrain_steps, seed=0, device="cpu",
                                  progress=False, resume=True))
    log(f"pretrain {pre['step']} steps, loss {pre['final'].get('pretrain/loss', float('nan')):.3f}, "
        f"{time.perf_counter() - t:.0f} s")
    t = time.perf_counter()
    shutil.rmtree(work / "sft", ignore_errors=True)  # an unfinished SFT run of another base
    sft = train_sft(SftConfig(data=str(data / "sft.jsonl"), out=str(work / "sft"),
                              model_path=str(work / "pretrain" / "model"), max_length=b.seq_length,
                              batch_size=b.sft_batch, steps=b.sft_steps, seed=0, device="cpu", progress=False))
    log(f"sft {b.sft_steps} steps, loss {sft['final'].get('sft/loss', float('nan')):.3f}, "
        f"{time.perf_counter() - t:.0f} s")
    return data, work / "sft" / "model", heldout


def train_rm(kind: str, data: Path, sft: Path, out: Path, b: Budget, seed: int):
    """One reward model of `kind` (bandit / token / segment) from the SFT model; reused when `out` holds one."""
    from pbrl.rewards.lm import LMRewardConfig, load_lm_reward
    from pbrl.rewards.segment import SegmenterConfig
    from pbrl.rewards.train import RewardConfig, train_reward

    if (out / "summary.json").is_file():
        return load_lm_reward(out)
    cfg = RewardConfig(model="lm", ensemble=1, lr=b.rm_lr, batch_size=b.rm_batch, epochs=b.rm_epochs,
                       val_fraction=0.0, early_stop=False, segmenter=SegmenterConfig(kind=KINDS[kind]),
                       lm=LMRewardConfig(model_path=str(sft)), seed=seed, device="cpu")
    return train_reward(str(data / "prefs.jsonl"), None, cfg, out, progress=False)  # type: ignore[arg-type]


def rm_metrics(model, pairs_path: Path, tasks: list[ChatTask]) -> dict[str, Any]:
    """Held-out pair accuracy, per-part Spearman and boundary F1 (module docstring)."""
    from pbrl.llm.prefs_data import load_preferences
    from pbrl.rewards.lm import dense_rewards, evaluate_lm_pairs, tokenize_lm_pairs
    from pbrl.rewards.report import spearman

    records = load_preferences(str(pairs_path))
    pairs = tokenize_lm_pairs(records, model.tokenizer, model.length, str(pairs_path))
    acc = evaluate_lm_pairs(model, pairs)["accuracy"]
    by_prompt = {t.prompt: t for t in tasks}
    dec = lambda ids: model.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    prompts, resps, texts, owners = [], [], [], []
    for rec, p, c, r in zip(records, pairs.prompt, pairs.chosen, pairs.rejected):
        task = by_prompt[rec.prompt[-1]["content"] if not isinstance(rec.prompt, str) else rec.prompt]
        if task.family in POSITIONAL:
            for text, ids in ((rec.chosen, c), (rec.rejected, r)):
                prompts.append(p)
                resps.append(ids)
                texts.append(text)
                owners.append(task)
    segs = model.segments(prompts, resps)
    per, counts, n_seg = [], np.zeros(3, np.int64), []
    for task, text, ids, s in zip(owners, texts, resps, segs):
        w = token_words(dec, ids)
        stop = int(s["eos"]) if int(s["eos"]) >= 0 else len(ids)
        counts += boundary_counts(s["ends"][:stop], word_ends(w)[:stop])
        per.append((word_rewards(dense_rewards(model, s).tolist(), w), positional_credits(task, text)))
        n_seg.append(len(s["lengths"]))
    xs, ys = spearman_pairs(per)
    return {"heldout_pairs": len(pairs), "accuracy": acc, "spearman": spearman(np.array(xs), np.array(ys)),
            "spearman_words": len(xs), "spearman_responses": len(per), "boundary": f1(*counts.tolist()),
            "mean_segments": float(np.mean(n_seg)), "threshold": model.threshold, "normalizer": model.norm}


def ppo_eval(data: Path, sft: Path, out: Path, b: Budget, seed: int, eval_rows: list[dict[str, Any]],
             sft_scores: list[float], **reward: Any) -> dict[str, Any]:
    """PPO from the SFT model with `reward` (reward=DIR or judge=module:function), then its greedy held-out eval."""
    s = train_ppo(PpoConfig(prompts=str(data / "prompts.jsonl"), model_path=str(sft), out=str(out),
                            steps=b.ppo_steps, prompts_per_step=b.ppo_prompts_per_step, n=b.ppo_n,
                            max_new_tokens=b.max_new_tokens, minibatch_size=b.ppo_n * 2, actor_lr=b.ppo_actor_lr,
                            critic_lr=b.ppo_critic_lr, seed=seed, device="cpu", progress=False, **reward))
    texts, scores = greedy_eval(Path(s["model"]), eval_rows, b.max_new_tokens)
    return {"mean_score": float(np.mean(scores)), "win_rate_vs_sft": win_rate(scores, sft_scores), "scores": scores,
            "responses": texts, "train_score_first_last": [s["history"][0]["ppo/score"], s["history"][-1]["ppo/score"]],
            "final": s["final"]}


def run_seed(seed: int, data: Path, sft: Path, heldout: list[ChatTask], work: Path, b: Budget,
             eval_rows: list[dict[str, Any]], sft_scores: list[float], log) -> dict[str, Any]:
    """The three reward models and PPO against each, and PPO against the scorer itself (the oracle bandit)."""
    root = work / f"seed_{seed}"
    row: dict[str, Any] = {"seed": seed, "reward_models": {}, "ppo": {}, "seconds": {}}
    for kind in KINDS:
        t = time.perf_counter()
        rm = train_rm(kind, data, sft, root / f"rm_{kind}", b, seed)
        t_rm = time.perf_counter() - t
        m = rm_metrics(rm, work / "heldout_prefs.jsonl", heldout)
        m["train_final"] = rm.info.get("final", {})
        row["reward_models"][kind] = m
        log(f"seed {seed}: rm {kind}: {t_rm:.0f} s, held-out accuracy {m['accuracy']:.3f}, Spearman "
            f"{m['spearman']:.3f}, boundary F1 {m['boundary']['f1']:.3f}, {m['mean_segments']:.1f} segments")
        t = time.perf_counter()
        row["ppo"][kind] = ppo_eval(data, sft, root / f"ppo_{kind}", b, seed, eval_rows, sft_scores,
                                    reward=str(root / f"rm_{kind}"))
        row["seconds"][kind] = {"reward_model": t_rm, "ppo_and_eval": time.perf_counter() - t}
        log(f"seed {seed}: ppo {kind}: {time.perf_counter() - t:.0f} s with eval, held-out mean score "
            f"{row['ppo'][kind]['mean_score']:.3f}, win rate vs SFT {row['ppo'][kind]['win_rate_vs_sft']:.3f}")
    t = time.perf_counter()
    row["ppo"][ORACLE] = ppo_eval(data, sft, root / "ppo_scorer", b, seed, eval_rows, sft_scores,
                                  judge="pbrl_envs.chat:judge")
    row["seconds"][ORACLE] = {"ppo_and_eval": time.perf_counter() - t}
    log(f"seed {seed}: ppo {ORACLE}: {time.perf_counter() - t:.0f} s with eval, held-out mean score "
        f"{row['ppo'][ORACLE]['mean_score']:.3f}, win rate vs SFT {row['ppo'][ORACLE]['win_rate_vs_sft']:.3f}")
    return row


# ----------------------------------------------------------------------------------------------- report
def report(rows: list[dict[str, Any]], sft_score: float, figure: str | None = None) -> None:
    if not rows:
        return
    n = len(rows)
    r0 = rows[0]["reward_models"]
    print(f"\n## Reward models ({n} seed{'s' * (n != 1)}; mean ± std over seeds where more than one)\n")
    print(f"Held-out pairs: {r0['bandit']['heldout_pairs']}; Spearman over {r0['bandit']['spearman_words']} words "
          f"of {r0['bandit']['spearman_responses']} positional-family responses (sort, transform).\n")
    print("| reward model | held-out pair accuracy | Spearman (word reward vs part credit) | boundary precision | "
          "boundary recall | boundary F1 | segments per response |")
    print("|---|---|---|---|---|---|---|")
    for k in KINDS:
        g = lambda f, k=k: [f(r["reward_models"][k]) for r in rows]  # noqa: E731
        print(f"| {k} | {_ms(g(lambda m: m['accuracy']))} | {_ms(g(lambda m: m['spearman']))} | "
              f"{_ms(g(lambda m: m['boundary']['precision']))} | {_ms(g(lambda m: m['boundary']['recall']))} | "
              f"{_ms(g(lambda m: m['boundary']['f1']))} | {_ms(g(lambda m: m['mean_segments']))} |")
    thr = [r["reward_models"]["segment"]["threshold"] for r in rows]
    print("\nBoundaries are counted on the response tokens before the stop token; the bandit model's one segment "
          "ends at the stop token, so it finds no part boundary by construction (F1 0), and the token model ends "
          "a segment at every token (recall 1).")
    print(f"\nEntropy threshold c of the segment model (0.8 quantile of the training responses' entropies under "
          f"the SFT model): {', '.join(f'{x:.3f}' for x in thr)}.")
    print(f"\n## PPO against each reward model (SFT policy: held-out mean score {sft_score:.3f})\n")
    print("| reward model | held-out mean graded score | win rate vs SFT (ties half) | PPO train score first -> last "
          "step (summed reward in the reward's own units, seed-mean) |")
    print("|---|---|---|---|")
    for k in [*KINDS, *([ORACLE] if all(ORACLE in r["ppo"] for r in rows) else [])]:
        ms = [r["ppo"][k]["mean_score"] for r in rows]
        ws = [r["ppo"][k]["win_rate_vs_sft"] for r in rows]
        fl = np.mean([r["ppo"][k]["train_score_first_last"] for r in rows], 0)
        print(f"| {k} | {_ms(ms)} | {_ms(ws)} | {fl[0]:.3f} -> {fl[1]:.3f} |")
    print("\nPer seed (mean score bandit / token / segment):\n")
    for r in rows:
        print(f"- seed {r['seed']}: " + " / ".join(f"{r['ppo'][k]['mean_score']:.3f}" for k in KINDS))
    print("\nThe paper's headline table (GPT-4o judge, AlpacaEval-2 LC / Arena-Hard / MT-Bench; 3.8B-8B policies on "
          "GPUs, a different scale and different benchmarks, so only the ordering is comparable):\n")
    print("| backbone | segment | token | bandit |")
    print("|---|---|---|---|")
    for row in PAPER:
        print("| " + " | ".join(row) + " |")
    mean = {k: statistics.mean(r["ppo"][k]["mean_score"] for r in rows) for k in KINDS}
    acc = {k: statistics.mean(r["reward_models"][k]["accuracy"] for r in rows) for k in KINDS}
    holds = mean["segment"] >= mean["bandit"] and mean["segment"] >= mean["token"]
    spread = max((statistics.stdev([r["ppo"][k]["mean_score"] for r in rows]) for k in KINDS), default=0.0) \
        if n > 1 else float("nan")
    print(f"\n**segment >= bandit and token after PPO: {'holds' if holds else 'does not hold'} here** (mean score "
          + " / ".join(f"{k} {mean[k]:.3f}" for k in KINDS)
          + (f"; largest seed std {spread:.3f}" if n > 1 else "; one seed, so no spread")
          + "). Held-out pair accuracy: " + " / ".join(f"{k} {acc[k]:.3f}" for k in KINDS) + ". "
          + (f"Above the SFT policy ({sft_score:.3f}): {', '.join(k for k in KINDS if mean[k] > sft_score)}."
             if any(mean[k] > sft_score for k in KINDS) else
             f"None of the three PPO policies is above the SFT policy ({sft_score:.3f}): at this budget PPO "
             "against a learned reward lowers the graded score (a negative result)."))
    if all(ORACLE in r["ppo"] for r in rows):
        o = statistics.mean(r["ppo"][ORACLE]["mean_score"] for r in rows)
        print(f"\nPPO against the scorer itself reaches {o:.3f} (SFT {sft_score:.3f}): "
              + ("even a perfect reward does not lift the policy at this PPO budget, so the reward models' PPO rows "
                 "measure mostly how much each one perturbs the SFT policy." if o <= sft_score else
                 "the budget's PPO can improve the policy with a perfect reward; the reward models' rows are "
                 "measured against that."))
    r0 = rows[0]
    norms = {k: r0["reward_models"][k].get("normalizer") for k in KINDS}
    if figure and all(norms.values()):
        from pbrl.plot import plot_location_normalizers

        plot_location_normalizers(norms, figure)  # type: ignore[arg-type]
        print(f"\n## The fitted location-aware normalizers (seed {r0['seed']})\n")
        print(f"![normalizer curves]({os.path.basename(figure)})\n")
        print("Fitted on the training pairs' chosen and rejected responses, one point per 3-decimal key p = k/K "
              "with at least two segments (SegmentRM's keys), Huber lines in ln p; the bandit model has one "
              "segment per response (p = 1, ln p = 0), so its normalizer is the scalar one (slopes 0).\n")
        print("| reward model | mu(p) = a ln p + b | sigma(p) = a ln p + b | sigma floor | segments fitted | keys |")
        print("|---|---|---|---|---|---|")
        for k, n in norms.items():
            print(f"| {k} | {n['a_mu']:+.3f} ln p {n['b_mu']:+.3f} | {n['a_sigma']:+.3f} ln p {n['b_sigma']:+.3f} | "
                  f"{n['sigma_floor']:.4f} | {n['segments']} | {len(n.get('points', {}).get('ln_p', []))} |")


def main(argv: list[str] | None = None) -> None:
    args = chat_args(argv, __doc__, "segment_rlhf", BUDGETS, [0], "delete the run folders first")
    b = BUDGETS[args.budget]
    work = Path(args.work or f"runs/segment_rlhf-{args.budget}")
    threads, note = use_threads(args.threads)
    out = None if args.out in ("", "none") else args.out
    records = Path(args.records) / args.budget
    with recorded(out, f"SegmentRM reward models and PPO on the chat task ({args.budget} budget)", threads=threads):
        t_all = time.perf_counter()
        if args.fresh:
            shutil.rmtree(work, ignore_errors=True)
        print(f"\nBudget `{args.budget}` (device cpu, {threads} torch threads{f', {note}' if note else ''}): "
              f"{dataclasses.asdict(b)}. Seeds {args.seeds}; data, base and SFT model shared (seed 0). Reward "
              f"models: 1 member each, from the SFT model, {b.rm_epochs} epochs, no validation split. PPO: "
              f"{b.ppo_steps} steps x {b.ppo_prompts_per_step} prompts x n = {b.ppo_n}, T = 1, KL beta 0.01, "
              f"actor lr {b.ppo_actor_lr}, critic lr {b.ppo_critic_lr}. Eval: greedy on the first "
              f"{b.eval_prompts} held-out prompts, at most {b.max_new_tokens} new tokens.\n")
        print("This runs for minutes (pre-training and SFT first, then per seed three reward models and three "
              "PPO runs); an estimate follows the first seed.\n", flush=True)

        def log(msg: str) -> None:
            print(f"[{time.perf_counter() - t_all:6.0f} s] {msg}", flush=True)

        data, sft, heldout = build_shared(work, b, log)
        eval_rows = load_prompts(data / "heldout.jsonl")[: b.eval_prompts]
        _, sft_scores = greedy_eval(sft, eval_rows, b.max_new_tokens)
        sft_score = float(np.mean(sft_scores))
        log(f"SFT held-out mean score {sft_score:.3f}")
        rows: list[dict[str, Any]] = []
        try:
            for i, seed in enumerate(args.seeds):
                t = time.perf_counter()
                row = run_seed(seed, data, sft, heldout, work, b, eval_rows, sft_scores, log)
                row["budget"] = {"name": args.budget, **dataclasses.asdict(b), "threads": threads, "device": "cpu"}
                row["sft_mean_score"] = sft_score
                rows.append(row)
                atomic_write_text(str(records / f"seed_{seed}.json"), dumps_json(row, indent=1) + "\n")
                left = len(args.seeds) - i - 1
                if left:
                    log(f"seed {seed} took {time.perf_counter() - t:.0f} s; remaining {left}: "
                        f"~{(time.perf_counter() - t) * left / 60:.1f} min")
        except KeyboardInterrupt:
            print("\ninterrupted: reporting the finished seeds", flush=True)
        print(f"\nRaw per-seed rows: {records}/seed_<s>.json. Wall time {time.perf_counter() - t_all:.0f} s.")
        figure = os.path.splitext(out)[0] + "_normalizer.png" if out else None
        report(rows, sft_score, figure)


if __name__ == "__main__":
    run_script(main)
