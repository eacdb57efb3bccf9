"""Any HF causal LM from a local folder: tiny Llama, Qwen2, GPT-2, GPT-NeoX, Phi, Gemma, Gemma 2 and Gemma 3 models
(a few tens of K parameters, pbrl's trained chat BPE tokenizer) are saved with ``save_pretrained`` and loaded through
``pbrl.llm.models.load_model``; for each: packed SFT (varlen, document masking) gives the per-example loss and
gradients of the model's own HF forward, one `train_sft` step from the folder starts at that loss, the KV-cache
greedy sampler equals a no-cache greedy decode, and one `train_dpo` step (prefix sharing + packing) starts from
reference log-probs equal to the HF per-pair ones. Models whose attention pbrl's kernels do not implement
(soft-capped scores, a sliding window shorter than the rows) are refused with one line."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from pbrl.errors import PbrlError
from pbrl.llm.attention import model_branch_logps
from pbrl.llm.dpo import DpoConfig, train_dpo
from pbrl.llm.models import load_model
from pbrl.llm.prefix_sharing import IGNORE, build_batch
from pbrl.llm.prefs_data import load_preferences, tokenize_records
from pbrl.llm.sampler import HFSampler, SamplingConfig
from pbrl.llm.sft import SftConfig, SftExample, encode_chats, example_nll, read_chats, sft_batch, train_sft
from pbrl.llm.tokenizer import bpe_tokenizer, end_of_turn_id

TEXTS = ["sort the list 3 1 2 into 1 2 3", "count the words in this line please", "write a short poem about the sea",
         "add two and three to get five", "reverse the letters a b c", "name a colour: blue, then dark green"]
ROPE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128)


def _configs(vocab: dict) -> dict:
    import transformers as T

    gemma = dict(ROPE, num_key_value_heads=1, head_dim=8)
    return {  # one config per family; each covers something the others do not
        "llama": T.LlamaConfig(**ROPE, num_key_value_heads=2, **vocab),  # grouped-query attention, untied head
        "qwen2": T.Qwen2Config(**ROPE, num_key_value_heads=2, tie_word_embeddings=True, **vocab),  # qkv bias, tied
        "gpt2": T.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, resid_pdrop=0.0, embd_pdrop=0.0,
                             attn_pdrop=0.0, **vocab),  # learned absolute positions, tied, no RoPE
        "gpt_neox": T.GPTNeoXConfig(**ROPE, **vocab),  # partial rotary (25%), parallel residual
        "phi": T.PhiConfig(**ROPE, **vocab),  # partial rotary (50%), parallel attention/MLP
        "gemma": T.GemmaConfig(**gemma, **vocab),  # multi-query, scaled embeddings, (1 + w) RMSNorm, tied
        # Gemma 2 with final-logit soft-capping (at 2, not its 30, so that it moves these small logits) but no
        # attention soft-capping (refused, see below)
        "gemma2": T.Gemma2Config(**gemma, attn_logit_softcapping=None, final_logit_softcapping=2.0, **vocab),
        "gemma3": T.Gemma3TextConfig(**gemma, **vocab),  # sliding-window layers (window 4096 > these rows), q/k norms
    }


FAMILIES = ("llama", "qwen2", "gpt2", "gpt_neox", "phi", "gemma", "gemma2", "gemma3")
# Gemma's RMSNorm computes in float32 whatever the parameter dtype (HF's `x.float()`; Gemma 2's eager attention
# takes its softmax in float32 too), so two float64 forwards that round differently agree to float32 precision
# there; the other families agree to float64 rounding
FLOAT32_NORMS = ("gemma", "gemma2", "gemma3")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("families")
    tok = bpe_tokenizer(TEXTS * 10, 300, chat=True)
    vocab = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                 pad_token_id=tok.pad_token_id)
    out = {}
    for name, cfg in _configs(vocab).items():
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(cfg).save_pretrained(root / name)
        tok.save_pretrained(root / name)
        out[name] = root / name
    chats = root / "sft.jsonl"
    chats.write_text("".join(json.dumps({"messages": [{"role": "user", "content": TEXTS[i]},
                                                      {"role": "assistant", "content": TEXTS[(i + 1) % 6]}]}) + "\n"
                             for i in range(6)), encoding="utf-8")
    prefs = root / "prefs.jsonl"
    prefs.write_text("".join(json.dumps({"prompt": TEXTS[i], "chosen": TEXTS[(i + 1) % 6],
                                         "rejected": TEXTS[(i + 3) % 6][::-1]}) + "\n" for i in range(4)))
    return {"models": out, "tok": tok, "chats": chats, "prefs": prefs}


def _reference(path):
    """The model's own HF forward, the reference every check compares with: HF's sdpa attention (its eager one
    takes the softmax in float32), eager for Gemma 2, which HF does not run on sdpa."""
    from transformers import AutoModelForCausalLM

    impl = "eager" if path.name == "gemma2" else "sdpa"
    return AutoModelForCausalLM.from_pretrained(path, local_files_only=True, attn_implementation=impl,
                                                dtype=torch.float64)


def _nll(model, examples) -> torch.Tensor:
    """Sum over examples of the trained tokens' NLL, each example alone through the full HF forward."""
    total = 0.0
    for e in examples:
        x = torch.tensor(e.ids)[None]
        labels = torch.where(torch.tensor(e.mask, dtype=torch.bool), x, IGNORE)[0]
        total = total + F.cross_entropy(model(input_ids=x).logits[0, :-1], labels[1:], reduction="sum",
                                        ignore_index=IGNORE)
    return total


def _tol(family: str) -> dict:
    """Gradient tolerance."""
    return dict(rtol=1e-5, atol=1e-7) if family in FLOAT32_NORMS else dict(rtol=0, atol=1e-11)


def _rel(family: str) -> float:
    """Relative tolerance of a loss or a log-prob sum."""
    return 1e-8 if family in FLOAT32_NORMS else 1e-12


_MODELS: dict = {}


def _models(folders, family: str):
    """(the model as pbrl's loader gives it, varlen backend; the HF reference), float64, loaded once per module."""
    if family not in _MODELS:
        path = folders["models"][family]
        _MODELS[family] = (load_model(path, backend="varlen", dtype=torch.float64), _reference(path))
    return _MODELS[family]


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_sft_loss_and_grads_equal_per_example(folders, family):
    model, ref_model = _models(folders, family)
    model.zero_grad(set_to_none=True)
    ref_model.zero_grad(set_to_none=True)
    g = torch.Generator().manual_seed(1)
    examples = []
    for n in (9, 3, 14, 6, 11):
        ids = torch.randint(0, len(folders["tok"]), (n,), generator=g).tolist()
        examples.append(SftExample(ids, [0] + (torch.rand(n - 1, generator=g) < 0.6).long().tolist()))
    n_trained = sum(e.num_trained for e in examples)
    ref = _nll(ref_model, examples) / n_trained
    ref.backward()
    batch = sft_batch(examples, "packed", pack_length=20)
    assert batch.input_ids.shape[0] < len(examples)  # documents share rows: positions restart, no cross-attention
    loss = example_nll(model, batch).sum() / n_trained
    loss.backward()
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=_rel(family))
    grads = dict(ref_model.named_parameters())
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[k].grad, **_tol(family), msg=lambda m, k=k: f"{family} {k}: {m}")


def _pair_logps(model, pairs) -> list[list[float]]:
    """(chosen, rejected) log-prob sums of each pair, each response after its prompt through the full forward."""
    out = []
    with torch.no_grad():
        for pr in pairs:
            row = []
            for resp in (pr.chosen, pr.rejected):
                logp = torch.log_softmax(model(input_ids=torch.tensor(pr.prompt + resp)[None]).logits[0], -1)
                row.append(sum(float(logp[len(pr.prompt) - 1 + j, t]) for j, t in enumerate(resp)))
            out.append(row)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_prefix_shared_dpo_logps_equal_per_pair(folders, family):
    model, ref_model = _models(folders, family)
    pairs = tokenize_records(load_preferences(folders["prefs"]), folders["tok"])
    batch = build_batch(pairs, "packed_shared", pack_length=160)  # one prompt, both responses, several pairs a row
    assert batch.input_ids.shape[0] < len(pairs)
    with torch.no_grad():
        got = model_branch_logps(model, batch)
    want = torch.tensor(_pair_logps(ref_model, pairs), dtype=got.dtype)
    torch.testing.assert_close(got, want, rtol=_rel(family), atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_sampler_equals_no_cache_decode(folders, family):
    tok = folders["tok"]
    model, ref_model = _models(folders, family)  # pbrl's model as the trainers load it
    prompts = [tok(TEXTS[0])["input_ids"], tok(TEXTS[4])["input_ids"][:4]]  # lengths differ: left padding
    assert len(prompts[0]) != len(prompts[1])
    steps = 6
    gen = HFSampler(model).generate(prompts, SamplingConfig(n=2, temperature=0, max_new_tokens=steps))
    with torch.no_grad():
        for p, got, got_lp in zip(prompts, gen.tokens, gen.logprobs):
            seq, lps = list(p), []
            for _ in range(steps):  # the whole sequence again at every step, no cache
                logp = torch.log_softmax(ref_model(input_ids=torch.tensor(seq)[None]).logits[0, -1], -1)
                seq.append(int(logp.argmax()))
                lps.append(float(logp.max()))
            assert got == [seq[len(p):]] * 2, family
            assert got_lp[0] == pytest.approx(lps, abs=1e-7 if family in FLOAT32_NORMS else 1e-10)


# the trainers from the folder: two families by default (Qwen2's folder once made its tokenizer load as Qwen2's
# own class, which splits text otherwise), every family with -m slow
@pytest.mark.parametrize("family", [f if f in ("llama", "qwen2") else pytest.param(f, marks=pytest.mark.slow)
                                    for f in FAMILIES])
def test_trainers_take_a_step_from_the_folder(folders, family, tmp_path):
    path = folders["models"][family]
    _, ref_model = _models(folders, family)
    # SFT, the whole data set in one step, so the step's loss (taken before the update) is the HF per-example loss
    # of every conversation, tokenized by the tokenizer loaded from the folder
    cfg = SftConfig(data=str(folders["chats"]), out=str(tmp_path / "sft"), model_path=str(path), batch_size=6,
                    steps=1, max_length=64, layout="packed", backend="varlen", dtype="float64", progress=False)
    res = train_sft(cfg)
    chats, _ = encode_chats(folders["tok"], read_chats(cfg.data), max_length=64)
    with torch.no_grad():
        want = float(_nll(ref_model, chats)) / sum(e.num_trained for e in chats)
    assert res["history"][0]["sft/loss"] == pytest.approx(want, rel=_rel(family))
    saved = load_model(tmp_path / "sft" / "model", backend="varlen")
    assert res["done"] and saved.config.model_type == ref_model.config.model_type

    # DPO (prefix sharing + packing; the tokenizer is the folder's, not one trained on the records): the reference
    # log-probs of the initial policy are the HF per-pair ones
    cfg = DpoConfig(data=str(folders["prefs"]), out=str(tmp_path / "dpo"), model_path=str(path),
                    layout="packed_shared", backend="varlen", dtype="float64", batch_size=4, max_steps=1,
                    progress=False)
    res = train_dpo(cfg)
    pairs = tokenize_records(load_preferences(folders["prefs"]), folders["tok"])
    got = torch.load(tmp_path / "dpo" / "ref_logps.pt", weights_only=True)  # stored in float32
    torch.testing.assert_close(got.double(), torch.tensor(_pair_logps(ref_model, pairs), dtype=torch.float64),
                               rtol=1e-6, atol=1e-5)
    # at the first step the policy is the reference: every margin is 0 and the loss log 2 (up to the float32
    # rounding of the stored reference log-probs)
    assert res["history"][0]["dpo/loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert (tmp_path / "dpo" / "model" / "config.json").is_file()


def test_unsupported_attention_is_one_error_line(folders, tmp_path):
    """Gemma 2's default attention soft-capping and a sliding window shorter than the rows would give other
    numbers silently: the first is refused as the model loads (nothing written), the second at the first forward
    whose rows exceed the window. The sampler (HF's kernels with a sliding-window mask) still runs."""
    import transformers as T

    tok = folders["tok"]
    vocab = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id)
    capped = T.Gemma2ForCausalLM(T.Gemma2Config(**ROPE, num_key_value_heads=1, head_dim=8, **vocab))
    window = T.Qwen2ForCausalLM(T.Qwen2Config(**ROPE, num_key_value_heads=2, use_sliding_window=True,
                                              sliding_window=8, max_window_layers=0, **vocab))
    for name, model, match in (("capped", capped, r"capped: the model soft-caps its attention scores "
                                                  r"\(attn_logit_softcapping=50.0\)"),
                               ("window", window, r"rows of \d+ tokens exceed the model's sliding attention window "
                                                  r"\(8\)")):
        model.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
        cfg = SftConfig(data=str(folders["chats"]), out=str(tmp_path / f"{name}_out"), model_path=str(tmp_path / name),
                        batch_size=2, steps=1, max_length=64, backend="varlen", progress=False)
        with pytest.raises(PbrlError, match=match) as e:
            train_sft(cfg)
        assert "\n" not in str(e.value)
        assert (name == "window") == (tmp_path / f"{name}_out").exists()
    # HF refuses an implementation named "*sdpa*" for a model it marks as without sdpa: one line too
    with pytest.raises(PbrlError, match=r"gemma2: cannot load the model with backend sdpa \(ValueError: "):
        load_model(folders["models"]["gemma2"], backend="sdpa")
    with pytest.raises(PbrlError, match="soft-caps its attention scores"):  # pbrl's kernel refuses it too
        load_model(tmp_path / "window", backend="varlen")(input_ids=torch.tensor([[1, 2]]), softcap=50.0)
    gen = HFSampler(load_model(tmp_path / "window", backend="varlen")).generate(
        [tok(TEXTS[1])["input_ids"]], SamplingConfig(temperature=0, max_new_tokens=4, eos_token_id=end_of_turn_id(tok)))
    assert len(gen.tokens[0][0]) >= 1
