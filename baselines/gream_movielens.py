"""MovieLens-100k next-item baselines for the GREAM LLM recommender: popularity, item co-occurrence, SASRec, GRU4Rec.

    PYTHONPATH=. python baselines/gream_movielens.py --budget ci     # seconds: 200 users, 1 seed, 2 epochs
    PYTHONPATH=. python baselines/gream_movielens.py --budget full   # minutes: 943 users, 3 seeds, early stopping
    PYTHONPATH=. python baselines/gream_movielens.py --budget full --rows dt   # pbrl's discrete DT, 3 seeds
    PYTHONPATH=. python baselines/gream_movielens.py --table-only results/records/gream_movielens-full \
        results/records/gream_movielens-full-dt

Data: MovieLens-100k as the `recbole` wheel ships it (`pbrl.rec.movielens.load_ml100k`: 943 users, 1682 items,
100,000 ratings; every rating is an interaction). Protocol (GREAM's, arXiv 2510.20815, and SASRec's): chronological
leave-one-out (`leave_one_out`: each user's last item is the test target, the second-to-last the validation
target, models fit on the rest), a history of at most 20 items, the ranking over the full catalogue
(`evaluate_ranking`), Recall@1/5/10 and NDCG@5/10. Two rankings are reported: over all items (the protocol as
written, which is also what an LLM generating item IDs faces), and with each user's earlier items removed (RecBole's
full-sort convention; in MovieLens a user rates a movie once, so a seen item is never the target).

Methods (`pbrl.rec.baselines`, `pbrl.rec.sasrec`): popularity (training counts); item co-occurrence (window 3,
the 3 most recent items, decay 0.5, cosine-normalised); SASRec (2 blocks, 1 head, d = 64, dropout, max_len 20,
softmax cross-entropy over all items, Adam 1e-3, batch 128, early stopping on validation NDCG@10 with the best
epoch's weights kept; the SASRec-BCE column trains it with the paper's binary loss and one sampled negative per
position instead); GRU4Rec (RecBole's variant: one GRU layer of 128, d = 64, the same loss and loop).
pbrl's discrete DT (`pbrl.rec.dt_rec`: one episode per user, observation = the previous item's genre/year vector,
action = the next item, reward 1 per interaction, return-to-go at the training returns' 0.9 quantile; its action
logits rank the catalogue) runs as its own grid (`--rows dt`, records gream_movielens-<budget>-dt). The LLM
recommender rows are in their own table (baselines/gream_llm.py).

Runs go through the resumable sweep (`pbrl.sweep.run_sweep`, 1 torch thread per run; finished runs are skipped);
records under runs/sweeps/gream_movielens-<budget>/, copied to results/records/gream_movielens-<budget>/, and the
table results/gream_movielens.md (+ .csv; other budgets: gream_movielens-<budget>.md) is written from the records only (`--table-only` regenerates it). The
project's `pbrl table` prints one normalized score per run, so this table of ranking metrics has its own writer.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

TABLE_NAME = "gream_movielens"
METRICS = ("recall@1", "recall@5", "recall@10", "ndcg@5", "ndcg@10")
MAX_HISTORY = 20

BUDGETS: dict[str, dict[str, Any]] = {
    # seconds: a fifth of the users, one seed, two epochs (checks the path, not the numbers)
    "ci": {"users": 200, "seeds": [0], "epochs": 2, "patience": 2},
    "full": {"users": None, "seeds": [0, 1, 2], "epochs": 100, "patience": 8},
}
NEURAL = {"hidden": 64, "dropout": 0.5, "max_len": MAX_HISTORY, "loss": "ce", "lr": 1e-3, "batch_size": 128}
COLUMNS: list[dict[str, Any]] = [
    {"name": "popularity", "method": "popularity"},
    {"name": "co-occurrence", "method": "cooccurrence", "window": 3, "recent": 3, "decay": 0.5},
    {"name": "SASRec", "method": "sasrec", **NEURAL, "blocks": 2, "heads": 1},
    {"name": "GRU4Rec", "method": "gru4rec", **NEURAL, "blocks": 1, "dropout": 0.3},
    # the SASRec paper's own loss (one sampled negative per position), everything else as the SASRec column
    {"name": "SASRec-BCE", "method": "sasrec", **NEURAL, "loss": "bce", "blocks": 2, "heads": 1},
]

# pbrl's discrete DT (pbrl.rec.dt_rec): its own grid and record folder (gream_movielens-<budget>-dt), so adding it
# neither reruns nor rewrites the rows above; the table reads both folders. A fixed number of updates (no early
# stopping), sized so one seed fits in about 10 minutes on one shared CPU thread.
DT_COLUMNS: list[dict[str, Any]] = [
    {"name": "pbrl DT (discrete)", "method": "dt", "context": 10, "embed_dim": 64, "n_layers": 2, "n_heads": 1,
     "dropout": 0.1, "batch_size": 64, "lr": 1e-3, "warmup_steps": 100, "rtg_scale": 100.0, "rtg_quantile": 0.9},
]
DT_UPDATES = {"ci": 20, "full": 2500}
NOT_RUN_YET: list[str] = []
# the LLM recommender is evaluated over 10 constrained beams on a sample of test users (baselines/gream_llm.py), not
# by a full ranking of every user, so its rows live in their own table
LLM_TABLE = "gream_llm.md"


def _load_average() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return None


def make_recommender(config: dict[str, Any], num_items: int):
    from pbrl.errors import PbrlError
    from pbrl.rec.baselines import CooccurrenceRecommender, PopularityRecommender
    from pbrl.rec.sasrec import GRU4Rec, SASRec, SeqRecConfig

    method = config["method"]
    if method == "popularity":
        return PopularityRecommender(num_items)
    if method == "cooccurrence":
        return CooccurrenceRecommender(num_items, window=int(config["window"]), recent=int(config["recent"]),
                                       decay=float(config["decay"]))
    if method in ("sasrec", "gru4rec"):
        keys = ("hidden", "blocks", "dropout", "max_len", "loss", "lr", "batch_size", "epochs", "patience")
        cfg = SeqRecConfig(**{k: config[k] for k in keys}, heads=int(config.get("heads", 1)), seed=int(config["seed"]))
        return (SASRec if method == "sasrec" else GRU4Rec)(num_items, cfg, progress=bool(config.get("progress", True)))
    if method == "dt":
        from pbrl.policies.dt import DTConfig
        from pbrl.rec.dt_rec import DTRecommender, genre_year_features
        from pbrl.rec.movielens import load_ml100k

        keys = ("context", "embed_dim", "n_layers", "n_heads", "dropout", "batch_size", "lr", "warmup_steps",
                "rtg_scale")
        features, _ = genre_year_features(load_ml100k().item_texts)  # [I, 19 genres + year]
        return DTRecommender(features, DTConfig(**{k: config[k] for k in keys}), updates=int(config["updates"]),
                             rtg_quantile=float(config["rtg_quantile"]), seed=int(config["seed"]),
                             progress=bool(config.get("progress", True)))
    raise PbrlError(f"method: expected popularity, cooccurrence, sasrec, gru4rec or dt, got {method!r}")


def run_record(config: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """Sweep runner: fit one method on the leave-one-out training part, rank the validation and test targets."""
    import torch

    from pbrl.rec.movielens import evaluate_ranking, leave_one_out, load_ml100k
    from pbrl.utils import set_seed

    load_start = _load_average()
    set_seed(int(config["seed"]))
    log = load_ml100k()
    sequences = log.user_sequences if config.get("users") is None else log.user_sequences[: int(config["users"])]
    split = leave_one_out(sequences, max_history=MAX_HISTORY)
    model = make_recommender(config, log.num_items)
    t0 = time.perf_counter()
    if config["method"] in ("sasrec", "gru4rec"):
        model.fit(split.train, split.valid_histories, split.valid_targets)
    else:
        model.fit(split.train)
    fit_s = time.perf_counter() - t0
    # a user's items before each target (everything in train, plus the validation item before the test target)
    seen_valid = split.train
    seen_test = [np.r_[t, v] for t, v in zip(split.train, split.valid_targets)]
    scores, valid_h, test_h = model.scores, split.valid_histories, split.test_histories
    if config["method"] == "dt":  # DT also needs each target's step in the user's sequence (timestep, return-to-go)
        lengths = [len(sequences[u]) for u in split.users]
        valid_h = list(zip(split.valid_histories, [n - 2 for n in lengths]))
        test_h = list(zip(split.test_histories, [n - 1 for n in lengths]))
    result: dict[str, Any] = {
        "dataset_name": log.name,
        "dataset_users": len(split.test_targets),
        "dataset_items": log.num_items,
        "dataset_interactions": int(sum(len(s) for s in sequences)),
        "dataset_transitions": int(sum(len(s) for s in split.train)),  # training items (the tables' size field)
        "valid": evaluate_ranking(scores, valid_h, split.valid_targets),
        "test": evaluate_ranking(scores, test_h, split.test_targets),
        "valid_seen_removed": evaluate_ranking(scores, valid_h, split.valid_targets, exclude=seen_valid),
        "test_seen_removed": evaluate_ranking(scores, test_h, split.test_targets, exclude=seen_test),
        "fit_s": round(fit_s, 2),
        "threads": torch.get_num_threads(),
    }
    if config["method"] in ("sasrec", "gru4rec"):
        result.update(
            epochs_run=len(model.history),
            best_epoch=model.best_epoch,
            curve=[[h["epoch"], h["valid_ndcg@10"]] for h in model.history],
            parameters=int(sum(p.numel() for p in model.net.parameters())),
        )
    if config["method"] == "dt":
        result.update(updates=model.updates, rtg_target=model.r_hi,
                      curve=[[h["step"], h["loss"]] for h in model.history],
                      parameters=int(sum(p.numel() for p in model.policy.model.parameters())))
    result["last_score"] = result["best_score"] = result["test"]["ndcg@10"]  # what the sweep log prints
    result["load_start"], result["load_end"] = load_start, _load_average()
    return result


# ------------------------------------------------------------------------------------------------------ table
def _cell(xs: list[float]) -> str:
    return f"{np.mean(xs):.4f} ± {np.std(xs):.4f}" if xs else "—"


def write_table(records: list[dict[str, Any]], results_dir: str, name: str = TABLE_NAME) -> dict[str, str]:
    """results/<name>.md and .csv from sweep records: mean ± std over seeds of every metric, per method."""
    from pbrl.utils import atomic_write_text

    order = [c["name"] for c in COLUMNS + DT_COLUMNS]
    by_col: dict[str, list[dict[str, Any]]] = {}
    for rec in sorted(records, key=lambda r: (r["column"], r["config"].get("seed", 0))):
        by_col.setdefault(rec["column"], []).append(rec)
    cols = [c for c in order if c in by_col] + sorted(set(by_col) - set(order))

    def vals(col: str, split: str, metric: str) -> list[float]:
        return [float(r["result"][split][metric]) for r in by_col[col]]

    budgets = sorted({str(r.get("budget")) for r in records})
    seeds = sorted({int(r["config"].get("seed", 0)) for r in records})
    sizes = sorted({(r["result"]["dataset_users"], r["result"]["dataset_items"], r["result"]["dataset_interactions"],
                     r["result"]["dataset_transitions"]) for r in records})
    devices = sorted({str(r.get("device_name") or r.get("device")) for r in records})
    threads = sorted({int(r.get("threads", 0)) for r in records})
    loads = [x for r in records for x in (r["result"].get("load_start"), r["result"].get("load_end")) if x is not None]
    revs = sorted({str(r.get("git_revision"))[:12] for r in records})
    wall = sum(float(r.get("wall_s", 0)) for r in records)
    hosts_cpu = sorted({str(r.get("platform", "?")) for r in records})

    neural = [r for r in records if r["config"].get("method") in ("sasrec", "gru4rec")]
    dt_updates = sorted({int(r["config"]["updates"]) for r in records if r["config"].get("method") == "dt"})
    md = [f"# GREAM baselines on MovieLens-100k — budget {', '.join(budgets)}", "",
          "Next-item ranking, chronological leave-one-out (test = each user's last item, validation = the "
          "second-to-last; models fit on the rest), history of at most 20 items, ranking over the full catalogue. "
          "Mean ± std over seeds (the seeds of each method are listed in the last table). Generated by `python baselines/gream_movielens.py --table-only <records>` from "
          "run records; do not edit.", ""]
    md += [
        f"- budget: {', '.join(budgets)}; seeds: {seeds}; runs: {len(records)}"
        + (f"; SASRec / GRU4Rec: at most {'/'.join(sorted({str(r['config']['epochs']) for r in neural}))} epochs, "
           f"patience {'/'.join(sorted({str(r['config']['patience']) for r in neural}))} validation evaluations "
           "(one per epoch)" if neural else "")
        + (f"; pbrl DT: {'/'.join(str(u) for u in dt_updates)} updates" if dt_updates else ""),
        "- data (users evaluated, items, interactions, training items): "
        + "; ".join(f"{u}, {i}, {n}, {t}" for u, i, n, t in sizes),
        f"- device: {', '.join(devices)}; torch threads per run: {threads}; wall times include waiting for "
        f"the shared cores; total {wall / 60:.1f} min of run wall time",
        (f"- machine load (1-minute load average at the start and end of each run): {min(loads):.1f} to "
         f"{max(loads):.1f} (cores: see device) — the machine was shared with other work, so times are "
         "upper bounds" if loads else "- machine load: not recorded"),
        f"- platform: {', '.join(hosts_cpu)}; git revision(s): {', '.join(revs)}",
        "",
    ]
    header = "| method | " + " | ".join(m.replace("recall", "Recall").replace("ndcg", "NDCG") for m in METRICS) + " |"
    for split, title in (("test", "Test, ranking over all items (the protocol)"),
                         ("test_seen_removed", "Test, each user's earlier items removed from the ranking "
                          "(RecBole's full-sort convention)")):
        md += [f"## {title}", "", header, "|---|" + "---|" * len(METRICS)]
        for c in cols:
            md.append(f"| {c} | " + " | ".join(_cell(vals(c, split, m)) for m in METRICS) + " |")
        for c in NOT_RUN_YET:
            md.append(f"| {c} | " + " | ".join("not run yet" for _ in METRICS) + " |")
        md.append("")
    md += ["## Validation and training", "",
           "| method | seeds | valid NDCG@10 | valid NDCG@10 (seen removed) | epochs run | best epoch | parameters "
           "| fit s |",
           "|---|---|---|---|---|---|---|---|"]
    for c in cols:
        rs = by_col[c]
        ep = [r["result"].get("epochs_run") for r in rs]
        best = [r["result"].get("best_epoch") for r in rs]
        params = {r["result"].get("parameters") for r in rs}
        md.append(
            f"| {c} | {', '.join(str(r['config'].get('seed', 0)) for r in rs)} | {_cell(vals(c, 'valid', 'ndcg@10'))} | {_cell(vals(c, 'valid_seen_removed', 'ndcg@10'))} | "
            + (" / ".join(str(e) for e in ep) if ep[0] is not None else "—") + " | "
            + (" / ".join(str(b) for b in best) if best[0] is not None else "—") + " | "
            + (", ".join(str(p) for p in sorted(params)) if None not in params else "—") + " | "
            + f"{np.mean([r['result']['fit_s'] for r in rs]):.1f} |"
        )
    md += ["", "Reading (computed from the records): test NDCG@10 of each learned model minus the co-occurrence "
           "baseline's, over all items / with seen items removed, and in how many seeds it is above:", ""]
    if "co-occurrence" in by_col:
        for c in cols:
            if c in ("popularity", "co-occurrence"):
                continue
            parts = []
            for split in ("test", "test_seen_removed"):
                ref = float(np.mean(vals("co-occurrence", split, "ndcg@10")))
                xs = vals(c, split, "ndcg@10")
                parts.append(f"{np.mean(xs) - ref:+.4f} ({sum(x > ref for x in xs)} of {len(xs)} seeds above)")
            md.append(f"- {c}: {parts[0]} / {parts[1]}")
    configs = {c["name"]: {k: v for k, v in c.items() if k not in ("name",)} for c in COLUMNS + DT_COLUMNS}
    md += ["", "Settings: " + "; ".join(f"{n}: " + ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "method")
                                        for n, cfg in configs.items() if n in by_col and len(cfg) > 1) + ".",
           "SASRec and GRU4Rec train with softmax cross-entropy over all items (RecBole's and most recent papers' "
           "loss); SASRec-BCE is the same SASRec trained with the paper's binary loss and one sampled negative per "
           "position (drawn among the items not in the training window). All use Adam "
           "(lr 1e-3, betas 0.9/0.98), early stopping on validation NDCG@10 (over all items) with the patience "
           "above, and the best epoch's weights are evaluated on the test targets.",
           "",
           f"The LLM recommender (GREAM's alignment SFT, SRPO and binary-reward GRPO, trie vs per-level decoding) "
           f"is in [{LLM_TABLE}]({LLM_TABLE}): it ranks the 10 beams of a constrained beam search on a sample of "
           "test users (items outside the beams are misses), so its numbers are not on this table's full-ranking "
           "footing; that table also scores popularity on the same users, and sets the GREAM paper's setup (Amazon "
           "categories, a 4B pre-trained LLM) beside ours.",
           "",
           "pbrl DT (discrete) is `pbrl.policies.dt.DecisionTransformer` with Discrete actions, trained unchanged on "
           "one episode per user (`pbrl.rec.dt_rec`): observation = the previous item's fixed genre multi-hot and "
           "scaled release year (19 + 1 values from the item text; not learned), action = the next item, reward = 1 "
           "per interaction (so the return-to-go is the number of interactions still to come); at the validation / "
           "test step it reads the last history items as (return-to-go, observation, action) steps, with the "
           "return-to-go conditioned at the 0.9 quantile of the training episodes' returns minus the step index "
           "(at least 1), and its action logits rank the whole catalogue. It trains for a fixed "
           + ("/".join(str(u) for u in dt_updates) or "—")
           + " updates (no early stopping; the budget is what one shared CPU thread allows in about 10 minutes "
           "a seed): at most updates x batch x context predicted steps (2500 x 64 x 10 = 1.6M, windows overlap), "
           "against SASRec's 25-47 epochs over the ~98k training items (2.5M-4.6M), so its row measures this "
           "small budget. No "
           "published MovieLens-100k numbers are printed beside these: we found none measured under this protocol "
           "(history <= 20, all 100k ratings, full ranking) to cite."]
    paths = {"md": os.path.join(results_dir, f"{name}.md"), "csv": os.path.join(results_dir, f"{name}.csv")}
    os.makedirs(results_dir, exist_ok=True)
    atomic_write_text(paths["md"], "\n".join(md) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "split", "metric", "n_seeds", "mean", "std", "per_seed"])
    for c in cols:
        for split in ("valid", "test", "valid_seen_removed", "test_seen_removed"):
            for m in METRICS:
                xs = vals(c, split, m)
                w.writerow([c, split, m, len(xs), f"{np.mean(xs):.5f}", f"{np.std(xs):.5f}",
                            " ".join(f"{x:.5f}" for x in xs)])
    atomic_write_text(paths["csv"], buf.getvalue())
    return paths


def table_name(budget: str) -> str:
    """results/gream_movielens.md for the full budget, results/gream_movielens-<budget>.md for the others."""
    return TABLE_NAME if budget == "full" else f"{TABLE_NAME}-{budget}"


def copy_records(sweep_dir: str, dest: str) -> None:
    """The sweep's grid.json and records/*.json (failed ones left out) into `dest` (replacing what was there)."""
    dest_p = Path(dest)
    if dest_p.exists():
        shutil.rmtree(dest_p)
    (dest_p / "records").mkdir(parents=True)
    shutil.copy2(os.path.join(sweep_dir, "grid.json"), dest_p / "grid.json")
    for f in sorted(Path(sweep_dir, "records").glob("*.json")):
        if not f.name.endswith(".failed.json"):
            shutil.copy2(f, dest_p / "records" / f.name)


def main(argv: list[str] | None = None) -> None:
    from pbrl.errors import PbrlError
    from pbrl.sweep import Grid, run_sweep
    from pbrl.tables import load_records

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", choices=sorted(BUDGETS), default="ci")
    ap.add_argument("--out", default="runs/sweeps", help="sweep folder")
    ap.add_argument("--results", default="results")
    ap.add_argument("--records", default="results/records", help="where the finished records are copied")
    ap.add_argument("--only", default=None,
                    help="run only the runs whose id or config text values contain each of its words")
    ap.add_argument("--rows", choices=("baselines", "dt"), default="baselines",
                    help="which grid to run: the baselines, or pbrl's discrete DT (its own record folder)")
    ap.add_argument("--table-only", metavar="RECORDS", nargs="+", default=None,
                    help="write the table from these record folders")
    args = ap.parse_args(argv)
    if args.table_only:
        records = load_records(args.table_only)
        budgets = sorted({str(r.get("budget")) for r in records})
        name = table_name(budgets[0]) if len(budgets) == 1 else TABLE_NAME + "-" + "-".join(budgets)
        for path in write_table(records, args.results, name).values():
            print(f"wrote {path}")
        return
    b = BUDGETS[args.budget]
    dt = args.rows == "dt"
    grid = Grid(
        name=f"{TABLE_NAME}-{args.budget}" + ("-dt" if dt else ""),
        runner="baselines.gream_movielens:run_record",
        budget=args.budget,
        base={"users": b["users"], **({"updates": DT_UPDATES[args.budget]} if dt
                                       else {"epochs": b["epochs"], "patience": b["patience"]})},
        axes={"seed": b["seeds"]},
        columns=DT_COLUMNS if dt else COLUMNS,
        meta={"title": "GREAM baselines on MovieLens-100k"},
    )
    sweep_dir = os.path.join(args.out, grid.name)
    records = run_sweep(grid, sweep_dir, workers=1, threads=1, only=args.only)
    if any(r["status"] != "ok" for r in records):
        raise PbrlError(f"some runs failed; see {sweep_dir}/records/*.failed.json")
    dest = os.path.join(args.records, grid.name)
    copy_records(sweep_dir, dest)
    print(f"records copied to {dest}")
    # the table reads both grids' record folders of this budget (the baselines' and the DT's), those that exist
    folders = [f for f in (os.path.join(args.records, f"{TABLE_NAME}-{args.budget}{x}") for x in ("", "-dt"))
               if os.path.isdir(f)]
    for path in write_table(load_records(folders), args.results, table_name(args.budget)).values():
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
