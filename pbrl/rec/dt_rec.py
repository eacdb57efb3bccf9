"""pbrl's discrete Decision Transformer as a next-item recommender (Chen et al., NeurIPS 2021, arXiv 2106.01345).

Each user's chronological item sequence i_0 .. i_{n-1} is one episode of n steps:
    s_t = phi(i_{t-1})   (phi(i_{-1}) = 0: the first step has no previous item)
    a_t = i_t            (Discrete(num_items))
    r_t = 1              (one per interaction, so R^_t = n - t: the number of interactions still to come)
phi is a fixed, not learned, item feature: the item's genre multi-hot and its release year scaled to [0, 1], read
from the item text `pbrl.rec.movielens` builds ("Title (year); genre, genre"). The item identity itself enters
through the action tokens of the earlier steps. `pbrl.policies.dt.DecisionTransformer` trains on these episodes
unchanged (cross-entropy on a_t, K-step windows). To recommend at a user's step p, the window holds the last
L <= K steps of the history, (R^_q, s_q, a_q) for q = p - L + 1 .. p with the target's action slot empty, the
returns-to-go R^_q = max(R_hi - q, 1) with R_hi a high quantile of the training episodes' returns (DT's
return conditioning, here "a user who stays long"), and the action logits at step p are the scores of every item.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from pbrl.data import EpisodeDataset
from pbrl.errors import PbrlError
from pbrl.policies.base import PolicySpec
from pbrl.policies.dt import DecisionTransformer, DTConfig

_YEAR = re.compile(r"\((\d{4})\)")


def genre_year_features(item_texts: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Item texts "Title (year); g1, g2" -> ([I, G + 1] float32: genre multi-hot, then (year - min) / (max - min),
    0 where the year is missing), the G genre names in sorted order)."""
    genres: list[list[str]] = []
    years: list[float] = []
    for i, text in enumerate(item_texts):
        if not isinstance(text, str):
            raise PbrlError(f"item_texts[{i}]: expected a string, got {type(text).__name__}")
        head, _, tail = text.rpartition(";") if ";" in text else (text, "", "")
        genres.append([g.strip() for g in tail.split(",") if g.strip()])
        m = _YEAR.findall(head)
        years.append(float(m[-1]) if m else np.nan)
    names = sorted({g for gs in genres for g in gs})
    col = {g: j for j, g in enumerate(names)}
    feats = np.zeros((len(item_texts), len(names) + 1), dtype=np.float32)  # [I, G + 1]
    for i, gs in enumerate(genres):
        feats[i, [col[g] for g in gs]] = 1.0
    y = np.asarray(years)
    if np.isfinite(y).any():
        lo, hi = np.nanmin(y), np.nanmax(y)
        feats[:, -1] = np.where(np.isfinite(y), (y - lo) / max(hi - lo, 1.0), 0.0)
    return feats, names


def sequences_to_episodes(sequences: Sequence[np.ndarray], features: np.ndarray, name: str = "rec-episodes"
                          ) -> EpisodeDataset:
    """One episode per non-empty sequence (see the module docstring): observations [N + E, D] (each episode's
    n steps, then its final next observation phi(i_{n-1})), actions [N] item ids, rewards 1, the end of a log
    a truncation (the user did not leave the system, the log stopped)."""
    features = np.asarray(features, dtype=np.float32)
    num_items, dim = features.shape
    obs: list[np.ndarray] = []
    acts: list[np.ndarray] = []
    starts = [0]
    for u, seq in enumerate(sequences):
        seq = np.asarray(seq, dtype=np.int64)
        if len(seq) == 0:
            continue
        if seq.min() < 0 or seq.max() >= num_items:
            raise PbrlError(f"sequences[{u}]: item id {int(seq.max() if seq.max() >= num_items else seq.min())} "
                            f"outside the catalog 0..{num_items - 1}")
        obs.append(np.concatenate([np.zeros((1, dim), np.float32), features[seq]]))  # [n + 1, D]
        acts.append(seq)
        starts.append(starts[-1] + len(seq))
    if not acts:
        raise PbrlError("sequences_to_episodes: every sequence is empty")
    n = starts[-1]
    trunc = np.zeros(n, dtype=bool)
    trunc[np.asarray(starts[1:]) - 1] = True
    import gymnasium as gym

    return EpisodeDataset(
        observations=np.concatenate(obs), actions=np.concatenate(acts), rewards=np.ones(n, np.float32),
        terminations=np.zeros(n, dtype=bool), truncations=trunc, episode_starts=np.asarray(starts, np.int64),
        metadata={"name": name},
        observation_space=gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32),
        action_space=gym.spaces.Discrete(num_items),
    )


class DTRecommender:
    """Fit `DecisionTransformer` (Discrete actions) on training sequences; `scores` ranks the whole catalog.

    `scores` takes (history, position) pairs: position = the target's index in the user's full sequence (DT's
    timestep embedding and return-to-go need it; `leave_one_out` gives len(train) for the validation target and
    len(train) + 1 for the test target)."""

    def __init__(self, features: np.ndarray, config: DTConfig, updates: int, rtg_quantile: float = 0.9,
                 seed: int = 0, progress: bool = True) -> None:
        if updates < 1:
            raise PbrlError(f"updates must be >= 1, got {updates}")
        if not 0.0 <= rtg_quantile <= 1.0:
            raise PbrlError(f"rtg_quantile must be in [0, 1], got {rtg_quantile}")
        self.features = np.asarray(features, dtype=np.float32)  # [I, D]
        self.config, self.updates, self.rtg_quantile = config, int(updates), float(rtg_quantile)
        self.seed, self.progress = int(seed), progress
        self.policy: DecisionTransformer | None = None
        self.history: list[dict[str, float]] = []
        self.r_hi = 0.0

    def fit(self, sequences: Sequence[np.ndarray]) -> DTRecommender:
        from tqdm.auto import tqdm

        ds = sequences_to_episodes(sequences, self.features)
        spec = PolicySpec.from_dataset(ds)
        self.r_hi = float(np.quantile(ds.episode_returns(), self.rtg_quantile))
        cfg = replace(self.config, target_return=self.r_hi)
        torch.manual_seed(self.seed)
        self.policy = DecisionTransformer(cfg, spec, self.updates)
        self.policy.train()
        sampler = self.policy.make_sampler(ds, torch.Generator().manual_seed(self.seed))
        bar = tqdm(range(self.updates), desc="dt-rec", unit="upd", disable=not self.progress, file=sys.stderr,
                   mininterval=5.0)
        for step in bar:
            logs = self.policy.update(sampler())
            if step % 100 == 0 or step == self.updates - 1:
                self.history.append({"step": step + 1, "loss": logs["dt/action_loss"]})
                bar.set_postfix(loss=f"{logs['dt/action_loss']:.3f}")
        self.policy.eval()
        return self

    @torch.no_grad()
    def scores(self, batch: list[tuple[np.ndarray, int]]) -> torch.Tensor:
        """[(history [L], position)] x B -> action logits [B, num_items] at each target step."""
        if self.policy is None:
            raise PbrlError("DTRecommender.scores: call fit first")
        pol, K = self.policy, self.config.context
        dev = pol.device
        B, D = len(batch), self.features.shape[1]
        states = torch.zeros(B, K, D)
        actions = torch.zeros(B, K, dtype=torch.long)
        timesteps = torch.zeros(B, K, dtype=torch.long)
        mask = torch.zeros(B, K, dtype=torch.bool)
        rtg = torch.zeros(B, K)
        for b, (hist, pos) in enumerate(batch):
            hist = np.asarray(hist, dtype=np.int64)[-K:]
            L = len(hist)
            if L == 0 or pos < L:
                raise PbrlError(f"DTRecommender.scores: row {b} has {L} history items at position {pos}")
            q = np.arange(pos - L + 1, pos + 1)  # [L] steps; step q's state is item q - 1, the last is the target
            states[b, K - L:] = torch.from_numpy(self.features[hist])  # phi(i_{q-1})
            actions[b, K - L: K - 1] = torch.from_numpy(hist[1:])  # a_q = i_q for q < pos; the target slot 0
            timesteps[b, K - L:] = torch.from_numpy(q)
            rtg[b, K - L:] = torch.from_numpy(np.maximum(self.r_hi - q, 1.0).astype(np.float32))
            mask[b, K - L:] = True
        states = pol.normalize_obs(states.to(dev)) * mask.to(dev)[..., None]
        logits, _ = pol.model(rtg.to(dev) / self.config.rtg_scale, states, actions.to(dev), timesteps.to(dev),
                              mask.to(dev), "last_action")  # [B, 1, I]
        return logits[:, -1]
