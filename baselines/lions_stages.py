"""The LIONs stages (Yu et al. 2024, arXiv 2407.06542) end to end on the verifiable chat task, and its ablations,
at a CPU budget.

    PYTHONPATH=. python baselines/lions_stages.py [--seeds 0 1 2] [--budget tiny|small] [--threads 1] [--fresh]

One data folder (`pbrl llm chat-data`, data seed 0) is shared by all seeds. Per seed s (model init, data order and
sampling seeds = s) one base model is pre-trained (corpus.jsonl) and every run below starts from it. The chain is
one call of `pbrl.llm.lions.lions` (the function behind `pbrl llm lions`):

    SFT (sft.jsonl; packed, assistant-only loss) -> +DPO (prefs.jsonl, reference log-probs of the SFT model)
        -> +ODPO (one online round on prompts.jsonl: n samples at T = 0.8 judged by pbrl_envs.chat:judge, best
           finished sample vs worst, DPO with reference = the +DPO model)

and the ablations are more calls of the same function on the same base (or on the chain's SFT / +DPO model):

    packing      SFT with padded rows instead of packed ones (same conversations, steps and batch: equal tokens);
                 quality and the SFT stage's wall-time ratio padded / packed
    masking      SFT with the loss on every token (loss_on = all) instead of the assistant turns only
    DPO data     +DPO on a seeded 25 % and 50 % of prefs.jsonl (100 % is the chain's +DPO), from the chain's SFT
    ODPO lr      the online round at the offline stage's lr (what the first recorded table used) instead of the
                 lower online lr of the budget

Every model is evaluated on the first `eval_prompts` rows of heldout.jsonl with greedy decoding (`HFSampler`,
T = 0) stopped at the chat end-of-turn token:

    mean score   = (1 / N) sum_i score(task_i, y_i)                          (pbrl_envs.chat.score, in [0, 1])
    win rate     = (1 / N) sum_i ([s_i > s_i^SFT] + 0.5 [s_i = s_i^SFT])     (ties count half; SFT vs itself = 0.5)

reported as mean +- std (sample std, ddof = 1) over seeds beside the paper's stage table; ablation differences are
paired per seed. Run folders go under runs/lions_stages-<budget>/ and are reused by a later invocation (finished
stages are skipped; --fresh starts over); the raw per-seed rows under results/records/lions_stages/<budget>/.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from baselines.record import recorded
from pbrl.errors import PbrlError, run_script
from pbrl.llm.dpo import DpoConfig
from pbrl.llm.lions import LionsConfig, lions
from pbrl.llm.models import TinyLMConfig, load_model
from pbrl.llm.odpo import OdpoConfig, load_prompts, prompt_ids
from pbrl.llm.pretrain import PretrainConfig, pretrain
from pbrl.llm.sampler import HFSampler, SamplingConfig
from pbrl.llm.sft import SftConfig
from pbrl.llm.tokenizer import end_of_turn_id, load_tokenizer
from pbrl.runs import read_rows
from pbrl.utils import atomic_write_text, dumps_json, use_threads
from pbrl_envs.chat import make_task, score
from pbrl_envs.commands import ChatData


@dataclasses.dataclass(frozen=True)
class ChatBudget:
    """The sizes every chat-task experiment shares: data, base-model pre-training, SFT, evaluation."""

    corpus_docs: int
    train_tasks: int
    heldout_tasks: int
    eval_prompts: int
    model: TinyLMConfig
    vocab_size: int
    pretrain_steps: int
    pretrain_batch: int
    seq_length: int
    sft_steps: int
    sft_batch: int
    max_new_tokens: int


@dataclasses.dataclass(frozen=True)
class Budget(ChatBudget):
    """Sizes of one budget (every stage's settings; the file header prints them all)."""

    dpo_epochs: int
    dpo_batch: int
    dpo_lr: float
    dpo_beta: float
    odpo_prompts: int
    odpo_n: int
    odpo_epochs: int
    odpo_lr: float


BUDGETS = {
    # odpo_lr: the online round's DPO lr, 5x below the offline stage's; at the offline lr (1e-4) one round lowered
    # the held-out score (the first recorded table; the "ODPO lr" ablation keeps measuring it)
    "tiny": Budget(corpus_docs=6000, train_tasks=3000, heldout_tasks=500, eval_prompts=500,
                   model=TinyLMConfig(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2,
                                      intermediate_size=256, max_position=512),
                   vocab_size=512, pretrain_steps=800, pretrain_batch=16, seq_length=128, sft_steps=300,
                   sft_batch=16, dpo_epochs=1, dpo_batch=16, dpo_lr=1e-4, dpo_beta=0.1, odpo_prompts=400, odpo_n=5,
                   odpo_epochs=1, odpo_lr=2e-5, max_new_tokens=32),
    "small": Budget(corpus_docs=20000, train_tasks=4000, heldout_tasks=500, eval_prompts=500,
                    model=TinyLMConfig(hidden_size=256, num_layers=6, num_heads=8, num_kv_heads=4,
                                       intermediate_size=640, max_position=512),
                    vocab_size=1024, pretrain_steps=2000, pretrain_batch=32, seq_length=128, sft_steps=600,
                    sft_batch=32, dpo_epochs=1, dpo_batch=32, dpo_lr=1e-4, dpo_beta=0.1, odpo_prompts=400, odpo_n=5,
                    odpo_epochs=1, odpo_lr=2e-5, max_new_tokens=48),
}

# the paper's stage table (../papers facts: LIONs Table, Arena-Hard / AlpacaEval-2 / MT-Bench)
PAPER = [
    ("LION-Gemma-2b", (2.4, 4.6, 5.0), (7.79, 8.75, 9.57), (6.37, 6.58, 6.75)),
    ("LION-Llama-3-8b", (11.3, 19.1, 22.0), (17.9, 21.8, 26.8), (7.58, 8.12, 8.19)),
]
STAGES = ("SFT", "+DPO", "+ODPO")
# ablation name -> (what it changes, the chain's model it is compared with)
ABLATIONS = {
    "SFT padded": ("SFT with padded rows (packing off)", "SFT"),
    "SFT loss on all": ("SFT with the loss on every token (masking off)", "SFT"),
    "+DPO 25%": ("offline DPO on 25 % of the pairs", "+DPO"),
    "+DPO 50%": ("offline DPO on 50 % of the pairs", "+DPO"),
    "+ODPO at the offline lr": ("the online round at the offline stage's lr", "+ODPO"),
}


def greedy_eval(model_dir: Path, rows: list[dict[str, Any]], max_new_tokens: int, batch: int = 32
                ) -> tuple[list[str], list[float]]:
    """Greedy responses of the model in `model_dir` to `rows` (stopped at the end-of-turn token) and their scores."""
    tok = load_tokenizer(model_dir)
    model = load_model(model_dir).eval()
    eot = end_of_turn_id(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else eot
    sampler = HFSampler(model)
    prompts = [prompt_ids(tok, r) for r in rows]
    texts: list[str] = []
    for b in range(0, len(prompts), batch):
        sc = SamplingConfig(n=1, temperature=0.0, max_new_tokens=max_new_tokens, eos_token_id=eot, pad_token_id=pad)
        gen = sampler.generate(prompts[b : b + batch], sc)
        texts += [tok.decode(g[0], skip_special_tokens=True) for g in gen.tokens]
    scores = [score(make_task(int(r["seed"]), str(r["family"])), t) for r, t in zip(rows, texts)]
    return texts, scores


def win_rate(scores: list[float], base: list[float]) -> float:
    """Share of prompts where `scores` beats `base`, ties counting half."""
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores, base)) / len(scores)


def lions_config(b: Budget, data: Path, out: Path, base: Path, seed: int, **kw: Any) -> LionsConfig:
    """The budget's pipeline settings for one seed (``kw`` overrides fields of LionsConfig)."""
    dpo = dict(beta=b.dpo_beta, batch_size=b.dpo_batch)
    cfg = LionsConfig(
        data=str(data), out=str(out), model_path=str(base), judge="pbrl_envs.chat:judge", seed=seed, device="cpu",
        progress=False,
        sft=SftConfig(max_length=b.seq_length, batch_size=b.sft_batch, steps=b.sft_steps),
        dpo=DpoConfig(epochs=b.dpo_epochs, lr=b.dpo_lr, **dpo),
        odpo=OdpoConfig(n=b.odpo_n, temperature=0.8, max_new_tokens=b.max_new_tokens, rounds=1,
                        prompts_per_round=b.odpo_prompts, final_eval=False,
                        dpo=DpoConfig(epochs=b.odpo_epochs, lr=b.odpo_lr, **dpo)))
    return dataclasses.replace(cfg, **kw)


def run_seed(seed: int, data: Path, work: Path, b: Budget, eval_rows: list[dict[str, Any]], log) -> dict[str, Any]:
    """Pre-training, the chain and the ablations of one seed; returns its row (per model: mean score, win rate vs
    SFT, scores and responses; per stage: seconds, and whether it ran now or was reused from an earlier run)."""
    root = work / f"seed_{seed}"
    t = time.perf_counter()
    pre = pretrain(PretrainConfig(corpus=str(data / "corpus.jsonl"), out=str(root / "pretrain"), vocab_size=b.vocab_size,
                                  model=b.model, seq_length=b.seq_length, batch_size=b.pretrain_batch,
                                  steps=b.pretrain_steps, seed=seed, device="cpu", progress=False, resume=True))
    t_pre = time.perf_counter() - t
    log(f"seed {seed}: pretrain {pre['step']} steps, final loss {pre['final'].get('pretrain/loss', float('nan')):.3f}, "
        f"{t_pre:.0f} s", first_stage=t_pre)
    base = root / "pretrain" / "model"
    quiet = lambda m: log(f"seed {seed}: {m}")  # noqa: E731
    t_start = time.perf_counter()

    ran: dict[str, list[str]] = {}

    def call(name: str, start: Path = base, **kw: Any) -> dict[str, Any]:
        s = lions(lions_config(b, data, root / name, start, seed, **kw), log=quiet)
        ran[name] = s["ran"]
        return s["stages"]

    main = call("chain")
    sft_model, dpo_model = Path(main["sft"]["model"]), Path(main["dpo"]["model"])
    cfg = lions_config(b, data, root, base, seed)
    runs: dict[str, dict[str, Any]] = {
        "SFT padded": call("sft_padded", stages=("sft",), sft=dataclasses.replace(cfg.sft, layout="padded")),
        "SFT loss on all": call("sft_loss_all", stages=("sft",), sft=dataclasses.replace(cfg.sft, loss_on="all")),
        "+DPO 25%": call("dpo_25", sft_model, stages=("dpo",), dpo_fraction=0.25),
        "+DPO 50%": call("dpo_50", sft_model, stages=("dpo",), dpo_fraction=0.5),
        "+ODPO at the offline lr": call("odpo_offline_lr", dpo_model, stages=("odpo",), odpo=dataclasses.replace(
            cfg.odpo, dpo=dataclasses.replace(cfg.odpo.dpo, lr=b.dpo_lr))),
    }
    t_train = time.perf_counter() - t_start
    t = time.perf_counter()
    models = {"SFT": sft_model, "+DPO": dpo_model, "+ODPO": Path(main["odpo"]["model"])}
    models |= {name: Path(next(iter(st.values()))["model"]) for name, st in runs.items()}
    evals: dict[str, dict[str, Any]] = {}
    for name, folder in models.items():
        texts, scores = greedy_eval(folder, eval_rows, b.max_new_tokens)
        evals[name] = {"mean_score": sum(scores) / len(scores), "scores": scores, "responses": texts,
                       "mean_response_words": sum(len(x.split()) for x in texts) / len(texts)}
    for name in evals:
        evals[name]["win_rate_vs_sft"] = win_rate(evals[name]["scores"], evals["SFT"]["scores"])
    t_eval = time.perf_counter() - t
    log(f"seed {seed}: eval " + ", ".join(f"{n} {evals[n]['mean_score']:.3f}" for n in evals) + f", {t_eval:.0f} s")

    def stage_row(st: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in st.items() if k not in ("rounds",)}

    def step_seconds(st: dict[str, Any]) -> float:
        """The SFT run's optimizer-step time (the sum over its metrics rows; no data loading or model saving)."""
        rows = read_rows(Path(st["sft"]["model"]).parent / "metrics.jsonl")
        return sum(1 / r["perf/steps_per_s"] for r in rows)

    return {"seed": seed, "num_parameters": pre["num_parameters"],
            "seconds": {"pretrain": t_pre, "chain_and_ablations": t_train, "eval": t_eval},
            "pretrain_final_loss": pre["final"].get("pretrain/loss"),
            "chain": {k: stage_row(v) for k, v in main.items()}, "odpo_round": main["odpo"]["final"],
            "ablation_runs": {name: {k: stage_row(v) for k, v in st.items()} for name, st in runs.items()},
            "ran_now": ran,
            "sft_step_seconds": {"packed": step_seconds(main), "padded": step_seconds(runs["SFT padded"])},
            "stages": {n: evals[n] for n in STAGES}, "ablations": {n: evals[n] for n in ABLATIONS}}


def _ms(xs: list[float]) -> str:
    """mean ± std over seeds (NaNs left out), the one value when there is one, '-' for none."""
    xs = [x for x in xs if x == x]
    if len(xs) < 2:
        return f"{xs[0]:.3f}" if xs else "-"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def _msd(xs: list[float], fmt: str = "+.3f") -> str:
    if len(xs) < 2:
        return format(xs[0], fmt) if xs else "-"
    return f"{format(statistics.mean(xs), fmt)} ± {statistics.stdev(xs):.3f}"


def report(rows: list[dict[str, Any]], seeds_asked: list[int]) -> None:
    """The stage table, the paper's table, a plain verdict on the ordering, and the ablations."""
    done = [r["seed"] for r in rows]
    print(f"\n## Results ({len(rows)} of {len(seeds_asked)} seeds: {done})\n")
    if len(rows) < len(seeds_asked):
        print(f"Seeds {sorted(set(seeds_asked) - set(done))} did not finish; the table covers the finished ones.\n")
    if not rows:
        return
    n = len(rows[0]["stages"]["SFT"]["scores"])
    print(f"Held-out prompts: {n}, greedy decoding. Mean ± std over seeds (sample std).\n")
    print("| stage | mean graded score | win rate vs SFT (ties half) |")
    print("|---|---|---|")
    means: dict[str, list[float]] = {}
    for name in STAGES:
        means[name] = [r["stages"][name]["mean_score"] for r in rows]
        wins = [r["stages"][name]["win_rate_vs_sft"] for r in rows]
        print(f"| {name} | {_ms(means[name])} | {_ms(wins)} |")
    print("\nPer seed (mean score SFT / +DPO / +ODPO):\n")
    for r in rows:
        print(f"- seed {r['seed']}: " + " / ".join(f"{r['stages'][s]['mean_score']:.3f}" for s in STAGES))
    print("\nThe paper's stage table (Arena-Hard / AlpacaEval-2 / MT-Bench; 2B-8B models on GPUs, a different scale "
          "and different benchmarks, so only the ordering is comparable):\n")
    print("| model | Arena-Hard SFT / +DPO / +ODPO | AlpacaEval-2 | MT-Bench |")
    print("|---|---|---|---|")
    for model, *cols in PAPER:
        print(f"| {model} | " + " | ".join(" / ".join(str(v) for v in c) for c in cols) + " |")
    mean_of = {s: statistics.mean(means[s]) for s in STAGES}
    per_seed = [r["stages"]["SFT"]["mean_score"] < r["stages"]["+DPO"]["mean_score"] < r["stages"]["+ODPO"]["mean_score"]
                for r in rows]
    holds = mean_of["SFT"] < mean_of["+DPO"] < mean_of["+ODPO"]
    print(f"\n**Ordering SFT < +DPO < +ODPO on the mean over seeds: {'holds' if holds else 'does not hold'}** "
          f"({mean_of['SFT']:.3f} / {mean_of['+DPO']:.3f} / {mean_of['+ODPO']:.3f}); strictly within "
          f"{sum(per_seed)} of {len(rows)} seeds. " + _gaps(means))
    if all("ablations" in r for r in rows):
        ablation_report(rows)


def ablation_report(rows: list[dict[str, Any]]) -> None:
    """Each ablation's score beside the chain model it changes, the paired difference per seed, and for packing
    the SFT stage's wall-time ratio."""
    print(f"\n## Ablations ({len(rows)} seed{'s' if len(rows) != 1 else ''}, same base model per seed; "
          "difference = ablation - chain model, paired per seed, mean ± std)\n")
    print("| ablation | changes | mean score | chain model (score) | difference | mean response words "
          "(ablation / chain) |")
    print("|---|---|---|---|---|---|")
    for name, (what, ref) in ABLATIONS.items():
        a = [r["ablations"][name]["mean_score"] for r in rows]
        c = [r["stages"][ref]["mean_score"] for r in rows]
        wa = statistics.mean(r["ablations"][name]["mean_response_words"] for r in rows)
        wc = statistics.mean(r["stages"][ref]["mean_response_words"] for r in rows)
        print(f"| {name} | {what} | {_ms(a)} | {ref} ({_ms(c)}) | {_msd([x - y for x, y in zip(a, c)])} | "
              f"{wa:.2f} / {wc:.2f} |")
    t_pad = [r["ablation_runs"]["SFT padded"]["sft"]["seconds"] for r in rows]
    t_pack = [r["chain"]["sft"]["seconds"] for r in rows]
    s_pad = [r["sft_step_seconds"]["padded"] for r in rows]
    s_pack = [r["sft_step_seconds"]["packed"] for r in rows]
    print(f"\nPacking vs padding at equal tokens (the same {rows[0]['chain']['sft']['final'].get('step')} steps of the "
          f"same conversations, so the same trained tokens): SFT wall time padded / packed = "
          f"{_msd([x / y for x, y in zip(t_pad, t_pack)], '.2f')} for the whole stage (per seed "
          + ", ".join(f"{x:.0f} s / {y:.0f} s" for x, y in zip(t_pad, t_pack))
          + f"), {_msd([x / y for x, y in zip(s_pad, s_pack)], '.2f')} for its optimizer steps alone (per seed "
          + ", ".join(f"{x:.1f} s / {y:.1f} s" for x, y in zip(s_pad, s_pack))
          + "). The two runs follow each other in this process on the same machine (see the load in the header), "
          "so the ratio carries that machine's noise.")
    expected = {"chain": 3, "sft_padded": 1, "sft_loss_all": 1, "dpo_25": 1, "dpo_50": 1, "odpo_offline_lr": 1}
    reused = [(r["seed"], name) for r in rows for name, k in expected.items() if len(r["ran_now"].get(name, [])) < k]
    if reused:
        print(f"\nStages reused from an earlier invocation (their seconds are from that run): {reused}")


def _gaps(means: dict[str, list[float]]) -> str:
    """Each step's mean gain against its seed-to-seed spread (a gain under one std of the per-seed differences is
    not distinguishable from noise at this number of seeds)."""
    out = []
    for a, b in (("SFT", "+DPO"), ("+DPO", "+ODPO")):
        d = [y - x for x, y in zip(means[a], means[b])]
        sd = statistics.stdev(d) if len(d) > 1 else float("nan")
        out.append(f"{a} -> {b}: {statistics.mean(d):+.3f} (std of the per-seed differences "
                   f"{'n/a' if math.isnan(sd) else f'{sd:.3f}'})")
    return "Per-seed gains: " + "; ".join(out) + "."


def chat_args(argv: list[str] | None, doc: str, name: str, budgets: dict[str, Any], seeds: list[int],
              fresh_help: str) -> argparse.Namespace:
    """The arguments every chat-task experiment takes (seeds, budget, report, records, run folders, threads),
    checked: one PbrlError line for repeated or negative seeds and a thread count below 1."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=seeds)
    p.add_argument("--budget", choices=sorted(budgets), default="tiny")
    p.add_argument("--out", default=f"results/{name}.md", help="the markdown report (none: print only)")
    p.add_argument("--records", default=f"results/records/{name}", help="folder of the per-seed JSON rows")
    p.add_argument("--work", default=None, help=f"run folders (default runs/{name}-<budget>)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the free cores)")
    p.add_argument("--fresh", action="store_true", help=fresh_help)
    args = p.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        raise PbrlError(f"--seeds: repeated seeds in {args.seeds}")
    if any(s < 0 for s in args.seeds):
        raise PbrlError(f"--seeds: expected seeds >= 0, got {args.seeds}")
    if args.threads is not None and args.threads < 1:
        raise PbrlError(f"--threads: expected >= 1, got {args.threads}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = chat_args(argv, __doc__, "lions_stages", BUDGETS, [0, 1, 2],
                     "delete the run folders first (default: reuse finished stages of an earlier invocation)")
    b = BUDGETS[args.budget]
    work = Path(args.work or f"runs/lions_stages-{args.budget}")
    threads, note = use_threads(args.threads)
    out = None if args.out in ("", "none") else args.out
    records = Path(args.records) / args.budget
    with recorded(out, f"LIONs stages and ablations on the chat task ({args.budget} budget)", threads=threads):
        t_all = time.perf_counter()
        if args.fresh:
            shutil.rmtree(work, ignore_errors=True)
        data = work / "data"
        if not (data / "card.json").is_file():
            ChatData(out=str(data), corpus_docs=b.corpus_docs, train_tasks=b.train_tasks,
                     heldout_tasks=b.heldout_tasks, seed=0, overwrite=True).run()
        eval_rows = load_prompts(data / "heldout.jsonl")[: b.eval_prompts]
        prefs = sum(1 for _ in open(data / "prefs.jsonl"))
        print(f"\nBudget `{args.budget}` (device cpu, {threads} torch threads{f', {note}' if note else ''}): "
              f"model {({k: v for k, v in dataclasses.asdict(b.model).items() if k != 'vocab_size'})}, BPE vocab "
              f"{b.vocab_size} (the model's vocab follows it); data: {b.corpus_docs} corpus docs, "
              f"{b.train_tasks} SFT conversations, {prefs} offline preference pairs, {len(eval_rows)} held-out "
              f"eval prompts (data seed 0, shared by all seeds; one pre-trained base per seed). Steps: pretrain "
              f"{b.pretrain_steps} x {b.pretrain_batch} rows of {b.seq_length} tokens; SFT {b.sft_steps} x "
              f"{b.sft_batch} conversations (packed, assistant-only loss); +DPO {b.dpo_epochs} epoch, batch "
              f"{b.dpo_batch}, lr {b.dpo_lr}, beta {b.dpo_beta}, sigmoid loss, reference = SFT model "
              f"(log-probs precomputed); +ODPO 1 round on {b.odpo_prompts} train prompts, n = {b.odpo_n} at "
              f"T = 0.8, judge pbrl_envs.chat:judge, best finished sample vs worst, {b.odpo_epochs} DPO epoch, "
              f"lr {b.odpo_lr}, beta {b.dpo_beta}, reference = +DPO model. Eval: greedy, at most "
              f"{b.max_new_tokens} new tokens, stopped at <|im_end|>. Seeds {args.seeds}. Every stage through "
              "pbrl.llm.lions.lions (the function behind `pbrl llm lions`).\n")
        estimated = False

        def log(msg: str, first_stage: float | None = None) -> None:
            nonlocal estimated
            print(f"[{time.perf_counter() - t_all:6.0f} s] {msg}", flush=True)
            if first_stage is not None and not estimated:
                estimated = True
                # from the stage times of a loaded 2-core probe (tiny budget, 1 thread): a seed's chain, its
                # ablations and the 8 evaluations took about 1.1x its pre-training, so a seed ~2.1x; approximate
                # at other sizes, so it is revised after each seed
                est = first_stage * 2.1 * len(args.seeds)
                print(f"estimate: ~{est / 60:.1f} min for {len(args.seeds)} seeds (measured pretrain "
                      f"{first_stage:.0f} s x ~2.1 per seed; revised after each seed)", flush=True)

        rows: list[dict[str, Any]] = []
        try:
            for i, seed in enumerate(args.seeds):
                t = time.perf_counter()
                row = run_seed(seed, data, work, b, eval_rows, log)
                row["budget"] = {"name": args.budget, **dataclasses.asdict(b), "threads": threads, "device": "cpu"}
                rows.append(row)
                atomic_write_text(str(records / f"seed_{seed}.json"), dumps_json(row, indent=1) + "\n")
                left = len(args.seeds) - i - 1
                if left:
                    log(f"seed {seed} took {time.perf_counter() - t:.0f} s; estimate for the remaining {left}: "
                        f"~{(time.perf_counter() - t) * left / 60:.1f} min")
        except KeyboardInterrupt:
            print("\ninterrupted: reporting the finished seeds", flush=True)
        if rows:
            print(f"\nModel: {rows[0]['num_parameters']:,} parameters. Raw per-seed rows (scores and responses per "
                  f"prompt): {records}/seed_<s>.json. Wall time {time.perf_counter() - t_all:.0f} s.")
        report(rows, args.seeds)


if __name__ == "__main__":
    run_script(main)
