"""Tokenizers built locally (trained with `tokenizers` on the data at hand) or loaded from a local folder.

- ``word_tokenizer(texts)``: one token per whitespace-separated word (the synthetic data is made of words, so
  token counts equal word counts);
- ``bpe_tokenizer(texts, vocab_size)``: byte-level BPE trained on ``texts`` (any text, no unknown bytes);
- ``load_tokenizer(path)``: any HF tokenizer saved with ``save_pretrained``, never downloaded.

All return a ``transformers.PreTrainedTokenizerFast`` with pad/bos/eos tokens set.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pbrl.errors import PbrlError

SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]


def _wrap(tok):
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    bos = tok.token_to_id("<bos>")
    # the prompt starts with <bos>; responses are tokenized without specials and get <eos> appended
    tok.post_processor = TemplateProcessing(single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>", eos_token="<eos>"
    )


def word_tokenizer(texts: Iterable[str], max_vocab: int = 50_000):
    """Word-level tokenizer over the words of ``texts`` (unseen words map to <unk>)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=max_vocab, special_tokens=SPECIALS))
    return _wrap(tok)


def bpe_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """Byte-level BPE trained on ``texts`` (``vocab_size`` includes the 256 bytes and the special tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 256 + len(SPECIALS):
        raise PbrlError(f"vocab_size: a byte-level BPE needs at least {256 + len(SPECIALS)}, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    return _wrap(tok)


def load_tokenizer(path: str | Path):
    """A tokenizer saved in a local folder."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise PbrlError(f"{path}: expected a local tokenizer folder (save_pretrained output)")
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tok.pad_token is None:  # many causal LM tokenizers have none; padding positions are never read
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok
