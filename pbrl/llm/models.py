"""Tiny causal LMs built locally from transformers configs (random init), or any HF model from a local path.

Nothing here touches a model hub: ``build_model`` makes a Llama- or Qwen2-style model from a config, and
``load_model`` reads a local folder with ``local_files_only=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from pbrl.errors import PbrlError
from pbrl.llm.attention import implementation_name


@dataclass
class TinyLMConfig:
    """Shape of a randomly initialised decoder-only LM."""

    arch: Literal["llama", "qwen2"] = "llama"
    """Architecture family (both use RoPE, RMSNorm, SwiGLU and grouped-query attention)."""
    vocab_size: int = 256
    """Vocabulary size; must cover the tokenizer's ids."""
    hidden_size: int = 64
    """Width of the residual stream."""
    num_layers: int = 2
    """Number of decoder layers."""
    num_heads: int = 4
    """Query heads (head_dim = hidden_size / num_heads)."""
    num_kv_heads: int = 2
    """Key/value heads (grouped-query attention when smaller than num_heads)."""
    intermediate_size: int = 128
    """Width of the MLP."""
    max_position: int = 4096
    """Longest position the RoPE cache covers."""
    rope_theta: float = 10000.0
    """RoPE base."""
    tie_embeddings: bool = True
    """Share the input embedding and output head weights."""


def build_model(
    cfg: TinyLMConfig,
    *,
    backend: str = "sdpa",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> torch.nn.Module:
    """A randomly initialised causal LM of ``cfg`` with attention ``backend`` (see ``pbrl.llm.attention``)."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    if cfg.hidden_size % cfg.num_heads or cfg.num_heads % cfg.num_kv_heads:
        raise PbrlError(
            f"TinyLMConfig: hidden_size ({cfg.hidden_size}) must divide by num_heads ({cfg.num_heads}) and "
            f"num_heads by num_kv_heads ({cfg.num_kv_heads})"
        )
    common = dict(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position,
        rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_embeddings,
        attention_dropout=0.0,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    if cfg.arch == "llama":
        hf_cfg = LlamaConfig(**common)
    elif cfg.arch == "qwen2":
        hf_cfg = Qwen2Config(**common, use_sliding_window=False)
    else:
        raise PbrlError(f"TinyLMConfig.arch: expected 'llama' or 'qwen2', got {cfg.arch!r}")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(
        hf_cfg, attn_implementation=implementation_name(backend), dtype=dtype
    )
    return model


def load_model(
    path: str | Path, *, backend: str = "sdpa", dtype: torch.dtype | None = None
) -> torch.nn.Module:
    """Any HF causal LM saved in a local folder (``save_pretrained``); never downloads. Tested on tiny Llama,
    Qwen2, GPT-2, GPT-NeoX, Phi, Gemma, Gemma 2 and Gemma 3 models (tests/llm/test_llm_families.py). A model that
    soft-caps its attention scores (Gemma 2's default ``attn_logit_softcapping``) is refused: neither pbrl's
    attention backends nor HF's sdpa compute it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    if not (path / "config.json").is_file():
        raise PbrlError(f"{path}: expected a local HF model folder with config.json")
    cap = getattr(AutoConfig.from_pretrained(path, local_files_only=True), "attn_logit_softcapping", None)
    if cap is not None:
        raise PbrlError(f"{path}: the model soft-caps its attention scores (attn_logit_softcapping={cap}), which "
                        "neither pbrl's attention backends nor HF's sdpa implement")
    try:
        return AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, attn_implementation=implementation_name(backend), dtype=dtype
        )
    except (OSError, ValueError) as e:  # e.g. HF refuses any "*sdpa*" implementation for a model without sdpa
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise PbrlError(f"{path}: cannot load the model with backend {backend} ({type(e).__name__}: {msg})") from None


def num_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def multi_process_accelerator(device: str):
    """An ``accelerate.Accelerator`` when this process is one of several (launched by torchrun or ``accelerate
    launch``), else None (a single process, or accelerate not installed)."""
    try:
        from accelerate import Accelerator
        from accelerate.state import PartialState
    except ImportError:
        return None
    cpu = device == "cpu" or not torch.cuda.is_available()
    return Accelerator(cpu=cpu) if PartialState(cpu=cpu).num_processes > 1 else None
