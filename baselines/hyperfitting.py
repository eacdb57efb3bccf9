"""Hyperfitting (Carlsson et al., ICLR 2025, arXiv 2412.04318) on a tiny base LM pre-trained here, at a CPU budget.

    PYTHONPATH=. python baselines/hyperfitting.py [--budget tiny] [--threads 1] [--fresh]

Corpus: a synthetic English-like grammar (``grammar_corpus``, below; no text can be downloaded here). Sentences are
drawn from a small phrase grammar (noun phrases with optional adjective or prepositional phrase, verb phrases with
an optional adverb or prepositional phrase, coordinated clauses, sentence openers) over about 330 English words;
each document has one of 8 topics, and a topic is a Zipf law over the nouns, verbs and adjectives in its own
random order, so the words of a document depend on one another beyond the sentence. Three files of the same
grammar with different document seeds: the pre-training corpus, the hyperfitting pool and the held-out documents.

Steps, all through the library functions behind the commands:

1. ``pbrl.llm.pretrain.pretrain`` (`pbrl llm pretrain`): a byte-level BPE and a tiny Llama on the corpus, briefly
   (a few hundred steps), so that its greedy continuations loop: its TTR is the "base" row.
2. ``pbrl.llm.hyperfit.hyperfit`` (`pbrl llm hyperfit`) from that base with each recipe: ``paper`` (20 epochs, no
   weight decay, a seeded random draw of N sequences) and ``code`` (30 epochs, weight decay 0.01, the first N), both
   at one learning rate scaled up for the tiny model; the text statistics are measured on the held-out documents
   before training and after every epoch (TTR over the last 96 of 224 greedy tokens from 32-token contexts,
   distinct-n, rep/16, mean predictive entropy, validation loss).
3. The control (``pbrl.llm.textstats.match_temperature``): the base model sampled at the temperature whose mean
   entropy equals the hyperfitted model's greedy entropy, and the base model sampled at T = 1, each over 3 sampling
   seeds.

Results: results/hyperfitting.md (this output under a header of the conditions), results/hyperfitting.png (TTR and
validation loss over epochs) and results/records/hyperfitting/<budget>.json (every number of the tables). Run
folders go under runs/hyperfitting-<budget>/ and finished runs are reused (--fresh starts over).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from baselines.record import recorded
from pbrl.errors import run_script
from pbrl.llm.hyperfit import EVAL_KEYS, HyperfitConfig, encode_docs, eval_rows, hyperfit, load_lm
from pbrl.llm.models import TinyLMConfig
from pbrl.llm.pretrain import PretrainConfig, pretrain, read_corpus
from pbrl.llm.textstats import match_temperature, text_stats
from pbrl.runs import read_rows
from pbrl.utils import atomic_write_text, dumps_json, use_threads

# ----------------------------------------------------------------------------------------------- the corpus
NOUNS = ("cat dog bird fish horse cow sheep goat mouse fox wolf bear lion tiger deer rabbit frog snake owl duck "
         "king queen child farmer sailor doctor teacher baker miller hunter soldier painter singer writer girl boy "
         "house river tree hill road bridge garden field forest lake city village castle tower market school "
         "ship boat cart wheel door window table chair bed lamp book letter song story map key ring coin sword "
         "bread apple cheese milk honey soup cake stone rock sand snow rain wind storm cloud star moon sun light "
         "fire water gold silver iron wood glass paper rope bell drum flag hat coat shoe box bag cup bowl").split()
VERBS = ("sees finds likes wants takes makes gives keeps holds carries follows watches hears calls meets helps "
         "loves fears builds breaks opens closes paints sings reads writes leaves visits crosses climbs "
         "pulls pushes throws catches hides shows brings sends buys sells cooks eats drinks washes").split()
ADJS = ("big small old young red blue green black white golden dark bright quiet loud happy sad tired brave "
        "clever gentle wild tall short long round soft hard warm cold wet dry heavy light strange lovely quick "
        "slow proud kind angry hungry lonely").split()
ADVS = "slowly quickly quietly gladly often never always soon again together alone early late".split()
PREPS = "near under over behind beside across through into from with without".split()
OPENERS = ("then", "later", "at night", "in the morning", "after that", "suddenly")


def grammar_corpus(n_docs: int, seed: int, *, grammar_seed: int = 0, topics: int = 8,
                   sentences: tuple[int, int] = (20, 32)) -> list[str]:
    """``n_docs`` documents of the phrase grammar of the module docstring (document draws from ``seed``; the topics'
    word laws from ``grammar_seed``, shared by every file of one grammar)."""
    trng = np.random.default_rng(10_000 + grammar_seed)

    def zipf(n: int) -> np.ndarray:  # p_k ~ 1 / k^1.1 over the words in a random order
        w = 1.0 / np.arange(1, n + 1) ** 1.1
        return w[trng.permutation(n)] / w.sum()

    laws = [{"n": zipf(len(NOUNS)), "v": zipf(len(VERBS)), "a": zipf(len(ADJS))} for _ in range(topics)]
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        law = laws[int(rng.integers(topics))]

        def pick(kind: str, words: list[str]) -> str:
            return words[int(rng.choice(len(words), p=law[kind]))]  # noqa: B023  (the document's topic)

        def noun_phrase() -> str:
            det, r = ("the" if rng.random() < 0.7 else "a"), rng.random()
            if r < 0.45:
                return f"{det} {pick('n', NOUNS)}"
            if r < 0.85:
                return f"{det} {pick('a', ADJS)} {pick('n', NOUNS)}"
            return f"{det} {pick('n', NOUNS)} {rng.choice(PREPS)} the {pick('n', NOUNS)}"

        def verb_phrase() -> str:
            r = rng.random()
            if r < 0.6:
                return f"{pick('v', VERBS)} {noun_phrase()}"
            if r < 0.8:
                return f"{pick('v', VERBS)} {noun_phrase()} {rng.choice(ADVS)}"
            return f"{pick('v', VERBS)} {noun_phrase()} {rng.choice(PREPS)} {noun_phrase()}"

        sents = []
        for _ in range(int(rng.integers(*sentences))):
            r = rng.random()
            if r < 0.6:
                s = f"{noun_phrase()} {verb_phrase()}"
            elif r < 0.8:
                s = f"{noun_phrase()} {verb_phrase()} and {noun_phrase()} {verb_phrase()}"
            else:
                s = f"{rng.choice(OPENERS)} {noun_phrase()} {verb_phrase()}"
            sents.append(s[0].upper() + s[1:] + ".")
        docs.append(" ".join(sents))
    return docs


# ----------------------------------------------------------------------------------------------- budgets
@dataclasses.dataclass(frozen=True)
class Budget:
    """Sizes of one budget (printed in the file header)."""

    corpus_docs: int
    pool_docs: int
    heldout_docs: int
    model: TinyLMConfig
    vocab_size: int
    pretrain_steps: int
    pretrain_batch: int
    pretrain_lr: float
    seq_length: int
    num_sequences: int
    hyperfit_batch: int
    hyperfit_lr: float
    eval_every: int
    eval_contexts: int
    val_sequences: int
    sampling_seeds: int


BUDGETS = {
    "tiny": Budget(corpus_docs=3000, pool_docs=400, heldout_docs=200,
                   model=TinyLMConfig(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2,
                                      intermediate_size=384, max_position=512),
                   vocab_size=1024, pretrain_steps=200, pretrain_batch=16, pretrain_lr=2e-3, seq_length=256,
                   num_sequences=64, hyperfit_batch=8, hyperfit_lr=3e-3, eval_every=2, eval_contexts=64, val_sequences=64,
                   sampling_seeds=3),
    # seconds: every step of the script on a toy model, to check it end to end (no result to read)
    "smoke": Budget(corpus_docs=200, pool_docs=40, heldout_docs=20,
                    model=TinyLMConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                       intermediate_size=64, max_position=512),
                    vocab_size=300, pretrain_steps=5, pretrain_batch=4, pretrain_lr=2e-3, seq_length=64,
                    num_sequences=8, hyperfit_batch=4, hyperfit_lr=3e-3, eval_every=10, eval_contexts=4,
                    val_sequences=4, sampling_seeds=2),
}

# the paper's numbers (arXiv 2412.04318, as the project's paper notes give them): 1.1B-70B models on GPUs
PAPER = [
    ("training set", "2000 sequences of 256 tokens, 20 epochs (public code: 30), near-zero training loss"),
    ("optimizer", "Adam lr 1e-6, no weight decay, batch 8 (public code: AdamW lr 5e-6, weight decay 0.01)"),
    ("TTR", "greedy continuations far less repetitive after hyperfitting (TTR over the last 96 of 224 tokens)"),
    ("validation perplexity", "much worse after hyperfitting: 255-545"),
    ("mean predictive entropy", "very low after hyperfitting (often nearly all mass on one token)"),
    ("human preference (TinyLlama 1.1B)", "4.9% -> 34.4%"),
]


# ----------------------------------------------------------------------------------------------- the run
def _mean_sd(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def sampled_stats(model, tok, ctx, val, temperature: float, seeds: int) -> list[dict[str, Any]]:
    """text_stats of ``model`` sampled at ``temperature``, one per sampling seed."""
    return [text_stats(model, tok, ctx, val_sequences=val, temperature=temperature, seed=s, examples=1)
            for s in range(seeds)]


def figure(curves: dict[str, list[dict[str, Any]]], matched: dict[str, float], out_png: Path) -> None:
    """TTR and validation loss over epochs, one line per recipe; the base at its matched temperature dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    for (name, rows), color in zip(curves.items(), ("C0", "C1")):
        ep = [r["epoch"] for r in rows]
        a.plot(ep, [r["eval/ttr"] for r in rows], "o-", ms=3, color=color, label=f"hyperfit ({name} recipe)")
        b.plot(ep, [r["eval/val_loss"] for r in rows], "o-", ms=3, color=color, label=f"{name} recipe")
        if name in matched:
            a.axhline(matched[name], ls="--", color=color, lw=1,
                      label=f"base at the entropy-matched T ({name})")
    a.set_xlabel("epoch")
    a.set_ylabel("TTR, last 96 of 224 greedy tokens")
    b.set_xlabel("epoch")
    b.set_ylabel("validation loss (nats / token)")
    a.legend(fontsize=7)
    b.legend(fontsize=7)
    fig.suptitle("Hyperfitting a tiny Llama on a synthetic grammar (CPU); epoch 0 = the base model", fontsize=9)
    fig.tight_layout()
    tmp = out_png.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110, metadata={"Software": None})
    plt.close(fig)
    tmp.replace(out_png)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", choices=sorted(BUDGETS), default="tiny")
    p.add_argument("--recipes", nargs="+", choices=("paper", "code"), default=["paper", "code"])
    p.add_argument("--out", default="results/hyperfitting.md", help="the markdown report (none: print only)")
    p.add_argument("--figure", default="results/hyperfitting.png")
    p.add_argument("--records", default="results/records/hyperfitting", help="folder of the JSON record")
    p.add_argument("--work", default=None, help="run folders (default runs/hyperfitting-<budget>)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the free cores)")
    p.add_argument("--fresh", action="store_true", help="delete the run folders first")
    args = p.parse_args(argv)
    b = BUDGETS[args.budget]
    work = Path(args.work or f"runs/hyperfitting-{args.budget}")
    threads, note = use_threads(args.threads)
    out = None if args.out in ("", "none") else args.out
    with recorded(out, f"Hyperfitting a tiny base LM ({args.budget} budget)", threads=threads):
        t_all = time.perf_counter()

        def log(msg: str) -> None:
            print(f"[{time.perf_counter() - t_all:6.0f} s] {msg}", flush=True)

        if args.fresh:
            shutil.rmtree(work, ignore_errors=True)
        data = work / "data"
        files = {"corpus": (b.corpus_docs, 0), "pool": (b.pool_docs, 2), "heldout": (b.heldout_docs, 1)}
        data.mkdir(parents=True, exist_ok=True)
        for name, (n, seed) in files.items():
            if not (data / f"{name}.txt").is_file():
                atomic_write_text(str(data / f"{name}.txt"), "\n".join(grammar_corpus(n, seed)) + "\n")
        print(f"\nBudget `{args.budget}` (device cpu, {threads} torch threads{f', {note}' if note else ''}). Corpus: "
              f"the synthetic phrase grammar of baselines/hyperfitting.py ({len(NOUNS)} nouns, {len(VERBS)} verbs, "
              f"{len(ADJS)} adjectives, {len(ADVS)} adverbs, {len(PREPS)} prepositions; 8 topics, each a Zipf law "
              f"over the content words), {b.corpus_docs} pre-training documents, a pool of {b.pool_docs} for "
              f"hyperfitting and {b.heldout_docs} held-out documents (document seeds 0 / 2 / 1). Base model: Llama "
              f"{({k: v for k, v in dataclasses.asdict(b.model).items() if k != 'vocab_size'})}, byte-level BPE "
              f"of {b.vocab_size}, pre-trained {b.pretrain_steps} steps x {b.pretrain_batch} rows of "
              f"{b.seq_length} tokens (lr {b.pretrain_lr}, cosine). Hyperfitting: N = {b.num_sequences} sequences "
              f"of L = {b.seq_length} tokens, batch {b.hyperfit_batch}, fixed lr {b.hyperfit_lr} (the paper's "
              f"1e-6 and the code's 5e-6 are for 1B-70B models; in trial runs on this base, N = 64, the training "
              f"loss was 2.61 after 20 epochs at lr 1e-4 and 2.20 at 1e-3, and after 30 epochs 1.31 at 3e-3, 2.36 at "
              f"6e-3 and 2.84 at 1e-2 (too large without warmup)), gradient clipping 1.0; recipes {args.recipes}. "
              f"Statistics every {b.eval_every} epochs on the first {b.eval_contexts} held-out documents (32-token contexts, 224 greedy "
              f"tokens, TTR over the last 96) and the first {b.val_sequences} (their first {b.seq_length} tokens) "
              f"for the validation loss; sampled rows over {b.sampling_seeds} sampling seeds (mean ± std). "
              "One base model, one hyperfitting seed per recipe.\n", flush=True)

        t = time.perf_counter()
        pre = pretrain(PretrainConfig(corpus=str(data / "corpus.txt"), out=str(work / "pretrain"),
                                      vocab_size=b.vocab_size, model=b.model, seq_length=b.seq_length,
                                      batch_size=b.pretrain_batch, steps=b.pretrain_steps, lr=b.pretrain_lr,
                                      warmup_steps=20, seed=0, device="cpu", progress=True, resume=True))
        t_pre = time.perf_counter() - t
        log(f"pretrain: {pre['step']} steps, final loss {pre['final'].get('pretrain/loss', float('nan')):.3f}, "
            f"{pre['num_parameters']:,} parameters, {t_pre:.0f} s")
        rate = statistics.median(r["perf/tokens_per_s"] for r in pre["history"])  # a resumed run: its logged rows
        epochs = {"paper": 20, "code": 30}
        todo = sum(epochs[r] for r in args.recipes) * b.num_sequences * b.seq_length
        log(f"estimate: ~{todo / rate / 60:.1f} min of hyperfitting ({todo:,} tokens at the pre-training's "
            f"{rate:.0f} tokens/s), plus about a second per statistics pass")
        base_dir = work / "pretrain" / "model"
        runs: dict[str, dict[str, Any]] = {}
        for recipe in args.recipes:
            t_run = time.perf_counter()
            res = hyperfit(HyperfitConfig(
                model_path=str(base_dir), corpus=str(data / "pool.txt"), eval_corpus=str(data / "heldout.txt"),
                out=str(work / f"hyperfit-{recipe}"), recipe=recipe, num_sequences=b.num_sequences,
                seq_length=b.seq_length, batch_size=b.hyperfit_batch, lr=b.hyperfit_lr,
                eval_every=b.eval_every, eval_contexts=b.eval_contexts, val_sequences=b.val_sequences, seed=0,
                device="cpu", progress=True))
            res["seconds"] = time.perf_counter() - t_run
            runs[recipe] = res
            rows = read_rows(work / f"hyperfit-{recipe}" / "metrics.jsonl")
            tps = [r["perf/tokens_per_s"] for r in rows if "perf/tokens_per_s" in r]
            log(f"hyperfit ({recipe}): {res['epoch']} epochs, {res['step']} steps, final epoch loss "
                f"{res['final_epoch_loss']:.4f}, TTR {res['base']['eval/ttr']:.3f} -> {res['final']['eval/ttr']:.3f}, "
                f"median {statistics.median(tps):.0f} tokens/s, {res['seconds']:.0f} s")

        # the controls, on the same held-out contexts and validation sequences as the runs' statistics
        model, tok = load_lm(str(base_dir))
        model.eval()
        ctx, val = eval_rows(encode_docs(tok, read_corpus(data / "heldout.txt")), contexts=b.eval_contexts,
                             context_tokens=32, val_sequences=b.val_sequences, val_length=b.seq_length,
                             where="heldout.txt")
        t = time.perf_counter()
        base_greedy = text_stats(model, tok, ctx, val_sequences=val, examples=1)
        matched: dict[str, dict[str, Any]] = {}
        for recipe, res in runs.items():
            target = res["final"]["eval/mean_entropy"]
            found = match_temperature(model, ctx, target, bracket=(0.02, 3.0),
                                      log=lambda m: print(m, file=sys.stderr, flush=True))  # progress, not report
            matched[recipe] = {**found, "stats": sampled_stats(model, tok, ctx, val, found["temperature"],
                                                                b.sampling_seeds)}
            log(f"entropy-matched temperature for the {recipe} model's {target:.3f} nats: "
                f"T = {found['temperature']:.3f} ({found['evaluations']} evaluations)")
        t1 = sampled_stats(model, tok, ctx, val, 1.0, b.sampling_seeds)
        t_controls = time.perf_counter() - t
        log(f"controls: {t_controls:.0f} s")

        # ------------------------------------------------------------------------------------ report
        print(f"\n## Results\n\nBase model: {pre['num_parameters']:,} parameters, pre-training loss "
              f"{pre['final'].get('pretrain/loss'):.3f} after {pre['step']} steps. Held-out: {len(ctx)} contexts, "
              f"{len(val)} validation sequences.\n")
        print("| model (decoding) | TTR last 96 | distinct-1 | distinct-2 | distinct-3 | rep/16 | mean entropy "
              "(nats) | val loss | val perplexity | training loss (last epoch) |")
        print("|---|---|---|---|---|---|---|---|---|---|")

        def line(name: str, stats: list[dict[str, Any]], train: str = "-") -> None:
            cells = [_mean_sd([s[k] for s in stats]) for k in
                     ("ttr", "distinct_1", "distinct_2", "distinct_3", "repetition", "mean_entropy", "val_loss")]
            ppl = _mean_sd([s["val_perplexity"] for s in stats]).split(" ±")[0]
            print(f"| {name} | " + " | ".join(cells) + f" | {float(ppl):.1f} | {train} |")

        line("base (greedy)", [base_greedy])
        line("base (sampled, T = 1)", t1)
        for recipe, res in runs.items():
            f = {k.split("/", 1)[1]: v for k, v in res["final"].items() if k.startswith("eval/")}
            line(f"hyperfitted, {recipe} recipe ({res['epoch']} epochs; greedy)", [f],
                 f"{res['final_epoch_loss']:.4f}")
            line(f"base at the {recipe} model's entropy (sampled, T = {matched[recipe]['temperature']:.3f})",
                 matched[recipe]["stats"])
        print(f"\nThe paper's findings beside (1.1B-70B models on natural text, GPUs: "
              f"{1.1e9 / pre['num_parameters']:,.0f}x to {70e9 / pre['num_parameters']:,.0f}x this model's "
              "parameters, so only the directions are comparable):\n")
        print("| | the paper |\n|---|---|")
        for k, v in PAPER:
            print(f"| {k} | {v} |")

        # verdict: the pass condition (TTR up, validation loss up, entropy down) and the control
        print("\n## Verdict\n")
        b0 = runs[next(iter(runs))]["base"]
        print(f"The base model loops under greedy decoding: TTR {b0['eval/ttr']:.3f} over the last 96 greedy tokens "
              f"(vs {statistics.mean(s['ttr'] for s in t1):.3f} for its own samples at T = 1).\n")
        for recipe, res in runs.items():
            f, m = res["final"], matched[recipe]["stats"]
            up = f["eval/ttr"] > b0["eval/ttr"]
            checks = {"TTR rises": up, "validation loss rises": f["eval/val_loss"] > b0["eval/val_loss"],
                      "mean entropy falls": f["eval/mean_entropy"] < b0["eval/mean_entropy"]}
            m_ttr = [s["ttr"] for s in m]
            beats = f["eval/ttr"] > max(m_ttr)
            curve = [r["eval/ttr"] for r in res["history"] if "eval/ttr" in r]
            rising = len(curve) > 1 and curve[-1] > curve[-2]
            print(f"- **{recipe} recipe**: training loss {res['final_epoch_loss']:.2f} nats after {res['epoch']} "
                  f"epochs ({res['step']} steps), far from the paper's near-zero loss, so the model is only partly "
                  f"hyperfitted at this budget; the TTR was {'still rising' if rising else 'no longer rising'} at "
                  "the last epoch. "
                  + "; ".join(f"{k}: {'yes' if v else 'no'}" for k, v in checks.items())
                  + f" (TTR {b0['eval/ttr']:.3f} -> {f['eval/ttr']:.3f}, val loss {b0['eval/val_loss']:.3f} -> "
                  f"{f['eval/val_loss']:.3f}, entropy {b0['eval/mean_entropy']:.3f} -> {f['eval/mean_entropy']:.3f}). "
                  f"Against the control (the base sampled at the matched T = {matched[recipe]['temperature']:.3f}, "
                  f"TTR {_mean_sd(m_ttr)}): the hyperfitted greedy TTR is "
                  + ("above every sampling seed's." if beats else "not above the control's: at this scale the gain "
                     "in diversity is no more than sampling the base model at the same entropy gives (negative)."))
        print(f"\nFigure: {Path(args.figure).name} (TTR and validation loss over epochs; dashed: the base model at "
              "each recipe's entropy-matched temperature, mean over sampling seeds).")
        print("\nNot done here: the issue's second application (the LLM recommender: does greedy recommendation get "
              "less repetitive?) waits for that model; `pbrl llm hyperfit` applies to any local model folder.")
        print("\nExamples (the first held-out context; continuations cut to 40 words):\n")
        ex_base = base_greedy["examples"][0]
        print(f"- context: `{ex_base['context']}`")
        print(f"- base, greedy: `{' '.join(ex_base['continuation'].split()[:40])} ...`")
        for recipe, res in runs.items():
            print(f"- hyperfitted ({recipe}), greedy: "
                  f"`{' '.join(res['examples'][0]['continuation'].split()[:40])} ...`")
        print(f"\nWall time {time.perf_counter() - t_all:.0f} s. Record: {args.records}/{args.budget}.json; run "
              f"folders under {work}/.")

        curves = {r: [x for x in res["history"] if "eval/ttr" in x] for r, res in runs.items()}
        figure(curves, {r: statistics.mean(s["ttr"] for s in m["stats"]) for r, m in matched.items()},
               Path(args.figure))
        record = {"budget": {"name": args.budget, **dataclasses.asdict(b), "threads": threads, "device": "cpu"},
                  "num_parameters": pre["num_parameters"], "pretrain_final_loss": pre["final"].get("pretrain/loss"),
                  "seconds": {"pretrain": t_pre, **{f"hyperfit_{r}": res["seconds"] for r, res in runs.items()},
                              "controls": t_controls, "total": time.perf_counter() - t_all},
                  "base_greedy": base_greedy, "base_t1": t1, "matched": matched,
                  "runs": {r: {"epochs": res["epoch"], "final_epoch_loss": res["final_epoch_loss"],
                               "recipe": res["recipe"], "curve": curves[r], "examples": res["examples"]}
                           for r, res in runs.items()},
                  "eval_keys": list(EVAL_KEYS)}
        atomic_write_text(str(Path(args.records) / f"{args.budget}.json"), dumps_json(record, indent=1) + "\n")


if __name__ == "__main__":
    run_script(main)
