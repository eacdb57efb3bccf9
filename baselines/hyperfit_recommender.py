"""Hyperfitting the GREAM LLM recommender: does greedy recommendation become less repetitive?

    python baselines/hyperfit_recommender.py --seed 0 --lr 1e-3                # one seed -> a record
    python baselines/hyperfit_recommender.py --lr-trial 3e-4 1e-3 3e-3         # short lr trial (seed 0)
    python baselines/hyperfit_recommender.py --table-only results/records/hyperfit_recommender/s*.json

Hyperfitting (Carlsson et al., ICLR 2025, arXiv 2412.04318) fine-tunes all parameters of a trained LM on a small
set of N sequences for E epochs with AdamW at a fixed learning rate (no warmup, no decay, no weight decay: the
paper recipe of ``pbrl.llm.hyperfit``) until the training loss is near zero; greedy continuations then repeat
themselves less. Here the LM is the alignment-SFT model of ``pbrl rec gream`` (run folder
``runs/gream/full-s{seed}``) and the sequences are N of its own seqrec training conversations (align/sft.jsonl,
task seqrec), each the whole chat-template rendering (<bos>, user turn, assistant turn with the next item's ID),
trained on every token, as hyperfitting trains on whole sequences:

    L(theta) = -1/|M| sum_{(b,t) in M} log p_theta(x_{b,t+1} | x_{b,<=t}),   M = the non-padding positions.

Why not ``pbrl.llm.hyperfit.hyperfit`` itself: it reads a plain-text corpus without the chat template's special
tokens and keeps each document's *first* L tokens, all of equal length; seqrec conversations vary in length and
their answer is at the end, so a common L would cut the answers off. This script keeps the recipe (fixed-lr AdamW,
E epochs, stop after the first epoch whose mean loss is below ``stop_loss``, gradient clipping at 1.0, batch 8) and
right-pads the conversations instead.

Measured before and after, on the 300 test users of results/gream_llm.md (``pbrl.rec.gream.eval_sample``, the
same prompts through ``eval_prompts``, the same ``evaluate_model``), with the trie of catalog IDs:
greedy (1 beam) and 10-beam decoding -> distinct top-1 items, the share of users given the single most common top-1
item, the entropy (bits) of the top-1 item distribution, Recall@10 / NDCG@10, invalid-ID rate; and the mean
predictive entropy (nats) of the model's first answer token on the test prompts (the hyperfitting signature is
that this collapses), plus the mean NLL of the held-out validation conversations (align/valid.jsonl answers).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from pbrl.errors import PbrlError  # noqa: E402

RECORDS = Path("results/records/hyperfit_recommender")
TABLE = Path("results/hyperfit_recommender.md")


# ----------------------------------------------------------------------------------------------- metric helpers
def top1_stats(top1: Sequence[int | None]) -> dict[str, float]:
    """Repetitiveness of the top-1 recommendations over users (None = no valid item for that user):
    distinct items, the share of all users given the single most common item, and the entropy in bits of the
    distribution of the valid top-1 items, H = -sum_i p_i log2 p_i with p_i = count_i / #valid."""
    valid = [i for i in top1 if i is not None]
    if not top1:
        raise PbrlError("top1: expected at least one user")
    if not valid:
        return {"distinct_top1": 0.0, "top_item_share": 0.0, "top1_entropy_bits": 0.0}
    counts = np.array(list(Counter(valid).values()), dtype=np.float64)
    p = counts / counts.sum()
    return {"distinct_top1": float(len(counts)), "top_item_share": float(counts.max() / len(top1)),
            "top1_entropy_bits": float(-(p * np.log2(p)).sum())}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population std (ddof 0, as results/gream_llm.md)."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std())


# ----------------------------------------------------------------------------------------------- pieces
def padded_rows(seqs: Sequence[Sequence[int]], pad_id: int):
    """Right-padded [B, S] ids and [B, S] bool mask of real tokens (causal attention: padding on the right does not
    change the earlier positions' logits, so no attention mask is needed)."""
    import torch

    S = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), S), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), S), dtype=torch.bool)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = torch.tensor(s)
        mask[b, : len(s)] = True
    return ids, mask


def padded_lm_loss(model, ids, mask):
    """Mean next-token cross-entropy over the real tokens of right-padded rows: ids, mask [B, S] -> scalar."""
    import torch.nn.functional as F

    logits = model(input_ids=ids[:, :-1]).logits  # [B, S-1, V]
    tgt = ids[:, 1:].masked_fill(~mask[:, 1:], -100)  # [B, S-1]
    return F.cross_entropy(logits.float().flatten(0, 1), tgt.flatten(), ignore_index=-100)


def first_token_entropy(model, prompts: Sequence[Sequence[int]], pad_id: int, batch: int = 32) -> float:
    """Mean entropy (nats) of the next-token distribution after each prompt (the first answer token)."""
    import torch

    from pbrl.llm.textstats import entropy_of_logits

    out = []
    with torch.no_grad():
        for b in range(0, len(prompts), batch):
            rows = prompts[b: b + batch]
            ids, mask = padded_rows(rows, pad_id)
            logits = model(input_ids=ids).logits  # [B, S, V]
            last = torch.tensor([len(r) - 1 for r in rows])
            out += entropy_of_logits(logits[torch.arange(len(rows)), last]).tolist()
    return float(np.mean(out))


def conversations_nll(model, seqs: Sequence[Sequence[int]], masks: Sequence[Sequence[int]], pad_id: int,
                      batch: int = 32) -> float:
    """Mean NLL per answer token (mask 1) of held-out conversations (teacher-forced)."""
    import torch
    import torch.nn.functional as F

    tot, n = 0.0, 0
    with torch.no_grad():
        for b in range(0, len(seqs), batch):
            ids, _ = padded_rows(seqs[b: b + batch], pad_id)
            ans, _ = padded_rows([list(m) for m in masks[b: b + batch]], 0)
            logits = model(input_ids=ids[:, :-1]).logits
            tgt = ids[:, 1:].masked_fill(ans[:, 1:] == 0, -100)
            tot += float(F.cross_entropy(logits.float().flatten(0, 1), tgt.flatten(), ignore_index=-100,
                                         reduction="sum"))
            n += int((tgt != -100).sum())
    return tot / max(n, 1)


def measure(model, tok, prompts, targets, ids, val, label: str) -> dict[str, Any]:
    from pbrl.rec.gream import evaluate_model

    res: dict[str, Any] = {}
    for beams in (1, 10):
        r = evaluate_model(model, prompts, targets, ids, tok, "trie", num_beams=beams, batch_size=16,
                           progress=False, label=f"{label}-{beams}beam")
        top1 = r.pop("top1_items")
        res[f"beams{beams}"] = {**{k: float(v) for k, v in r.items()}, **top1_stats(top1),
                                "top1_items": top1}
        m = res[f"beams{beams}"]
        print(f"[{label}] {beams:2d} beam(s): distinct top-1 {m['distinct_top1']:.0f}, top item share "
              f"{m['top_item_share']:.3f}, H(top-1) {m['top1_entropy_bits']:.2f} bits, R@10 {m['rec/recall@10']:.4f}, "
              f"NDCG@10 {m['rec/ndcg@10']:.4f}, invalid {m['rec/invalid_rate']:.3f} ({m['users_per_s']:.1f} users/s)",
              flush=True)
    res["first_token_entropy"] = first_token_entropy(model, prompts, tok.pad_token_id)
    res["valid_nll"] = conversations_nll(model, val[0], val[1], tok.pad_token_id)
    print(f"[{label}] first-answer-token entropy {res['first_token_entropy']:.3f} nats, held-out answer NLL "
          f"{res['valid_nll']:.3f}", flush=True)
    return res


def seqrec_pick(run: Path, n: int, seed: int) -> tuple[list[dict[str, Any]], list[int]]:
    """The seqrec records of run/align/sft.jsonl and the indices of the N drawn for hyperfitting (seeded)."""
    from pbrl.utils import read_json_lines

    seqrec = [r for _, r in read_json_lines(run / "align" / "sft.jsonl") if r.get("task") == "seqrec"]
    if len(seqrec) < n:
        raise PbrlError(f"{run / 'align' / 'sft.jsonl'}: {len(seqrec)} seqrec records, fewer than N = {n}")
    return seqrec, sorted(np.random.default_rng(seed).choice(len(seqrec), n, replace=False).tolist())


def answer_share(top1: Sequence[int | None], answers: Sequence[int]) -> float:
    """Share of users whose top-1 item is the answer of one of the hyperfitting conversations."""
    a = set(answers)
    return float(np.mean([i is not None and i in a for i in top1]))


def load_setup(run: Path, n: int, seed: int, val_n: int = 300):
    """The SFT model, tokenizer, IDs, the N seqrec training conversations (seeded draw), the test prompts/targets
    of the 300 evaluated users, and `val_n` held-out validation conversations."""
    from pbrl.llm.models import load_model
    from pbrl.llm.tokenizer import assistant_mask, load_tokenizer
    from pbrl.rec.gream import GreamConfig, _load, eval_prompts, eval_sample
    from pbrl.rec.semantic_ids import SemanticIds
    from pbrl.utils import read_json_lines

    model_dir = run / "sft" / "model"
    if not (model_dir / "config.json").is_file():
        raise PbrlError(f"{model_dir}: no SFT model (run pbrl rec gream first)")
    model = load_model(model_dir).eval()
    tok = load_tokenizer(model_dir)
    ids = SemanticIds.load(run / "ids" / "semantic_ids.json")
    cfg = GreamConfig()
    _, split = _load(cfg)
    users = eval_sample(len(split.test_targets), cfg.eval_users)
    prompts, targets = eval_prompts(split, ids, tok, cfg.max_history, users)
    seqrec, pick = seqrec_pick(run, n, seed)
    train = [assistant_mask(tok, seqrec[i]["messages"])[0] for i in pick]
    valid = [r["messages"] for _, r in read_json_lines(run / "align" / "valid.jsonl")][:val_n]
    vm = [assistant_mask(tok, m) for m in valid]
    return model, tok, ids, prompts, targets, train, ([v[0] for v in vm], [v[1] for v in vm]), users


def hyperfit_rows(model, train: list[list[int]], pad_id: int, *, lr: float, epochs: int, batch: int,
                  stop_loss: float | None, seed: int, max_grad_norm: float = 1.0) -> list[dict[str, float]]:
    """The paper recipe on padded conversations: AdamW at a fixed lr, no weight decay, every epoch a seeded
    permutation; stop after the first epoch whose mean loss < stop_loss. Returns one row per epoch."""
    import torch
    from tqdm.auto import tqdm

    from pbrl.utils import adam, set_seed

    set_seed(seed)
    opt = adam(model.parameters(), lr, weight_decay=0.0, decoupled=True)
    model.train()
    rows = []
    steps = math.ceil(len(train) / batch)
    bar = tqdm(total=epochs * steps, desc="hyperfit", unit="step", leave=False)
    t0 = time.perf_counter()
    for ep in range(epochs):
        order = np.random.default_rng([seed, ep]).permutation(len(train))
        losses = []
        for s in range(steps):
            idx = order[s * batch: (s + 1) * batch]
            x, m = padded_rows([train[i] for i in idx], pad_id)
            loss = padded_lm_loss(model, x, m)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            opt.step()
            losses.append(float(loss))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", steps_s=f"{bar.n / (time.perf_counter() - t0):.1f}")
        rows.append({"epoch": ep + 1, "loss": float(np.mean(losses)), "seconds": time.perf_counter() - t0})
        print(f"[hyperfit] epoch {ep + 1}: mean loss {rows[-1]['loss']:.4f} ({rows[-1]['seconds']:.0f} s, "
              f"{(ep + 1) * steps / rows[-1]['seconds']:.2f} steps/s)", flush=True)
        if stop_loss is not None and rows[-1]["loss"] < stop_loss:
            break
    bar.close()
    model.eval()
    return rows


def run_seed(args) -> dict[str, Any]:
    import torch

    from pbrl.utils import git_revision

    torch.set_num_threads(1)
    run = Path(args.gream) / f"full-s{args.seed}"
    model, tok, ids, prompts, targets, train, val, users = load_setup(run, args.n, args.seed)
    print(f"seed {args.seed}: {len(train)} seqrec conversations of {min(map(len, train))}-{max(map(len, train))} "
          f"tokens; {len(prompts)} test users; lr {args.lr}, E <= {args.epochs}, stop_loss {args.stop_loss}",
          flush=True)
    load0 = os.getloadavg()[0]
    before = measure(model, tok, prompts, targets, ids, val, "before")
    t0 = time.perf_counter()
    hist = hyperfit_rows(model, train, tok.pad_token_id, lr=args.lr, epochs=args.epochs, batch=args.batch,
                         stop_loss=args.stop_loss, seed=args.seed)
    train_s = time.perf_counter() - t0
    after = measure(model, tok, prompts, targets, ids, val, "after")
    seqrec, pick = seqrec_pick(run, args.n, args.seed)
    return {"seed": args.seed, "gream_run": f"full-s{args.seed}", "users": users.tolist(),
            "train_answer_items": [int(seqrec[i]["item"]) for i in pick],
            "budget": {"N": args.n, "max_epochs": args.epochs, "epochs": len(hist), "lr": args.lr,
                       "batch": args.batch, "stop_loss": args.stop_loss, "weight_decay": 0.0,
                       "max_grad_norm": 1.0, "steps": len(hist) * math.ceil(args.n / args.batch),
                       "train_seconds": train_s, "threads": 1, "cores": os.cpu_count(),
                       "load_start": load0, "load_end": os.getloadavg()[0], "git": git_revision()},
            "history": hist, "before": before, "after": after}


def lr_trial(args) -> None:
    """One short run per lr on seed 0 (2 epochs each, training loss only), to pick the fixed lr."""
    import torch

    torch.set_num_threads(1)
    run = Path(args.gream) / "full-s0"
    for lr in args.lr_trial:
        model, tok, *_rest = load_setup(run, args.n, 0)
        train = _rest[3]
        hist = hyperfit_rows(model, train, tok.pad_token_id, lr=lr, epochs=args.trial_epochs, batch=args.batch,
                             stop_loss=None, seed=0)
        print(f"lr trial: lr {lr}: epoch losses " + ", ".join(f"{h['loss']:.4f}" for h in hist), flush=True)


def annotate(paths: list[str], gream: str) -> None:
    """Fill `train_answer_items` of records that lack it: the answers of the N conversations the run drew
    (``seqrec_pick`` with the record's N and seed, the draw ``load_setup`` made)."""
    from pbrl.utils import atomic_write_json

    for p in paths:
        r = json.loads(Path(p).read_text())
        if "train_answer_items" in r:
            continue
        seqrec, pick = seqrec_pick(Path(gream) / r["gream_run"], r["budget"]["N"], r["seed"])
        r["train_answer_items"] = [int(seqrec[i]["item"]) for i in pick]
        r["train_answer_items_added_later"] = True
        atomic_write_json(p, r)
        print(f"annotated {p}")


# ----------------------------------------------------------------------------------------------- table
def table(paths: list[str]) -> str:
    """The markdown of results/hyperfit_recommender.md: one section per hyperfitting budget (N, E, lr)."""
    recs = [json.loads(Path(p).read_text()) for p in paths]
    if not recs:
        raise PbrlError("no records")
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in recs:
        b = r["budget"]
        groups.setdefault((b["N"], b["max_epochs"], b["lr"]), []).append(r)
    L = ["# Hyperfitting the GREAM LLM recommender (MovieLens-100k)", "",
         f"Generated by `python baselines/hyperfit_recommender.py --table-only {RECORDS}/*.json` from the run "
         "records; do not edit. Question (issue 21): does hyperfitting (Carlsson et al., ICLR 2025) make the LLM "
         "recommender's greedy recommendations less repetitive, and at what cost in Recall/NDCG?", "",
         "Greedy decoding returns one item per user, so its Recall@10 / NDCG@10 equal Recall@1 / NDCG@1. The "
         "10-beam SFT rows recompute gream_llm.md's SFT (trie) row on the same users. Text statistics: an answer is "
         "one 3-4 token ID, so the type-token ratio / distinct-n of results/hyperfitting.md say nothing here; the "
         "hyperfitting signature measured instead is the predictive entropy of the first answer token on the 300 "
         "test prompts and the teacher-forced NLL of 300 held-out validation answers (align/valid.jsonl).", ""]
    for key in sorted(groups, key=lambda k: -k[0]):
        L += section(sorted(groups[key], key=lambda r: r["seed"]))
    trial = RECORDS / "lr_trial.txt"
    if trial.is_file():
        L += ["## lr trial (seed 0, training loss per epoch)", "", "```", trial.read_text().strip(), "```", ""]
    return "\n".join(L)


def section(recs: list[dict[str, Any]]) -> list[str]:
    b0 = recs[0]["budget"]
    seeds = [r["seed"] for r in recs]
    ms = lambda vals, d=4: "{:.{d}f} ± {:.{d}f}".format(*mean_std(vals), d=d)  # noqa: E731
    L = [f"## N = {b0['N']} conversations, E <= {b0['max_epochs']} epochs, lr {b0['lr']}", "",
         "### Budget", "",
         f"- start: the alignment-SFT model of each seed of [gream_llm.md](gream_llm.md) (`runs/gream/full-s{{0,1,2}}"
         f"/sft/model`, 853,760 parameters); seeds {seeds}",
         f"- hyperfitting data: N = {b0['N']} seqrec training conversations (a seeded draw per seed from the "
         "alignment data's seqrec records), each the full chat-template rendering, loss on every token",
         f"- recipe (paper shape): AdamW, fixed lr {b0['lr']}, no warmup / decay / weight decay, batch {b0['batch']}, "
         f"gradient clipping 1.0, at most {b0['max_epochs']} epochs, stop after the first epoch with mean loss < "
         f"{b0['stop_loss']}; lr picked by a short trial on seed 0 (see below)",
         "- epochs run per seed: " + ", ".join(str(r["budget"]["epochs"]) for r in recs) +
         "; optimizer steps: " + ", ".join(str(r["budget"]["steps"]) for r in recs) +
         "; training seconds: " + ", ".join(f"{r['budget']['train_seconds']:.0f}" for r in recs),
         f"- stop loss reached in {sum(r['history'][-1]['loss'] < b0['stop_loss'] for r in recs)} of {len(recs)} "
         "seeds (else the epoch cap ended the run; the loss was then not near zero: a partial hyperfit)",
         "- final epoch loss per seed: " + ", ".join(f"{r['history'][-1]['loss']:.4f}" for r in recs) +
         " (first epoch: " + ", ".join(f"{r['history'][0]['loss']:.4f}" for r in recs) + ")",
         "- evaluation: the same 300 test users as gream_llm.md (seed-0 sample), catalog trie, 1 beam (greedy) "
         "and 10 beams; Recall/NDCG over the beams (invalid beams dropped)",
         f"- device: cpu, 1 torch thread per seed, seeds run side by side on {b0['cores']} cores shared with other "
         "work; 1-minute load average " + ", ".join(f"{r['budget']['load_start']:.1f} -> {r['budget']['load_end']:.1f}"
                                                    for r in recs) + ": times are upper bounds",
         f"- git revision: {b0['git']}", ""]
    L += ["### Test, 300 users (mean ± std over seeds)", "",
          "| model | beams | distinct top-1 items | share of users given the most common item | entropy of top-1 "
          "items (bits) | share of users whose top-1 is a hyperfitting answer | Recall@1 | Recall@10 | NDCG@10 | "
          "invalid-ID rate |", "|---|---|---|---|---|---|---|---|---|---|"]
    for beams in (1, 10):
        for when, name in (("before", "SFT"), ("after", "SFT + hyperfit")):
            def g(k: str, when: str = when, beams: int = beams) -> list[float]:
                return [r[when][f"beams{beams}"][k] for r in recs]

            L.append(f"| {name} | {beams} | {ms(g('distinct_top1'), 1)} | {ms(g('top_item_share'), 3)} | "
                     f"{ms(g('top1_entropy_bits'), 2)} | "
                     f"{ms([answer_share(r[when][f'beams{beams}']['top1_items'], r['train_answer_items']) for r in recs], 3)}"
                     f" | {ms(g('rec/recall@1'))} | {ms(g('rec/recall@10'))} | "
                     f"{ms(g('rec/ndcg@10'))} | {ms(g('rec/invalid_rate'), 3)} |")
    if any(r.get("train_answer_items_added_later") for r in recs):
        L += ["", "The hyperfitting answers of these records were added after the run by `--annotate` (the same "
              "seeded draw of conversations the run made)."]
    L += ["", "| model | first-answer-token entropy (nats) | held-out answer NLL (nats/token) |", "|---|---|---|"]
    for when, name in (("before", "SFT"), ("after", "SFT + hyperfit")):
        L.append(f"| {name} | {ms([r[when]['first_token_entropy'] for r in recs], 3)} | "
                 f"{ms([r[when]['valid_nll'] for r in recs], 3)} |")
    L += ["", "### Reading (computed from the records)", ""]
    for beams in (1, 10):
        def d(k: str, beams: int = beams) -> list[float]:
            return [r["after"][f"beams{beams}"][k] - r["before"][f"beams{beams}"][k] for r in recs]

        dd, dh, dn = d("distinct_top1"), d("top1_entropy_bits"), d("rec/ndcg@10")
        L.append(f"- {beams} beam(s), after - before per seed: distinct top-1 " + ", ".join(f"{x:+.0f}" for x in dd)
                 + "; entropy of top-1 (bits) " + ", ".join(f"{x:+.2f}" for x in dh) + "; NDCG@10 "
                 + ", ".join(f"{x:+.4f}" for x in dn) + "; Recall@10 "
                 + ", ".join(f"{x:+.4f}" for x in d("rec/recall@10")))
    g1 = [r["after"]["beams1"]["distinct_top1"] - r["before"]["beams1"]["distinct_top1"] for r in recs]
    n1 = [r["after"]["beams1"]["rec/ndcg@10"] - r["before"]["beams1"]["rec/ndcg@10"] for r in recs]
    n10 = [r["after"]["beams10"]["rec/ndcg@10"] - r["before"]["beams10"]["rec/ndcg@10"] for r in recs]
    up = sum(x > 0 for x in g1)
    if up == len(recs):
        verdict = (f"**Less repetitive in every seed**: greedy top-1 recommendations cover more distinct items after "
                   f"hyperfitting (mean {np.mean(g1):+.1f} items)")
    elif up == 0:
        verdict = "**Negative: not less repetitive**: greedy top-1 recommendations cover no more distinct items " \
                  f"after hyperfitting in any seed (mean {np.mean(g1):+.1f} items)"
    else:
        verdict = f"**Mixed**: more distinct greedy top-1 items in {up} of {len(recs)} seeds (mean {np.mean(g1):+.1f})"
    verdict += (f"; NDCG@10 changed by {np.mean(n1):+.4f} (greedy) and {np.mean(n10):+.4f} (10 beams) on average, "
                f"lower in {sum(x < 0 for x in n10)} of {len(recs)} seeds at 10 beams. A uniformly random item would "
                f"hit the target at Recall@1 = 1/1682 = {1 / 1682:.4f}: more varied greedy recommendations are not "
                "more accurate ones here.")
    a0 = [answer_share(r["before"]["beams1"]["top1_items"], r["train_answer_items"]) for r in recs]
    a1 = [answer_share(r["after"]["beams1"]["top1_items"], r["train_answer_items"]) for r in recs]
    L.append(f"- greedy top-1 that is the answer of one of the N = {b0['N']} hyperfitting conversations (at most "
             f"{len(set(recs[0]['train_answer_items']))} items in seed {recs[0]['seed']}): {np.mean(a0):.3f} of "
             f"users before, {np.mean(a1):.3f} after (per seed " + ", ".join(f"{x:.3f}" for x in a1) +
             ")" + (": much of the new variety is the memorised training answers"
                    if np.mean(a1) > np.mean(a0) + 0.1 else ""))
    L += ["", verdict, ""]
    return L


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gream", default="runs/gream", help="folder of the gream runs full-s{seed}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=256, help="hyperfitting conversations N")
    p.add_argument("--epochs", type=int, default=20, help="most epochs E (paper: 20)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--stop-loss", type=float, default=0.1)
    p.add_argument("--lr-trial", type=float, nargs="*", default=None)
    p.add_argument("--trial-epochs", type=int, default=2)
    p.add_argument("--out", default=None, help="record path (default results/records/hyperfit_recommender/s{seed}.json)")
    p.add_argument("--annotate", nargs="*", default=None,
                   help="add train_answer_items (the same seeded draw) to records written before the field existed")
    p.add_argument("--table-only", nargs="*", default=None, help="write the table from these records")
    args = p.parse_args(argv)
    try:
        if args.table_only is not None:
            text = table(args.table_only or sorted(str(x) for x in RECORDS.glob("*.json")))
            from pbrl.utils import atomic_write_text

            atomic_write_text(str(TABLE), text + "\n")
            print(f"wrote {TABLE}")
        elif args.annotate is not None:
            annotate(args.annotate, args.gream)
        elif args.lr_trial:
            lr_trial(args)
        else:
            from pbrl.utils import atomic_write_json, round_floats

            rec = run_seed(args)
            out = Path(args.out or RECORDS / f"s{args.seed}.json")
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(str(out), round_floats(rec, 6))
            print(f"wrote {out}")
    except PbrlError as e:
        print(f"hyperfit_recommender: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
