"""HFSampler: cached decoding equals a no-cache reference, draws follow softmax(logits / T) and the nucleus, the n
samples share one prefill, seeds reproduce, constraints hold, EOS stops rows, log-probs equal a full forward."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chi2

from pbrl.errors import PbrlError
from pbrl.llm import sampler as sampler_module
from pbrl.llm.models import TinyLMConfig, build_model
from pbrl.llm.sampler import (
    Generation,
    HFSampler,
    SamplingConfig,
    TokenTrie,
    nucleus_mask,
    sampling_logprobs,
)

PROMPTS = [[3, 17, 9], [5, 1, 40, 22, 7, 30, 11], [12], [8, 8, 2, 19, 27]]  # different lengths: left padding


def tiny(vocab: int = 48, dtype: torch.dtype = torch.float64, sharpen: float = 1.0) -> torch.nn.Module:
    """A random tiny LM; ``sharpen`` scales the output head so its logits are far from uniform (a random init's
    are nearly flat, which would make distribution tests weak)."""
    cfg = TinyLMConfig(vocab_size=vocab, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                       intermediate_size=64, tie_embeddings=sharpen == 1.0)
    model = build_model(cfg, dtype=dtype, seed=0).eval()
    if sharpen != 1.0:
        with torch.no_grad():
            model.lm_head.weight.mul_(sharpen)
    return model


@torch.no_grad()
def full_logits(model: torch.nn.Module, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """Next-token logits after every prefix of ``completion`` (no cache, no padding): [len(completion), V]."""
    ids = torch.tensor([prompt + completion])
    out = model(input_ids=ids, use_cache=False).logits[0]
    return out[len(prompt) - 1 : len(prompt) - 1 + len(completion)].to(torch.float64)


@torch.no_grad()
def greedy_no_cache(model: torch.nn.Module, prompts: list[list[int]], steps: int) -> list[list[int]]:
    """Greedy decode that re-runs the whole left-padded batch every step (no KV cache)."""
    seqs = [list(p) for p in prompts]
    for _ in range(steps):
        L = max(len(s) for s in seqs)
        ids = torch.tensor([[0] * (L - len(s)) + s for s in seqs])
        mask = torch.tensor([[0] * (L - len(s)) + [1] * len(s) for s in seqs])
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits[:, -1]
        for s, t in zip(seqs, logits.argmax(-1).tolist()):
            s.append(t)
    return [s[len(p):] for s, p in zip(seqs, prompts)]


def test_greedy_with_cache_equals_no_cache_left_padded():
    model = tiny()
    gen = HFSampler(model).generate(PROMPTS, SamplingConfig(temperature=0, max_new_tokens=12))
    ref = greedy_no_cache(model, PROMPTS, 12)
    assert [g[0] for g in gen.tokens] == ref
    assert all(r == ["length"] for r in gen.finish_reasons)
    # left padding changes nothing: each prompt alone gives the same tokens
    for p, expected in zip(PROMPTS, ref):
        alone = HFSampler(model).generate([p], SamplingConfig(temperature=0, max_new_tokens=12))
        assert alone.tokens[0][0] == expected


def test_a_model_on_a_pbrl_backend_decodes_as_with_hf_attention():
    model = tiny()  # build_model's default backend is pbrl_sdpa
    assert model.config._attn_implementation == "pbrl_sdpa"
    gen = HFSampler(model).generate(PROMPTS, SamplingConfig(temperature=0, max_new_tokens=5))
    model.set_attn_implementation("sdpa")
    assert [g[0] for g in gen.tokens] == greedy_no_cache(model, PROMPTS, 5)


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Pearson statistic over the categories with expected count >= 5 (the rest pooled) and its degrees of
    freedom."""
    n = counts.sum()
    exp = probs * n
    big = exp >= 5
    o = torch.cat([counts[big], counts[~big].sum()[None]])
    e = torch.cat([exp[big], exp[~big].sum()[None]])
    keep = e > 0
    o, e = o[keep], e[keep]
    return float(((o - e) ** 2 / e).sum()), int(keep.sum()) - 1


def first_token_counts(model, prompt: list[int], config: SamplingConfig, vocab: int) -> torch.Tensor:
    gen = HFSampler(model).generate([prompt], config)
    toks = torch.tensor([s[0] for s in gen.tokens[0]])
    return torch.bincount(toks, minlength=vocab).to(torch.float64)


@pytest.mark.parametrize("temperature", [0.7, 1.5])
def test_first_token_follows_softmax_of_logits_over_temperature(temperature):
    vocab, draws = 32, 20000
    model = tiny(vocab, sharpen=20.0)
    prompt = [3, 17, 9]
    z = full_logits(model, prompt, [0])[0]
    assert z.std() > 0.5  # a real test needs a non-uniform distribution
    p = torch.softmax(z / temperature, -1)
    cfg = SamplingConfig(n=draws, temperature=temperature, max_new_tokens=1, seed=7)
    counts = first_token_counts(model, prompt, cfg, vocab)
    stat, dof = chi_square(counts, p)
    # a chi-square test at level 1e-3 (seeded, so deterministic); the wrong temperature must fail it
    assert stat < chi2.ppf(1 - 1e-3, dof)
    wrong, wdof = chi_square(counts, torch.softmax(z / (temperature * 1.3), -1))
    assert wrong > chi2.ppf(1 - 1e-3, wdof)
    # total variation to the true distribution: expected ~ sqrt(V / draws) / 2.5 ~ 0.016
    assert 0.5 * (counts / draws - p).abs().sum() < 0.03


@pytest.mark.parametrize("candidates", [2, 8, 128])
def test_top_p_removes_the_tail_and_renormalises_the_nucleus(candidates, monkeypatch):
    # 2 candidates hold less than top_p (the full-sort path), 8 hold the nucleus (the topk path)
    monkeypatch.setattr(sampler_module, "NUCLEUS_CANDIDATES", candidates)
    vocab, draws, top_p = 32, 20000, 0.6
    model = tiny(vocab, sharpen=20.0)
    prompt = [3, 17, 9]
    p = torch.softmax(full_logits(model, prompt, [0])[0], -1)
    order = p.argsort(descending=True)
    mass_before = p[order].cumsum(0) - p[order]
    nucleus = order[mass_before < top_p]  # smallest top set with mass >= top_p
    assert 2 < len(nucleus) < 8  # a real tail to remove
    q = torch.zeros_like(p)
    q[nucleus] = p[nucleus] / p[nucleus].sum()
    counts = first_token_counts(model, prompt, SamplingConfig(n=draws, top_p=top_p, max_new_tokens=1), vocab)
    outside = torch.ones(vocab, dtype=torch.bool)
    outside[nucleus] = False
    assert counts[outside].sum() == 0
    stat, dof = chi_square(counts[nucleus], q[nucleus])
    assert stat < chi2.ppf(1 - 1e-3, dof)
    # the helper by hand: probs (0.5, 0.3, 0.2) with top_p 0.7 keep the first two, with 0.85 all three
    probs = torch.tensor([[0.3, 0.5, 0.2]])
    assert nucleus_mask(probs, 0.7).tolist() == [[False, False, True]]
    assert nucleus_mask(probs, 0.85).tolist() == [[False, False, False]]
    assert nucleus_mask(probs, 0.1).tolist() == [[True, False, True]]  # True = dropped


class ForwardLog:
    """Records the (batch, sequence) shape of every forward call of a model."""

    def __init__(self, model: torch.nn.Module):
        self.shapes: list[tuple[int, int]] = []
        model.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        self.shapes.append(tuple(kwargs["input_ids"].shape))


def test_n_samples_share_one_prefill_and_greedy_samples_are_identical():
    model = tiny()
    log = ForwardLog(model)
    n, T = 5, 6
    gen = HFSampler(model).generate(PROMPTS, SamplingConfig(n=n, temperature=0, max_new_tokens=T))
    L = max(len(p) for p in PROMPTS)
    assert log.shapes[0] == (len(PROMPTS), L)  # one prefill of the P prompts, not P * n
    assert log.shapes[1:] == [(len(PROMPTS) * n, 1)] * (T - 1)  # then one token per row per step
    ref = greedy_no_cache(model, PROMPTS, T)
    for p in range(len(PROMPTS)):
        assert gen.tokens[p] == [ref[p]] * n
    # sampled, the n samples of a prompt differ (they are independent draws from the shared prefill)
    log.shapes.clear()
    gen = HFSampler(model).generate(PROMPTS, SamplingConfig(n=n, max_new_tokens=T, seed=3))
    assert log.shapes[0] == (len(PROMPTS), L)
    assert all(len({tuple(s) for s in gen.tokens[p]}) > 1 for p in range(len(PROMPTS)))


def test_same_seed_same_output_different_seed_different_output():
    model = tiny()
    sampler = HFSampler(model)
    cfg = SamplingConfig(n=3, temperature=1.0, top_p=0.9, max_new_tokens=10, seed=11)
    a, b = sampler.generate(PROMPTS, cfg), sampler.generate(PROMPTS, cfg)
    assert a.tokens == b.tokens and a.logprobs == b.logprobs
    c = sampler.generate(PROMPTS, SamplingConfig(n=3, temperature=1.0, top_p=0.9, max_new_tokens=10, seed=12))
    assert c.tokens != a.tokens


def test_trie_constraint_only_produces_allowed_sequences():
    model = tiny()
    eos = 47
    allowed = [[4, 9, 9], [4, 2], [30], [4, 9, 1, 6]]
    trie = TokenTrie(allowed)
    cfg = SamplingConfig(n=40, temperature=1.5, max_new_tokens=8, eos_token_id=eos, seed=0)
    gen = HFSampler(model).generate(PROMPTS, cfg, allowed=trie)
    seen = set()
    for per_prompt, reasons in zip(gen.tokens, gen.finish_reasons):
        for seq, why in zip(per_prompt, reasons):
            assert seq[-1] == eos and why == "eos"
            assert seq[:-1] in allowed
            seen.add(tuple(seq[:-1]))
    assert len(seen) == len(allowed)  # every allowed sequence is reachable
    # the trie by hand: children of the root, of [4, 9], and EOS where a sequence ends
    assert sorted(trie.allowed(0, eos)) == [4, 30]
    n49 = trie.step(trie.step(0, 4), 9)
    assert sorted(trie.allowed(n49, eos)) == [1, 9]
    assert trie.allowed(trie.step(0, 30), eos) == [eos]
    with pytest.raises(PbrlError, match="eos_token_id"):
        HFSampler(model).generate(PROMPTS, SamplingConfig(max_new_tokens=4), allowed=trie)


def test_callable_constraint_is_respected_and_sees_its_row_and_history():
    model = tiny()
    n = 3
    calls: list[tuple[int, list[int]]] = []

    def even_then_odd(row: int, so_far: list[int]) -> list[int] | None:
        calls.append((row, so_far))
        if row % n == 0:
            return None  # sample 0 of every prompt is unconstrained
        return list(range(0, 48, 2)) if len(so_far) % 2 == 0 else list(range(1, 48, 2))

    cfg = SamplingConfig(n=n, temperature=1.0, max_new_tokens=6, seed=5)
    gen = HFSampler(model).generate(PROMPTS, cfg, allowed=even_then_odd)
    for per_prompt in gen.tokens:
        for s, seq in enumerate(per_prompt):
            if s > 0:
                assert [t % 2 for t in seq] == [0, 1, 0, 1, 0, 1]
    # the hook got every row at every step, with the row's tokens so far
    assert len(calls) == len(PROMPTS) * n * 6
    for row, so_far in calls:
        p, s = divmod(row, n)
        assert so_far == gen.tokens[p][s][: len(so_far)]
    with pytest.raises(PbrlError, match="no allowed next token"):
        HFSampler(model).generate(PROMPTS, cfg, allowed=lambda r, h: [])


def test_eos_stops_a_row_rest_is_padding_and_logprobs_match_full_forward():
    model = tiny()
    T = 10
    ref = greedy_no_cache(model, PROMPTS, T)
    eos = ref[1][3]  # prompt 1 emits this at step 3 (earlier rows may emit it too: find each first hit)
    cfg = SamplingConfig(temperature=0, max_new_tokens=T, eos_token_id=eos, pad_token_id=0)
    gen = HFSampler(model).generate(PROMPTS, cfg)
    for p, r in enumerate(ref):
        seq, why = gen.tokens[p][0], gen.finish_reasons[p][0]
        if eos in r:
            k = r.index(eos)
            assert seq == r[: k + 1] and why == "eos"
        else:
            assert seq == r and why == "length"
    assert gen.finish_reasons[1] == ["eos"] and len(gen.tokens[1][0]) <= 4
    ids, lps, mask = gen.padded(0)
    assert ids.shape == (len(PROMPTS), 1, max(len(s[0]) for s in gen.tokens))
    assert (ids[~mask] == 0).all() and (lps[~mask] == 0).all()

    # sampled with temperature, nucleus and an EOS, the reported log-probs equal log q from a full forward
    cfg = SamplingConfig(n=4, temperature=0.8, top_p=0.9, max_new_tokens=T, eos_token_id=eos, seed=2)
    gen = HFSampler(model).generate(PROMPTS, cfg)
    assert {"eos", "length"} <= {w for rs in gen.finish_reasons for w in rs}
    for p, prompt in enumerate(PROMPTS):
        for s in range(cfg.n):
            seq = gen.tokens[p][s]
            logq = sampling_logprobs(full_logits(model, prompt, seq), cfg)
            expected = logq.gather(-1, torch.tensor(seq)[:, None]).squeeze(-1)
            torch.testing.assert_close(torch.tensor(gen.logprobs[p][s], dtype=torch.float64), expected, rtol=0, atol=1e-9)
            assert (gen.finish_reasons[p][s] == "eos") == (seq[-1] == eos)
            assert gen.finish_reasons[p][s] == "eos" or len(seq) == T


def test_greedy_logprobs_are_the_models_own():
    model = tiny()
    gen = HFSampler(model).generate(PROMPTS[:2], SamplingConfig(temperature=0, max_new_tokens=5))
    for p in range(2):
        seq = gen.tokens[p][0]
        lp = torch.log_softmax(full_logits(model, PROMPTS[p], seq), -1)
        expected = lp.gather(-1, torch.tensor(seq)[:, None]).squeeze(-1)
        torch.testing.assert_close(torch.tensor(gen.logprobs[p][0], dtype=torch.float64), expected, rtol=0, atol=1e-9)


def test_user_errors():
    model = tiny()
    s = HFSampler(model)
    with pytest.raises(PbrlError, match="prompts"):
        s.generate([], SamplingConfig())
    with pytest.raises(PbrlError, match=r"prompts\[1\]"):
        s.generate([[1], []], SamplingConfig())
    with pytest.raises(PbrlError, match=r"prompts\[0\]"):
        s.generate([[1, 48]], SamplingConfig())
    for bad in (dict(n=0), dict(temperature=-1.0), dict(top_p=0.0), dict(top_p=1.5), dict(max_new_tokens=0)):
        with pytest.raises(PbrlError, match="SamplingConfig"):
            SamplingConfig(**bad)
    with pytest.raises(PbrlError, match="TokenTrie"):
        TokenTrie([[1], []])


def test_generation_padded_by_hand():
    g = Generation(tokens=[[[5, 6], [7]]], logprobs=[[[-0.5, -0.25], [-1.0]]], finish_reasons=[["eos", "length"]])
    ids, lp, mask = g.padded(9)
    assert ids.tolist() == [[[5, 6], [7, 9]]]
    assert lp.tolist() == [[[-0.5, -0.25], [-1.0, 0.0]]]
    assert mask.tolist() == [[[True, True], [True, False]]]
    assert g.num_tokens == 3
