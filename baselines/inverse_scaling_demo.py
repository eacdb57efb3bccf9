"""A planted inverse-scaling demonstration (McKenzie et al., TMLR 2023, the "strong prior" cause) on a family of tiny
LMs that pbrl pre-trains here on one synthetic corpus, scored by `pbrl llm inverse-scaling`.

    PYTHONPATH=. python baselines/inverse_scaling_demo.py [--budget small] [--threads 1] [--fresh]

The corpus (seeded, generated here) is written in a made-up language of `num_words` pseudo-words and holds three
kinds of documents:

    quote        "quote : q1 q2 q3 q4 q5 q6"            one of `num_quotes` fixed six-word quotes, each repeated
                                                        `quote_repeats` times: the memorised pattern
    instruction  "end with W : x1 x2 x3 x4 x5 W"        a fresh random phrase whose last word is replaced by the
                                                        instructed word W: the in-context instruction
    conflict     "end with W : q1 q2 q3 q4 q5 q6"       the instruction applied to a quote, which the corpus keeps
                                                        verbatim (famous quotes are not altered): the prior that
                                                        competes with the instruction

A model that has not memorised the quotes cannot tell a quote prefix from any other phrase, so it follows the
instruction; one that has memorised them learns from the conflict documents that quotes keep their ending. The
tasks, in the official row formats (classification rows {prompt, classes, answer_index}):

    trap     (JSONL) prompt "end with W : q1 .. q5", classes [" W", " q6"], answer W (the instruction), W never
             the quote's own ending: the memo-trap format, where the memorised ending is the wrong answer
    control  (CSV)   prompt "end with W : x1 .. x5" on phrases that are in no document, classes [" W", " y"] with
             y a random other word, answer W: the same instruction without a competing prior
    recall   (CSV)   prompt "quote : q1 .. q5", classes [" q6", " W"], answer q6: memorisation itself

Family: `sizes` Llama-style models (tens of k to ~1M parameters), one BPE tokenizer trained once on the corpus,
every model trained for the same steps on the same rows (same D tokens; training FLOPs 6 N D), seed 0. Each task is
scored on every model by `pbrl.llm.inverse_scaling.evaluate_task` and its trend over log parameters classified by
`pbrl.llm.trends.classify_trend` (on accuracy and on the classification loss). The markdown report and the figure
go to results/inverse_scaling.md and results/inverse_scaling.png, the per-model rows to
results/records/inverse_scaling/<budget>/; run folders under runs/inverse_scaling-<budget>/ (reused unless --fresh).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from baselines.record import recorded
from pbrl.errors import PbrlError
from pbrl.llm.models import TinyLMConfig
from pbrl.llm.pretrain import PretrainConfig, pretrain
from pbrl.utils import atomic_write_text, dumps_json, use_threads


@dataclass(frozen=True)
class Size:
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    lr: float


@dataclass(frozen=True)
class Budget:
    num_words: int = 32
    phrase: int = 3
    num_quotes: int = 300
    quote_repeats: int = 10
    instruction_docs: int = 6000
    conflict_docs: int = 4000
    task_rows: int = 300
    seq_length: int = 64
    batch_size: int = 32
    steps: int = 600
    warmup_steps: int = 30
    sizes: tuple[Size, ...] = field(default_factory=lambda: (
        Size("s", 32, 2, 4, 2, 64, 3e-3),
        Size("m", 64, 2, 4, 2, 128, 2e-3),
        Size("l", 96, 3, 4, 2, 192, 2e-3),
        Size("xl", 128, 4, 4, 2, 256, 1.5e-3),
    ))


BUDGETS = {
    "small": Budget(),
    "tiny": Budget(num_words=60, num_quotes=40, quote_repeats=10, instruction_docs=400, conflict_docs=100,
                   task_rows=40, steps=20, warmup_steps=2, batch_size=8,
                   phrase=3, sizes=(Size("s", 16, 1, 2, 1, 32, 3e-3), Size("m", 32, 1, 2, 1, 64, 3e-3))),
}

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"


# ----------------------------------------------------------------------------------------------- corpus and tasks
def make_words(n: int, rng: np.random.Generator) -> list[str]:
    """`n` distinct two-syllable pseudo-words (consonant-vowel pairs), none of them a word of the templates."""
    syllables = [c + v for c in CONSONANTS for v in VOWELS]
    words: list[str] = []
    seen = {"end", "with", "quote"}
    while len(words) < n:
        w = "".join(rng.choice(syllables, 2))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def build_language(b: Budget, seed: int = 0) -> dict[str, Any]:
    """Words, quotes and the corpus documents (shuffled), all from one seed."""
    rng = np.random.default_rng(seed)
    words = make_words(b.num_words, rng)
    quotes: list[list[str]] = []
    prefixes: set[tuple[str, ...]] = set()
    while len(quotes) < b.num_quotes:
        q = [str(w) for w in rng.choice(words, b.phrase + 1)]
        if tuple(q[:-1]) not in prefixes:  # a prefix names one quote
            prefixes.add(tuple(q[:-1]))
            quotes.append(q)
    docs: list[str] = []
    for q in quotes:
        docs += ["quote : " + " ".join(q)] * b.quote_repeats
    for _ in range(b.instruction_docs):
        x, w = _fresh_phrase(rng, words, prefixes, b.phrase), str(rng.choice(words))
        docs.append(f"end with {w} : " + " ".join(x) + f" {w}")
    for _ in range(b.conflict_docs):
        q, w = quotes[rng.integers(len(quotes))], str(rng.choice(words))
        docs.append(f"end with {w} : " + " ".join(q))
    order = rng.permutation(len(docs))
    return {"words": words, "quotes": quotes, "prefixes": prefixes, "docs": [docs[i] for i in order]}


def _fresh_phrase(rng: np.random.Generator, words: list[str], prefixes: set[tuple[str, ...]], n: int) -> list[str]:
    while True:
        x = [str(w) for w in rng.choice(words, n)]
        if tuple(x) not in prefixes:
            return x


def _other(rng: np.random.Generator, words: list[str], not_this: str) -> str:
    while True:
        w = str(rng.choice(words))
        if w != not_this:
            return w


def build_tasks(lang: dict[str, Any], n: int, seed: int = 1) -> dict[str, list[dict[str, Any]]]:
    """The trap, control and recall rows (classification format; the answer's place among the classes drawn at
    random per row). Control phrases are new: in no corpus document (checked against the corpus text)."""
    rng = np.random.default_rng(seed)
    words, quotes, prefixes = lang["words"], lang["quotes"], lang["prefixes"]
    corpus = set(lang["docs"])

    def row(prompt: str, right: str, wrong: str) -> dict[str, Any]:
        first = int(rng.integers(2))
        classes = [f" {right}", f" {wrong}"] if first == 0 else [f" {wrong}", f" {right}"]
        return {"prompt": prompt, "classes": classes, "answer_index": first}

    trap, control, recall = [], [], []
    for i in range(n):
        q = quotes[i % len(quotes)] if n <= len(quotes) else quotes[rng.integers(len(quotes))]
        w = _other(rng, words, q[-1])
        trap.append(row(f"end with {w} : " + " ".join(q[:-1]), w, q[-1]))
        while True:
            x, w = _fresh_phrase(rng, words, prefixes, len(quotes[0]) - 1), str(rng.choice(words))
            if not any(d.startswith(f"end with {w} : " + " ".join(x)) for d in corpus):
                break
        control.append(row(f"end with {w} : " + " ".join(x), w, _other(rng, words, w)))
        recall.append(row("quote : " + " ".join(q[:-1]), q[-1], _other(rng, words, q[-1])))
    return {"trap": trap, "control": control, "recall": recall}


def write_tasks(tasks: dict[str, list[dict[str, Any]]], folder: Path) -> dict[str, Path]:
    """trap.jsonl (JSONL rows), control.csv and recall.csv (CSV with `classes` as a Python-literal list string, as
    the official CSVs have it)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"trap": folder / "trap.jsonl", "control": folder / "control.csv", "recall": folder / "recall.csv"}
    atomic_write_text(str(paths["trap"]), "".join(json.dumps(r) + "\n" for r in tasks["trap"]))
    for name in ("control", "recall"):
        with open(paths[name], "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["prompt", "classes", "answer_index"])
            for r in tasks[name]:
                w.writerow([r["prompt"], repr(r["classes"]), r["answer_index"]])
    return paths


# ----------------------------------------------------------------------------------------------- the family
def model_config(s: Size) -> TinyLMConfig:
    return TinyLMConfig(hidden_size=s.hidden, num_layers=s.layers, num_heads=s.heads, num_kv_heads=s.kv_heads,
                        intermediate_size=s.intermediate, max_position=256)


def train_family(b: Budget, corpus: Path, work: Path, threads: int, log) -> list[Path]:
    """Pre-train every size on the corpus with one word-level tokenizer (every pseudo-word one token, so the
    instruction's word sits at a fixed offset). Finished runs are reused."""
    from pbrl.llm.tokenizer import word_tokenizer

    tokenizer = str(work / "tokenizer")
    if not Path(tokenizer, "tokenizer.json").is_file():
        word_tokenizer(corpus.read_text().splitlines()).save_pretrained(tokenizer)
    folders = []
    for s in b.sizes:
        out = work / f"lm_{s.name}"
        if not (out / "model" / "config.json").is_file():
            t = time.perf_counter()
            cfg = PretrainConfig(corpus=str(corpus), out=str(out), tokenizer_path=tokenizer,
                                 model=model_config(s), seq_length=b.seq_length,
                                 batch_size=b.batch_size, lr=s.lr, warmup_steps=b.warmup_steps, steps=b.steps,
                                 checkpoint_every=max(b.steps, 1), seed=0, device="cpu", progress=False,
                                 threads=threads, resume=False)
            r = pretrain(cfg)
            log(f"pretrain {s.name}: {r['num_parameters']:,} parameters, {b.steps} steps, final loss "
                f"{r['final']['pretrain/loss']:.3f}, {time.perf_counter() - t:.0f} s")
        else:
            log(f"pretrain {s.name}: reused the finished run in {out} (its own step times are in the table below)")
        folders.append(out)
    return folders


TASKS = ("trap", "control", "recall")
DOCS = "docs"
WHAT = {"trap": "the instruction on a memorised quote (memo trap)",
        "control": "the instruction on a new phrase",
        "recall": "the quote's own ending (memorisation)"}


def evaluate_family(folders: list[Path], paths: dict[str, Path], labels: list[str]) -> dict[str, Any]:
    """`evaluate_task` of every task on the family, with the trends over parameters."""
    from pbrl.llm.inverse_scaling import evaluate_task, trend_table

    out = {}
    for name in TASKS:
        res = evaluate_task(folders, paths[name], labels=labels, progress=False)
        res["task"] = paths[name].name  # the file, not this machine's path
        for m in res["models"]:
            m["path"] = m["label"]
        res["trends"] = trend_table(res)
        out[name] = res
    return out


def report(records: dict[str, Any], figure: str | None) -> None:
    """Tables, trends and the verdict from the records; the figure (accuracy and loss against parameters)."""
    from pbrl.llm.trends import Panel, Series, plot_trends

    tasks = records["tasks"]
    print("\n## The family\n")
    print("| size | parameters | steps | training tokens | final training loss | pre-training seconds (1 thread) |")
    print("|---|---|---|---|---|---|")
    for t in records["training"]:
        print(f"| {t['size']} | {t['num_parameters']:,} | {t['steps']} | {t['tokens']:,} | {t['final_loss']:.3f} | "
              f"{t['seconds']:.1f} |")
    print(f"\nPre-training steps took {sum(t['seconds'] for t in records['training']):.0f} s in all (the sum of "
          "the step times, on one thread of a machine shared with other work).")
    print("\n## What is planted\n")
    print("The corpus has quote documents (`quote : q1 .. qn`, each quote repeated), instruction documents (`end "
          "with W : x1 .. xn-1 W`, a new phrase whose last word is the instructed W) and conflict documents (`end "
          "with W : q1 .. qn`: the instruction applied to a quote, which the corpus keeps verbatim). A model that "
          "has not memorised the quotes cannot tell a quote prefix from any other phrase and should follow the "
          "instruction; a model that has memorised them can learn from the conflict documents that quotes keep "
          "their ending (the paper's \"strong prior\" cause, as in its Memo Trap task). The trap asks for the "
          "instruction on a quote (the memorised ending is the other class); the control asks for the same "
          "instruction on phrases in no document; recall asks for the quote's ending after `quote :`. A trap "
          "accuracy that falls with size while the control's rises is the inverse-scaling signature this corpus "
          "plants; the trend calls below are made by `classify_trend` with k = 2 standard errors (for accuracy "
          "the add-one proportion error, since a perfect score has a zero SEM; the tables show the pipeline's "
          "SEM), one seed per size, so they say nothing about seed-to-seed variation.")
    for name in TASKS:
        res = tasks[name]
        print(f"\n## {name}: {WHAT[name]} ({res['task']}, {res['n_rows']} rows)\n")
        print("| model | parameters | training FLOPs (6ND) | accuracy | loss | probability mass on the classes |")
        print("|---|---|---|---|---|---|")
        for m in res["models"]:
            mm = m["metrics"]
            print(f"| {m['label']} | {m['num_parameters']:,} | {m['training_flops']:.3g} | "
                  f"{mm['accuracy']['mean']:.3f} ± {mm['accuracy']['sem']:.3f} | "
                  f"{mm['loss']['mean']:.3f} ± {mm['loss']['sem']:.3f} | "
                  f"{mm['class_probability_mass']['mean']:.3f} |")
        t = res["trends"]
        print(f"\nChance: accuracy {res['chance']['accuracy']:.3f}, loss {res['chance']['loss']:.3f}. Trend over "
              f"parameters (k = 2 standard errors; accuracy with the add-one proportion error): accuracy "
              f"**{t['accuracy']['trend']}**, loss **{t['loss']['trend']}**.")
    trap, control = tasks["trap"]["trends"], tasks["control"]["trends"]
    inverse = trap["accuracy"]["trend"] == "inverse" and trap["loss"]["trend"] == "inverse"
    positive = control["accuracy"]["trend"] == "positive" and control["loss"]["trend"] == "positive"
    print("\n## Verdict\n")
    print(f"- Is the trap's trend inverse (on accuracy and on loss)? **{'yes' if inverse else 'no'}** (accuracy "
          f"{trap['accuracy']['trend']}, loss {trap['loss']['trend']}).")
    print(f"- Is the control's trend positive (on accuracy and on loss)? **{'yes' if positive else 'no'}** "
          f"(accuracy {control['accuracy']['trend']}, loss {control['loss']['trend']}).")
    r = tasks["recall"]["trends"]
    print(f"- Recall (memorisation): accuracy {r['accuracy']['trend']}, loss {r['loss']['trend']}.")
    big = {n: tasks[n]["models"][-1] for n in TASKS}
    acc = {n: big[n]["metrics"]["accuracy"]["mean"] for n in TASKS}
    label = big["trap"]["label"]
    print(f"\nThe largest model ({label}, {big['trap']['num_parameters']:,} parameters) gets the quote's ending "
          f"after `quote :` on {acc['recall']:.1%} of the recall rows, follows the instruction on {acc['control']:.1%} "
          f"of the control rows and on {acc['trap']:.1%} of the trap rows, so on the trap it "
          + ("mostly gives the memorised ending: the prior wins over the instruction." if acc["trap"] < 0.5 else
             "mostly follows the instruction: the corpus's rule that quotes keep their ending (the conflict "
             "documents) has not overridden the instruction at this budget" + (", although the model has "
             "memorised most quotes in their own context." if acc["recall"] >= 0.5 else ".")))
    if trap["accuracy"]["trend"] == "inverted-U":
        from pbrl.llm.trends import classify_trend

        t = trap["accuracy"]
        best = int(np.argmax(t["y"]))
        if best < len(t["y"]) - 1:
            sub = classify_trend(t["x"][best:], t["y"][best:], t["se"][best:])
            print(f"\nFrom the trap's most accurate size ({tasks['trap']['models'][best]['label']}; chosen after "
                  f"seeing the data, so a description rather than a test) to the largest, the trap's accuracy trend "
                  f"is {sub}.")
    if not inverse:
        small = tasks["control"]["models"][0]
        print(f"\nOver the whole family the trap's trend is {trap['accuracy']['trend']} (accuracy) / "
              f"{trap['loss']['trend']} (loss), not inverse: a negative result for the question asked at this "
              "budget." + (f" The smallest model ({small['label']}) follows the instruction on "
              f"{small['metrics']['accuracy']['mean']:.1%} of the control's new phrases, so its trap score is "
              "limited by the instruction itself as well as by the prior." if
              small["metrics"]["accuracy"]["mean"] < 0.99 else ""))
    if figure:
        panels = []
        for metric, log_y in (("accuracy", False), ("loss", True)):
            series = [Series(n, tasks[n]["trends"][metric]["x"], tasks[n]["trends"][metric]["y"],
                             tasks[n]["trends"][metric]["se"]) for n in TASKS]
            panels.append(Panel(metric, series, chance=tasks["trap"]["chance"][metric], log_y=log_y,
                                title=f"{metric} (mean ± SEM)", ylim=(-0.02, 1.02) if metric == "accuracy" else None))
        plot_trends(panels, figure, title="planted memo trap on a tiny LM family")
        print(f"\nFigure: {figure}.")


def training_rows(b: Budget, folders: list[Path]) -> list[dict[str, Any]]:
    """Per size: parameters, steps, tokens, final loss and the pre-training's own seconds (the sum of its step
    times in metrics.jsonl, so a reused run reports the time it took when it ran)."""
    from pbrl.runs import read_rows

    out = []
    for s, folder in zip(b.sizes, folders):
        summary = json.loads((folder / "summary.json").read_text())
        rows = read_rows(folder / "metrics.jsonl")
        out.append({"size": s.name, "num_parameters": summary["num_parameters"], "steps": summary["step"],
                    "tokens": summary["step"] * b.batch_size * b.seq_length,
                    "final_loss": summary["final"]["pretrain/loss"],
                    "seconds": sum(1 / r["perf/steps_per_s"] for r in rows)})
    return out


def budget_line(b: Budget, threads: int, lang: dict[str, Any] | None = None, tokens: int | None = None) -> str:
    sizes = ", ".join(f"{s.name} (hidden {s.hidden}, {s.layers} layers, MLP {s.intermediate}, lr {s.lr:g})"
                      for s in b.sizes)
    return (f"Budget: corpus of {b.num_words} pseudo-words, {b.num_quotes} quotes of {b.phrase + 1} words x "
            f"{b.quote_repeats} repeats, {b.instruction_docs} instruction and {b.conflict_docs} conflict documents"
            f"{f' ({len(lang[DOCS])} documents)' if lang else ''}; one "
            f"word-level tokenizer; {len(b.sizes)} Llama-style sizes: {sizes}; each pre-trained {b.steps} steps x "
            f"{b.batch_size} rows x {b.seq_length} tokens"
            f"{f' = {tokens:,} training tokens' if tokens else ''} (AdamW, warmup {b.warmup_steps}, cosine), seed 0, "
            f"one seed; {b.task_rows} rows per task; device cpu, {threads} torch thread(s).")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    p.add_argument("--out", default="results/inverse_scaling.md", help="the markdown report (none: print only)")
    p.add_argument("--figure", default="results/inverse_scaling.png", help="the figure (none: no figure)")
    p.add_argument("--records", default="results/records/inverse_scaling", help="folder of the per-task rows")
    p.add_argument("--work", default=None, help="run folders (default runs/inverse_scaling-<budget>)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--fresh", action="store_true", help="delete the run folders first")
    p.add_argument("--train-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads < 1:
        raise PbrlError(f"--threads: expected >= 1, got {args.threads}")
    b = BUDGETS[args.budget]
    work = Path(args.work or f"runs/inverse_scaling-{args.budget}")
    threads, _ = use_threads(args.threads)
    out = None if args.out in ("", "none") else args.out
    figure = None if args.figure in ("", "none") else args.figure
    records = Path(args.records) / args.budget
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    with recorded(out, f"Inverse scaling: a planted memo trap on a tiny LM family ({args.budget} budget)",
                  threads=threads):
        t0 = time.perf_counter()

        def log(msg: str) -> None:
            print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", flush=True)

        lang = build_language(b)
        corpus = work / "corpus.txt"
        atomic_write_text(str(corpus), "".join(d + "\n" for d in lang["docs"]))
        task_rows = build_tasks(lang, b.task_rows)
        paths = write_tasks(task_rows, records / "tasks")
        print("\n" + budget_line(b, threads, lang, b.steps * b.batch_size * b.seq_length) + "\n")
        print("This pre-trains the family (minutes; the largest size takes most of it), then scores the three tasks "
              "with `pbrl.llm.inverse_scaling.evaluate_task` (the function behind `pbrl llm inverse-scaling`).\n",
              flush=True)
        folders = train_family(b, corpus, work, threads, log)
        if args.train_only:
            return
        tasks = evaluate_family(folders, paths, [s.name for s in b.sizes])
        log("scored trap, control and recall on every model")
        rec = {"budget": args.budget, "config": dataclasses.asdict(b), "threads": threads, "tasks": tasks,
               "training": training_rows(b, folders), "seconds": time.perf_counter() - t0}
        records.mkdir(parents=True, exist_ok=True)
        atomic_write_text(str(records / "family.json"), dumps_json(rec, indent=1))
        print("\nExample rows (the files are in the official formats, under "
              f"{records}/tasks/):\n")
        for name in TASKS:
            r = task_rows[name][0]
            print(f"- {name}: `{json.dumps(r)}`")
        report(rec, figure)
        print(f"\nRaw rows: {records}/family.json (per-row metrics of every model and task). Wall time "
              f"{time.perf_counter() - t0:.0f} s.")


if __name__ == "__main__":
    main()
