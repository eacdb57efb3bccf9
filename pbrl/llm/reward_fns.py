"""The reward sources of LM RL (`pbrl llm ppo`): a judge at the last token (bandit) or a learned LM reward model's
dense per-token rewards, both as a ``RewardFn``, and the check every reward function's output goes through."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from pbrl.errors import PbrlError
from pbrl.llm.odpo import Judge, judge_all

RewardFn = Callable[[list[list[int]], list[list[int]]], list[torch.Tensor]]
"""``reward(prompt_ids, response_ids) -> rewards``: for B responses (token ids, EOS included when emitted) of
their prompts, B float tensors, the i-th of shape [len(response_ids[i])]: the reward of every response token,
before the KL term."""


class JudgeReward:
    """A judge ``(row, text) -> score`` as a ``RewardFn``: the score at the response's last token, 0 elsewhere
    (the bandit setting). The row of a prompt is found by its token ids (``rows`` and their ``prompts`` ids)."""

    dense = False

    def __init__(self, judge: Judge, tokenizer, rows: Sequence[Any], prompts: Sequence[Sequence[int]]):
        self.judge, self.tokenizer = judge, tokenizer
        self.by_prompt: dict[tuple[int, ...], Any] = {}
        for row, p in zip(rows, prompts):
            self.by_prompt.setdefault(tuple(p), row)

    def __call__(self, prompts: list[list[int]], responses: list[list[int]]) -> list[torch.Tensor]:
        try:
            rows = [self.by_prompt[tuple(p)] for p in prompts]
        except KeyError:
            raise PbrlError("judge reward: a prompt that is not one of the run's prompts") from None
        texts = [[self.tokenizer.decode(r, skip_special_tokens=True)] for r in responses]
        scores = judge_all(rows, texts, self.judge)
        out = []
        for r, (s,) in zip(responses, scores):
            t = torch.zeros(len(r), dtype=torch.float32)
            if len(r):
                t[-1] = s
            out.append(t)
        return out


class ModelReward:
    """A learned LM reward model (a folder of ``pbrl reward train --model lm``) as a ``RewardFn``: its dense
    per-token rewards (``pbrl.rewards.lm.token_rewards``: location-normalized segment rewards spread over their
    segments, 0 on the stop token, clamped; no KL term). Its tokenizer must be the policy's (the token ids are
    shared)."""

    dense = True

    def __init__(self, path: str | Path, tokenizer=None, device: str = "cpu"):
        try:
            from pbrl.rewards.lm import load_lm_reward, token_rewards
        except ImportError as e:
            raise PbrlError(f"reward: the LM reward model (pbrl.rewards.lm) cannot be imported ({e})") from None
        self.model = load_lm_reward(path, device=device)
        self._token_rewards = token_rewards
        if tokenizer is not None and self.model.tokenizer.get_vocab() != tokenizer.get_vocab():
            raise PbrlError(f"reward: {path}: the reward model's tokenizer is not the policy's (train it on the "
                            "policy's tokenizer, e.g. --lm.model-path of the SFT model)")

    @property
    def context(self) -> int:
        """Longest prompt + response the reward model scores."""
        return int(self.model.length)

    def __call__(self, prompts: list[list[int]], responses: list[list[int]]) -> list[torch.Tensor]:
        with torch.no_grad():
            return self._token_rewards(self.model, prompts, responses)


def check_rewards(rewards: Sequence[Any], responses: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """The reward function's output checked: one finite 1-D tensor per response, of the response's length."""
    if not isinstance(rewards, (list, tuple)) or len(rewards) != len(responses):
        raise PbrlError(f"reward: expected a list of {len(responses)} tensors (one per response), "
                        f"got {type(rewards).__name__} of {len(rewards) if hasattr(rewards, '__len__') else '?'}")
    out = []
    for i, (r, y) in enumerate(zip(rewards, responses)):
        if not isinstance(r, torch.Tensor) or r.dim() != 1 or r.shape[0] != len(y):
            shape = tuple(r.shape) if isinstance(r, torch.Tensor) else type(r).__name__
            raise PbrlError(f"reward: response {i}: expected a tensor of shape [{len(y)}] (one reward per token), "
                            f"got {shape}")
        r = r.detach().float().cpu()
        if not torch.isfinite(r).all():
            raise PbrlError(f"reward: response {i}: found non-finite rewards")
        out.append(r)
    return out
