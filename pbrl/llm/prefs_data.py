"""Preference data in the ecosystem's format: records {prompt, chosen, rejected}.

Readers: JSONL (one record per line) or a folder written by HF ``datasets`` (``save_to_disk``). A record's fields
are strings, or conversations (lists of {"role", "content"} messages, TRL's conversational format), which need a
tokenizer with a chat template. ``tokenize_records`` turns records into ``TokenizedPair`` (prompt with <bos>,
responses with <eos>), applying the chat template when the tokenizer has one.

Synthetic data for benchmarks: ``PROFILES`` holds the six datasets of Wang & Hegde (2024), Table 1, by median
length and prefix/completion ratio. We read "median length" as the median length of one standard DPO sequence
(prompt + one response) and the ratio as prompt length / response length, so a profile (L, r) draws prompts around
L*r/(1+r) and responses around L/(1+r) tokens (log-normal, sigma 0.35). The token-count bound on the speed-up is
then (2P+C+R)/(P+C+R). Responses follow a learnable rule (chosen tokens even ids, rejected odd ids) so that a
short DPO run has something to learn.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pbrl.errors import PbrlError
from pbrl.llm.prefix_sharing import TokenizedPair
from pbrl.utils import atomic_write_text, read_json_lines

# name -> (median sequence length, prefix/completion ratio); Wang & Hegde (2024), Table 1
PROFILES: dict[str, tuple[int, float]] = {
    "capybara": (1160, 1.59),
    "hh_rlhf": (186, 2.15),
    "metamath": (872, 3.91),
    "tldr": (416, 11.14),
    "tulu": (775, 6.34),
    "ultrafeedback": (409, 0.42),
}
# the paper's measured speed-ups of Flex+prefix sharing (no packing vs FA3, packing vs packed FA3)
PAPER_SPEEDUPS: dict[str, tuple[float, float]] = {
    "capybara": (1.42, 1.34),
    "hh_rlhf": (1.07, 1.41),
    "metamath": (1.38, 1.57),
    "tldr": (1.12, 1.35),
    "tulu": (1.47, 1.48),
    "ultrafeedback": (1.11, 1.17),
}

Text = str | list[dict[str, str]]


@dataclass(frozen=True)
class PreferenceRecord:
    """One preference: ``chosen`` is preferred over ``rejected`` as an answer to ``prompt``."""

    prompt: Text
    chosen: Text
    rejected: Text


def _check_field(value: Any, where: str) -> Text:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    ):
        return value
    raise PbrlError(f"{where}: expected a string or a list of {{role, content}} messages, got {type(value).__name__}")


def _record(obj: Any, where: str) -> PreferenceRecord:
    if not isinstance(obj, dict):
        raise PbrlError(f"{where}: expected an object with prompt, chosen, rejected")
    missing = [k for k in ("prompt", "chosen", "rejected") if k not in obj]
    if missing:
        raise PbrlError(f"{where}: missing field(s) {', '.join(missing)}")
    return PreferenceRecord(*(_check_field(obj[k], f"{where}: field {k!r}") for k in ("prompt", "chosen", "rejected")))


def load_preferences(path: str | Path) -> list[PreferenceRecord]:
    """Records from a JSONL file or an HF ``datasets`` folder (``save_to_disk``)."""
    path = Path(path)
    if path.is_dir():
        try:
            import datasets
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise PbrlError(f"{path}: reading a datasets folder needs the `datasets` package") from e
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as e:  # noqa: BLE001  any folder that is not a saved dataset is the user's input error
            msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise PbrlError(f"{path}: not a datasets folder written by save_to_disk ({type(e).__name__}: {msg})") from None
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise PbrlError(f"{path}: a DatasetDict needs a 'train' split, has {list(ds)}")
            ds = ds["train"]
        return [_record(row, f"{path}: row {i}") for i, row in enumerate(ds)]
    if not path.is_file():
        raise PbrlError(f"{path}: no such preference file (expected .jsonl or a datasets folder)")
    records = [_record(obj, f"{path}:{n}") for n, obj in read_json_lines(path)]
    if not records:
        raise PbrlError(f"{path}: no records")
    return records


def save_preferences(records: Iterable[PreferenceRecord], path: str | Path) -> None:
    """Write records as JSONL, atomically (temp file then rename)."""
    lines = [json.dumps({"prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected}) + "\n" for r in records]
    atomic_write_text(str(path), "".join(lines))


def _as_text(tokenizer, record: PreferenceRecord) -> tuple[str, str, str]:
    """Prompt and response strings; conversations go through the tokenizer's chat template."""
    template = getattr(tokenizer, "chat_template", None)
    conversational = [isinstance(x, list) for x in (record.prompt, record.chosen, record.rejected)]
    if not any(conversational):
        return record.prompt, record.chosen, record.rejected  # type: ignore[return-value]
    if not template:
        raise PbrlError("record: conversational fields need a tokenizer with a chat template")

    def msgs(x: Text, role: str) -> list[dict[str, str]]:
        return x if isinstance(x, list) else [{"role": role, "content": x}]

    prompt_msgs = msgs(record.prompt, "user")
    prompt = tokenizer.apply_chat_template(prompt_msgs, tokenize=False, add_generation_prompt=True)
    out = [prompt]
    for resp in (record.chosen, record.rejected):
        full = tokenizer.apply_chat_template(prompt_msgs + msgs(resp, "assistant"), tokenize=False)
        if not full.startswith(prompt):
            raise PbrlError("record: the chat template does not render the prompt as a prefix of the conversation")
        out.append(full[len(prompt) :])
    return out[0], out[1], out[2]


def tokenize_records(
    records: Sequence[PreferenceRecord],
    tokenizer,
    *,
    max_prompt_length: int | None = None,
    max_completion_length: int | None = None,
) -> list[TokenizedPair]:
    """Token ids of each record: prompt with the tokenizer's specials (<bos>), responses + <eos>.

    Over-long prompts keep their last ``max_prompt_length`` tokens; responses their first ``max_completion_length``.
    """
    pairs = []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for i, rec in enumerate(records):
        prompt, chosen, rejected = _as_text(tokenizer, rec)
        p = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        c = tokenizer(chosen, add_special_tokens=False)["input_ids"] + eos
        r = tokenizer(rejected, add_special_tokens=False)["input_ids"] + eos
        if max_prompt_length is not None:
            p = p[-max_prompt_length:]
        if max_completion_length is not None:
            c, r = c[:max_completion_length], r[:max_completion_length]
        if not p or not c or not r:
            raise PbrlError(f"record {i}: prompt and responses must tokenize to at least one token each")
        pairs.append(TokenizedPair(p, c, r))
    return pairs


def profile_lengths(profile: str, n: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """[n, 3] (prompt, chosen, rejected) lengths drawn for a profile of ``PROFILES``, times ``scale``."""
    if profile not in PROFILES:
        raise PbrlError(f"profile: expected one of {sorted(PROFILES)}, got {profile!r}")
    median, ratio = PROFILES[profile]
    rng = np.random.default_rng(seed)
    p_med, c_med = scale * median * ratio / (1 + ratio), scale * median / (1 + ratio)
    sigma = 0.35
    p = np.exp(rng.normal(math.log(p_med), sigma, n))
    cr = np.exp(rng.normal(math.log(c_med), sigma, (n, 2)))
    return np.maximum(np.round(np.column_stack([p, cr])), 1).astype(np.int64)


def synthetic_pairs(
    profile: str, n: int, vocab_size: int, *, seed: int = 0, scale: float = 1.0
) -> list[TokenizedPair]:
    """Token-id preference pairs with a profile's lengths: chosen tokens even ids, rejected odd ids."""
    if vocab_size < 4:
        raise PbrlError(f"vocab_size: expected >= 4, got {vocab_size}")
    lengths = profile_lengths(profile, n, seed, scale)
    rng = np.random.default_rng(seed + 1)
    half = vocab_size // 2
    pairs = []
    for p, c, r in lengths:
        pairs.append(
            TokenizedPair(
                rng.integers(0, vocab_size, p).tolist(),
                (2 * rng.integers(0, half, c)).tolist(),
                (2 * rng.integers(0, half, r) + 1).tolist(),
            )
        )
    return pairs


def synthetic_records(profile: str, n: int, *, vocab_words: int = 200, seed: int = 0, scale: float = 1.0):
    """Text records with a profile's lengths in words (``w<id>``); chosen words even ids, rejected odd ids."""
    words = lambda ids: " ".join(f"w{t}" for t in ids)  # noqa: E731
    # responses start with a space, so that prompt + response re-tokenizes into the same words (TRL joins them)
    return [
        PreferenceRecord(words(p.prompt), " " + words(p.chosen), " " + words(p.rejected))
        for p in synthetic_pairs(profile, n, vocab_words, seed=seed, scale=scale)
    ]
