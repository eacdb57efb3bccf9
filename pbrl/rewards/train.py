"""One trainer for every reward learner: Bradley–Terry on preference pairs, ensembles batched over members.

`train_reward(dataset, pairs, config, out_dir=None) -> RewardModel`:
- the learner is the one registered as `config.model` (`learner.py`); it prepares itself on the dataset first
  (e.g. the segment model's behaviour policy and entropy threshold);
- each ensemble member sees its own permutation of the training pairs; member losses are summed under one Adam
  (Uni-RLHF / DTR); ties are soft labels 0.5 (or dropped with `mask_ties`);
- pairs of different lengths are right-padded to the longest (`pairs.length`) and masked: padded steps change
  no score;
- a held-out split (`val_fraction`) gives the validation accuracy of the ensemble mean score every epoch;
- optional early stop once the mean train accuracy of an epoch exceeds `early_stop_accuracy` (0.968, the anchors');
- progress bar; the output folder is a `pbrl.runs.RunFolder`: `metrics.jsonl` (one line per epoch, appended),
  `summary.json`, `reward.pt` (weights, read back with the safe loader) and `config.json` (resolved config, git
  revision, device, and the keys `load_reward_model` reads: model kind, step spec, length, training info).

`load_reward_model(dir)` reads them back (and every folder written since format version 1).
`pair_loss` is the domain-free core of one step (any step features).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from pbrl.data import EpisodeDataset, PreferencePairs
from pbrl.errors import PbrlError
from pbrl.rewards.features import FeatureSpec, windows
from pbrl.rewards.learner import (
    CONFIG_NAME,
    METRICS_NAME,
    WEIGHTS_NAME,
    LearnerName,
    RewardModel,
    get_learner,
    padding_mask,
    sequence_score,
)
from pbrl.rewards.lm import LMRewardConfig
from pbrl.rewards.losses import bradley_terry_loss, preference_accuracy
from pbrl.rewards.segment import SegmenterConfig
from pbrl.runs import RunFolder
from pbrl.utils import (
    adam,
    bf16_enabled,
    check_fresh_out,
    denormals_flushed,
    estimate_line,
    git_revision,
    load_note,
    remove_paths,
    resolve_device,
    safe_torch_load,
)

REWARD_FILES = (CONFIG_NAME, WEIGHTS_NAME, METRICS_NAME, "summary.json")
"""What a reward model folder holds (a folder with any of them holds a reward model)."""

ModelKind = LearnerName  # the name of the release before the registry
__all__ = ["CONFIG_NAME", "METRICS_NAME", "WEIGHTS_NAME", "ModelKind", "RewardConfig", "RewardModel",
           "evaluate_pairs", "load_reward_model", "pair_loss", "train_reward"]


@dataclass
class RewardConfig:
    """Reward learner and training settings (defaults: Uni-RLHF / DTR MLP ensemble)."""

    model: LearnerName = "step"
    """step: per-step MLP ensemble; segment: causal transformer scored at segment ends; pt: Preference Transformer;
    lm: a causal LM with a value head on {prompt, chosen, rejected} pairs (see `lm`)."""
    ensemble: int = 3
    """Ensemble members (batched in one module)."""
    hidden: tuple[int, ...] = (256, 256, 256)
    """Hidden sizes of the step-wise MLP."""
    d_model: int = 64
    """Width of the causal transformer (segment, pt); the PT paper uses 256."""
    layers: int = 1
    """Transformer layers (segment, pt)."""
    heads: int = 4
    """Attention heads (segment, pt)."""
    lr: float = 3e-4
    """Adam learning rate (Uni-RLHF MLP 3e-4; PT paper 5e-5)."""
    batch_size: int = 64
    """Pairs per member per step."""
    epochs: int = 50
    """Passes over the training pairs."""
    val_fraction: float = 0.1
    """Fraction of pairs held out for validation accuracy."""
    early_stop: bool = True
    """Stop once an epoch's mean train accuracy exceeds `early_stop_accuracy`."""
    early_stop_accuracy: float = 0.968
    """Train-accuracy threshold of the early stop (the anchors' 0.968)."""
    mask_ties: bool = False
    """Drop tied pairs (label 0.5) from the loss instead of using the soft target [0.5, 0.5]."""
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    """How queries are cut into segments (segment and lm models; lm: entropy, step = token-level, query = bandit)."""
    lm: LMRewardConfig = field(default_factory=LMRewardConfig)
    """The LM learner's backbone, tokenizer and entropy reference (lm model only)."""
    bc_steps: int = 2000
    """Behaviour-cloning steps of the Gaussian policy behind the entropy segmenter."""
    seed: int = 0
    """Seed of initialisation, split and data order."""
    device: str = "cpu"
    """Torch device."""
    bf16: Literal["auto", "on", "off"] = "auto"
    """bf16 autocast of the reward network in training (scores and loss stay float32); auto = on a GPU and on a
    CPU with AMX bf16 units, where it trains 2-3x faster (`baselines/reward_throughput.py`) to the same accuracy
    (tests/rewards/test_reward_learning.py)."""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RewardConfig:
        """The inverse of `dataclasses.asdict` (JSON lists back to tuples, the nested segmenter config)."""
        raw = dict(raw)
        raw["segmenter"] = SegmenterConfig(**raw["segmenter"])
        raw["hidden"] = tuple(raw["hidden"])
        raw["lm"] = LMRewardConfig.from_dict(raw.get("lm", {}))  # absent in folders written before the lm learner
        return cls(**raw)


def pair_loss(
    net: nn.Module,
    x: torch.Tensor,
    mask: torch.Tensor,
    ends: torch.Tensor | None,
    label: torch.Tensor,
    mask_ties: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bradley–Terry loss and accuracy per member for one batch of pairs — the domain-free core of training.

    x [M, 2B, T, D] step features (rows :B are segments a, rows B: segments b; tokens in an LLM, (s, a) in control),
    mask / ends [M, 2B, T] bool, label [M, B] = P(b preferred). Returns (loss [M], accuracy [M]).
    """
    scores = sequence_score(net(x, mask, ends))  # [M, 2B]
    sa, sb = scores.chunk(2, dim=1)  # [M, B] each
    weight = (label != 0.5).to(scores.dtype) if mask_ties else None
    loss = bradley_terry_loss(sa, sb, label, weight)  # [M]
    with torch.no_grad():
        acc = preference_accuracy(sa, sb, label)  # [M]
    return loss, acc


def load_reward_model(path: str | os.PathLike, device: str = "cpu") -> RewardModel:
    """Read a reward model folder written by `train_reward(..., out_dir=...)` / `RewardModel.save`."""
    folder = Path(path)
    cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not cfg_path.is_file() or not w_path.is_file():
        raise PbrlError(f"{folder}: not a reward model folder (expected {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        cfg = json.loads(cfg_path.read_text())
        learner = get_learner(str(cfg.get("model", "step")))
        if hasattr(learner, "load"):  # a learner that rebuilds itself (the LM one: backbone config, tokenizer)
            return learner.load(folder, cfg, device)
        config = RewardConfig.from_dict(cfg["config"])
        spec = FeatureSpec(**cfg["spec"])
        length = int(cfg["length"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise PbrlError(f"{cfg_path}: not a pbrl reward config ({type(e).__name__}: {e})") from None
    state = safe_torch_load(w_path, map_location=device, what="reward weights")
    config.device = device
    model = get_learner(config.model)(config, spec, length, info=cfg.get("info"))
    try:
        model.net.load_state_dict(state["net"])
    except (KeyError, RuntimeError) as e:
        raise PbrlError(f"{w_path}: weights do not fit the config ({type(e).__name__})") from None
    model.load_extra_state(state, cfg)
    model.net.to(device).eval()
    return model


@torch.inference_mode()
def evaluate_pairs(
    model: RewardModel,
    ds: EpisodeDataset,
    pairs: PreferencePairs,
    batch_size: int = 256,
    feats: torch.Tensor | None = None,
    signal: torch.Tensor | None = None,
) -> dict[str, float]:
    """Accuracy (non-tied pairs) and Bradley–Terry loss of the ensemble mean score, and the mean member accuracy."""
    pairs.validate(ds, "preferences")
    model.net.eval()
    dev = model.config.device
    feats = (model.features(ds) if feats is None else feats).to(dev)
    signal = model.reference_signal(ds) if signal is None else signal
    signal = signal.to(dev) if signal is not None else None
    lengths = torch.from_numpy(pairs.lengths).to(dev)
    sa_all, sb_all = [], []
    for i in range(0, len(pairs), batch_size):
        sl = slice(i, i + batch_size)
        a, b = (torch.from_numpy(s[sl]).to(dev) for s in (pairs.start_a, pairs.start_b))
        sa_all.append(model.segment_scores(feats, signal, a, pairs.length, lengths[sl]))
        sb_all.append(model.segment_scores(feats, signal, b, pairs.length, lengths[sl]))
    sa, sb = torch.cat(sa_all, 1), torch.cat(sb_all, 1)  # [M, P]
    y = torch.from_numpy(pairs.label).to(dev)
    return {
        "accuracy": float(preference_accuracy(sa.mean(0), sb.mean(0), y)),
        "loss": float(bradley_terry_loss(sa.mean(0), sb.mean(0), y)),
        "member_accuracy": float(preference_accuracy(sa, sb, y).mean()),
    }


@denormals_flushed()
def train_reward(
    dataset: EpisodeDataset,
    pairs: PreferencePairs,
    config: RewardConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    source: dict[str, Any] | None = None,
    overwrite: bool = True,
    tensorboard: bool = False,
) -> RewardModel:
    """Fit a reward learner on preference pairs over `dataset`'s segments (see the module docstring).

    tensorboard: also log the epoch rows as TensorBoard scalars in out_dir/tb (needs `pip install tensorboard`).
    overwrite: whether an `out_dir` that holds a reward model may be replaced (its files are removed once the
    inputs are checked); False refuses it with one line (the command line's default, `--overwrite`).
    progress: a bar over the epochs (pairs/s, losses, `stopped early at epoch k`, `load x/n cores` when the
    machine is oversubscribed) and a time estimate for all epochs after the first.
    """
    from tqdm.auto import tqdm

    stale = check_fresh_out(str(out_dir), REWARD_FILES, overwrite, "pass --overwrite to replace it") if out_dir else []
    config = config or RewardConfig()
    learner = get_learner(config.model)
    if hasattr(learner, "fit"):  # a learner on its own data: the LM one takes {prompt, chosen, rejected} records
        return learner.fit(dataset, config, out_dir, progress, source, overwrite, tensorboard)
    pairs.validate(dataset, "preferences")
    if config.batch_size < 1 or config.epochs < 0:
        raise PbrlError(f"batch_size must be >= 1 and epochs >= 0; got {config.batch_size}, {config.epochs}")
    dev = resolve_device(config.device)
    rng = np.random.default_rng(config.seed)
    train, val = (
        pairs.split(config.val_fraction, seed=config.seed) if config.val_fraction > 0 else (pairs, None)
    )
    if len(train) == 0:
        raise PbrlError(f"no training pairs left after holding out val_fraction={config.val_fraction}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = learner.create(config, dataset, pairs.length)
    model.prepare(dataset)
    model.net.to(dev)
    remove_paths(stale)  # the inputs are checked: an old model is replaced, not mixed with the new one
    threads = torch.get_num_threads()
    run = (RunFolder(out_dir, dataclasses.asdict(config), device=str(dev), extra={"threads": threads},
                     tensorboard=tensorboard)
           if out_dir is not None else None)
    feats = model.features(dataset).to(dev)  # [N, D]
    signal = model.reference_signal(dataset)
    signal = signal.to(dev) if signal is not None else None
    opt = adam(model.net.parameters(), config.lr)
    use_bf16 = bf16_enabled(config.bf16, dev)

    m, n, b, t = config.ensemble, len(train), config.batch_size, pairs.length
    start_a = torch.from_numpy(train.start_a).to(dev)
    start_b = torch.from_numpy(train.start_b).to(dev)
    length = torch.from_numpy(train.lengths).to(dev)
    label = torch.from_numpy(train.label).to(dev)
    history: list[dict[str, float]] = []
    stopped_early = False
    step = 0
    bar = tqdm(range(config.epochs), desc=f"reward/{config.model}", unit="epoch", disable=not progress)
    for epoch in bar:
        model.net.train()
        t0 = time.perf_counter()
        perms = torch.from_numpy(np.stack([rng.permutation(n) for _ in range(m)])).to(dev)  # [M, n] own order
        losses, accs = [], []
        for i in range(math.ceil(n / b)):
            idx = perms[:, i * b : (i + 1) * b]  # [M, B]
            starts = torch.cat([start_a[idx], start_b[idx]], dim=1)  # [M, 2B]
            x = windows(feats, starts, t)  # [M, 2B, T, D] (right-padded to the longest pair)
            mask = padding_mask(x.shape[:-1], torch.cat([length[idx], length[idx]], dim=1), dev)  # [M, 2B, T]
            sig = windows(signal, starts, t) if signal is not None else None
            y = label[idx]  # [M, B]
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss, acc = pair_loss(model.net, x, mask, model.ends(mask, sig), y, config.mask_ties)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # members' losses summed
            opt.step()
            step += 1
            losses.append(loss.mean().item())
            accs.append(acc.nan_to_num(0.5).mean().item())
        dt = time.perf_counter() - t0
        row = {
            "epoch": epoch + 1,
            "step": step,
            "reward/loss": float(np.mean(losses)),
            "reward/train_accuracy": float(np.mean(accs)),
            "perf/pairs_per_s": n * m / max(dt, 1e-9),
        }
        if val is not None and len(val):
            ev = evaluate_pairs(model, dataset, val, feats=feats, signal=signal)
            row.update({"reward/val_accuracy": ev["accuracy"], "reward/val_loss": ev["loss"]})
        history.append(row)
        post = [f"{k.split('/')[-1]}={v:.3g}" for k, v in row.items() if k.startswith("reward/")]
        post.append(f"{row['perf/pairs_per_s']:.3g} pairs/s")
        note = load_note()
        bar.set_postfix_str(", ".join(post + ([note] if note else [])))
        if run is not None:
            run.log(row)
        if epoch == 0 and progress and config.epochs > 1:
            total = (time.perf_counter() - t0) * config.epochs  # the first epoch's time (validation included)
            bar.write(estimate_line(total, f"{config.epochs} epochs", f"{time.perf_counter() - t0:.3g} s/epoch",
                                    " (less if it stops early)" if config.early_stop else "", "pass fewer --epochs"))
        if config.early_stop and row["reward/train_accuracy"] > config.early_stop_accuracy:
            stopped_early = True
            bar.set_postfix_str(", ".join(post + [f"stopped early at epoch {epoch + 1}"]))
            break
    bar.close()
    model.net.eval()
    revision = git_revision()
    model.info = {
        "dataset": dataset.name,
        "pairs": len(pairs),
        "train_pairs": len(train),
        "val_pairs": 0 if val is None else len(val),
        "epochs_run": len(history),
        "steps": step,
        "stopped_early": stopped_early,
        "bf16": use_bf16,
        "threads": threads,
        "final": history[-1] if history else {},
        "source": source or {},
        "git_revision": revision,
    }
    if run is not None:
        model.save(run.path, header={"git_revision": revision, "device": str(dev), "fingerprint": run.fingerprint,
                                         "threads": threads})
        run.write_summary(model.info)
    return model
