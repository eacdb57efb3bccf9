"""`pbrl rec gream` end to end on a synthetic log: every stage runs, the metrics are the beams' own, a second call
skips every finished stage, and a stage run with other settings is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pbrl.errors import PbrlError
from pbrl.rec.gream import GreamConfig, RecGream, eval_sample, run_gream

torch.set_num_threads(1)

GENRES = ["Drama", "Comedy", "Action", "Horror"]


def synthetic_log(tmp_path, items=24, users=12, length=8, seed=0):
    """A RecBole atomic folder: `items` items with title/year/genre texts, `users` users walking the catalog in
    steps of 1 from a random start (so the next item is predictable from the last)."""
    rng = np.random.default_rng(seed)
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "toy.item").write_text("item_id:token\ttitle:token_seq\trelease_year:token\tclass:token_seq\n" + "".join(
        f"{i}\tMovie {i}\t{1990 + i % 7}\t{GENRES[i % 4]}\n" for i in range(items)))
    rows = []
    for u in range(users):
        start = int(rng.integers(items))
        rows += [(u, (start + t) % items, t) for t in range(length)]
    (folder / "toy.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + "".join(
        f"{u}\t{i}\t{t}\n" for u, i, t in rows))
    return folder


def cached_embeddings(log_folder, cache_dir, model="toy-embedder", dim=16):
    """Random unit embeddings written where `embed_texts` looks first, so no sentence model is loaded."""
    from pbrl.rec.movielens import load_log
    from pbrl.rec.semantic_ids import embedding_cache_path

    log = load_log(str(log_folder))
    emb = np.random.default_rng(1).normal(size=(log.num_items, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    path = embedding_cache_path(log.item_texts, model, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, emb)
    return log


def small_config(tmp_path, log_folder, **over):
    base = dict(out=str(tmp_path / "run"), log=str(log_folder), levels=2, k=4, embed_model="toy-embedder",
                cache_dir=str(tmp_path / "cache"), vocab_size=300, hidden_size=32, num_layers=1, num_heads=2,
                num_kv_heads=1, intermediate_size=64, sft_epochs=1, sft_batch_size=8, sft_warmup_steps=1,
                max_length=192, rl=("srpo", "grpo"), rl_steps=3, prompts_per_step=2, rollouts=4, eval_users=6,
                num_beams=3, eval_batch_size=4, threads=1, progress=False)
    base.update(over)
    return GreamConfig(**base)


def test_every_stage_runs_and_a_second_call_skips_them(tmp_path, capsys):
    from pbrl.llm.models import load_model
    from pbrl.llm.tokenizer import end_of_turn_id, load_tokenizer
    from pbrl.rec.decoding import IdVocab, constrained_beam_search, id_trie
    from pbrl.rec.gream import _load, eval_prompts
    from pbrl.rec.semantic_ids import SemanticIds

    folder = synthetic_log(tmp_path)
    cached_embeddings(folder, tmp_path / "cache")
    cfg = small_config(tmp_path, folder)
    summary = run_gream(cfg)
    first = capsys.readouterr().out
    out = tmp_path / "run"
    for stage in ("ids", "align", "sft", "srpo", "grpo"):
        assert (out / stage / "stage.json").is_file(), stage
        assert f"[{stage}] " in first and f"[{stage}] done already" not in first
    assert set(summary["eval"]) == {f"{m}-{d}" for m in ("sft", "srpo", "grpo") for d in ("trie", "levels")}
    assert json.loads((out / "summary.json").read_text())["eval"] == summary["eval"]
    ids = SemanticIds.load(out / "ids")
    assert ids.levels == 2 and ids.k == 4 and ids.num_items == 24
    assert summary["stages"]["srpo"]["steps"] == 3 and summary["stages"]["grpo"]["steps"] == 3
    for name, m in summary["eval"].items():
        assert m["users"] == 6
        assert 0 <= m["rec/recall@1"] <= m["rec/recall@5"] <= m["rec/recall@10"] <= 1
        if name.endswith("-trie"):
            assert m["rec/invalid_rate"] == 0.0  # a trie emits only existing IDs

    # the trie metrics are those of the beams themselves, recomputed here by hand
    model_dir = out / "srpo" / "model"
    model, tok = load_model(model_dir).eval(), load_tokenizer(model_dir)
    _, split = _load(cfg)
    users = eval_sample(len(split.test_targets), 6)
    prompts, targets = eval_prompts(split, ids, tok, 20, users)
    beams = constrained_beam_search(model, prompts, id_trie(ids, tok), vocab=IdVocab(ids, tok),
                                    eos_token_id=end_of_turn_id(tok), num_beams=3, pad_token_id=tok.pad_token_id)
    hits = [next((r for r, b in enumerate(per) if b.item == t), None) for per, t in zip(beams, targets)]
    recall1 = np.mean([h == 0 for h in hits])
    ndcg5 = np.mean([0.0 if h is None else 1 / np.log2(h + 2) for h in hits])
    assert summary["eval"]["srpo-trie"]["rec/recall@1"] == pytest.approx(recall1)
    assert summary["eval"]["srpo-trie"]["rec/ndcg@5"] == pytest.approx(ndcg5)

    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "summary.json"}
    again = run_gream(cfg)
    second = capsys.readouterr().out
    for stage in ("ids", "align", "sft", "srpo", "grpo", "eval/sft-trie", "eval/grpo-levels"):
        assert f"[{stage}] done already" in second, stage
    assert again["eval"] == summary["eval"]
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # nothing rewritten

    # a changed RL setting is refused at that stage, naming the setting
    with pytest.raises(PbrlError, match=r"the srpo stage was run with other settings \(rl_lr\)"):
        run_gream(small_config(tmp_path, folder, rl_lr=5e-4))


def test_command_and_bad_input(tmp_path, capsys):
    folder = synthetic_log(tmp_path)
    cached_embeddings(folder, tmp_path / "cache")
    # no RL stage, one decoding: the SFT model alone is evaluated
    res = RecGream(**vars(small_config(tmp_path, folder, rl=(), decodings=("levels",)))).run()
    assert set(res["eval"]) == {"sft-levels"}
    assert not (tmp_path / "run" / "srpo").exists()
    with pytest.raises(PbrlError, match="ID budget too small"):
        run_gream(small_config(tmp_path, folder, out=str(tmp_path / "b"), levels=1, k=4, max_dedup=2))
    with pytest.raises(PbrlError, match="rl: expected distinct"):
        run_gream(small_config(tmp_path, folder, rl=("srpo", "srpo")))
    with pytest.raises(PbrlError, match="tasks: seqrec is needed"):
        run_gream(small_config(tmp_path, folder, tasks=("item2index",)))
    (tmp_path / "file").write_text("x")
    with pytest.raises(PbrlError, match="exists and is not a folder"):
        run_gream(small_config(tmp_path, folder, out=str(tmp_path / "file")))


def test_eval_sample_is_seeded_and_sorted():
    a, b = eval_sample(100, 10), eval_sample(100, 10)
    assert np.array_equal(a, b) and np.all(np.diff(a) > 0) and len(a) == 10
    assert np.array_equal(eval_sample(5, 10), np.arange(5)) and np.array_equal(eval_sample(5, None), np.arange(5))


def test_gream_llm_table_from_records(tmp_path):
    """baselines/gream_llm.py's table: mean ± std over the seeds' records, readings computed per seed."""
    import copy

    from baselines.gream_llm import write_table

    folder = synthetic_log(tmp_path)
    cached_embeddings(folder, tmp_path / "cache")
    cfg = small_config(tmp_path, folder, rl=("srpo",), decodings=("trie",), rl_steps=1)
    summary = run_gream(cfg)
    base = {"table": "gream_llm", "budget": "test", "config": vars(cfg), "device": "cpu", "platform": "x",
            "cores": 2, "load_start": 1.0, "load_end": 3.0,
            "popularity_same_users": {f"rec/{m}": 0.1 for m in ("recall@1", "recall@5", "recall@10", "ndcg@5",
                                                                  "ndcg@10")}}
    recs = []
    for seed, (sft, srpo) in enumerate([(0.2, 0.1), (0.4, 0.3)]):
        s = copy.deepcopy(summary)
        s["load_average"] = [2.0, 2.0, 2.0]  # the run's real load would make the load line depend on the machine
        s["eval"]["sft-trie"]["rec/ndcg@10"] = sft
        s["eval"]["srpo-trie"]["rec/ndcg@10"] = srpo
        recs.append({**base, "seed": seed, "summary": s})
    text = open(write_table(recs, str(tmp_path), "out")).read()
    rows = {line.split(" | ")[0] + " | " + line.split(" | ")[1]: line.split(" | ") for line in text.splitlines()
            if line.startswith("| LLM") or line.startswith("| +")}
    assert rows["| LLM after alignment SFT | trie"][2] == "0, 1"
    assert rows["| LLM after alignment SFT | trie"][7] == "0.3000 ± 0.1000"  # mean and population std of 0.2, 0.4
    assert rows["| +SRPO (RSVR + BGAE) | trie"][7] == "0.2000 ± 0.1000"
    assert "| +binary GRPO | per-level sets | — | not run" in text
    assert "SRPO - SFT (trie), NDCG@10 per seed: -0.1000, -0.1000 (mean -0.1000; lower in every seed)" in text
    assert "NDCG@10 +0.2000 (2 of 2 seeds above)" in text  # SFT vs popularity's 0.1
    assert "load average at run starts and ends): 1.0 to " in text and " on 2 cores" in text


def test_rec_gream_parses_through_tyro():
    import tyro

    c = tyro.cli(RecGream, args=["--out", "x", "--rl", "srpo", "--decodings", "trie", "--eval-users", "50"])
    assert c.rl == ("srpo",) and c.decodings == ("trie",) and c.eval_users == 50 and c.out == "x"
    assert tyro.cli(RecGream, args=["--out", "x", "--rl"]).rl == ()
