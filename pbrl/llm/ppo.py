"""PPO for language models on per-token rewards (dense from a token/segment reward model, or a bandit score).

The recipe of Yin et al. 2025 (arXiv 2501.02790, "Segmenting Text and Learning Their Rewards for Improved RLHF",
built on OpenRLHF), per step k:

    rollout    y_{p,1..n} ~ pi_k( . | x_p) for the step's prompts      (``HFSampler``; a turn ends at the chat
               template's end-of-turn token)
    scoring    s_t = R(x, y)_t, one reward per response token            (``RewardFn``: a token / segment reward
               model's dense rewards, or a judge's score at the last token: the bandit setting)
    forward    log pi_old(y_t), log pi_ref(y_t) (the frozen initial model), V_old(s_t) (the critic)
    shaping    r_t = clamp(s_t, -c, c) - beta (log pi_old(y_t) - log pi_ref(y_t)) - e [y has no EOS]
               (the k1 KL estimator in the reward, beta 0.01; e the per-token penalty of a response that ends
               without EOS, 0.05 in the paper's Llama-3.1 run; c = 10)
    GAE        delta_t = r_t + gamma V(s_{t+1}) - V(s_t),  A_t = sum_l (gamma lam)^l delta_{t+l},  R_t = A_t + V(s_t)
               (gamma 1, lam 0.95; V = 0 after the last token), advantages whitened over the whole rollout
    update     ppo_epochs passes over shuffled minibatches (of whole prompt groups with prefix sharing):
               actor   L_pi = mean_t -min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t),  rho_t = pi/pi_old, eps 0.2
               critic  L_V  = mean_t 1/2 max((V - R_t)^2, (V_old + clip(V - V_old, -d, d) - R_t)^2)
               (d = 0.25 for dense rewards, 0.2 for the bandit; means over the minibatch's response tokens)

The critic is the initial policy's transformer with a fresh linear value head (the paper does not start it from
the reward model); V(s_t) is read at the position whose hidden state predicts y_t, i.e. the state x, y_<t. The
log-probs in the loss are the policy's own (temperature 1, no nucleus). log pi_old is the sampler's log-prob when
it sampled from exactly that distribution (temperature 1, top_p 1: no extra forward pass; equal up to float
rounding), else it is recomputed after the rollout. With ``prefix_sharing`` (the default) every forward and
backward pass runs each prompt once for its n responses, through the KV cache (``SharedBatch``).

Data parallel: launched as several processes (``accelerate launch`` / torchrun), each process samples, scores and
evaluates its share of every step's prompts, the advantages are whitened with the mean and variance over all
processes, each minibatch is split over the processes (DDP averages the actor's and the critic's gradients), and
the metrics are sums over all processes; the first process writes the folder.

Rewards: ``RewardFn = (prompt_ids, response_ids) -> [rewards of each response, one per token]``. ``JudgeReward``
makes one from a judge (``row, text -> score``, as for online DPO, e.g. ``pbrl_envs.chat:judge``); a learned LM
reward model (``pbrl.rewards.lm``) gives dense ones (``ModelReward``); both live in ``pbrl.llm.reward_fns``.

Metrics per step: ``ppo/score`` (mean over responses of the summed pre-KL rewards: the judge's score for the
bandit), ``ppo/kl`` (mean summed log pi_old - log pi_ref), ``ppo/reward`` (the shaped return), response length,
EOS fraction, the losses, clip fraction, approximate KL of the update and grad norms, and for each stage its
seconds and generated tokens per second (``perf/rollout_tokens_per_s`` ... ``perf/update_tokens_per_s``), and the
critic's share of the forward and update seconds (``perf/critic_forward_s``, ``perf/critic_update_s``). Each stage
runs under a ``torch.profiler`` label ``ppo/<stage>`` (``ppo/update/actor``, ``ppo/update/critic``, ...).

Layout of ``out``: config.json, metrics.jsonl (one row per step, with tokens/s of every stage), checkpoint.pt
(policy, critic, both optimizers and the step, written as one file), model/ (the final policy and its tokenizer),
critic.pt, summary.json. Resume: from checkpoint.pt; a resumed run reaches the same weights as an uninterrupted
one (the prompts, sampling seeds and minibatch order of a step depend on the seed and the step only).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import tyro

from pbrl.errors import PbrlError
from pbrl.llm.odpo import Judge, load_prompts, prompt_ids, resolve_judge
from pbrl.llm.ppo_rollout import chunked, context_length, padded, rollout, step_rows
from pbrl.llm.response_batch import (
    AnyBatch,
    Batch,
    SharedBatch,
    build_batch,
    build_shared_batch,
    token_logprobs,
)
from pbrl.llm.reward_fns import JudgeReward, ModelReward, RewardFn, check_rewards
from pbrl.runs import RunFolder, RunSettings, fingerprint_file
from pbrl.utils import adam, atomic_torch_save, denormals_flushed, resolve_device, safe_torch_load, set_seed


# ----------------------------------------------------------------------------------------------- pure functions
def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016) on right-padded responses.

    rewards, values, mask [B, T] (mask 1 on the response's tokens, a prefix of each row) -> advantages, returns
    [B, T], 0 on padding:

        delta_t = r_t + gamma V_{t+1} - V_t      (V_{t+1} = 0 after the last token: the episode ends there)
        A_t     = delta_t + gamma lam A_{t+1}
        R_t     = A_t + V_t
    """
    m = mask.to(rewards.dtype)
    B, T = rewards.shape
    adv = torch.zeros_like(rewards)
    next_v = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    next_a = torch.zeros_like(next_v)
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        a = (delta + gamma * lam * next_a) * m[:, t]
        adv[:, t] = a
        next_v, next_a = values[:, t] * m[:, t], a
    return adv, (adv + values) * m


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked entries (population variance, floored at eps), 0 elsewhere. [B, T]."""
    m = mask.to(x.dtype)
    n = m.sum().clamp_min(1.0)
    mean = (x * m).sum() / n
    var = ((x - mean) ** 2 * m).sum() / n
    return (x - mean) * var.clamp_min(eps).rsqrt() * m


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over the masked entries (a scalar)."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7) as a loss, and the fraction of clipped tokens.

    logp, old_logp, advantages, mask [B, T] -> (mean_t -min(rho_t A_t, clip(rho_t, 1-eps, 1+eps) A_t), clipfrac),
    rho_t = exp(logp_t - old_logp_t), means over the masked tokens.
    """
    ratio = torch.exp(logp - old_logp)
    surr = torch.minimum(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
    clipped = ((ratio - 1).abs() > clip).to(logp.dtype)
    return masked_mean(-surr, mask), masked_mean(clipped, mask).detach()


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float | None
) -> torch.Tensor:
    """Clipped value loss: mean_t 1/2 max((V - R)^2, (V_old + clip(V - V_old, -d, d) - R)^2); d = None: unclipped.
    values, old_values, returns, mask [B, T] -> scalar."""
    err = (values - returns) ** 2
    if clip is not None:
        v_clip = old_values + (values - old_values).clamp(-clip, clip)
        err = torch.maximum(err, (v_clip - returns) ** 2)
    return 0.5 * masked_mean(err, mask)


def shape_rewards(
    scores: torch.Tensor,
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    has_eos: torch.Tensor,
    *,
    beta: float = 0.01,
    no_eos_penalty: float = 0.0,
    clamp: float = 10.0,
) -> torch.Tensor:
    """Per-token PPO rewards: r_t = clamp(s_t, -c, c) - beta (logp_t - ref_logp_t) - e [no EOS], 0 on padding.

    scores, logp, ref_logp, mask [B, T]; has_eos [B] bool (the response ended with EOS) -> [B, T].
    """
    m = mask.to(scores.dtype)
    r = scores.clamp(-clamp, clamp) - beta * (logp - ref_logp)
    r = r - no_eos_penalty * (~has_eos).to(scores.dtype)[:, None]
    return r * m


# ----------------------------------------------------------------------------------------------- models
class ValueModel(torch.nn.Module):
    """The critic: a causal LM's transformer (``lm.get_decoder()``, without its output head) and a fresh linear
    value head, V(s) = w . h(s) + b."""

    def __init__(self, lm: torch.nn.Module, seed: int = 0):
        super().__init__()
        self.backbone = lm.get_decoder()
        hidden = int(lm.config.hidden_size)
        self.head = torch.nn.Linear(hidden, 1, dtype=next(self.backbone.parameters()).dtype)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # small random weights, zero bias: values start near 0
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=g) / (hidden + 1))
            self.head.bias.zero_()


def token_values(critic: ValueModel, batch: AnyBatch) -> torch.Tensor:
    """V(x, y_<t) of every response token [B, T] (float32 at least, 0 on padding)."""
    v = critic.head(batch.hidden(critic.backbone)).squeeze(-1)
    return v.to(torch.promote_types(v.dtype, torch.float32)) * batch.mask


# ----------------------------------------------------------------------------------------------- config
@dataclass
class PpoConfig(RunSettings):
    """PPO run: ``steps`` x (rollout, scoring, forward, ``ppo_epochs`` of minibatch updates)."""

    prompts: str = ""
    """Prompts JSONL: one object per line with ``messages`` or ``prompt`` (other fields go to the judge)."""
    model_path: str = ""
    """The local HF model folder of the initial policy (the SFT model); also the reference and the critic's start."""
    tokenizer_path: str | None = None
    """A local tokenizer folder (default: the model folder)."""
    out: str = "runs/ppo"
    """Output folder (see the module docstring)."""
    judge: str | None = None
    """Bandit reward: a judge ``module:function`` (row, response text) -> score, given at the last token."""
    reward: str | None = None
    """Dense reward: a saved LM reward model (``pbrl.rewards.lm.load_lm_reward``); exactly one of judge / reward."""
    steps: int = 10
    """PPO iterations (rollout + update)."""
    prompts_per_step: int = 8
    """Prompts of each rollout (the k-th block of a seeded permutation of the prompts, wrapping)."""
    n: int = 4
    """Samples per prompt."""
    temperature: float = 1.0
    """Sampling temperature (paper: 1.0)."""
    top_p: float = 1.0
    """Nucleus mass of the sampler (paper: 1.0)."""
    max_new_tokens: int = 64
    """Longest response; a turn ends earlier at the end-of-turn token."""
    sample_batch: int = 16
    """Prompts per sampler call (their n samples decode together)."""
    ppo_epochs: int = 1
    """Passes over each rollout."""
    minibatch_size: int = 8
    """Responses per actor/critic update (with prefix_sharing: whole prompt groups, a multiple of n)."""
    forward_batch: int = 64
    """Responses per no-grad forward pass (old and reference log-probs, values)."""
    prefix_sharing: bool = True
    """Run each prompt once for its n responses (through the KV cache, see ``SharedBatch``) in every forward and
    backward pass; False: one row [prompt, response] per response (minibatches of any size)."""
    sampler_logprobs: bool = True
    """At temperature 1 and top_p 1 in float32, take log pi_old from the sampler (the distribution it drew from is
    the policy's own) instead of one more forward pass; otherwise (or in bfloat16, where the cached decode and a
    full forward round differently) they are recomputed."""
    actor_lr: float = 5e-7
    """AdamW learning rate of the policy (paper, 8B models: 5e-7; tiny models need far more)."""
    critic_lr: float = 9e-6
    """AdamW learning rate of the critic (paper: 9e-6)."""
    clip: float = 0.2
    """PPO ratio clip eps."""
    value_clip: float | None = None
    """Value clip d; None = 0.25 for a dense reward (--reward), 0.2 for the bandit (--judge), as in the paper."""
    gamma: float = 1.0
    """GAE discount."""
    lam: float = 0.95
    """GAE lambda."""
    kl_beta: float = 0.01
    """beta of the KL penalty in the reward (k1 estimator, log pi - log pi_ref per token)."""
    no_eos_penalty: float = 0.05
    """Subtracted from every token's reward of a response that ends without EOS (paper: 0.05)."""
    reward_clamp: float = 10.0
    """Rewards are clamped to [-c, c] before the KL term."""
    whiten_advantages: bool = True
    """Whiten the advantages over each rollout."""
    max_grad_norm: float = 1.0
    """Gradient clipping of actor and critic (0 = off)."""
    checkpoint_every: int = 5
    """Write checkpoint.pt every this many steps (and at the end)."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Parameter dtype (log-probs, values and losses are computed in float32)."""

    def check(self) -> None:
        """One PbrlError naming the field for a setting out of range."""
        if not self.prompts:
            raise PbrlError("prompts: expected a JSONL file of prompts (rows with messages or prompt)")
        if not self.model_path:
            raise PbrlError("model_path: expected a local HF model folder of the initial (SFT) policy")
        if (self.judge is None) == (self.reward is None):
            raise PbrlError("reward: expected exactly one of --judge module:function (bandit) or --reward PATH "
                            f"(a saved LM reward model), got {'both' if self.judge else 'neither'}")
        for name, lo in (("steps", 1), ("prompts_per_step", 1), ("n", 1), ("max_new_tokens", 1),
                         ("sample_batch", 1), ("ppo_epochs", 1), ("minibatch_size", 1), ("forward_batch", 1),
                         ("checkpoint_every", 1)):
            if getattr(self, name) < lo:
                raise PbrlError(f"{name}: expected >= {lo}, got {getattr(self, name)}")
        if self.prefix_sharing and self.minibatch_size % self.n:
            raise PbrlError(f"minibatch_size: with prefix_sharing a minibatch holds whole prompt groups, so it must "
                            f"be a multiple of n ({self.n}), got {self.minibatch_size} (or pass --no-prefix-sharing)")
        if not self.temperature > 0:
            raise PbrlError(f"temperature: expected > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise PbrlError(f"top_p: expected in (0, 1], got {self.top_p}")
        for name in ("actor_lr", "critic_lr", "clip", "reward_clamp"):
            if not getattr(self, name) > 0:
                raise PbrlError(f"{name}: expected > 0, got {getattr(self, name)}")
        if self.value_clip is not None and not self.value_clip > 0:
            raise PbrlError(f"value_clip: expected > 0 or None, got {self.value_clip}")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise PbrlError(f"gamma, lam: expected in [0, 1], got {self.gamma}, {self.lam}")
        for name in ("kl_beta", "no_eos_penalty", "max_grad_norm"):
            if not getattr(self, name) >= 0:
                raise PbrlError(f"{name}: expected >= 0, got {getattr(self, name)}")


# ----------------------------------------------------------------------------------------------- trainer
_NOT_FINGERPRINTED = ("out", "resume", "steps", "progress", "device", "checkpoint_every", "threads")


def _device(cfg: PpoConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return resolve_device(cfg.device)


class _Logps(torch.nn.Module):
    """The policy as one module call (what DDP wraps): batch -> token log-probs [B, T]."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: AnyBatch) -> torch.Tensor:
        return token_logprobs(self.model, batch)


class _Values(torch.nn.Module):
    """The critic as one module call (what DDP wraps): batch -> token values [B, T]."""

    def __init__(self, critic: ValueModel):
        super().__init__()
        self.critic = critic

    def forward(self, batch: AnyBatch) -> torch.Tensor:
        return token_values(self.critic, batch)


def _global_whiten(x: torch.Tensor, mask: torch.Tensor, accelerator, eps: float = 1e-8) -> torch.Tensor:
    """``masked_whiten`` with the mean and variance over every process's entries."""
    if accelerator is None:
        return masked_whiten(x, mask, eps)
    m = mask.to(x.dtype)
    t = torch.stack([(x * m).sum(), (x * x * m).sum(), m.sum()]).double()
    tot, sq, n = accelerator.reduce(t, reduction="sum").tolist()
    mean = tot / max(n, 1.0)
    var = max(sq / max(n, 1.0) - mean * mean, eps)
    return (x - mean) * (var ** -0.5) * m


def _stage(name: str) -> torch.profiler.record_function:
    """A profiler label ``ppo/<name>`` around a stage of the step (no cost without an active profiler): a
    ``torch.profiler`` trace of ``train_ppo`` groups its ops by stage."""
    return torch.profiler.record_function(f"ppo/{name}")


def _clip_step(params, optimizer, max_norm: float, clip_norm=torch.nn.utils.clip_grad_norm_) -> float:
    norm = float(clip_norm(params, max_norm)) if max_norm > 0 else 0.0
    optimizer.step()
    return norm


@denormals_flushed()
def train_ppo(cfg: PpoConfig, reward_fn: RewardFn | None = None, judge: Judge | None = None) -> dict[str, Any]:
    """Run PPO (module docstring). The reward is ``reward_fn`` when given (dense, for the default value clip, when
    it has an attribute ``dense = True``), else ``judge`` (or ``cfg.judge`` resolved) at the last token, else the
    LM reward model at ``cfg.reward``. Returns the summary written to ``out/summary.json`` (per-step rows under
    "history")."""
    from pbrl.llm.models import load_model, multi_process_accelerator, num_parameters
    from pbrl.llm.sampler import HFSampler
    from pbrl.llm.tokenizer import end_of_turn_id, load_tokenizer

    if reward_fn is None and judge is not None and cfg.judge is None:
        cfg = dataclasses.replace(cfg, judge=f"{getattr(judge, '__module__', '?')}:"
                                             f"{getattr(judge, '__qualname__', type(judge).__name__)}")
    if reward_fn is not None and cfg.judge is None and cfg.reward is None:
        cfg = dataclasses.replace(cfg, judge=f"{getattr(reward_fn, '__module__', '?')}:"
                                             f"{getattr(reward_fn, '__qualname__', type(reward_fn).__name__)}")
    cfg.check()
    if cfg.threads is not None:  # once, before any tensor work
        from pbrl.utils import use_threads

        use_threads(cfg.threads)
    accelerator = multi_process_accelerator(cfg.device)
    rank = accelerator.process_index if accelerator else 0
    world = accelerator.num_processes if accelerator else 1
    if cfg.prompts_per_step % world or (cfg.minibatch_size // (cfg.n if cfg.prefix_sharing else 1)) % world:
        raise PbrlError(f"prompts_per_step ({cfg.prompts_per_step}) and the minibatch's "
                        f"{'prompt groups' if cfg.prefix_sharing else 'responses'} must divide by the "
                        f"{world} processes")
    rows = load_prompts(cfg.prompts)
    tokenizer = load_tokenizer(cfg.tokenizer_path or cfg.model_path)
    device = accelerator.device if accelerator else _device(cfg)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]
    prompts = [prompt_ids(tokenizer, r) for r in rows]
    context = context_length(cfg.model_path)
    for i, p in enumerate(prompts):
        if context and len(p) + cfg.max_new_tokens > context:
            raise PbrlError(f"{cfg.prompts}:{i + 1}: the prompt's {len(p)} tokens + max_new_tokens "
                            f"{cfg.max_new_tokens} exceed the model's context of {context}")
    if reward_fn is None:
        if cfg.reward is not None:
            reward_fn = ModelReward(cfg.reward, tokenizer, device=str(device))
            longest = max(len(p) for p in prompts) + cfg.max_new_tokens
            if longest > reward_fn.context:
                raise PbrlError(f"reward: {cfg.reward}: the longest prompt + max_new_tokens is {longest} tokens, "
                                f"longer than the reward model's context of {reward_fn.context}")
        else:
            reward_fn = JudgeReward(judge or resolve_judge(cfg.judge), tokenizer, rows, prompts)
    dense = bool(getattr(reward_fn, "dense", cfg.reward is not None))
    vclip = cfg.value_clip if cfg.value_clip is not None else (0.25 if dense else 0.2)

    out = Path(cfg.out)
    config = dataclasses.asdict(cfg)
    fp = {k: v for k, v in config.items() if k not in _NOT_FINGERPRINTED}
    fp["prompts_sha256"] = fingerprint_file(cfg.prompts)
    if cfg.reward:
        from pbrl.llm.dpo import _path_fingerprint  # the files of a folder, by their bytes

        fp["reward_sha256"] = _path_fingerprint(Path(cfg.reward))
    # a resume of a folder holding another run is refused before anything is read from it or written to it
    RunFolder(out, config, fingerprint=fp, resume=cfg.resume, write=False)

    set_seed(cfg.seed)
    policy = load_model(cfg.model_path, dtype=dtype)
    reference = load_model(cfg.model_path, dtype=dtype).to(device).eval().requires_grad_(False)
    critic = ValueModel(load_model(cfg.model_path, dtype=dtype), seed=cfg.seed)
    policy.to(device)
    critic.to(device)
    actor_opt = adam(policy.parameters(), cfg.actor_lr, decoupled=True)
    critic_opt = adam(critic.parameters(), cfg.critic_lr, decoupled=True)
    step = 0
    ckpt = out / "checkpoint.pt"
    if cfg.resume and ckpt.is_file():
        state = safe_torch_load(ckpt, what="PPO checkpoint")
        try:
            policy.load_state_dict(state["policy"])
            critic.load_state_dict(state["critic"])
            actor_opt.load_state_dict(state["actor_opt"])
            critic_opt.load_state_dict(state["critic_opt"])
            step = int(state["step"])
        except (RuntimeError, TypeError, KeyError, ValueError, AttributeError) as e:
            msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise PbrlError(f"{ckpt}: does not fit the models ({type(e).__name__}: {msg})") from None
    run = RunFolder(out, config, fingerprint=fp, resume=cfg.resume, device=str(device), write=rank == 0,
                    extra={"num_parameters": num_parameters(policy), "value_clip": vclip, "dense_reward": dense,
                           "processes": world})
    history = run.rewind(step)  # rows a killed run logged after its checkpoint come again
    actor, value_fn = _Logps(policy), _Values(critic)  # DDP averages their gradients over the processes
    if accelerator is not None:
        actor, value_fn, actor_opt, critic_opt = accelerator.prepare(actor, value_fn, actor_opt, critic_opt)
    clip_norm = accelerator.clip_grad_norm_ if accelerator is not None else torch.nn.utils.clip_grad_norm_

    eot = end_of_turn_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eot
    sampler = HFSampler(policy)  # holds the policy itself: every rollout samples the current weights
    bar = None
    if cfg.progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc="ppo", unit="step")

    def sync() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    try:
        while step < cfg.steps:
            # ---- rollout
            t0 = sync()
            # each process samples its share of the step's prompts
            with _stage("rollout"):
                mine = step_rows(len(rows), cfg.seed, cfg.prompts_per_step, step)[rank::world]
                ro = rollout(sampler, [prompts[i] for i in mine], cfg, step, eot, pad, stream=rank)
            # ---- scoring
            t1 = sync()
            with _stage("scoring"):
                scores_l = check_rewards(reward_fn(ro["prompts"], ro["responses"]), ro["responses"])
            # ---- forward: old log-probs, reference log-probs, old values; shaped rewards, GAE
            t2 = sync()
            if cfg.prefix_sharing:
                batch: AnyBatch = build_shared_batch(ro["groups"], ro["responses"], cfg.n, pad).to(device)
            else:
                batch = build_batch(ro["prompts"], ro["responses"], pad).to(device)
            mask = batch.mask
            B, T = mask.shape
            per_unit = B // batch.size  # responses per minibatch unit (n with prefix sharing, else 1)
            fwd = max(1, cfg.forward_batch // per_unit)
            with torch.no_grad():
                if cfg.sampler_logprobs and cfg.temperature == 1 and cfg.top_p == 1 and cfg.dtype == "float32":
                    old_lp = padded(ro["logprobs"], T, device)
                else:
                    old_lp = chunked(lambda x: token_logprobs(policy, x), batch, fwd)
                with _stage("forward/reference"):
                    ref_lp = chunked(lambda x: token_logprobs(reference, x), batch, fwd)
                tc = sync()
                with _stage("forward/critic"):
                    old_v = chunked(lambda x: token_values(critic, x), batch, fwd)
                critic_forward_s = sync() - tc
                scores = padded(scores_l, T, device)
                has_eos = torch.tensor(ro["has_eos"], dtype=torch.bool, device=device)
                rewards = shape_rewards(scores, old_lp, ref_lp, mask, has_eos, beta=cfg.kl_beta,
                                        no_eos_penalty=cfg.no_eos_penalty, clamp=cfg.reward_clamp)
                adv, returns = gae(rewards, old_v, mask, cfg.gamma, cfg.lam)
                if cfg.whiten_advantages:
                    adv = _global_whiten(adv, mask, accelerator)
            # ---- update: ppo_epochs passes over shuffled minibatches, actor then critic on each
            t3 = sync()
            policy.train()
            critic.train()
            sums = dict.fromkeys(("policy_loss", "value_loss", "clipfrac", "approx_kl", "actor_grad_norm",
                                  "critic_grad_norm"), 0.0)
            updates, critic_update_s = 0, 0.0
            mb = max(1, cfg.minibatch_size // per_unit // world)  # units per process and minibatch
            for epoch in range(cfg.ppo_epochs):
                order = torch.from_numpy(np.random.default_rng([cfg.seed, step, epoch]).permutation(batch.size))
                for i in range(0, batch.size, mb):
                    units = order[i : i + mb]
                    sub = batch.select(units)
                    rows_ = batch.responses(units).to(device)
                    T_ = sub.mask.shape[1]
                    o_lp, a, o_v, ret = (x[rows_, :T_] for x in (old_lp, adv, old_v, returns))
                    with _stage("update/actor"):
                        actor_opt.zero_grad(set_to_none=True)
                        lp = actor(sub)
                        pl, cf = policy_loss(lp, o_lp, a, sub.mask, cfg.clip)
                        pl.backward()
                        sums["actor_grad_norm"] += _clip_step(actor.parameters(), actor_opt, cfg.max_grad_norm,
                                                              clip_norm)
                    tc = sync()
                    with _stage("update/critic"):
                        critic_opt.zero_grad(set_to_none=True)
                        vl = value_loss(value_fn(sub), o_v, ret, sub.mask, vclip)
                        vl.backward()
                        sums["critic_grad_norm"] += _clip_step(value_fn.parameters(), critic_opt, cfg.max_grad_norm,
                                                               clip_norm)
                    critic_update_s += sync() - tc
                    sums["approx_kl"] += float(masked_mean(o_lp - lp.detach(), sub.mask))
                    sums["policy_loss"] += float(pl.detach())
                    sums["value_loss"] += float(vl.detach())
                    sums["clipfrac"] += float(cf)
                    updates += 1
            t4 = sync()
            step += 1
            m = mask.float()
            # sums over this process's responses, then over all processes
            per = torch.stack([(scores * m).sum(), ((old_lp - ref_lp) * m).sum(), (rewards * m).sum(), m.sum(),
                               has_eos.float().sum(), torch.tensor(float(B), device=device),
                               *(torch.tensor(v / max(1, updates), device=device) for v in sums.values())]).double()
            if accelerator is not None:
                per = accelerator.reduce(per, reduction="sum")
                per[6:] /= world  # the update metrics: mean over processes
            tot = per.tolist()
            n_tok, n_resp = int(tot[3]), tot[5]
            row = {
                "step": step,
                "ppo/score": tot[0] / n_resp,
                "ppo/kl": tot[1] / n_resp,
                "ppo/reward": tot[2] / n_resp,
                "ppo/response_tokens": tot[3] / n_resp,
                "ppo/eos_fraction": tot[4] / n_resp,
                **{f"ppo/{k}": v for k, v in zip(sums, tot[6:])},
                "ppo/value_clip": vclip,
                "perf/generated_tokens": n_tok,
                "perf/rollout_s": t1 - t0,
                "perf/scoring_s": t2 - t1,
                "perf/forward_s": t3 - t2,
                "perf/update_s": t4 - t3,
                "perf/critic_forward_s": critic_forward_s,  # the parts of forward_s and update_s that are the critic's
                "perf/critic_update_s": critic_update_s,
                "perf/rollout_tokens_per_s": n_tok / max(t1 - t0, 1e-9),
                "perf/scoring_tokens_per_s": n_tok / max(t2 - t1, 1e-9),
                "perf/forward_tokens_per_s": n_tok / max(t3 - t2, 1e-9),
                "perf/update_tokens_per_s": n_tok / max(t4 - t3, 1e-9),
                "perf/tokens_per_s": n_tok / max(t4 - t0, 1e-9),
            }
            if not (math.isfinite(row["ppo/policy_loss"]) and math.isfinite(row["ppo/value_loss"])):
                raise PbrlError(f"step {step}: a loss is not finite; lower actor_lr / critic_lr or check the reward")
            history.append(row)
            run.log(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(score=f"{row['ppo/score']:.3f}", kl=f"{row['ppo/kl']:.3f}",
                                tok_s=f"{row['perf/tokens_per_s']:.0f}")
            if rank == 0 and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
                opts = [getattr(o, "optimizer", o) for o in (actor_opt, critic_opt)]  # accelerate's wrapper
                atomic_torch_save({"policy": policy.state_dict(), "critic": critic.state_dict(),
                                   "actor_opt": opts[0].state_dict(), "critic_opt": opts[1].state_dict(),
                                   "step": step}, str(ckpt))
    finally:
        if bar is not None:
            bar.close()
    import shutil

    final, tmp = out / "model", out / "model.tmp"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        policy.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        atomic_torch_save(critic.state_dict(), str(out / "critic.pt"))
    summary = {"history": history, "model": str(final), "value_clip": vclip, "dense_reward": dense,
               "final": history[-1] if history else {}}
    run.write_summary(summary)
    return summary


# ----------------------------------------------------------------------------------------------- command
@dataclass
class LlmPpo(PpoConfig):
    """PPO on per-token rewards: rollouts from the policy, a reward (``--judge module:function`` at the last token,
    e.g. ``pbrl_envs.chat:judge``, or ``--reward PATH`` a saved LM reward model's dense rewards), GAE, clipped
    actor and critic updates, the KL to the initial model in the reward."""

    prompts: tyro.conf.Positional[str] = ""
    """Prompts JSONL: one object per line with ``messages`` or ``prompt``; other fields are passed to the judge."""

    overwrite: bool = False
    """Write the run into --out even when the folder holds other files or another command's run, and restart a run
    of this command there (resume off)."""

    def run(self) -> None:
        import json
        import os

        from pbrl.runs import command_config
        from pbrl.utils import choose_threads, threads_line

        cfg = command_config(self, PpoConfig, "llm ppo")
        n, note = choose_threads(self.threads)
        if self.threads is None:  # the free cores are shared by the processes of a data-parallel launch
            n = max(1, n // max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1)))
        first = int(os.environ.get("RANK") or 0) == 0
        if first:
            rows = self.steps * self.prompts_per_step * self.n
            print(f"pbrl llm ppo on {self.prompts}: {threads_line(n, note)}; {self.steps} steps of "
                  f"{self.prompts_per_step} prompts x {self.n} samples ({rows} responses of at most "
                  f"{self.max_new_tokens} tokens in all)", flush=True)
        summary = train_ppo(dataclasses.replace(cfg, threads=n))
        if first:
            keys = ("step", "ppo/score", "ppo/kl", "ppo/response_tokens", "ppo/eos_fraction", "perf/tokens_per_s")
            for row in summary["history"][-1:]:
                print(json.dumps({k: row.get(k) for k in keys}))
            print(f"wrote {self.out}/model, {self.out}/metrics.jsonl")


__all__ = ["Batch", "JudgeReward", "LlmPpo", "ModelReward", "PpoConfig", "RewardFn", "SharedBatch", "ValueModel",
           "build_batch", "build_shared_batch",
           "check_rewards", "gae", "masked_mean", "masked_whiten", "policy_loss", "shape_rewards", "token_logprobs",
           "token_values", "train_ppo", "value_loss"]
