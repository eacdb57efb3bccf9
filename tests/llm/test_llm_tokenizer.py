"""The ChatML chat template on pbrl's tokenizers, the assistant mask (hand-written), and chat checks on load."""

from __future__ import annotations

import pytest

from pbrl.errors import PbrlError
from pbrl.llm.tokenizer import (
    CHAT_TEMPLATE,
    IM_END,
    IM_START,
    assistant_mask,
    bpe_tokenizer,
    end_of_turn_id,
    load_tokenizer,
    render_chat,
    word_tokenizer,
)

CONV = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "two plus two"},
    {"role": "assistant", "content": "four"},
    {"role": "user", "content": "and three"},
    {"role": "assistant", "content": "six it is"},
]
WORDS = ["be brief two plus three four and six it is system user assistant"]


def test_template_renders_chatml_by_hand():
    tok = word_tokenizer(WORDS, chat=True)
    assert render_chat(tok, CONV[:3]) == (
        "<|im_start|>system\nbe brief<|im_end|>\n"
        "<|im_start|>user\ntwo plus two<|im_end|>\n"
        "<|im_start|>assistant\nfour<|im_end|>\n"
    )
    assert render_chat(tok, CONV[:2], add_generation_prompt=True).endswith(
        "<|im_start|>user\ntwo plus two<|im_end|>\n<|im_start|>assistant\n")
    assert tok.chat_template == CHAT_TEMPLATE


def test_chat_specials_are_single_ids_and_end_the_turn():
    for tok in (word_tokenizer(WORDS, chat=True), bpe_tokenizer(WORDS * 20, vocab_size=300, chat=True)):
        start, end = tok.convert_tokens_to_ids([IM_START, IM_END])
        ids = tok(f"{IM_START}user\nfour{IM_END}", add_special_tokens=False)["input_ids"]
        assert ids[0] == start and ids[-1] == end and ids.count(start) == ids.count(end) == 1
        assert end_of_turn_id(tok) == end and end != tok.eos_token_id and end != tok.pad_token_id
        assert tok.decode(ids, skip_special_tokens=True).split() == ["user", "four"]


def test_without_chat_the_vocabulary_is_unchanged():
    tok = word_tokenizer(["w1 w2 w1"])
    assert tok.chat_template is None and IM_START not in tok.get_vocab()
    assert len(tok) == 4 + 2 and tok.convert_tokens_to_ids(["<pad>", "<unk>", "<bos>", "<eos>"]) == [0, 1, 2, 3]
    assert end_of_turn_id(tok) == tok.eos_token_id
    with pytest.raises(PbrlError, match="no chat template"):
        assistant_mask(tok, CONV)


def test_assistant_mask_by_hand():
    tok = word_tokenizer(WORDS, chat=True)
    ids, mask = assistant_mask(tok, CONV)
    expected = [
        ("<bos>", 0),
        (IM_START, 0), ("system", 0), ("be", 0), ("brief", 0), (IM_END, 0),
        (IM_START, 0), ("user", 0), ("two", 0), ("plus", 0), ("two", 0), (IM_END, 0),
        (IM_START, 0), ("assistant", 0), ("four", 1), (IM_END, 1),
        (IM_START, 0), ("user", 0), ("and", 0), ("three", 0), (IM_END, 0),
        (IM_START, 0), ("assistant", 0), ("six", 1), ("it", 1), ("is", 1), (IM_END, 1),
    ]
    assert list(zip(tok.convert_ids_to_tokens(ids), mask)) == expected
    ids2, mask2 = assistant_mask(tok, CONV, add_bos=False)
    assert ids2 == ids[1:] and mask2 == mask[1:]


def test_assistant_mask_byte_level():
    tok = bpe_tokenizer(["two plus two is four. " * 30], vocab_size=300, chat=True)
    conv = [{"role": "user", "content": "two plus two?"}, {"role": "assistant", "content": " four, surely"}]
    ids, mask = assistant_mask(tok, conv)
    assert ids == [tok.bos_token_id] + tok(render_chat(tok, conv), add_special_tokens=False)["input_ids"]
    picked = [i for i, m in zip(ids, mask) if m]
    assert tok.decode(picked) == " four, surely" + IM_END
    assert tok.convert_ids_to_tokens(ids[-1]) == "Ċ" and mask[-1] == 0  # the newline after <|im_end|>
    # the generation prompt (what the sampler continues) is exactly the unmasked head of the assistant turn
    head = tok(render_chat(tok, conv[:1], add_generation_prompt=True), add_special_tokens=False)["input_ids"]
    assert ids[1 : 1 + len(head)] == head and not any(mask[: 1 + len(head)]) and mask[1 + len(head)] == 1


def test_chat_tokenizer_round_trips_and_loaded_checks(tmp_path):
    tok = bpe_tokenizer(WORDS * 20, vocab_size=300, chat=True)
    tok.save_pretrained(tmp_path / "chat")
    back = load_tokenizer(tmp_path / "chat", chat=True)
    assert render_chat(back, CONV) == render_chat(tok, CONV)
    assert assistant_mask(back, CONV) == assistant_mask(tok, CONV)

    word_tokenizer(WORDS).save_pretrained(tmp_path / "plain")
    load_tokenizer(tmp_path / "plain")  # fine without chat
    with pytest.raises(PbrlError, match=r"plain: the tokenizer has no chat template") as e:
        load_tokenizer(tmp_path / "plain", chat=True)
    assert "\n" not in str(e.value)

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"<unk>": 0, "<eos>": 1, "a": 2}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    nopad = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", eos_token="<eos>")
    nopad.chat_template = CHAT_TEMPLATE
    nopad.save_pretrained(tmp_path / "nopad")
    with pytest.raises(PbrlError, match=r"nopad: the tokenizer has no pad token") as e:
        load_tokenizer(tmp_path / "nopad", chat=True)
    assert "\n" not in str(e.value)
    assert load_tokenizer(tmp_path / "nopad").pad_token == "<eos>"  # without chat: padding borrows eos, as before


def test_bad_messages_are_one_error():
    tok = word_tokenizer(WORDS, chat=True)
    with pytest.raises(PbrlError, match=r"messages\[1\]: expected"):
        assistant_mask(tok, [{"role": "user", "content": "two"}, {"role": "assistant"}])
    with pytest.raises(PbrlError, match="vocab_size: a byte-level BPE needs at least 262"):
        bpe_tokenizer(WORDS, vocab_size=261, chat=True)


def test_word_tokenizer_for_chat_knows_the_role_names():
    from pbrl.llm.tokenizer import word_tokenizer

    tok = word_tokenizer(["sort 3 1 2", "1 2 3"], chat=True)  # texts without any role name
    msgs = [{"role": "system", "content": "sort"}, {"role": "user", "content": "sort 3 1 2"},
            {"role": "assistant", "content": "1 2 3"}]
    ids = tok.apply_chat_template(msgs, tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) else ids
    assert tok.unk_token_id not in ids
