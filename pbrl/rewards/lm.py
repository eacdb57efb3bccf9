"""LM reward learner (registry name `lm`): bandit, token and segment-level reward models (SegmentRM, Yin et al.
2025, arXiv 2501.02790) on the shared reward-learner interface.

Work in progress: the public API below is fixed; the learner is being written.
"""

from __future__ import annotations

import os

import torch


def load_lm_reward(path: str | os.PathLike, device: str = "cpu"):
    """The LM reward model saved in folder `path` (by `pbrl reward train DATA.jsonl --model lm --out DIR`)."""
    raise NotImplementedError("the LM reward learner is not written yet")


def token_rewards(model, prompt_ids: list[list[int]], response_ids: list[list[int]]) -> list[torch.Tensor]:
    """Dense per-token rewards of each response, for PPO.

    prompt_ids[i], response_ids[i]: token ids (the prompt with its specials, the response as generated, ending at
    its stop token when it has one). Returns one float32 tensor [len(response_ids[i])] per response: the
    location-normalized segment rewards r~_k = (r(e_k) - mu(k/K)) / sigma(k/K) spread evenly over their segments
    (r_t = r~_k / l_k), 0 on the stop token (segment and token models) and after it, clamped to [-10, 10]. No KL
    term: PPO adds -beta (log pi - log pi_ref) itself.
    """
    raise NotImplementedError("the LM reward learner is not written yet")
