"""SRPO: RL on a generative recommender's semantic-ID outputs (GREAM, Hong et al. 2025, arXiv 2510.20815; the public
code "GRRM", a verl DAPO trainer).

Per step, for a batch of prompts (a user's history) x_p, each with its target item ID y*_p:

    rollout    y_{p,1..n} ~ pi( . | x_p), n = 10 at temperature 1 (``HFSampler``; constrained to the IDs by a trie,
               by the position-wise level sets, or not at all)
    reward     the residual-sensitive verifiable reward (RSVR) of each rollout, graded by how many leading ID tokens
               it shares with y*; or the binary exact match (the plain GRPO comparison); plus an optional extra
               reward ``(prompt_index, item) -> float`` (a learned session reward)
    filter     groups whose reward is uniform have zero advantage: they are dropped and more prompts are sampled, up
               to ``max_gen_batches`` generation batches (DAPO's dynamic sampling)
    advantage  BGAE: the GRPO z-score of the rewards plus the pass@k bonus (k = 4); or the GRPO z-score alone
    update     minibatches of prompt groups: the clipped ratio loss with dual clip, plus 0.001 x the k3 KL *loss* to
               the frozen initial model (no KL in the reward), token-mean over the minibatch's response tokens;
               AdamW (weight decay 0.1, linear warm-up), gradient clip 1.0

The pure functions come first (``rsvr_reward``, ``bgae_advantages``, ``grpo_advantages``, ``drop_uniform_groups``,
``srpo_policy_loss``), then the trainer (``SrpoConfig``, ``train_srpo``) and the command (``RecSrpo``).

Layout of ``out``: config.json, metrics.jsonl (one row per step), checkpoint.pt (policy, optimizer, scheduler, step;
one file, written atomically), model/ (the final policy and its tokenizer), summary.json. A resumed run reaches the
weights of an uninterrupted one: a step's prompts, sampling seeds and minibatch order depend on the seed and the step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import tyro

from pbrl.errors import PbrlError
from pbrl.llm.ppo import masked_mean
from pbrl.llm.sampler import TokenTrie
from pbrl.runs import RunSettings

RSVR_GRADES = (0.5, 0.707, 0.866, 0.95)
"""RSVR's score of a rollout whose first m ID tokens match the target (m = 1, 2, 3, >= 4), about sqrt(m / 4)."""

_ID_TOKEN = re.compile(r"<\|[a-z]_\d+\|>")

ExtraReward = Callable[[int, int], float]
"""``extra(prompt_index, item) -> float``: added to the verifiable reward of a rollout that names an existing item
(a rollout that names none gets 0 from it). A pbrl reward learner's session reward plugs in here."""


# ----------------------------------------------------------------------------------------------- pure functions
def rsvr_reward(pred_codes: Sequence[Any] | None, target_codes: Sequence[Any], format_ok: bool) -> float:
    """Residual-sensitive verifiable reward (GREAM eq. for R_RSVR; ``verl/reward_answer.py`` of the public code).

        R = 0                                  if the output's format is wrong
        R = 1                                  if pred == target (every level and the dedup token)
        R = [0.5, 0.707, 0.866, 0.95][min(m, 4) - 1]   otherwise, m = the longest common prefix of pred and target
        R = 0                                  if m = 0 (level 1 wrong)

    ``pred_codes``, ``target_codes``: the ID as one symbol per position (codes or token ids; the dedup token, when
    an item has one, is position L + 1)."""
    if not format_ok or pred_codes is None:
        return 0.0
    pred, target = list(pred_codes), list(target_codes)
    if pred == target:
        return 1.0
    m = 0
    for a, b in zip(pred, target):
        if a != b:
            break
        m += 1
    return 0.0 if m == 0 else RSVR_GRADES[min(m, 4) - 1]


def binary_reward(pred_codes: Sequence[Any] | None, target_codes: Sequence[Any], format_ok: bool) -> float:
    """The exact-match reward of plain GRPO: 1 when the format is right and pred == target, else 0."""
    return float(format_ok and pred_codes is not None and list(pred_codes) == list(target_codes))


def grpo_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO's group z-score (Shao et al. 2024, DeepSeekMath): A_i = (R_i - mean_G R) / (std_G R + eps), with the
    unbiased std (``torch.std``, as verl). rewards [G, n] (n rollouts of G prompts, n >= 2) -> [G, n]."""
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise PbrlError(f"rewards: expected [G, n] with n >= 2 rollouts per prompt, got {tuple(rewards.shape)}")
    return (rewards - rewards.mean(-1, keepdim=True)) / (rewards.std(-1, keepdim=True) + eps)


def passk_bonus(exact: torch.Tensor, k: int, eps: float = 1e-6) -> torch.Tensor:
    """The pass@k bonus of BGAE (GREAM; ``calc_adv`` in the public code's ``core_algos.py``). exact [G, n] bool ->
    [G, n]. With c = the exact matches of a group:

        rho   = 1 - C(n - c, k) / C(n, k)          (pass@k of the group, Chen et al. 2021)
        sigma = sqrt(rho (1 - rho))
        B_i   = (1 - rho) / (sigma + eps)                                   if rollout i is an exact match
        B_i   = (1 - rho - C(n - c - 1, k - 1) / C(n - 1, k - 1)) / (sigma + eps)   otherwise (partial credit too)

    c = 0 gives rho = 0 and B = 0 / eps = 0; c = n gives rho = 1, B = 0 (C(-1, .) = 0): the arithmetic, not a special
    case. Binomials from ``scipy.special.comb`` (0 for a negative argument), as the public code."""
    from scipy.special import comb

    if exact.dim() != 2:
        raise PbrlError(f"exact: expected [G, n], got {tuple(exact.shape)}")
    n = exact.shape[1]
    if not 1 <= k <= n:
        raise PbrlError(f"k: expected 1 <= k <= n = {n} rollouts per prompt, got {k}")
    c = exact.sum(-1).cpu().numpy().astype(np.float64)  # [G]
    rho = 1.0 - comb(n - c, k) / comb(n, k)
    sigma = np.sqrt(rho * (1.0 - rho))
    pos = (1.0 - rho) / (sigma + eps)
    neg = (1.0 - rho - comb(n - c - 1, k - 1) / comb(n - 1, k - 1)) / (sigma + eps)
    pos_t = torch.as_tensor(pos, device=exact.device)[:, None]
    neg_t = torch.as_tensor(neg, device=exact.device)[:, None]
    return torch.where(exact, pos_t, neg_t)  # [G, n] float64


def bgae_advantages(rewards: torch.Tensor, exact: torch.Tensor, k: int = 4, eps: float = 1e-6) -> torch.Tensor:
    """Bonus-calibrated group advantage (GREAM's BGAE, ``adv_estimator=passk``): A_i = z-score of the graded rewards
    (``grpo_advantages``) + the pass@k bonus of the exact matches (``passk_bonus``). rewards [G, n] float,
    exact [G, n] bool -> [G, n]."""
    if exact.shape != rewards.shape:
        raise PbrlError(f"exact: expected the rewards' shape {tuple(rewards.shape)}, got {tuple(exact.shape)}")
    return grpo_advantages(rewards, eps) + passk_bonus(exact.bool(), k, eps).to(rewards.dtype)


def drop_uniform_groups(metric: torch.Tensor) -> torch.Tensor:
    """DAPO's dynamic-sampling filter: True for the groups to keep, those whose metric is not the same for all n
    rollouts (a uniform group has zero advantage). metric [G, n] -> bool [G]."""
    if metric.dim() != 2:
        raise PbrlError(f"metric: expected [G, n], got {tuple(metric.shape)}")
    return (metric != metric[:, :1]).any(-1)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """The k3 (low-variance) estimator of KL(pi || pi_ref) per token (Schulman 2020; verl's ``low_var_kl``):
    r = ref_logp - logp (clamped to +-20), kl = exp(r) - r - 1 (clamped to +-10). [B, T] -> [B, T]."""
    r = (ref_logp - logp).clamp(-20.0, 20.0)
    return (r.exp() - r - 1.0).clamp(-10.0, 10.0)


def srpo_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    clip: tuple[float, float] = (0.2, 0.2),
    dual_clip: float | None = 10.0,
    kl_coef: float = 0.001,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SRPO's actor loss (verl's vanilla policy loss with dual clip, Ye et al. 2020, plus the KL loss):

        rho_t = exp(logp_t - old_logp_t)                       (log-ratio clamped to +-20)
        l_t   = max(-A rho_t, -A clip(rho_t, 1 - eps_low, 1 + eps_high))
        l_t   = min(l_t, -A c)        where A < 0               (dual clip, c = 10: a bound on a negative advantage's
                                                                 loss when the ratio is large)
        loss  = token-mean_t l_t + kl_coef token-mean_t k3(logp_t, ref_logp_t)

    token-mean: the mean over every response token of the (mini)batch. logp, old_logp, ref_logp, mask [B, T];
    adv [B] (one advantage per response, spread over its tokens) or [B, T]. Returns (loss, stats) with stats
    ``pg_loss``, ``kl``, ``clipfrac`` (tokens the clip changed), ``dual_clipfrac`` and ``approx_kl`` (detached)."""
    if dual_clip is not None and not dual_clip > 1:
        raise PbrlError(f"dual_clip: expected > 1 (or None), got {dual_clip}")
    if adv.dim() == 1:
        adv = adv[:, None]
    adv = adv.to(logp.dtype).expand_as(logp)  # [B, T]
    log_ratio = (logp - old_logp).clamp(-20.0, 20.0)
    ratio = log_ratio.exp()
    pg1 = -adv * ratio
    pg2 = -adv * ratio.clamp(1.0 - clip[0], 1.0 + clip[1])
    clipped = torch.maximum(pg1, pg2)
    if dual_clip is not None:
        pg3 = -adv * dual_clip
        pg = torch.where(adv < 0, torch.minimum(clipped, pg3), clipped)
        dual = ((adv < 0) & (clipped > pg3)).to(logp.dtype)
    else:
        pg, dual = clipped, torch.zeros_like(clipped)
    pg_loss = masked_mean(pg, mask)
    kl = masked_mean(k3_kl(logp, ref_logp), mask)
    loss = pg_loss + kl_coef * kl
    stats = {"pg_loss": pg_loss.detach(), "kl": kl.detach(),
             "clipfrac": masked_mean((pg2 > pg1).to(logp.dtype), mask).detach(),
             "dual_clipfrac": masked_mean(dual, mask).detach(),
             "approx_kl": masked_mean(-log_ratio, mask).detach()}
    return loss, stats


# ----------------------------------------------------------------------------------------------- config
@dataclass
class SrpoConfig(RunSettings):
    """An SRPO run: ``steps`` x (rollouts of ``prompts_per_step`` prompts x ``n``, rewards, dynamic sampling,
    advantages, one pass of minibatch updates). Defaults are the public code's ``scripts/run.sh`` except where a
    field says why."""

    out: str = "runs/srpo"
    """Output folder (see the module docstring)."""
    steps: int = 50
    """Training steps (paper: 150)."""
    prompts_per_step: int = 16
    """Prompt groups each step trains on (paper: 256; a CPU budget)."""
    minibatch_prompts: int = 4
    """Prompt groups per optimizer step (paper: 64, i.e. 4 updates per step as here)."""
    n: int = 10
    """Rollouts per prompt (paper: 10)."""
    k: int = 4
    """k of the pass@k bonus (paper: 4)."""
    temperature: float = 1.0
    """Rollout temperature (paper: 1.0)."""
    top_p: float = 1.0
    """Rollout nucleus mass (paper: 1.0)."""
    decoding: Literal["trie", "levels", "none"] = "trie"
    """Rollout constraint: a trie of the catalog's IDs, the official position-wise level sets, or none."""
    max_new_tokens: int = 0
    """Longest rollout; 0 = levels + 2 (the ID, a dedup token, EOS)."""
    advantage: Literal["bgae", "grpo"] = "bgae"
    """BGAE (z-score + pass@k bonus) or the GRPO z-score alone."""
    reward: Literal["rsvr", "binary", "none"] = "rsvr"
    """Verifiable reward: graded RSVR, binary exact match (plain GRPO), or none (the extra reward alone)."""
    filter_groups: bool = True
    """Drop groups whose reward is uniform and sample more prompts (DAPO dynamic sampling; the public code filters
    on its ``match`` metric, the graded score before the format gate, equal to RSVR whenever the format is right)."""
    max_gen_batches: int = 10
    """Most generation batches a step draws to fill ``prompts_per_step`` kept groups (paper: 10); a step trains on
    the groups it has when they run out (none: no update)."""
    lr: float = 1e-4
    """AdamW learning rate. The paper's 2e-6 is for a 4B model; a randomly initialised or tiny-SFT model of a few
    thousand to a million parameters barely moves at that rate in a few dozen steps, so the tiny default is 1e-4."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay (paper: 0.1)."""
    warmup_steps: int = 10
    """Linear learning-rate warm-up: step s (0-based) trains at lr min(1, (s + 1) / warmup_steps) (paper: 10; verl
    starts its warm-up at 0, a step that changes nothing)."""
    clip_low: float = 0.2
    """Ratio clip eps_low (paper: 0.2)."""
    clip_high: float = 0.2
    """Ratio clip eps_high (paper: 0.2)."""
    dual_clip: float = 10.0
    """Dual-clip bound c for negative advantages (paper: 10)."""
    kl_coef: float = 0.001
    """Weight of the k3 KL loss to the initial model (paper: 0.001; no KL in the reward)."""
    max_grad_norm: float = 1.0
    """Gradient clip (paper: 1.0; 0 = off)."""
    sample_batch: int = 64
    """Prompts per sampler call (part of a rollout's seed, so a resume must keep it)."""
    checkpoint_every: int = 10
    """Write checkpoint.pt every this many steps (and at the end)."""

    def check(self) -> None:
        """One PbrlError naming the field for a setting out of range."""
        for name, lo in (("steps", 1), ("prompts_per_step", 1), ("minibatch_prompts", 1), ("n", 2), ("k", 1),
                         ("max_new_tokens", 0), ("max_gen_batches", 1), ("warmup_steps", 0), ("sample_batch", 1),
                         ("checkpoint_every", 1)):
            if getattr(self, name) < lo:
                raise PbrlError(f"{name}: expected >= {lo}, got {getattr(self, name)}")
        if self.k > self.n:
            raise PbrlError(f"k: expected <= n ({self.n}) rollouts per prompt, got {self.k}")
        if not self.temperature > 0:
            raise PbrlError(f"temperature: expected > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise PbrlError(f"top_p: expected in (0, 1], got {self.top_p}")
        if not self.lr > 0:
            raise PbrlError(f"lr: expected > 0, got {self.lr}")
        for name in ("clip_low", "clip_high", "kl_coef", "weight_decay", "max_grad_norm"):
            if not getattr(self, name) >= 0:
                raise PbrlError(f"{name}: expected >= 0, got {getattr(self, name)}")
        if not self.dual_clip > 1:
            raise PbrlError(f"dual_clip: expected > 1, got {self.dual_clip}")
        for name, allowed in (("decoding", ("trie", "levels", "none")), ("advantage", ("bgae", "grpo")),
                              ("reward", ("rsvr", "binary", "none"))):
            if getattr(self, name) not in allowed:
                raise PbrlError(f"{name}: expected one of {', '.join(allowed)}, got {getattr(self, name)!r}")


# ----------------------------------------------------------------------------------------------- trainer
_NOT_FINGERPRINTED = ("out", "resume", "steps", "progress", "device", "checkpoint_every", "threads")


def _gen_rows(n_prompts: int, cfg: SrpoConfig, step: int, batch: int) -> list[int]:
    """Prompts of generation batch ``batch`` of step ``step`` (0-based): a permutation seeded by (seed, step,
    batch), wrapping when there are fewer prompts than ``prompts_per_step``."""
    order = np.random.default_rng([cfg.seed, step, batch]).permutation(n_prompts)
    return [int(order[i % n_prompts]) for i in range(cfg.prompts_per_step)]


def _data_sha256(prompts: Sequence[Sequence[int]], targets: Sequence[int], items: Sequence[Sequence[int]]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([list(map(int, p)) for p in prompts]).encode())
    h.update(json.dumps([int(t) for t in targets]).encode())
    h.update(json.dumps([list(map(int, s)) for s in items]).encode())
    return h.hexdigest()


def train_srpo(
    cfg: SrpoConfig,
    model_dir: str | Path,
    prompts: Sequence[Sequence[int]],
    targets: Sequence[int],
    ids: Any,
    tokenizer: Any,
    *,
    extra_reward: ExtraReward | None = None,
    eos_token_id: int | None = None,
) -> dict[str, Any]:
    """Run SRPO (module docstring) from the model in ``model_dir`` (a local HF folder, e.g. an alignment-SFT run's
    model/) on ``prompts`` (token ids, rendered with the generation prompt) and their ``targets`` (item indices of
    ``ids``, a ``SemanticIds``). ``eos_token_id``: where an answer ends (default: the tokenizer's end of turn).
    Returns the summary written to out/summary.json (per-step rows under "history")."""
    from tqdm.auto import tqdm

    from pbrl.llm.dpo import _path_fingerprint  # the files of a folder, by their bytes
    from pbrl.llm.models import load_model, num_parameters
    from pbrl.llm.response_batch import build_shared_batch, token_logprobs
    from pbrl.llm.sampler import HFSampler, SamplingConfig
    from pbrl.llm.tokenizer import end_of_turn_id
    from pbrl.rec.decoding import IdVocab, level_sets_allowed
    from pbrl.runs import RunFolder
    from pbrl.utils import adam, atomic_torch_save, resolve_device, safe_torch_load, set_seed

    cfg.check()
    if cfg.reward == "none" and extra_reward is None:
        raise PbrlError("reward: 'none' leaves no reward; pass an extra reward (a learned session reward) or use "
                        "rsvr / binary")
    if cfg.threads is not None:
        from pbrl.utils import use_threads

        use_threads(cfg.threads)
    if len(prompts) == 0:
        raise PbrlError("prompts: expected at least one prompt, got none")
    if len(prompts) != len(targets):
        raise PbrlError(f"targets: expected one target item per prompt, got {len(targets)} for {len(prompts)} "
                        "prompts")
    vocab = IdVocab(ids, tokenizer)
    for i, t in enumerate(targets):
        if not 0 <= int(t) < len(vocab):
            raise PbrlError(f"targets[{i}]: item {t} is outside the catalog's {len(vocab)} semantic IDs")
    eos = int(eos_token_id) if eos_token_id is not None else end_of_turn_id(tokenizer)
    pad = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else eos
    T = cfg.max_new_tokens or vocab.levels + 2
    if cfg.decoding == "trie":
        allowed: Any = TokenTrie(vocab.items)
    elif cfg.decoding == "levels":
        allowed = level_sets_allowed(ids, tokenizer, eos)
    else:
        allowed = None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" \
        else resolve_device(cfg.device)
    targets_tok = [vocab.items[int(t)] for t in targets]

    out = Path(cfg.out)
    config = {**dataclasses.asdict(cfg), "model_dir": str(model_dir), "max_new_tokens_resolved": T,
              "extra_reward": None if extra_reward is None else
              f"{getattr(extra_reward, '__module__', '?')}:{getattr(extra_reward, '__qualname__', type(extra_reward).__name__)}"}
    fp = {k: v for k, v in config.items() if k not in _NOT_FINGERPRINTED and k != "model_dir"}
    fp["data_sha256"] = _data_sha256(prompts, targets, vocab.items)
    fp["model_sha256"] = _path_fingerprint(Path(model_dir))
    RunFolder(out, config, fingerprint=fp, resume=cfg.resume, write=False)  # refuse a foreign folder first

    set_seed(cfg.seed)
    policy = load_model(model_dir).to(device)
    reference = load_model(model_dir).to(device).eval().requires_grad_(False)
    if int(policy.config.vocab_size) <= max(max(s) for s in vocab.items):
        raise PbrlError(f"{model_dir}: the model's vocabulary ({policy.config.vocab_size}) does not cover the ID "
                        "tokens (resize its embeddings after adding them)")
    context = int(getattr(policy.config, "max_position_embeddings", 0) or 0)
    longest = max(len(p) for p in prompts)
    if context and longest + T > context:
        raise PbrlError(f"prompts: the longest prompt's {longest} tokens + max_new_tokens {T} exceed the model's "
                        f"context of {context}")
    opt = adam(policy.parameters(), cfg.lr, weight_decay=cfg.weight_decay, decoupled=True)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0)
    step = 0
    ckpt = out / "checkpoint.pt"
    if cfg.resume and ckpt.is_file():
        state = safe_torch_load(ckpt, what="SRPO checkpoint")
        try:
            policy.load_state_dict(state["policy"])
            opt.load_state_dict(state["opt"])
            sched.load_state_dict(state["sched"])
            step = int(state["step"])
        except (RuntimeError, TypeError, KeyError, ValueError, AttributeError) as e:
            msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise PbrlError(f"{ckpt}: does not fit the model ({type(e).__name__}: {msg})") from None
    run = RunFolder(out, config, fingerprint=fp, resume=cfg.resume, device=str(device),
                    extra={"num_parameters": num_parameters(policy)})
    history = run.rewind(step)
    sampler = HFSampler(policy)
    bar = tqdm(total=cfg.steps, initial=step, desc="srpo", unit="step") if cfg.progress else None

    def score(p: int, response: list[int]) -> tuple[float, bool, bool, float, bool]:
        """(reward, exact match, format ok, RSVR, names an existing item) of one rollout of prompt p."""
        ok, body = vocab.parse_direct(response, eos)
        graded = rsvr_reward(body, targets_tok[p], ok)
        exact = ok and tuple(body) == targets_tok[p]
        item = vocab.item(body) if ok else None
        r = graded if cfg.reward == "rsvr" else float(exact) if cfg.reward == "binary" else 0.0
        if extra_reward is not None and item is not None:
            r += float(extra_reward(p, item))
        return r, exact, ok, graded, item is not None

    try:
        while step < cfg.steps:
            t0 = time.perf_counter()
            policy.eval()
            # ---- rollouts and rewards, generation batch after generation batch until enough groups vary
            kept: list[tuple[int, list[list[int]], list[float], list[bool]]] = []
            seen = {"reward": 0.0, "rsvr": 0.0, "exact": 0.0, "format": 0.0, "valid": 0.0, "rollouts": 0,
                    "groups": 0, "tokens": 0}
            gen_batches = 0
            while len(kept) < cfg.prompts_per_step and gen_batches < cfg.max_gen_batches:
                rows = _gen_rows(len(prompts), cfg, step, gen_batches)
                for b in range(0, len(rows), cfg.sample_batch):
                    part = rows[b: b + cfg.sample_batch]
                    sc = SamplingConfig(n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=T,
                                        eos_token_id=eos, pad_token_id=pad,
                                        seed=cfg.seed * 1_000_003 + 7919 * (step + 1) + 104_729 * gen_batches + b)
                    gen = sampler.generate([list(prompts[p]) for p in part], sc, allowed=allowed)
                    for p, group in zip(part, gen.tokens):
                        scored = [score(p, y) for y in group]
                        r = [s[0] for s in scored]
                        ex = [s[1] for s in scored]
                        for y, (rw, e, ok, graded, valid) in zip(group, scored):
                            for key, v in (("reward", rw), ("exact", e), ("format", ok), ("rsvr", graded),
                                           ("valid", valid), ("tokens", len(y))):
                                seen[key] += v
                        seen["rollouts"] += len(group)
                        seen["groups"] += 1
                        if not cfg.filter_groups or bool(drop_uniform_groups(torch.tensor([r]))[0]):
                            kept.append((p, [list(y) for y in group], r, ex))
                gen_batches += 1
            kept = kept[: cfg.prompts_per_step]
            t1 = time.perf_counter()
            # ---- advantages, old and reference log-probs, one pass of minibatch updates
            stats = {"pg_loss": 0.0, "kl": 0.0, "clipfrac": 0.0, "dual_clipfrac": 0.0, "approx_kl": 0.0,
                     "grad_norm": 0.0}
            updates, adv_abs = 0, 0.0
            if kept:
                rewards = torch.tensor([g[2] for g in kept], dtype=torch.float64)  # [G, n]
                exact = torch.tensor([g[3] for g in kept], dtype=torch.bool)  # [G, n]
                adv = bgae_advantages(rewards, exact, cfg.k) if cfg.advantage == "bgae" else grpo_advantages(rewards)
                adv = adv.float().to(device)  # [G, n]
                adv_abs = float(adv.abs().mean())
                batch = build_shared_batch([list(prompts[g[0]]) for g in kept], [y for g in kept for y in g[1]],
                                           cfg.n, pad).to(device)
                with torch.no_grad():
                    old_lp = token_logprobs(policy, batch)  # [G n, T]
                    ref_lp = token_logprobs(reference, batch)
                policy.train()
                order = torch.from_numpy(np.random.default_rng([cfg.seed, step, 1 << 20]).permutation(len(kept)))
                for i in range(0, len(kept), cfg.minibatch_prompts):
                    units = order[i: i + cfg.minibatch_prompts]
                    sub = batch.select(units)
                    rows_ = batch.responses(units).to(device)
                    Ts = sub.mask.shape[1]
                    opt.zero_grad(set_to_none=True)
                    lp = token_logprobs(policy, sub)
                    loss, st = srpo_policy_loss(lp, old_lp[rows_, :Ts], ref_lp[rows_, :Ts], adv.view(-1)[rows_],
                                                sub.mask, (cfg.clip_low, cfg.clip_high), cfg.dual_clip, cfg.kl_coef)
                    if not torch.isfinite(loss):
                        raise PbrlError(f"step {step + 1}: the loss is not finite; lower lr")
                    loss.backward()
                    gn = float(torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)) \
                        if cfg.max_grad_norm > 0 else 0.0
                    opt.step()
                    for key, v in st.items():
                        stats[key] += float(v)
                    stats["grad_norm"] += gn
                    updates += 1
            lr_now = opt.param_groups[0]["lr"]
            sched.step()
            t2 = time.perf_counter()
            step += 1
            nr = max(1, seen["rollouts"])
            row = {
                "step": step,
                "srpo/reward": seen["reward"] / nr,
                "srpo/rsvr": seen["rsvr"] / nr,
                "srpo/exact": seen["exact"] / nr,
                "srpo/format_ok": seen["format"] / nr,
                "srpo/valid_id": seen["valid"] / nr,
                "srpo/kept_groups": len(kept),
                "srpo/sampled_groups": seen["groups"],
                "srpo/gen_batches": gen_batches,
                "srpo/adv_abs": adv_abs,
                **{f"srpo/{k_}": v / max(1, updates) for k_, v in stats.items()},
                "srpo/updates": updates,
                "srpo/lr": lr_now,
                "perf/generated_tokens": seen["tokens"],
                "perf/rollout_s": t1 - t0,
                "perf/update_s": t2 - t1,
                "perf/rollout_tokens_per_s": seen["tokens"] / max(t1 - t0, 1e-9),
                "perf/tokens_per_s": seen["tokens"] / max(t2 - t0, 1e-9),
            }
            history.append(row)
            run.log(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(reward=f"{row['srpo/reward']:.3f}", exact=f"{row['srpo/exact']:.2f}",
                                tok_s=f"{row['perf/tokens_per_s']:.0f}")
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                atomic_torch_save({"policy": policy.state_dict(), "opt": opt.state_dict(),
                                   "sched": sched.state_dict(), "step": step}, str(ckpt))
    finally:
        if bar is not None:
            bar.close()
    import shutil

    final, tmp = out / "model", out / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    policy.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    summary = {"history": history, "model": str(final), "final": history[-1] if history else {}}
    run.write_summary(summary)
    return summary


# ----------------------------------------------------------------------------------------------- data + command
def read_targets(path: str | Path, ids: Any, tokenizer: Any, tasks: Sequence[str] | None = ("seqrec",)
                 ) -> tuple[list[list[int]], list[int]]:
    """Prompts (token ids, rendered with the generation prompt) and target items of an SFT-style JSONL file (e.g.
    the valid.jsonl of ``pbrl.rec.align_data``): each row holds ``messages`` (a trailing assistant turn is the
    answer and is dropped from the prompt) or ``prompt``, and the target as ``item`` (an item index) or, without
    it, the ID tokens of the assistant answer. Rows whose ``task`` field is not in ``tasks`` are skipped (an
    alignment file's item2index / index2item / preference rows); rows without the field are kept; None keeps all."""
    from pbrl.llm.odpo import prompt_ids
    from pbrl.utils import read_json_lines

    path = Path(path)
    if not path.is_file():
        raise PbrlError(f"{path}: no such data file (expected JSONL rows of {{messages | prompt, item}})")
    prompts, targets = [], []
    for line, obj in read_json_lines(path):
        where = f"{path}:{line}"
        if not isinstance(obj, dict):
            raise PbrlError(f"{where}: expected an object with messages or prompt")
        if tasks is not None and "task" in obj and obj["task"] not in tasks:
            continue
        answer = obj.get("completion") if isinstance(obj.get("completion"), str) else None
        row = dict(obj)
        if isinstance(obj.get("messages"), list) and obj["messages"]:
            msgs = list(obj["messages"])
            if isinstance(msgs[-1], dict) and msgs[-1].get("role") == "assistant":
                answer = msgs[-1].get("content")
                msgs = msgs[:-1]
            if not msgs:
                raise PbrlError(f"{where}: messages hold no prompt turn before the answer")
            row["messages"] = msgs
        elif not isinstance(obj.get("prompt"), str):
            raise PbrlError(f"{where}: expected a field 'messages' (list) or 'prompt' (string)")
        if "item" in obj:
            item = obj["item"]
            if not isinstance(item, int) or isinstance(item, bool) or not 0 <= item < len(ids.codes):
                raise PbrlError(f"{where}: field 'item': expected an item index in 0..{len(ids.codes) - 1}, "
                                f"got {item!r}")
        else:
            toks = _ID_TOKEN.findall(answer) if isinstance(answer, str) else []
            item = ids.item_of(toks) if toks else None
            if item is None:
                raise PbrlError(f"{where}: no target: expected a field 'item' or an assistant answer that is an "
                                "existing semantic ID")
        prompts.append(prompt_ids(tokenizer, row))
        targets.append(int(item))
    if not prompts:
        raise PbrlError(f"{path}: no rows" + (f" of task {', '.join(tasks)}" if tasks is not None else ""))
    return prompts, targets


@dataclass
class RecSrpo(SrpoConfig):
    """SRPO on a generative recommender: n rollouts per prompt (constrained to the catalog's IDs), the graded RSVR
    reward (or binary exact match), the pass@k-bonus group advantage (or GRPO's), clipped dual-clip loss, KL loss."""

    model: tyro.conf.Positional[str] = ""
    """The SFT model folder (a local HF folder with its tokenizer, e.g. <sft run>/model)."""
    data: tyro.conf.Positional[str] = ""
    """JSONL of {messages | prompt, item}: the prompt and its target item (or an assistant answer that is its ID)."""
    ids: str = ""
    """The semantic IDs file written by ``pbrl rec ids``."""
    task: str = "seqrec"
    """Train on the rows of this ``task`` (rows without a task field are always kept)."""
    overwrite: bool = False
    """Write the run into --out even when the folder holds other files or another command's run, and restart a run
    of this command there (resume off)."""

    def run(self) -> None:
        from pbrl.llm.tokenizer import load_tokenizer
        from pbrl.rec.semantic_ids import SemanticIds
        from pbrl.runs import command_config
        from pbrl.utils import choose_threads, threads_line

        if not self.model or not self.data or not self.ids:
            raise PbrlError("expected MODEL DATA --ids IDS (the SFT model folder, the prompts JSONL, the semantic "
                            "IDs file)")
        cfg = command_config(self, SrpoConfig, "rec srpo")  # --out checked before any input is read
        n, note = choose_threads(self.threads)
        ids = SemanticIds.load(self.ids)
        tokenizer = load_tokenizer(self.model)
        prompts, targets = read_targets(self.data, ids, tokenizer, (self.task,))
        print(f"pbrl rec srpo on {self.data}: {len(prompts)} prompts, {len(ids.codes)} items, "
              f"{threads_line(n, note)}; {self.steps} steps of {self.prompts_per_step} prompts x {self.n} rollouts",
              flush=True)
        summary = train_srpo(dataclasses.replace(cfg, threads=n), self.model, prompts, targets, ids, tokenizer)
        keys = ("step", "srpo/reward", "srpo/exact", "srpo/valid_id", "srpo/kept_groups", "perf/tokens_per_s")
        print(json.dumps({k: summary["final"].get(k) for k in keys}))
        print(f"wrote {self.out}/model, {self.out}/metrics.jsonl")


__all__ = ["RSVR_GRADES", "ExtraReward", "RecSrpo", "SrpoConfig", "binary_reward", "bgae_advantages",
           "drop_uniform_groups", "grpo_advantages", "k3_kl", "passk_bonus", "read_targets", "rsvr_reward",
           "srpo_policy_loss", "train_srpo"]
