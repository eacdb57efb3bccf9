"""Tokenizers built locally (trained with `tokenizers` on the data at hand) or loaded from a local folder.

- ``word_tokenizer(texts)``: one token per whitespace-separated word (the synthetic data is made of words, so
  token counts equal word counts);
- ``bpe_tokenizer(texts, vocab_size)``: byte-level BPE trained on ``texts`` (any text, no unknown bytes);
- ``load_tokenizer(path)``: any HF tokenizer saved with ``save_pretrained``, never downloaded.

All return a ``transformers.PreTrainedTokenizerFast`` with pad/bos/eos tokens set.

Chat (``chat=True``): the tokenizer also carries ``<|im_start|>`` and ``<|im_end|>`` as special tokens (one id
each) and a ChatML chat template (``CHAT_TEMPLATE``)::

    <|im_start|>{role}\\n{content}<|im_end|>\\n   per message;   <|im_start|>assistant\\n   as generation prompt

``<|im_end|>`` ends a turn: a chat model stops generating there (``end_of_turn_id``), while ``<eos>`` stays the
document separator of pre-training. ``assistant_mask`` marks the tokens an SFT loss trains on (assistant content and
its ``<|im_end|>``). Without ``chat`` the vocabulary is the one earlier releases built (same ids, no template).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from pbrl.errors import PbrlError

SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
CHAT_SPECIALS = [IM_START, IM_END]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""ChatML (as Qwen2 and the LIONs recipe use it): every message in its role's turn, closed by <|im_end|>."""


def _specials(chat: bool) -> list[str]:
    return SPECIALS + (CHAT_SPECIALS if chat else [])


CHAT_ROLES = ("system", "user", "assistant")


def _wrap(tok, chat: bool = False):
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    bos = tok.token_to_id("<bos>")
    # the prompt starts with <bos>; responses are tokenized without specials and get <eos> appended
    tok.post_processor = TemplateProcessing(single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)])
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>", eos_token="<eos>",
        additional_special_tokens=CHAT_SPECIALS if chat else None,
    )
    if chat:
        out.chat_template = CHAT_TEMPLATE
    return out


def word_tokenizer(texts: Iterable[str], max_vocab: int = 50_000, *, chat: bool = False):
    """Word-level tokenizer over the words of ``texts`` (unseen words map to <unk>); ``chat``: with the ChatML
    specials and template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if chat:  # the template's role names are words of every chat, whether or not the texts hold them
        texts = itertools.chain(texts, [" ".join(CHAT_ROLES)])
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=max_vocab, special_tokens=_specials(chat)))
    return _wrap(tok, chat)


def bpe_tokenizer(texts: Iterable[str], vocab_size: int = 512, *, chat: bool = False):
    """Byte-level BPE trained on ``texts`` (``vocab_size`` includes the 256 bytes and the special tokens);
    ``chat``: with the ChatML specials and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = _specials(chat)
    if vocab_size < 256 + len(specials):
        raise PbrlError(f"vocab_size: a byte-level BPE needs at least {256 + len(specials)}, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    return _wrap(tok, chat)


def load_tokenizer(path: str | Path, *, chat: bool = False):
    """A tokenizer saved in a local folder. ``chat``: it must carry a chat template and its own pad token (SFT pads
    batches and trains the end-of-turn token, so padding cannot borrow <eos>); one PbrlError naming the folder
    otherwise."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(path)
    if not path.is_dir():
        raise PbrlError(f"{path}: expected a local tokenizer folder (save_pretrained output)")
    try:
        # a tokenizer saved by a generic class (as pbrl's are) is read as saved: AutoTokenizer would take the class
        # of a model config beside it (Qwen2Tokenizer for a Qwen2 folder), whose own pre-tokenizer splits the text
        # differently from the one the vocabulary was trained with
        saved = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8")).get("tokenizer_class") \
            if (path / "tokenizer_config.json").is_file() else None
        if saved in ("TokenizersBackend", "PreTrainedTokenizerFast") and (path / "tokenizer.json").is_file():
            tok = PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
        else:
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as e:
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise PbrlError(f"{path}: unreadable tokenizer folder ({type(e).__name__}: {msg})") from None
    if chat:
        check_chat(tok, path)
    if tok.pad_token is None:  # many causal LM tokenizers have none; padding positions are never read
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


def check_chat(tokenizer, where: object = "tokenizer") -> None:
    """One PbrlError line when ``tokenizer`` cannot render chats (no chat template, or no pad token)."""
    if not getattr(tokenizer, "chat_template", None):
        raise PbrlError(f"{where}: the tokenizer has no chat template (build it with chat=True, or save one with "
                        "tokenizer.chat_template = ...)")
    if tokenizer.pad_token is None:
        raise PbrlError(f"{where}: the tokenizer has no pad token (chat batches need one distinct from "
                        "the end-of-turn token)")


def end_of_turn_id(tokenizer) -> int:
    """The id that closes a chat turn: <|im_end|> when the vocabulary has it, else the tokenizer's eos."""
    vocab = tokenizer.get_vocab()
    if IM_END in vocab:
        return int(vocab[IM_END])
    if tokenizer.eos_token_id is None:
        raise PbrlError("tokenizer: no <|im_end|> and no eos token to end a chat turn")
    return int(tokenizer.eos_token_id)


def render_chat(tokenizer, messages: Sequence[dict], *, add_generation_prompt: bool = False) -> str:
    """The chat template's text of ``messages`` (a list of {role, content})."""
    check_chat(tokenizer)
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise PbrlError(f"messages[{i}]: expected {{'role': str, 'content': str}}, got {m!r:.80}")
    return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def assistant_mask(tokenizer, messages: Sequence[dict], *, add_bos: bool = True) -> tuple[list[int], list[int]]:
    """Token ids of a rendered conversation and a 0/1 mask of the tokens an SFT loss trains on: the content of every
    assistant message plus the end-of-turn token that closes it (so the model learns to stop). Headers, user and
    system turns, the newline after <|im_end|> and the leading <bos> (``add_bos``) get 0.

    How: the conversation is rendered once and tokenized with character offsets; assistant turn i spans from the
    end of render(messages[:i], generation prompt) (where its content starts) to the end of the last end-of-turn
    text inside render(messages[:i+1]). Both renders must be prefixes of the full text (true of ChatML and of any
    template that renders turns one after another); a template that is not is refused with one line.
    """
    full = render_chat(tokenizer, messages)
    eot = tokenizer.convert_ids_to_tokens(end_of_turn_id(tokenizer))
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        head = render_chat(tokenizer, messages[:i], add_generation_prompt=True)
        turn = render_chat(tokenizer, messages[: i + 1])
        if not (full.startswith(head) and full.startswith(turn) and len(head) <= len(turn)):
            raise PbrlError("chat template: turns do not render as prefixes of the conversation, so the assistant "
                            "spans cannot be found")
        end = turn.rfind(eot)
        end = end + len(eot) if end >= len(head) else len(turn.rstrip())
        spans.append((len(head), end))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, mask = list(enc["input_ids"]), []
    for start, stop in enc["offset_mapping"]:
        mask.append(int(any(a <= start < b for a, b in spans) and stop > start))
    if add_bos and tokenizer.bos_token_id is not None:
        ids, mask = [tokenizer.bos_token_id] + ids, [0] + mask
    return ids, mask
