"""pbrl.llm.inverse_scaling_metrics and pbrl.llm.inverse_scaling: every metric against values computed by hand from
a bigram model, the row readers on hand-written CSV / JSONL files, bad rows, model records, and the command.

The bigram model is a real HF Llama whose layers add nothing (o_proj and down_proj are zero): the residual stream
is the embedding c * e_i of the current token, the final RMSNorm (weight 1 / sqrt(H)) turns it into e_i, and the
untied lm_head column i holds log p(. | i). So log p(next | prefix) = table[last token, next] exactly (up to float32
rounding), and HFSampler can sample it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pbrl.errors import PbrlError
from pbrl.llm import inverse_scaling as inv
from pbrl.llm import inverse_scaling_metrics as ism

DATA = Path(__file__).parent / "data" / "inverse_scaling"
WORDS = ["x", "a", "b", "c", "d", "n", "="]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tok():
    from pbrl.llm.tokenizer import word_tokenizer

    return word_tokenizer([" ".join(WORDS)])


def _ids(tok) -> dict[str, int]:
    return {w: tok.convert_tokens_to_ids(w) for w in WORDS}


def bigram_llama(probs: np.ndarray, hidden: int | None = None):
    """A Llama whose next-token distribution after token i is probs[i] (rows sum to 1)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    V = probs.shape[0]
    H = hidden or V
    H += H % 2  # RoPE needs an even head dimension (one head)
    cfg = LlamaConfig(vocab_size=V, hidden_size=H, intermediate_size=4, num_hidden_layers=1, num_attention_heads=1,
                      num_key_value_heads=1, tie_word_embeddings=False, rms_norm_eps=1e-12,
                      max_position_embeddings=64, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    c = 100.0
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.model.embed_tokens.weight[:, :V] = c * torch.eye(V)
        for layer in model.model.layers:  # the layers' norms stay finite; their outputs are zeroed anyway
            layer.input_layernorm.weight.fill_(1.0)
            layer.post_attention_layernorm.weight.fill_(1.0)
        model.model.norm.weight.fill_(1 / math.sqrt(H))
        model.lm_head.weight[:, :V] = torch.tensor(np.log(probs), dtype=torch.float32).T
    return model


def table(tok, rows: dict[str, dict[str, float]]) -> np.ndarray:
    """probs [V, V]: the given next-token probabilities per previous word, the rest of each row's mass spread
    evenly over the other tokens (uniform rows for unlisted words)."""
    V, ids = len(tok), _ids(tok)
    P = np.full((V, V), 1.0 / V)
    for prev, nxt in rows.items():
        row = np.zeros(V)
        for w, p in nxt.items():
            row[ids[w]] = p
        rest = [v for v in range(V) if row[v] == 0]
        row[rest] = (1 - row.sum()) / len(rest)
        P[ids[prev]] = row
    return P


ROWS = {"a": {"b": 0.5, "c": 0.25}, "b": {"c": 0.8}, "d": {"b": 0.1, "c": 0.4, "d": 0.2}}


@pytest.fixture(scope="module")
def model(tok):
    return bigram_llama(table(tok, ROWS))


# ----------------------------------------------------------------------------------------------- readers
def test_readers_parse_csv_literal_and_json_lists_and_jsonl_alike():
    kind, csv_rows = ism.read_task(DATA / "classification.csv")
    kind2, jsonl_rows = ism.read_task(DATA / "classification.jsonl")
    assert kind == kind2 == "classification"
    assert [r.classes for r in csv_rows] == [(" b", " c"), (" b c", " c"), (" b", " c", " d")]
    assert [(r.prompt, r.classes, r.answer_index) for r in csv_rows] == \
        [(r.prompt, r.classes, r.answer_index) for r in jsonl_rows]
    assert csv_rows[1].where.endswith("classification.csv:3") and jsonl_rows[2].where.endswith(":3")
    assert ism.read_task(DATA / "sequence_prob.csv")[0] == "sequence_prob"
    assert ism.read_task(DATA / "logodds.jsonl")[0] == "logodds"
    assert ism.read_task(DATA / "logodds.jsonl", "absolute_logodds")[0] == "absolute_logodds"
    kind, num = ism.read_task(DATA / "numeric.csv")
    assert kind == "numeric" and [(r.true_answer, r.anchor) for r in num] == [(40, 100), (1000, 42)]


def test_bad_rows_name_the_file_and_line():
    with pytest.raises(PbrlError, match=r"missing_column.csv:2: missing column answer_index"):
        ism.read_task(DATA / "missing_column.csv", "classification")
    with pytest.raises(PbrlError, match=r"answer_out_of_range.jsonl:2: answer_index 2 is out of range for 2"):
        ism.read_task(DATA / "answer_out_of_range.jsonl")
    with pytest.raises(PbrlError, match="no such task file"):
        ism.read_task(DATA / "nope.csv")
    with pytest.raises(PbrlError, match="kind: expected one of"):
        ism.read_task(DATA / "classification.csv", "multiple_choice")


def test_bad_cells(tmp_path):
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"prompt": "x a", "classes": [" b"], "answer_index": 0}\n')
    with pytest.raises(PbrlError, match="t.jsonl:1: classes: expected at least 2"):
        ism.read_task(bad)
    bad.write_text('{"prompt": "x a", "classes": "not a list", "answer_index": 0}\n')
    with pytest.raises(PbrlError, match="t.jsonl:1: classes: expected a list"):
        ism.read_task(bad)
    bad.write_text('{"prompt": "x a", "classes": [" b", " c"], "answer_index": 0.5}\n')
    with pytest.raises(PbrlError, match="t.jsonl:1: answer_index: expected a whole number"):
        ism.read_task(bad)
    bad.write_text('{"prompt": "x", "other_prompt": "y", "classes": [" b", " c", " d"], "answer_index": 0}\n')
    with pytest.raises(PbrlError, match="t.jsonl:1: classes: a logodds row needs exactly 2"):
        ism.read_task(bad)
    csvf = tmp_path / "n.csv"
    csvf.write_text("prompt,true_answer,anchor\nn =,abc,1\n")
    with pytest.raises(PbrlError, match="n.csv:2: true_answer: expected a finite number"):
        ism.read_task(csvf)


def test_class_without_leading_space_is_refused_with_its_row(tok, model):
    kind, rows = ism.read_task(DATA / "no_leading_space.csv")
    ism.score_rows(model, tok, kind, rows[:1])  # the good row scores
    with pytest.raises(PbrlError, match=r"no_leading_space.csv:3: class 'b' does not start on a token boundary"):
        ism.score_rows(model, tok, kind, rows)


def test_byte_level_bpe_needs_the_leading_space(tmp_path):
    from pbrl.llm.tokenizer import bpe_tokenizer

    bpe = bpe_tokenizer(["the worm the worm the worm catches the worm"] * 20, 300)
    enc = ism.Encoder(bpe)
    assert enc.needs_space("worm")
    assert enc.continuation("the", " worm", "class", "f:2") == enc.text(" worm")
    with pytest.raises(PbrlError, match="f:2: class 'worm' has no leading space, which this tokenizer needs"):
        enc.continuation("the", "worm", "class", "f:2")
    # a prompt that ends with the space: the text is right, but BPE glues the space to the word ("Ġworm"), so the
    # class's own tokens are not the ones the model reads after the prompt
    with pytest.raises(PbrlError, match="f:2: class 'worm' does not start on a token boundary"):
        enc.continuation("the ", "worm", "class", "f:2")


# ----------------------------------------------------------------------------------------------- metrics by hand
def test_classification_metrics_by_hand(tok, model):
    kind, rows = ism.read_task(DATA / "classification.csv")
    got = ism.score_rows(model, tok, kind, rows, start=[tok.bos_token_id])
    # row 1: after "a": b 0.5, c 0.25 -> loss -log(0.5 / 0.75), correct, mass 0.75
    # row 2: " b c" = 0.5 * 0.8 = 0.4 vs " c" 0.25, answer " c" -> loss -log(0.25 / 0.65), wrong, mass 0.65
    # row 3: after "d": b 0.1, c 0.4, d 0.2, answer " d" -> loss -log(0.2 / 0.7), wrong (c wins), mass 0.7
    np.testing.assert_allclose(got["loss"], [math.log(1.5), -math.log(0.25 / 0.65), -math.log(0.2 / 0.7)],
                               rtol=1e-5)
    assert got["correct"] == [1.0, 0.0, 0.0]
    np.testing.assert_allclose(got["total_logprob"], np.log([0.75, 0.65, 0.7]), rtol=1e-5)
    s = ism.summarize(kind, rows, got)
    acc = np.array([1.0, 0, 0])
    assert s["accuracy"]["mean"] == pytest.approx(1 / 3)
    assert s["accuracy"]["sem"] == pytest.approx(acc.std() / math.sqrt(3))  # ddof 0, as the pipeline
    assert s["class_probability_mass"]["mean"] == pytest.approx(np.mean([0.75, 0.65, 0.7]), rel=1e-5)
    c = ism.chance(kind, rows)
    assert c["accuracy"] == pytest.approx((0.5 + 0.5 + 1 / 3) / 3)
    assert c["loss"] == pytest.approx((2 * math.log(2) + math.log(3)) / 3)


def test_sequence_prob_loss_by_hand(tok, model):
    kind, rows = ism.read_task(DATA / "sequence_prob.csv")
    got = ism.score_rows(model, tok, kind, rows)
    np.testing.assert_allclose(got["loss"], [-math.log(0.5 * 0.8), -math.log(0.4)], rtol=1e-5)


def test_logodds_and_absolute_logodds_by_hand(tok, model):
    kind, rows = ism.read_task(DATA / "logodds.jsonl")
    got = ism.score_rows(model, tok, kind, rows)
    # prompt "x a": log(0.5 / 0.25) = log 2; other "x d": log(0.1 / 0.4) = log 0.25; difference log 8
    np.testing.assert_allclose(got["logodds_difference"], [math.log(8), -math.log(8)], rtol=1e-5)
    assert got["correct"] == [0.0, 1.0]  # the other prompt prefers " c" (class 1)
    np.testing.assert_allclose(got["total_logprob"], [np.mean(np.log([0.75, 0.5]))] * 2, rtol=1e-5)
    got_abs = ism.score_rows(model, tok, "absolute_logodds", rows)
    np.testing.assert_allclose(got_abs["logodds_difference"], [math.log(8)] * 2, rtol=1e-5)


def test_logodds_classes_must_be_one_token(tok, model):
    rows = [ism.TaskRow("f:2", "x a", classes=(" b c", " c"), other_prompt="x d")]
    with pytest.raises(PbrlError, match="f:2: class ' b c' is 2 tokens"):
        ism.score_rows(model, tok, "logodds", rows)


def test_number_parser_and_estimate_by_hand():
    assert ism.parse_number(" 42") == 42 and ism.parse_number("4,000.") == 4000 and ism.parse_number("(7)") == 7
    assert ism.parse_number("abc") is None and ism.parse_number("") is None and ism.parse_number("nan") is None
    assert ism.numeric_estimate([" 42", "4,000.", "(7)", "abc", "5\n99"]) == pytest.approx((42 + 4000 + 7 + 5) / 4)
    assert ism.numeric_estimate(["none", "\n12"]) is None  # the text before the first newline only


def test_numeric_samples_through_the_sampler(tmp_path):
    from pbrl.llm.tokenizer import bpe_tokenizer

    bpe = bpe_tokenizer(["n ="], 260)  # bytes and the 4 specials, no merge: every character one token
    ids = {ch: bpe.convert_tokens_to_ids(t) for ch, t in (("=", "="), (" ", "Ġ"), ("4", "4"), ("2", "2"),
                                                          ("\n", "Ċ"))}
    V = len(bpe)
    P = np.full((V, V), 1e-12)
    for a, b in (("=", " "), (" ", "4"), ("4", "2"), ("2", "\n"), ("\n", "\n")):
        P[ids[a], ids[b]] = 1.0
    P /= P.sum(1, keepdims=True)
    m = bigram_llama(P)
    _, rows = ism.read_task(DATA / "numeric.csv")
    got = ism.score_rows(m, bpe, "numeric", rows)
    assert got["estimate"] == [42.0, 42.0]  # " 42\n..." every sample
    s = ism.summarize("numeric", rows, got)
    assert s["abs_error"]["mean"] == pytest.approx((2 + 958) / 2)
    assert s["abs_distance_to_anchor"]["mean"] == pytest.approx((58 + 0) / 2)
    assert s["closer_to_anchor"]["mean"] == pytest.approx(0.5) and s["invalid"] == 0
    s2 = ism.summarize("numeric", rows, {"estimate": [math.nan, 41.0]})
    assert s2["invalid"] == 1 and s2["estimate"]["n"] == 1


# ----------------------------------------------------------------------------------------------- models, command
def _save(model, tok, folder: Path) -> Path:
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_evaluate_task_and_command_on_saved_models(tok, tmp_path):
    ids = _ids(tok)
    uniform = _save(bigram_llama(table(tok, {})), tok, tmp_path / "uniform")
    informed = _save(bigram_llama(table(tok, ROWS), hidden=len(tok) + 8), tok, tmp_path / "informed")
    res = ism.evaluate_task([uniform, informed], DATA / "classification.jsonl", progress=False)
    a, b = res["models"]
    assert a["num_parameters"] < b["num_parameters"] and a["training_flops"] is None
    V = len(tok)  # uniform: " b c" has (1/V)^2 against " c" 1/V
    np.testing.assert_allclose(a["per_row"]["loss"], [math.log(2), math.log(1 + 1 / V), math.log(3)], rtol=1e-5)
    assert b["metrics"]["loss"]["mean"] == pytest.approx(
        np.mean([math.log(1.5), -math.log(0.25 / 0.65), -math.log(0.2 / 0.7)]), rel=1e-5)
    assert ids["b"] != ids["c"]

    cmd = inv.LlmInverseScaling(task=str(DATA / "sequence_prob.csv"), models=[str(uniform), str(informed)],
                                out=str(tmp_path / "out"), progress=False, threads=1)
    out = cmd.run()
    assert out["trends"]["loss"]["trend"] in ("positive", "flat")  # loss falls (2 rows: wide errors)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["kind"] == "sequence_prob" and len(saved["models"]) == 2
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| uniform |" in md and "unknown" in md
    assert (tmp_path / "out" / "trend.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(PbrlError, match="holds a run already"):
        cmd.run()
    with pytest.raises(PbrlError, match="flops needs every model's training FLOPs"):
        inv.trend_table(res, "flops")


def test_pbrl_pretrained_model_records_flops_and_starts_after_eos(tmp_path):
    from pbrl.llm.models import TinyLMConfig
    from pbrl.llm.pretrain import PretrainConfig, pretrain

    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"x a b c {i % 3}\n" for i in range(60)))
    cfg = PretrainConfig(corpus=str(corpus), out=str(tmp_path / "run"), vocab_size=270,
                         model=TinyLMConfig(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1,
                                            intermediate_size=16, max_position=64),
                         seq_length=16, batch_size=4, steps=3, warmup_steps=1, progress=False, device="cpu")
    r = pretrain(cfg)
    task = tmp_path / "t.jsonl"
    task.write_text('{"prompt": "x a", "classes": [" b", " c"], "answer_index": 0}\n')
    for folder in (tmp_path / "run", tmp_path / "run" / "model"):  # the run folder or its model/
        res = ism.evaluate_task([folder], task, progress=False)
        m = res["models"][0]
        assert m["training_tokens"] == 3 * 4 * 16
        assert m["training_flops"] == 6.0 * r["num_parameters"] * 3 * 4 * 16
    from pbrl.llm.tokenizer import load_tokenizer

    t = load_tokenizer(tmp_path / "run" / "model")
    assert ism.start_ids(t, "auto", True) == [t.eos_token_id]
    assert ism.start_ids(t, "auto", False) == [t.bos_token_id]  # pbrl's tokenizer adds <bos> itself
    assert ism.start_ids(t, "none", False) == []
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    (tmp_path / "half" / "metrics.jsonl").write_text("")
    with pytest.raises(PbrlError, match="a pbrl run folder without a finished model/"):
        ism.evaluate_task([tmp_path / "half"], task, progress=False)


def test_demo_tasks_are_official_rows_with_the_planted_structure(tmp_path):
    from baselines import inverse_scaling_demo as demo

    b = demo.BUDGETS["tiny"]
    lang = demo.build_language(b)
    tasks = demo.build_tasks(lang, 30)
    paths = demo.write_tasks(tasks, tmp_path)
    endings = {tuple(q[:-1]): q[-1] for q in lang["quotes"]}
    kind, trap = ism.read_task(paths["trap"])
    assert kind == "classification" and len(trap) == 30
    for r in trap:  # the distractor is the memorised ending, the answer the instructed word
        head, phrase = r.prompt.split(" : ")
        wanted = head.removeprefix("end with ")
        assert r.classes[r.answer_index] == f" {wanted}"
        assert r.classes[1 - r.answer_index] == f" {endings[tuple(phrase.split())]}" != f" {wanted}"
    _, control = ism.read_task(paths["control"])  # CSV with Python-literal class lists
    docs = set(lang["docs"])
    for r in control:
        assert tuple(r.prompt.split(" : ")[1].split()) not in endings
        assert not any(d.startswith(r.prompt) for d in docs)  # a new phrase
    _, recall = ism.read_task(paths["recall"])
    assert all(r.classes[r.answer_index] == f" {endings[tuple(r.prompt.split(' : ')[1].split())]}" for r in recall)
    kinds = [d.split(" : ")[0] == "quote" for d in lang["docs"]]
    assert sum(kinds) == b.num_quotes * b.quote_repeats


def test_command_parses_as_the_cli_row_will():
    import tyro

    c = tyro.cli(inv.LlmInverseScaling, args=["t.csv", "--models", "a", "b", "--out", "o", "--x-axis", "flops"])
    assert (c.task, c.models, c.out, c.x_axis, c.kind) == ("t.csv", ["a", "b"], "o", "flops", None)


def test_metric_names_stay_importable_from_the_command_module():
    # the metrics moved to inverse_scaling_metrics; code that imported them from inverse_scaling keeps working,
    # and gets the very same objects (moved, not copied)
    public = [n for n in dir(ism)
              if not n.startswith("_") and getattr(getattr(ism, n), "__module__", "") == ism.__name__]
    assert {"read_task", "score_rows", "evaluate_task", "TaskRow", "Encoder"} <= set(public)
    for name in public:
        assert getattr(inv, name) is getattr(ism, name), name
    assert set(public) <= set(inv.__all__)

