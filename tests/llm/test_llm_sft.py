"""`pbrl llm sft`: packed loss and gradients equal the per-example ones (float64), the loss mask on a rendered chat,
best-fit decreasing by hand, the filters' counts, resume == uninterrupted, bad inputs are one error line."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import tyro

from pbrl.errors import PbrlError
from pbrl.llm.attention import use_backend
from pbrl.llm.commands import LlmSft
from pbrl.llm.models import TinyLMConfig, build_model
from pbrl.llm.prefix_sharing import IGNORE, first_fit_decreasing
from pbrl.llm.sft import (
    SftConfig,
    SftExample,
    best_fit_decreasing,
    encode_chats,
    example_nll,
    read_chats,
    sft_batch,
    train_sft,
)
from pbrl.llm.tokenizer import IM_END, assistant_mask, bpe_tokenizer, word_tokenizer

SMALL = TinyLMConfig(hidden_size=32, intermediate_size=64)
WORDS = "a b c d e f g h reverse sort the letters please answer".split()


def _chats(n: int = 24) -> list[dict]:
    """Reverse-the-letters chats; every third one as {prompt, completion}."""
    rows = []
    for i in range(n):
        letters = [WORDS[(i * 3 + j) % 8] for j in range(2 + i % 4)]
        prompt, answer = "reverse " + " ".join(letters), " ".join(reversed(letters))
        if i % 3 == 2:
            rows.append({"prompt": prompt, "completion": answer})
        else:
            rows.append({"messages": [{"role": "system", "content": "answer please"},
                                      {"role": "user", "content": prompt},
                                      {"role": "assistant", "content": answer}]})
    return rows


@pytest.fixture
def setup(tmp_path):
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _chats()), encoding="utf-8")
    tok = word_tokenizer([" ".join(WORDS)], chat=True)
    tok.save_pretrained(tmp_path / "tok")
    return data, tmp_path / "tok"


def _cfg(setup, out, **kw) -> SftConfig:
    data, tok = setup
    base = dict(data=str(data), out=str(out), tokenizer_path=str(tok), model=SMALL, max_length=32, batch_size=4,
                steps=6, warmup_steps=2, lr=3e-3, progress=False, checkpoint_every=100)
    base.update(kw)
    return SftConfig(**base)


# ----------------------------------------------------------------------------------------------- pure parts
def test_best_fit_decreasing_by_hand():
    # capacity 10: 8 -> bin 0 (room 2), 7 -> bin 1 (room 3), 5 -> bin 2 (room 5), 4 -> bin 2 (room 1); the 1 goes
    # where it fits tightest: bin 2 (room 1), not bin 0 (room 2), which first-fit would take
    assert best_fit_decreasing([8, 7, 5, 4, 1], 10) == [[0], [1], [2, 3, 4]]
    assert first_fit_decreasing([8, 7, 5, 4, 1], 10) == [[0, 4], [1], [2, 3]]
    assert best_fit_decreasing([], 4) == []
    with pytest.raises(PbrlError, match="a sequence of 5 tokens does not fit in pack_length=4"):
        best_fit_decreasing([3, 5], 4)


def test_assistant_mask_and_labels_on_a_rendered_chat():
    tok = word_tokenizer(["what is two plus two four"], chat=True)
    msgs = [{"role": "user", "content": "what is two plus two"}, {"role": "assistant", "content": "four"}]
    ids, mask = assistant_mask(tok, msgs)
    assert tok.convert_ids_to_tokens(ids) == ["<bos>", "<|im_start|>", "user", "what", "is", "two", "plus", "two",
                                             "<|im_end|>", "<|im_start|>", "assistant", "four", "<|im_end|>"]
    assert mask == [0] * 11 + [1, 1]  # the answer and the <|im_end|> that closes it
    b = sft_batch([SftExample(ids, mask)], "padded")
    # the logits at "assistant" predict "four", those at "four" predict <|im_end|>; nothing else is a target
    four, im_end = tok.convert_tokens_to_ids(["four", IM_END])
    assert b.targets[0].tolist() == [IGNORE] * 10 + [four, im_end, IGNORE]
    assert b.slots[0].tolist() == [-1] * 10 + [0, 0, -1]

    # byte-level BPE with the ChatML template, two assistant turns and a system turn: the trained tokens decode to
    # exactly the assistant contents, each followed by <|im_end|>
    texts = ["you are terse.", "name a colour", "blue", "another one", "dark green"]
    bpe = bpe_tokenizer(texts * 5, 300, chat=True)
    chat = [{"role": "system", "content": texts[0]}, {"role": "user", "content": texts[1]},
            {"role": "assistant", "content": texts[2]}, {"role": "user", "content": texts[3]},
            {"role": "assistant", "content": texts[4]}]
    ids, mask = assistant_mask(bpe, chat)
    trained = bpe.decode([t for t, m in zip(ids, mask) if m], skip_special_tokens=False)
    assert trained == f"blue{IM_END}dark green{IM_END}"


def test_packed_rows_by_hand():
    a, b, c = SftExample([1, 2, 3], [0, 1, 1]), SftExample([4, 5], [0, 1]), SftExample([6, 7, 8, 9], [0, 0, 1, 1])
    batch = sft_batch([a, b, c], "packed", pack_length=6)  # bins: [c, b] (room 0) and [a]
    assert batch.input_ids.tolist() == [[6, 7, 8, 9, 4, 5], [1, 2, 3, 0, 0, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 0, 1], [0, 1, 2, 3, 4, 5]]
    assert batch.doc.tolist() == [[0, 0, 0, 0, 1, 1], [0, 0, 0, -1, -1, -1]]
    assert batch.targets.tolist() == [[IGNORE, 8, 9, IGNORE, 5, IGNORE], [2, 3, IGNORE] + [IGNORE] * 3]
    assert batch.slots.tolist() == [[-1, 4, 4, -1, 2, -1], [0, 0, -1, -1, -1, -1]]
    assert batch.num_tokens == 9


@pytest.mark.parametrize("backend", ["sdpa", "varlen", "flex"])
def test_packed_loss_and_grads_equal_per_example_float64(backend):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    examples = []
    for n in (9, 3, 14, 6, 11, 5, 2):
        ids = torch.randint(0, 50, (n,), generator=g).tolist()
        mask = [0] + (torch.rand(n - 1, generator=g) < 0.6).long().tolist()
        examples.append(SftExample(ids, mask))
    n_trained = sum(e.num_trained for e in examples)
    model = build_model(TinyLMConfig(vocab_size=50, hidden_size=32, intermediate_size=64), backend="hf_sdpa",
                        dtype=torch.float64)

    # reference: every example alone through the plain HF model, labels -100 outside the mask
    ref = 0.0
    for e in examples:
        x = torch.tensor(e.ids)[None]
        labels = torch.where(torch.tensor(e.mask, dtype=torch.bool), x, IGNORE)[0]
        logits = model(input_ids=x).logits[0]
        ref = ref + F.cross_entropy(logits[:-1], labels[1:], reduction="sum", ignore_index=IGNORE)
    ref = ref / n_trained
    ref.backward()
    ref_grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()

    use_backend(model, backend)
    batch = sft_batch(examples, "packed", pack_length=20)
    assert batch.input_ids.shape[0] < len(examples)  # documents do share rows
    if backend == "flex":  # eager FlexAttention (float64) has no backward on CPU: the loss only
        with torch.no_grad():
            assert float(example_nll(model, batch).sum() / n_trained) == pytest.approx(float(ref), abs=1e-12)
        return
    loss = example_nll(model, batch).sum() / n_trained
    loss.backward()
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), abs=1e-12)
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[k], atol=1e-11, rtol=0)


def test_filters_are_counted(tmp_path):
    tok = word_tokenizer([" ".join(WORDS)], chat=True)
    ok = [{"role": "user", "content": "sort a b"}, {"role": "assistant", "content": "a b"}]  # 12 tokens
    # <bos> + 2 header tokens + 13 words + <|im_end|> + 2 headers = 19 masked, 1 word + <|im_end|> trained:
    # 19 / 21 = 90.5% masked -> dropped; with 12 words, 18 / 20 = 90% exactly is not over the limit: kept
    masked = [{"role": "user", "content": " ".join(["a"] * 13)}, {"role": "assistant", "content": "b"}]
    edge = [{"role": "user", "content": " ".join(["a"] * 12)}, {"role": "assistant", "content": "b"}]
    long = [{"role": "user", "content": "sort " + " ".join(["c"] * 20)}, {"role": "assistant", "content": "c d"}]
    chats = [(1, ok), (2, masked), (3, long), (4, edge)]
    assert [(len(i), sum(m)) for i, m in (assistant_mask(tok, c) for _, c in chats)] == \
        [(12, 3), (21, 2), (30, 3), (20, 2)]
    ex, counts = encode_chats(tok, chats, max_length=24, overlong="drop")
    assert counts == {"read": 4, "truncated": 0, "dropped_overlong": 1, "dropped_masked": 1, "kept": 2}
    assert [len(e.ids) for e in ex] == [12, 20]
    # truncated to 24 tokens the long chat loses its answer: 100% masked, so the filter drops it too
    ex, counts = encode_chats(tok, chats, max_length=24, overlong="truncate")
    assert counts == {"read": 4, "truncated": 1, "dropped_overlong": 0, "dropped_masked": 2, "kept": 2}
    # truncated to 28 it keeps "c" (the "d" and <|im_end|> are cut): 27 of 28 masked -> dropped at 0.9, kept at 0.99
    ex, counts = encode_chats(tok, chats, max_length=28, overlong="truncate", max_masked_fraction=0.99)
    assert counts["kept"] == 4 and [len(e.ids) for e in ex] == [12, 21, 28, 20] and ex[2].mask[-1] == 1
    with pytest.raises(PbrlError, match=r"data.jsonl:3: 30 tokens, over max_length 24 \(overlong=refuse"):
        encode_chats(tok, chats, max_length=24, overlong="refuse", where="data.jsonl")


def test_loss_on_all_trains_every_token_against_a_per_token_reference(tmp_path, setup):
    tok = word_tokenizer([" ".join(WORDS)], chat=True)
    # 19 of 21 tokens masked under assistant masking (dropped there); with loss_on=all nothing is masked or dropped
    masked = [{"role": "user", "content": " ".join(["a"] * 13)}, {"role": "assistant", "content": "b"}]
    ex, counts = encode_chats(tok, [(1, masked)], max_length=24, loss_on="all")
    assert counts["dropped_masked"] == 0 and ex[0].mask == [1] * 21 and ex[0].num_trained == 20
    assert encode_chats(tok, [(1, masked)], max_length=24)[1]["dropped_masked"] == 1

    # the trainer's first step (before any update) against a naive per-token reference on the same initial model
    cfg = _cfg(setup, tmp_path / "all", loss_on="all", steps=1, dtype="float64", grad_accum=2, backend="varlen")
    res = train_sft(cfg)
    chats = read_chats(cfg.data)
    examples, _ = encode_chats(tok, chats, max_length=cfg.max_length, loss_on="all")
    idx = np.random.default_rng(cfg.seed).permutation(len(examples))[: cfg.batch_size]  # the trainer's step-0 draw
    step = [examples[i] for i in idx]
    assert res["history"][0]["sft/trained_tokens"] == sum(len(e.ids) - 1 for e in step)
    model = build_model(dataclasses.replace(SMALL, vocab_size=len(tok)), backend="hf_sdpa", dtype=torch.float64,
                        seed=cfg.seed)
    total, count = 0.0, 0
    with torch.no_grad():
        for e in step:
            logits = model(input_ids=torch.tensor(e.ids)[None]).logits[0]
            for t in range(len(e.ids) - 1):  # every next token, one at a time
                total -= float(torch.log_softmax(logits[t], -1)[e.ids[t + 1]])
                count += 1
    assert res["history"][0]["sft/loss"] == pytest.approx(total / count, abs=1e-12)
    with pytest.raises(PbrlError, match="loss_on: expected assistant or all"):
        train_sft(_cfg(setup, tmp_path / "bad", loss_on="none"))
    # the switch is part of the fingerprint: an assistant-masked run cannot resume the loss_on=all folder
    with pytest.raises(PbrlError, match="cannot resume"):
        train_sft(_cfg(setup, tmp_path / "all", steps=1, dtype="float64", grad_accum=2, backend="varlen"))


# ----------------------------------------------------------------------------------------------- trainer
def test_packed_and_padded_runs_agree_and_model_saved(tmp_path, setup):
    runs = {}
    for layout, backend in (("packed", "varlen"), ("padded", "hf_sdpa"), ("packed", "sdpa")):
        res = train_sft(_cfg(setup, tmp_path / f"{layout}_{backend}", layout=layout, backend=backend,
                             dtype="float64", steps=4, grad_accum=2))
        runs[layout, backend] = [r["sft/loss"] for r in res["history"]]
        assert res["done"] and res["data"]["kept"] == 24 and res["final"]["perf/tokens_per_s"] > 0
    ref = runs["padded", "hf_sdpa"]
    for key, curve in runs.items():
        assert curve == pytest.approx(ref, abs=1e-10), key
    assert (tmp_path / "packed_varlen" / "model" / "config.json").is_file()
    assert (tmp_path / "packed_varlen" / "model" / "tokenizer.json").is_file()
    summary = json.loads((tmp_path / "packed_varlen" / "summary.json").read_text())
    assert summary["data"]["read"] == 24 and summary["step"] == 4


def test_loss_falls(tmp_path, setup):
    res = train_sft(_cfg(setup, tmp_path / "r", steps=40, warmup_steps=4, lr=1e-2))
    losses = [r["sft/loss"] for r in res["history"]]
    assert losses[-1] < 0.5 * losses[0]


def test_resume_matches_uninterrupted_run(tmp_path, setup):
    full = train_sft(_cfg(setup, tmp_path / "full"))
    part = train_sft(_cfg(setup, tmp_path / "part", stop_after=3))
    assert not part["done"] and part["step"] == 3 and not (tmp_path / "part" / "model").exists()
    resumed = train_sft(_cfg(setup, tmp_path / "part"))
    assert resumed["done"]
    assert [r["sft/loss"] for r in resumed["history"]] == [r["sft/loss"] for r in full["history"]]
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))
    with pytest.raises(PbrlError, match="cannot resume, lr differs"):
        train_sft(_cfg(setup, tmp_path / "part", lr=1e-3))


def test_starts_from_a_saved_model(tmp_path, setup):
    train_sft(_cfg(setup, tmp_path / "first", steps=2))
    res = train_sft(_cfg(setup, tmp_path / "second", steps=2, model_path=str(tmp_path / "first" / "model"),
                         tokenizer_path=None))
    assert res["done"] and (tmp_path / "second" / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("kind", ["malformed", "neither", "empty_turn", "no_assistant", "missing", "no_template",
                                  "no_pad", "overlong", "too_few", "bad_message"])
def test_bad_input_is_one_error_line_and_writes_nothing(tmp_path, setup, kind):
    data, tok_path = setup
    kw: dict = {}
    if kind == "malformed":
        data.write_text(data.read_text() + '{"messages": [\n')
    elif kind == "neither":
        data.write_text(data.read_text() + '{"text": "a b"}\n')
    elif kind == "empty_turn":
        data.write_text(data.read_text() + json.dumps({"prompt": "sort a", "completion": "  "}) + "\n")
    elif kind == "no_assistant":
        data.write_text(data.read_text() + json.dumps({"messages": [{"role": "user", "content": "a"}]}) + "\n")
    elif kind == "bad_message":
        data.write_text(data.read_text() + json.dumps({"messages": [{"role": "user"}]}) + "\n")
    elif kind == "missing":
        data.unlink()
    elif kind in ("no_template", "no_pad"):
        tok = word_tokenizer([" ".join(WORDS)], chat=kind == "no_pad")
        if kind == "no_pad":
            tok.pad_token = None
        tok.save_pretrained(tmp_path / "tok2")
        kw["tokenizer_path"] = str(tmp_path / "tok2")
    elif kind == "overlong":
        kw.update(max_length=12, overlong="refuse")
    elif kind == "too_few":
        kw.update(batch_size=30)
    expected = {
        "malformed": r"sft.jsonl:25: invalid JSON",
        "neither": r"sft.jsonl:25: expected an object with `messages` or with `prompt` and `completion`",
        "empty_turn": r"sft.jsonl:25: message 1 is an empty assistant turn",
        "no_assistant": r"sft.jsonl:25: the conversation has no assistant turn",
        "bad_message": r"sft.jsonl:25: messages\[0\]: expected \{'role': str, 'content': str\}",
        "missing": "no such chat data file",
        "no_template": "the tokenizer has no chat template",
        "no_pad": "the tokenizer has no pad token",
        "overlong": r"sft.jsonl:1: \d+ tokens, over max_length 12 \(overlong=refuse",
        "too_few": "batch_size: 30 conversations per step, but .* leaves only 24",
    }[kind]
    with pytest.raises(PbrlError, match=expected) as e:
        train_sft(_cfg(setup, tmp_path / "out", **kw))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_read_chats_forms(tmp_path):
    path = tmp_path / "d.jsonl"
    msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    path.write_text(json.dumps({"prompt": msgs[:1], "completion": "y"}) + "\n\n" + json.dumps({"messages": msgs})
                    + "\n")
    assert read_chats(path) == [(1, msgs), (3, msgs)]


def test_command_runs_and_reports_the_counts(tmp_path, setup, capsys):
    data, tok = setup
    args = [str(data), "--out", str(tmp_path / "cli"), "--tokenizer-path", str(tok), "--steps", "2",
            "--batch-size", "4", "--max-length", "32", "--no-progress", "--model.hidden-size", "32",
            "--model.intermediate-size", "64", "--loss-on", "all"]
    tyro.cli(LlmSft, args=args).run()
    out = capsys.readouterr().out
    assert "data: 24 conversations, 24 kept; 0 dropped as over 90% masked" in out
    assert '"done": true' in out and (tmp_path / "cli" / "model").is_dir()
    assert '"loss_on": "all"' in (tmp_path / "cli" / "config.json").read_text()
