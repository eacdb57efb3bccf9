"""The GREAM LLM recommender on MovieLens-100k: alignment SFT, + SRPO (RSVR + BGAE), + binary GRPO; trie vs per-level
constrained decoding. Runs `pbrl.rec.gream.run_gream` per seed, records each run, writes the table from records.

    PYTHONPATH=. python baselines/gream_llm.py --budget ci          # a few minutes: the path, not the numbers
    PYTHONPATH=. python baselines/gream_llm.py --budget full        # ~46 min per seed (SFT 33), 3 side by side, loaded 2 cores
    PYTHONPATH=. python baselines/gream_llm.py --table-only results/records/gream_llm-full

Each seed is one run folder <runs>/<budget>-s<seed> (resumable: finished stages are skipped). The semantic IDs and
the alignment data use `ids_seed` 0 in every run, so all seeds share the same IDs and SFT records; the seed sets
the SFT initialisation and data order and the RL rollouts. A record per seed goes to
results/records/gream_llm-<budget>/seed_<s>.json (the run's summary, plus popularity evaluated on the same test
users for reference); results/gream_llm.md (other budgets: gream_llm-<budget>.md) is written from the records only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

TABLE_NAME = "gream_llm"
METRICS = ("rec/recall@1", "rec/recall@5", "rec/recall@10", "rec/ndcg@5", "rec/ndcg@10")
MODELS = (("sft", "LLM after alignment SFT"), ("srpo", "+SRPO (RSVR + BGAE)"), ("grpo", "+binary GRPO"))
DECODINGS = (("trie", "trie"), ("levels", "per-level sets"))

BUDGETS: dict[str, dict[str, Any]] = {
    # the path only: 100 users, a tiny model, a few steps
    "ci": {"seeds": [0], "config": dict(users=100, max_per_task=300, vocab_size=500, hidden_size=32, num_layers=1,
                                        num_heads=2, num_kv_heads=1, intermediate_size=64, sft_epochs=1,
                                        rl_steps=2, prompts_per_step=4, eval_users=20)},
    # the CPU budget: GreamConfig's defaults (12k seqrec windows + the other tasks, 2 epochs, ~0.85M parameters,
    # 40 RL steps of 16 prompts x 10 rollouts, 300 test users, 10 beams)
    "full": {"seeds": [0, 1, 2], "config": {}},
}

PAPER_SETUP = [
    ("data", "Amazon review categories (5-core), chronological leave-one-out, history <= 20",
     "MovieLens-100k (943 users, 1682 items, every rating an interaction), the same protocol"),
    ("item text", "LLM-enriched title + description + reviews (GPT-5), embedded by Qwen3-4B (mean-pooled)",
     "\"title (year); genres\", embedded by all-MiniLM-L6-v2 (384-d)"),
    ("semantic IDs", "residual balanced k-means, 4 levels x K = 256, dedup token for collisions",
     "residual balanced k-means, {levels} levels x K = {k}, dedup token for collisions"),
    ("model", "Qwen3-4B-Instruct (pre-trained), 1280 new tokens",
     "a randomly initialised Llama of {params} parameters, BPE vocabulary of {vocab} + the ID tokens"),
    ("alignment SFT", "seqrec, item2index, index2item, fusionseqrec, itemsearch, preference + CoT curriculum; "
     "1 epoch, lr 5e-5, batch 256", "seqrec, item2index, index2item, preference ({records} records); "
     "{epochs} epochs, lr {lr}, batch {batch}; no reasoning data"),
    ("RL", "150 steps x 256 prompts x 10 rollouts, lr 2e-6", "{rl_steps} steps x {pps} prompts x {n} rollouts, "
     "lr {rl_lr}, rollouts constrained by the {rl_decoding}"),
    ("evaluation", "direct mode, 10 beams under the per-level sets, invalid beams filtered; all test users",
     "direct mode, {beams} beams, trie and per-level sets, invalid beams filtered; {users} sampled test users"),
]


def run_config(budget: str, seed: int, runs: str, cache_dir: str):
    from pbrl.rec.gream import GreamConfig

    return GreamConfig(out=os.path.join(runs, f"{budget}-s{seed}"), cache_dir=cache_dir, seed=seed, threads=1,
                       progress=False, **BUDGETS[budget]["config"])


def popularity_on(cfg) -> dict[str, float]:
    """Popularity (training counts) on the run's own evaluated test users, full ranking (`evaluate_ranking`)."""
    from pbrl.rec.baselines import PopularityRecommender
    from pbrl.rec.gream import _load, eval_sample
    from pbrl.rec.movielens import evaluate_ranking

    log, split = _load(cfg)
    users = eval_sample(len(split.test_targets), cfg.eval_users)
    pop = PopularityRecommender(log.num_items)
    pop.fit(split.train)
    m = evaluate_ranking(pop.scores, [split.test_histories[u] for u in users], split.test_targets[users])
    return {f"rec/{k}": float(v) for k, v in m.items()}


def record_run(budget: str, seed: int, runs: str, cache_dir: str, records_dir: str) -> dict[str, Any]:
    from pbrl.rec.gream import run_gream
    from pbrl.utils import atomic_write_json

    cfg = run_config(budget, seed, runs, cache_dir)
    load_start = os.getloadavg()[0]
    summary = run_gream(cfg)
    rec = {"table": TABLE_NAME, "budget": budget, "seed": seed, "config": dataclasses.asdict(cfg),
           "summary": summary, "popularity_same_users": popularity_on(cfg), "device": "cpu",
           "platform": f"{platform.machine()} {platform.processor() or platform.system()}", "cores": os.cpu_count(),
           "load_start": load_start, "load_end": os.getloadavg()[0]}
    path = Path(records_dir) / f"seed_{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(str(path), rec)
    print(f"wrote {path}")
    return rec


# ----------------------------------------------------------------------------------------------- table
def _ms(xs: list[float]) -> str:
    return f"{np.mean(xs):.4f} ± {np.std(xs):.4f}" if xs else "not run"


def _stage_seconds(recs: list[dict], stage: str) -> str:
    xs = [r["summary"]["stages"][stage]["seconds"] for r in recs if stage in r["summary"]["stages"]]
    return f"{np.mean(xs) / 60:.1f} min" if xs else "—"


def write_table(records: list[dict[str, Any]], results_dir: str, name: str = TABLE_NAME) -> str:
    """results/<name>.md from the records: mean ± std over seeds per model and decoding, readings computed from
    the per-seed numbers, the budget, the training curves' ends, the paper's setup beside this one."""
    from pbrl.utils import atomic_write_text

    if not records:
        from pbrl.errors import PbrlError

        raise PbrlError("records: none to write a table from")
    recs = sorted(records, key=lambda r: r["seed"])
    seeds = [r["seed"] for r in recs]
    c0 = recs[0]["config"]
    st0 = recs[0]["summary"]["stages"]

    def ev(r: dict, key: str) -> dict | None:
        return r["summary"]["eval"].get(key)

    def vals(model: str, dec: str, metric: str) -> list[float]:
        return [float(ev(r, f"{model}-{dec}")[metric]) for r in recs if ev(r, f"{model}-{dec}") is not None]

    def seeds_of(model: str, dec: str) -> list[int]:
        return [r["seed"] for r in recs if ev(r, f"{model}-{dec}") is not None]

    loads = [x for r in recs for x in (r.get("load_start"), r.get("load_end"))] + \
        [x for r in recs for x in (r["summary"].get("load_average") or [])[:1]]
    loads = [float(x) for x in loads if x is not None]
    ids = st0["ids"]["stats"]
    counts = st0["align"]["counts"]["sft"]
    sft = st0["sft"]
    users = int(next(iter(recs[0]["summary"]["eval"].values()))["users"])
    budget = ", ".join(sorted({r["budget"] for r in recs}))
    md = [f"# GREAM LLM recommender on MovieLens-100k — budget {budget}", "",
          "Generated by `python baselines/gream_llm.py --table-only <records>` from the run records; do not edit. "
          "The pipeline is `pbrl rec gream` (`pbrl.rec.gream.run_gream`): semantic IDs -> alignment data -> "
          "alignment SFT -> SRPO / binary GRPO -> constrained beam search.", "",
          "## Budget", "",
          f"- seeds {seeds} (the seed of the SFT initialisation and data order and of the RL rollouts); the semantic "
          f"IDs and the alignment data are built with seed {c0['ids_seed']} and shared by all seeds",
          f"- data: {c0['log']}, chronological leave-one-out, history <= {c0['max_history']}; {users} test users "
          "evaluated (a seed-0 sample of the 943, the same users in every run), each user's last item the target",
          f"- semantic IDs: {ids['levels']} levels x K = {ids['k']} from {c0['embed_model']} embeddings of "
          f"\"title (year); genres\"; collision rate {ids['collision_rate']:.3f} ({ids['colliding_groups']} groups, "
          f"largest {ids['largest_group']}), code use per level {'/'.join(f'{u:.2f}' for u in ids['code_use'])}, "
          f"cluster sizes {ids['cluster_min'][0]}-{ids['cluster_max'][0]} (n/K = {ids['items_per_cluster']:.1f})",
          "- alignment SFT records: " + ", ".join(f"{t} {n}" for t, n in counts.items()) +
          f" (seqrec: a seeded subset of the sliding windows over the training part, at most {c0['max_per_task']} "
          f"per task); {c0['sft_epochs']} epochs, {sft['steps']} steps of {c0['sft_batch_size']}, lr "
          f"{c0['sft_lr']} (cosine), max_masked_fraction 1.0",
          f"- model: Llama, {sft['num_parameters']:,} parameters (hidden {c0['hidden_size']}, {c0['num_layers']} "
          f"layers, {c0['num_heads']} heads / {c0['num_kv_heads']} KV heads, MLP {c0['intermediate_size']}), random "
          f"init; SFT loss {np.mean([r['summary']['stages']['sft']['first_loss'] for r in recs]):.3f} -> "
          f"{_ms([r['summary']['stages']['sft']['final_loss'] for r in recs])} (first step -> last)",
          f"- RL (each from the SFT model): {c0['rl_steps']} steps x {c0['prompts_per_step']} prompts x "
          f"{c0['rollouts']} rollouts (dynamic sampling up to 10 generation batches), lr {c0['rl_lr']}, rollouts "
          f"constrained by the {c0['rl_decoding']}, prompts: each user's history before the validation target "
          "(the test target is never trained on); SRPO: RSVR + BGAE (k = 4); binary GRPO: exact match + z-score",
          f"- evaluation: {c0['num_beams']} beams; Recall/NDCG over the beams (a target outside them is a miss; "
          "beams naming no item are dropped, the official --filter_items); invalid-ID rate over all returned beams",
          f"- device: {', '.join(sorted({r['device'] for r in recs}))} ({recs[0]['platform']}), 1 torch thread per "
          f"run; wall time per stage (mean over seeds): SFT {_stage_seconds(recs, 'sft')}, SRPO "
          f"{_stage_seconds(recs, 'srpo')}, GRPO {_stage_seconds(recs, 'grpo')}",
          (f"- machine load (1-minute load average at run starts and ends): {min(loads):.1f} to {max(loads):.1f} on "
           f"{recs[0]['cores']} cores: the machine was shared with other work, so all times are upper bounds" if loads else "- machine load: not recorded"),
          f"- git revision(s): {', '.join(sorted({str(r['summary'].get('git_revision'))[:12] for r in recs}))}", ""]
    head = ("| model | decoding | seeds | Recall@1 | Recall@5 | Recall@10 | NDCG@5 | NDCG@10 | invalid-ID rate "
            "(all beams) | invalid top-1 | distinct top-1 items |")
    md += [f"## Test, {users} users (mean ± std over seeds)", "", head, "|---|---|---|" + "---|" * 8]
    for model, label in MODELS:
        for dec, dlabel in DECODINGS:
            s = seeds_of(model, dec)
            if not s:
                md.append(f"| {label} | {dlabel} | — | " + " | ".join("not run" for _ in range(8)) + " |")
                continue
            md.append(f"| {label} | {dlabel} | {', '.join(map(str, s))} | " +
                      " | ".join(_ms(vals(model, dec, m)) for m in METRICS) + " | " +
                      f"{_ms(vals(model, dec, 'rec/invalid_rate'))} | {_ms(vals(model, dec, 'rec/invalid_top1'))} | "
                      f"{np.mean(vals(model, dec, 'distinct_top1')):.0f} |")
    pop = [r["popularity_same_users"] for r in recs]
    md.append("| popularity (same users, full ranking) | — | — | " +
              " | ".join(f"{np.mean([p[m] for p in pop]):.4f}" for m in METRICS) + " | — | — | 1 |")
    md += ["", "Classical baselines on the same protocol over all 943 test users (popularity, co-occurrence, "
           "SASRec, GRU4Rec): [gream_movielens.md](gream_movielens.md).", ""]

    # ---- readings, computed from the per-seed numbers
    md += ["## Reading (computed from the records)", ""]
    pop_ndcg = float(np.mean([p["rec/ndcg@10"] for p in pop]))
    pop_r10 = float(np.mean([p["rec/recall@10"] for p in pop]))
    sft_t = vals("sft", "trie", "rec/ndcg@10")
    if sft_t:
        below = float(np.mean(sft_t)) < pop_ndcg
        rl_lower = [name for name, _ in MODELS[1:] if vals(name, "trie", "rec/ndcg@10") and all(
            float(ev(r, f"{name}-trie")["rec/ndcg@10"]) < float(ev(r, "sft-trie")["rec/ndcg@10"])
            for r in recs if ev(r, f"{name}-trie") and ev(r, "sft-trie"))]
        verdict = ("**Negative result at this budget**: the SFT model ranks below popularity on the same users"
                   if below else "The SFT model ranks above popularity on the same users")
        if rl_lower:
            verdict += (", and " + " and ".join(n.upper() for n in rl_lower) +
                        " lowered test NDCG@10 (trie) in every seed")
            rising = [n.upper() for n in rl_lower if n in st0 and
                      np.mean([r["summary"]["stages"][n]["last5"]["srpo/rsvr"] for r in recs]) >
                      np.mean([r["summary"]["stages"][n]["first5"]["srpo/rsvr"] for r in recs])]
            if rising:
                verdict += (" while the rollouts' RSVR on the training prompts rose (" + ", ".join(rising) +
                            "; RL table below)")
        md += [verdict + ".", ""]
    for dec, dlabel in DECODINGS:
        xs, rs = vals("sft", dec, "rec/ndcg@10"), vals("sft", dec, "rec/recall@10")
        if xs:
            md.append(f"- SFT ({dlabel}) vs popularity on the same users: NDCG@10 {np.mean(xs) - pop_ndcg:+.4f} "
                      f"({sum(x > pop_ndcg for x in xs)} of {len(xs)} seeds above), Recall@10 "
                      f"{np.mean(rs) - pop_r10:+.4f} ({sum(x > pop_r10 for x in rs)} of {len(rs)} above)")
    for a, b in (("srpo", "sft"), ("grpo", "sft"), ("srpo", "grpo")):
        for dec, dlabel in DECODINGS:
            pairs = [(float(ev(r, f"{a}-{dec}")["rec/ndcg@10"]), float(ev(r, f"{b}-{dec}")["rec/ndcg@10"]))
                     for r in recs if ev(r, f"{a}-{dec}") and ev(r, f"{b}-{dec}")]
            if pairs:
                d = [x - y for x, y in pairs]
                verdict = ("higher in every seed" if all(v > 0 for v in d) else
                           "lower in every seed" if all(v < 0 for v in d) else "no consistent sign")
                md.append(f"- {a.upper()} - {b.upper()} ({dlabel}), NDCG@10 per seed: "
                          f"{', '.join(f'{v:+.4f}' for v in d)} (mean {np.mean(d):+.4f}; {verdict})")
    for model, label in MODELS:
        t, lv = vals(model, "trie", "rec/invalid_rate"), vals(model, "levels", "rec/invalid_rate")
        tn, ln = vals(model, "trie", "rec/ndcg@10"), vals(model, "levels", "rec/ndcg@10")
        if t and lv:
            md.append(f"- {label}: per-level sets vs trie: invalid-ID rate {np.mean(lv):.3f} vs {np.mean(t):.3f}, "
                      f"NDCG@10 {np.mean(ln) - np.mean(tn):+.4f}")
    md.append("")

    # ---- RL training
    md += ["## RL training (means of the first and last 5 steps; mean over seeds)", "",
           "| stage | seeds | RSVR of rollouts | exact match of rollouts | kept groups / step | s / step | "
           "generated tokens / s |", "|---|---|---|---|---|---|---|"]
    for stage, label in MODELS[1:]:
        rs = [r["summary"]["stages"][stage] for r in recs if stage in r["summary"]["stages"]]
        if not rs:
            continue
        f5 = {k: np.mean([s["first5"][k] for s in rs]) for k in rs[0]["first5"]}
        l5 = {k: np.mean([s["last5"][k] for s in rs]) for k in rs[0]["last5"]}
        sec = np.mean([s["seconds"] / s["steps"] for s in rs])
        tps = np.mean([s["generated_tokens"] / s["seconds"] for s in rs])
        md.append(f"| {label} | {len(rs)} | {f5['srpo/rsvr']:.3f} -> {l5['srpo/rsvr']:.3f} | "
                  f"{f5['srpo/exact']:.3f} -> {l5['srpo/exact']:.3f} | {f5['srpo/kept_groups']:.1f} -> "
                  f"{l5['srpo/kept_groups']:.1f} | {sec:.1f} | {tps:.0f} |")
    md.append("")

    # ---- the paper's setup beside this one
    fill = dict(levels=ids["levels"], k=ids["k"], params=f"{sft['num_parameters']:,}", vocab=c0["vocab_size"],
                records=sum(counts.values()), epochs=c0["sft_epochs"], lr=c0["sft_lr"], batch=c0["sft_batch_size"],
                rl_steps=c0["rl_steps"], pps=c0["prompts_per_step"], n=c0["rollouts"], rl_lr=c0["rl_lr"],
                rl_decoding=c0["rl_decoding"], beams=c0["num_beams"], users=users)
    md += ["## The paper's setup beside this one", "",
           "GREAM (Hong et al. 2025, arXiv 2510.20815) reports Recall@1/5/10 and NDCG@5/10 on Amazon categories "
           "with a 4B pre-trained LLM. The project's paper notes record its setup and code (below), not its "
           "table's numbers, so none are copied here; the two settings differ in data, model scale, text "
           "enrichment, ID size and RL budget by orders of magnitude, and the numbers would not be comparable.", "",
           "| | paper (GREAM, official code GRRM) | here |", "|---|---|---|"]
    md += [f"| {row} | {paper} | {here.format(**fill)} |" for row, paper, here in PAPER_SETUP]
    md.append("")
    path = os.path.join(results_dir, f"{name}.md")
    os.makedirs(results_dir, exist_ok=True)
    atomic_write_text(path, "\n".join(md) + "\n")
    return path


def load_records(folder: str) -> list[dict[str, Any]]:
    from pbrl.errors import PbrlError

    files = sorted(Path(folder).glob("seed_*.json"))
    if not files:
        raise PbrlError(f"{folder}: no seed_*.json records")
    return [json.loads(f.read_text()) for f in files]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", choices=sorted(BUDGETS), default="ci")
    ap.add_argument("--seeds", type=int, nargs="*", default=None, help="run only these seeds")
    ap.add_argument("--runs", default="runs/gream", help="folder of the run folders")
    ap.add_argument("--cache-dir", default="runs/gream/cache", help="item embedding cache")
    ap.add_argument("--results", default="results")
    ap.add_argument("--records", default="results/records", help="records go to <records>/gream_llm-<budget>/")
    ap.add_argument("--table-only", metavar="RECORDS", default=None, help="write the table from these records")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.table_only:
        recs = load_records(args.table_only)
        budgets = sorted({r["budget"] for r in recs})
        name = TABLE_NAME if budgets == ["full"] else f"{TABLE_NAME}-{'-'.join(budgets)}"
        print(f"wrote {write_table(recs, args.results, name)}")
        return
    dest = os.path.join(args.records, f"{TABLE_NAME}-{args.budget}")
    for seed in (args.seeds if args.seeds is not None else BUDGETS[args.budget]["seeds"]):
        record_run(args.budget, seed, args.runs, args.cache_dir, dest)
    name = TABLE_NAME if args.budget == "full" else f"{TABLE_NAME}-{args.budget}"
    print(f"wrote {write_table(load_records(dest), args.results, name)}")


if __name__ == "__main__":
    main()
