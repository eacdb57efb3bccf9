"""Semantic-ID decoding: the trie and the official position-wise sets, beam search against exhaustive enumeration,
the reasoning mode's answer parsing and sample ranking."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from pbrl.errors import PbrlError
from pbrl.llm.sampler import Generation, HFSampler, SamplingConfig
from pbrl.rec.decoding import (
    IdVocab,
    beam_metrics,
    constrained_beam_search,
    id_trie,
    invalid_rate,
    level_sets_allowed,
    parse_answer,
    rank_samples,
    ranked_items,
    reasoning_recommend,
    target_rank,
)
from pbrl.rec.semantic_ids import SemanticIds, add_id_tokens

torch.set_num_threads(1)


def tiny(codes, dedup, k, users=8, seed=0):
    """(ids, tokenizer, random tiny model, prompts): prompts are `<bos> u<i>`."""
    from pbrl.llm.models import TinyLMConfig, build_model
    from pbrl.llm.tokenizer import word_tokenizer

    ids = SemanticIds(codes=np.array(codes), dedup=np.array(dedup), k=k)
    tok = word_tokenizer([" ".join(f"u{i}" for i in range(users))])
    add_id_tokens(tok, ids)
    model = build_model(TinyLMConfig(vocab_size=len(tok), hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                     intermediate_size=64), seed=seed).eval()
    prompts = [tok(f"u{i}")["input_ids"] for i in range(users)]
    return ids, tok, model, prompts


def catalog(n=12, levels=2, k=4, seed=0):
    """n distinct random codes of `levels` x `k` (no collisions: dedup 0)."""
    rng = np.random.default_rng(seed)
    every = list(itertools.product(range(1, k + 1), repeat=levels))
    pick = rng.choice(len(every), size=n, replace=False)
    return [list(every[i]) for i in pick]


def brute_logprob(model, prompt, seq) -> float:
    """Summed log softmax of `seq` after `prompt` from one full forward pass."""
    x = torch.tensor([list(prompt) + list(seq)])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=x).logits[0].double(), -1)
    n = len(prompt)
    return float(sum(lp[n - 1 + t, v] for t, v in enumerate(seq)))


def test_id_vocab_maps_items_both_ways_and_refuses_a_tokenizer_without_the_ids():
    ids, tok, _, _ = tiny([[1, 2], [1, 2], [3, 1]], [1, 2, 0], k=3)
    vocab = IdVocab(ids, tok)
    assert len(vocab) == 3 and vocab.levels == 2
    assert [len(s) for s in vocab.items] == [3, 3, 2]  # the colliding pair carries a dedup token
    for i, seq in enumerate(vocab.items):
        assert vocab.item(seq) == i
        assert tok.convert_ids_to_tokens(list(seq)) == ids.item_tokens(i)
    assert vocab.item(vocab.items[0][:2]) is None  # a colliding code without its dedup token names no item
    assert len(vocab.dedup_ids) == 2 and all(len(lv) == 3 for lv in vocab.level_ids)
    eos = tok.eos_token_id
    assert vocab.parse_direct(list(vocab.items[2]) + [eos], eos) == (True, list(vocab.items[2]))
    assert vocab.parse_direct(list(vocab.items[2]), eos)[0] is False  # no EOS
    assert vocab.parse_direct([vocab.items[2][0], eos], eos)[0] is False  # too short
    from pbrl.llm.tokenizer import word_tokenizer

    with pytest.raises(PbrlError, match="has no token '<\\|a_1\\|>'"):
        IdVocab(ids, word_tokenizer(["u0"]))


def test_trie_sampling_never_emits_an_invalid_id_from_a_random_model():
    codes = catalog(n=20, levels=3, k=4, seed=1)
    codes += [codes[0], codes[0]]  # a collision group of three: two more need dedup tokens
    dedup = [0] * 20 + [2, 3]
    dedup[0] = 1
    ids, tok, model, prompts = tiny(codes, dedup, k=4, users=30)
    vocab = IdVocab(ids, tok)
    eos = tok.eos_token_id
    gen = HFSampler(model).generate(prompts, SamplingConfig(n=10, temperature=1.5, max_new_tokens=6,
                                                            eos_token_id=eos, seed=3), allowed=id_trie(ids, tok))
    outs = [y for per in gen.tokens for y in per]
    assert len(outs) == 300
    assert all(y[-1] == eos and vocab.item(y[:-1]) is not None for y in outs)
    assert len({vocab.item(y[:-1]) for y in outs}) > 10  # a hot random model spreads over the catalog
    beams = constrained_beam_search(model, prompts, id_trie(ids, tok), vocab=vocab, eos_token_id=eos, num_beams=10)
    assert invalid_rate(beams) == 0.0
    assert all(len(per) == 10 for per in beams)


def test_level_sets_emit_non_existent_ids_on_a_constructed_catalog():
    # two items on the diagonal of a 2 x 2 code grid: the sets allow all four combinations
    ids, tok, model, prompts = tiny([[1, 1], [2, 2]], [0, 0], k=2, users=20)
    vocab = IdVocab(ids, tok)
    eos = tok.eos_token_id
    allowed = level_sets_allowed(ids, tok, eos)
    assert allowed(0, []) == vocab.level_ids[0] and allowed(0, [5]) == vocab.level_ids[1]
    assert allowed(0, [5, 6]) == [eos]  # no dedup tokens in this catalog: only EOS after level L
    gen = HFSampler(model).generate(prompts, SamplingConfig(n=10, temperature=1.0, max_new_tokens=4,
                                                            eos_token_id=eos, seed=0), allowed=allowed)
    outs = [y for per in gen.tokens for y in per]
    for y in outs:  # every output obeys the position-wise sets
        assert y[0] in vocab.level_ids[0] and y[1] in vocab.level_ids[1] and y[2] == eos
    bad = sum(vocab.item(y[:-1]) is None for y in outs)
    assert 0 < bad < len(outs)
    # beam search over the 4 combinations returns all of them: exactly half name no item
    beams = constrained_beam_search(model, prompts[:3], allowed, vocab=vocab, eos_token_id=eos, num_beams=4)
    assert all(len(per) == 4 for per in beams)
    assert invalid_rate(beams) == 0.5
    assert invalid_rate(constrained_beam_search(model, prompts[:3], id_trie(ids, tok), vocab=vocab,
                                                eos_token_id=eos, num_beams=4)) == 0.0


def test_level_sets_allow_dedup_then_only_eos():
    ids, tok, _, _ = tiny([[1, 2], [1, 2], [2, 1]], [1, 2, 0], k=2)
    vocab = IdVocab(ids, tok)
    eos = tok.eos_token_id
    allowed = level_sets_allowed(ids, tok, eos)
    assert allowed(3, [0, 0]) == vocab.dedup_ids + [eos]
    assert allowed(3, [0, 0, 0]) == [eos]


def test_beam_search_equals_exhaustive_enumeration_and_is_ranked_and_unique():
    codes = catalog(n=12, levels=2, k=4, seed=2)
    ids, tok, model, prompts = tiny(codes, [0] * 12, k=4, users=3, seed=5)
    vocab = IdVocab(ids, tok)
    eos = tok.eos_token_id
    prompts = [prompts[0], prompts[1] + prompts[2][1:], prompts[2]]  # different lengths: left padding in the batch
    # as many beams as items: beam search keeps every prefix, so it must return the whole catalog, exactly scored
    beams = constrained_beam_search(model, prompts, id_trie(ids, tok), vocab=vocab, eos_token_id=eos, num_beams=12)
    for p, per in zip(prompts, beams):
        assert sorted(b.item for b in per) == list(range(12))
        ref = {i: brute_logprob(model, p, list(vocab.items[i]) + [eos]) for i in range(12)}
        for b in per:
            assert b.tokens == vocab.items[b.item] + (eos,)
            assert b.logprob == pytest.approx(ref[b.item], abs=1e-4)
        assert [b.logprob for b in per] == sorted((b.logprob for b in per), reverse=True)
        assert per[0].item == max(ref, key=ref.get)
    # fewer beams: unique, ranked, scored, and the same for a prompt alone as in the batch
    few = constrained_beam_search(model, prompts, id_trie(ids, tok), vocab=vocab, eos_token_id=eos, num_beams=5,
                                  batch_size=2)
    for p, per in zip(prompts, few):
        assert len(per) == 5 and len({b.tokens for b in per}) == 5
        assert [b.logprob for b in per] == sorted((b.logprob for b in per), reverse=True)
        for b in per:
            assert b.logprob == pytest.approx(brute_logprob(model, p, b.tokens), abs=1e-4)
    alone = constrained_beam_search(model, [prompts[1]], id_trie(ids, tok), vocab=vocab, eos_token_id=eos,
                                    num_beams=5)
    assert [b.item for b in alone[0]] == [b.item for b in few[1]]


def test_beam_search_with_fewer_ids_than_beams_returns_only_real_beams():
    ids, tok, model, prompts = tiny([[1, 1], [2, 2], [1, 2]], [0, 0, 0], k=2, users=2)
    vocab = IdVocab(ids, tok)
    beams = constrained_beam_search(model, prompts, id_trie(ids, tok), vocab=vocab, eos_token_id=tok.eos_token_id,
                                    num_beams=10)
    assert [sorted(b.item for b in per) for per in beams] == [[0, 1, 2], [0, 1, 2]]


def test_unconstrained_beams_and_the_ranking_helpers():
    ids, tok, model, prompts = tiny([[1, 1], [2, 2]], [0, 0], k=2, users=2)
    vocab = IdVocab(ids, tok)
    beams = constrained_beam_search(model, prompts, None, vocab=vocab, eos_token_id=tok.eos_token_id, num_beams=3,
                                    max_new_tokens=3)
    assert all(len(per) == 3 and len({b.tokens for b in per}) == 3 for per in beams)
    assert invalid_rate(beams) > 0  # a random model rarely writes a whole ID unconstrained
    from pbrl.rec.decoding import Beam

    per = [Beam((1,), None, -0.5), Beam((2,), 4, -1.0), Beam((3,), 7, -2.0)]
    assert ranked_items(per) == [4, 7] and ranked_items(per, filter_invalid=False) == [None, 4, 7]
    assert target_rank([4, 7], 7) == 1 and target_rank([4, 7], 9) is None
    # metrics: prompt 1 finds its target at rank 1 of the filtered list, prompt 2 misses (2 items < K = 5 but a miss)
    m = beam_metrics([per, per], [7, 9], ks=(1, 5))
    assert m["rec/recall@1"] == 0.0 and m["rec/recall@5"] == 0.5
    assert m["rec/ndcg@5"] == pytest.approx(0.5 / math.log2(3))
    assert m["rec/invalid_rate"] == pytest.approx(1 / 3) and m["rec/invalid_top1"] == 1.0
    assert beam_metrics([per], [4], ks=(1,), filter_invalid=False)["rec/recall@1"] == 0.0  # None keeps slot 0
    assert invalid_rate([per], top=1) == 1.0 and invalid_rate([per]) == pytest.approx(1 / 3)
    with pytest.raises(PbrlError, match="num_beams"):
        constrained_beam_search(model, prompts, None, vocab=vocab, eos_token_id=tok.eos_token_id, num_beams=0)


def test_parse_answer_formats():
    assert parse_answer("<think>likes a</think><answer><|a_3|><|b_1|><|c_7|></answer>") == \
        ["<|a_3|>", "<|b_1|>", "<|c_7|>"]
    assert parse_answer("  <think>\nmulti\nline</think>\n<answer> <|a_3|><|b_1|><|d_2|> </answer>\n") == \
        ["<|a_3|>", "<|b_1|>", "<|d_2|>"]
    assert parse_answer("<answer><|a_3|></answer>") is None  # no think block
    assert parse_answer("<think>x</think>") is None  # no answer
    assert parse_answer("<think>x</think><answer>item 3</answer>") is None  # not ID tokens
    assert parse_answer("<think>x</think><answer><|a_3|> and <|b_1|></answer>") is None
    assert parse_answer("<think>x</think><answer><|a_3|></answer> trailing") is None
    assert parse_answer("<think>x</think><answer></answer>") is None


def test_rank_samples_by_total_logprob():
    # samples: items 5, None, 2, 5 (a better sample of 5), 9; total log-probs, reasoning tokens included
    ranked = rank_samples([5, None, 2, 5, 9], [-10.0, -1.0, -4.0, -3.0, -4.0])
    assert ranked == [(5, -3.0), (2, -4.0), (9, -4.0)]  # ties broken by item index
    with pytest.raises(PbrlError, match="log-probs"):
        rank_samples([1], [])


def test_reasoning_recommend_interface():
    ids, tok, _, _ = tiny([[1, 2], [2, 1]], [0, 0], k=2)
    tok.add_tokens(["<think>", "</think>", "<answer>", "</answer>"], special_tokens=True)
    eos = tok.eos_token_id

    def enc(text):
        return tok(text, add_special_tokens=False)["input_ids"] + [eos]

    samples = [enc("<think>u1</think><answer><|a_2|><|b_1|></answer>"),
               enc("<think>u2 u3</think><answer><|a_1|><|b_2|></answer>"),
               enc("<answer><|a_1|><|b_2|></answer>"),  # no think block: invalid
               enc("<think>u1</think><answer><|a_1|><|b_1|></answer>")]  # not an item
    lps = [[-1.0] * 3, [-0.5] * 4, [-0.1], [-0.2]]

    class FixedSampler:
        def generate(self, prompts, config, allowed=None):
            assert config.n == 4 and config.temperature == 0.7 and allowed is None
            return Generation([samples], [lps], [["eos"] * 4])

    ranked, bad = reasoning_recommend(FixedSampler(), [[1]], tok, ids, n=4, eos_token_id=eos)
    assert ranked == [[(0, -2.0), (1, -3.0)]]  # item 0 = <|a_1|><|b_2|> (-0.5 x 4), item 1 (-1 x 3)
    assert bad == 0.5


def test_beam_search_equals_hf_generate_where_hf_stays_valid():
    """HF's beam search with prefix_allowed_tokens_fn (length_penalty 0: summed log-probs) as the reference on a
    catalog with more IDs than beams."""
    from transformers import GenerationConfig

    ids, tok, model, _ = tiny(catalog(n=12, levels=2, k=4, seed=0), [0] * 12, k=4, users=3)
    vocab, eos, trie = IdVocab(ids, tok), tok.eos_token_id, id_trie(ids, tok)
    tok.padding_side = "left"
    enc = tok(["u0", "u1 u2", "u2"], return_tensors="pt", padding=True)
    L = enc["input_ids"].shape[1]

    def fn(batch_id, input_ids):
        node = 0
        for t in input_ids[L:].tolist():
            if t == eos:
                return [eos]
            node = trie.step(node, t)
        return trie.allowed(node, eos)

    gc = GenerationConfig(num_beams=6, num_return_sequences=6, max_new_tokens=3, do_sample=False, eos_token_id=eos,
                          pad_token_id=tok.pad_token_id, length_penalty=0.0, early_stopping=True,
                          output_scores=True, return_dict_in_generate=True)
    out = model.generate(**enc, generation_config=gc, prefix_allowed_tokens_fn=fn)
    prompts = [enc["input_ids"][i][enc["attention_mask"][i].bool()].tolist() for i in range(3)]
    mine = constrained_beam_search(model, prompts, trie, vocab=vocab, eos_token_id=eos, num_beams=6)
    seqs, scores = out.sequences[:, L:].tolist(), out.sequences_scores.tolist()
    for p in range(3):
        hf = [vocab.item(seqs[p * 6 + b][: seqs[p * 6 + b].index(eos)]) for b in range(6)]
        assert hf == [b.item for b in mine[p]]
        assert scores[p * 6: p * 6 + 6] == pytest.approx([b.logprob for b in mine[p]], abs=1e-5)
