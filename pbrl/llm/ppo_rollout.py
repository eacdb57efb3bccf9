"""PPO's rollout and batching helpers (``pbrl.llm.ppo``): which prompts a step draws, n samples of each from the
policy's sampler, and the per-response tensors padded or computed in chunks into [B, T]."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pbrl.errors import PbrlError
from pbrl.llm.response_batch import AnyBatch

if TYPE_CHECKING:
    from pbrl.llm.ppo import PpoConfig


def step_rows(n_rows: int, seed: int, m: int, k: int) -> list[int]:
    """Indices of step k's m prompts (0-based step): the k-th block of a seeded permutation, wrapping (so a resumed
    run draws the same prompts)."""
    order = np.random.default_rng(seed).permutation(n_rows)
    return [int(order[(k * m + i) % n_rows]) for i in range(m)]


def context_length(model_path: str) -> int:
    """The model's context (``max_position_embeddings`` of its config.json; 0 when it does not say)."""
    path = Path(model_path) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PbrlError(f"{model_path}: expected a local HF model folder with config.json") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise PbrlError(f"{path}: unreadable model config ({type(e).__name__})") from None
    value = config.get("max_position_embeddings") if isinstance(config, dict) else None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0


def rollout(sampler, prompts: list[list[int]], cfg: PpoConfig, step: int, eot: int, pad: int,
             stream: int = 0) -> dict[str, Any]:
    """n samples of each prompt: per response its prompt, tokens, sampling log-probs and whether it ended at EOS
    (responses of prompt g in rows g n .. g n + n - 1). ``stream`` (the process) offsets the sampling seeds."""
    from pbrl.llm.sampler import SamplingConfig

    sampler.model.eval()
    out: dict[str, list] = {"groups": [], "prompts": [], "responses": [], "logprobs": [], "has_eos": []}
    for b in range(0, len(prompts), cfg.sample_batch):
        part = prompts[b : b + cfg.sample_batch]
        sc = SamplingConfig(n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                            eos_token_id=eot, pad_token_id=pad,
                            seed=cfg.seed * 1_000_003 + 7919 * (step + 1) + b + 104_729 * stream)
        gen = sampler.generate(part, sc)
        for p, group, lps, reasons in zip(part, gen.tokens, gen.logprobs, gen.finish_reasons):
            out["groups"].append(p)
            for y, lp, why in zip(group, lps, reasons):
                out["prompts"].append(p)
                out["responses"].append(y)
                out["logprobs"].append(torch.tensor(lp, dtype=torch.float32))
                out["has_eos"].append(why == "eos")
    return out


def padded(values: Sequence[torch.Tensor], T: int, device: torch.device) -> torch.Tensor:
    """Per-response 1-D tensors right-padded with 0 into [B, T]."""
    out = torch.zeros(len(values), T, device=device)
    for i, v in enumerate(values):
        out[i, : len(v)] = v.to(device)
    return out


def chunked(fn: Callable[[AnyBatch], torch.Tensor], batch: AnyBatch, size: int) -> torch.Tensor:
    """fn over chunks of ``size`` units of ``batch``, padded back to the batch's T: [B, T]."""
    B, T = batch.mask.shape
    out = torch.zeros(B, T, device=batch.mask.device)
    for i in range(0, batch.size, size):
        units = torch.arange(i, min(batch.size, i + size))
        v = fn(batch.select(units))
        out[batch.responses(units.to(out.device)), : v.shape[1]] = v
    return out
