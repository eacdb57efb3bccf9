"""SASRec and GRU4Rec: the standard neural sequential recommenders, small and faithful, on the Recommender protocol.

SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018). With items of a history
s_1..s_L (most recent last, left-padded with 0 up to L = max_len):

    E_0   = sqrt(d) * M[s] + P                        item embeddings M [I+1, d] (row 0 = padding), learned
                                                      positions P [L, d]; dropout; padded rows zeroed
    block b (b = 1..B), with causal attention (position t sees positions <= t):
        Q     = LN(E_{b-1})
        S     = Q + MHA(Q, E_{b-1}, E_{b-1})           the original code adds the attention to the normalised query;
                                                      padding keys are masked as in its code
        E_b   = S' + FFN(S'),  S' = LN(S)              FFN(x) = W2 dropout(ReLU(W1 x)), W1, W2 [d, d]
    F     = LN(E_B)                                    [B, L, d]
    r_{t,i} = F_t . M_i                                the score of item i as the item after position t

Training targets every position: the item after s_t is s_{t+1}. Two losses:
- "bce" (the paper's): -log sigmoid(r_{t,pos}) - log(1 - sigmoid(r_{t,neg})) with one negative item per position,
  drawn uniformly from the items not in the training window;
- "ce" (RecBole's and most later papers'): softmax cross-entropy over the whole catalogue, -log softmax(r_t)_{pos}
  (Klenitskiy & Vasilev, RecSys 2023, find SASRec trained so clearly better than with the one-negative loss).
Adam (lr 1e-3, betas (0.9, 0.98) as in the original code); early stopping on the validation NDCG@10 (the best
epoch's weights are kept). Scores for a history: r at its last position against every item (full ranking).

GRU4Rec (Hidasi et al., "Session-based Recommendations with Recurrent Neural Networks", ICLR 2016), as RecBole
implements it for next-item prediction: embeddings -> dropout -> GRU -> linear to d; scores = h_t . M_i, trained
with the same losses and loop as SASRec (the original's session-parallel mini-batches with TOP1/BPR over in-batch
negatives are not reproduced).

Training data: each training sequence is cut into windows of max_len + 1 items ending at its last item (inputs
are the first max_len, targets the last max_len), so every item of the sequence is a target once per epoch; a user
with at most max_len + 1 items is one window, which is what the original trains on per user.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pbrl.errors import PbrlError
from pbrl.rec.metrics import metrics_from_ranks, target_ranks
from pbrl.utils import set_seed


@dataclass
class SeqRecConfig:
    """Settings of SASRec / GRU4Rec (the defaults are the SASRec paper's, with max_len 20 for the history of
    at most 20 items of the GREAM protocol)."""

    hidden: int = 64
    """Embedding and hidden width d."""
    blocks: int = 2
    """SASRec: self-attention blocks. GRU4Rec: GRU layers."""
    heads: int = 1
    """SASRec attention heads (the paper uses 1)."""
    dropout: float = 0.2
    max_len: int = 20
    """Longest history the model reads (older items are dropped)."""
    loss: Literal["ce", "bce"] = "ce"
    """"ce": softmax cross-entropy over all items; "bce": the paper's binary loss with one sampled negative."""
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 200
    """At most this many epochs (early stopping usually ends training first)."""
    patience: int = 5
    """Stop after this many evaluations without a better validation NDCG@10."""
    eval_every: int = 1
    """Epochs between validation evaluations."""
    exclude_seen: bool = False
    """Validation ranking without each history's own items (for logs where items do not repeat)."""
    seed: int = 0
    device: str = "cpu"

    def check(self) -> None:
        for name in ("hidden", "blocks", "heads", "max_len", "batch_size", "epochs", "patience", "eval_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise PbrlError(f"{name}: expected a positive whole number, got {v!r}")
        if self.hidden % self.heads:
            raise PbrlError(f"heads: hidden {self.hidden} is not divisible by heads {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise PbrlError(f"dropout: expected a value in [0, 1), got {self.dropout}")
        if self.loss not in ("ce", "bce"):
            raise PbrlError(f"loss: expected 'ce' or 'bce', got {self.loss!r}")
        if not self.lr > 0:
            raise PbrlError(f"lr: expected a positive learning rate, got {self.lr}")


# ----------------------------------------------------------------------------------------------------- networks
class SASRecNet(nn.Module):
    """The SASRec network: [B, L] left-padded item ids (0 = padding, item i is i + 1) -> [B, L, d] states."""

    def __init__(self, num_items: int, cfg: SeqRecConfig):
        super().__init__()
        d = cfg.hidden
        self.item_emb = nn.Embedding(num_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, d)
        self.emb_dropout = nn.Dropout(cfg.dropout)
        self.attn_norms = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(cfg.blocks))
        self.attns = nn.ModuleList(
            nn.MultiheadAttention(d, cfg.heads, dropout=cfg.dropout, batch_first=True) for _ in range(cfg.blocks)
        )
        self.ffn_norms = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(cfg.blocks))
        self.ffns = nn.ModuleList(
            nn.Sequential(nn.Linear(d, d), nn.Dropout(cfg.dropout), nn.ReLU(), nn.Linear(d, d), nn.Dropout(cfg.dropout))
            for _ in range(cfg.blocks)
        )
        self.last_norm = nn.LayerNorm(d, eps=1e-8)
        self.scale = math.sqrt(d)
        self.heads = cfg.heads

    def item_weights(self) -> torch.Tensor:
        return self.item_emb.weight[1:]  # [I, d]

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        B, L = seq.shape
        keep = (seq > 0).unsqueeze(-1).float()  # [B, L, 1] padding rows are zeroed after every layer
        pos = torch.arange(L, device=seq.device) + (self.pos_emb.num_embeddings - L)  # the last item is position L-1
        x = self.item_emb(seq) * self.scale + self.pos_emb(pos)[None]  # [B, L, d]
        x = self.emb_dropout(x) * keep
        # True = not attended: future positions (causal) and padding keys (the original code masks keys whose
        # embedding is 0); a padding query would then see nothing, so it attends to itself (its output is zeroed)
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=seq.device), 1)  # [L, L]
        masked = causal[None] | (seq == 0)[:, None, :]  # [B, L, L]
        masked = masked & ~torch.eye(L, dtype=torch.bool, device=seq.device)[None]
        masked = masked.repeat_interleave(self.heads, 0)  # [B * heads, L, L] as MultiheadAttention wants
        for norm1, attn, norm2, ffn in zip(self.attn_norms, self.attns, self.ffn_norms, self.ffns):
            q = norm1(x)
            a, _ = attn(q, x, x, attn_mask=masked, need_weights=False)
            x = norm2(q + a)
            x = (x + ffn(x)) * keep
        return self.last_norm(x)  # [B, L, d]


class GRU4RecNet(nn.Module):
    """GRU4Rec as RecBole's: [B, L] left-padded item ids -> [B, L, d] states (a GRU over the items)."""

    def __init__(self, num_items: int, cfg: SeqRecConfig):
        super().__init__()
        d = cfg.hidden
        self.item_emb = nn.Embedding(num_items + 1, d, padding_idx=0)
        self.emb_dropout = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(d, 2 * d, num_layers=cfg.blocks, batch_first=True, bias=False)
        self.dense = nn.Linear(2 * d, d)

    def item_weights(self) -> torch.Tensor:
        return self.item_emb.weight[1:]  # [I, d]

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        B, L = seq.shape
        # right-align the items so the GRU starts at the first real item (its states never see the padding),
        # then shift the states back to the left-padded positions
        n = (seq > 0).sum(1, keepdim=True)  # [B, 1]
        idx = (torch.arange(L, device=seq.device)[None] + (L - n)) % L  # [B, L] left-padded position of slot j
        right = seq.gather(1, idx)  # [B, L] items first, padding after
        h, _ = self.gru(self.emb_dropout(self.item_emb(right)))  # [B, L, 2d]
        h = self.dense(h)  # [B, L, d]
        back = (torch.arange(L, device=seq.device)[None] - (L - n)) % L  # [B, L]
        return h.gather(1, back.unsqueeze(-1).expand(-1, -1, h.shape[-1])) * (seq > 0).unsqueeze(-1)


# ------------------------------------------------------------------------------------------------------ losses
def ce_loss(states: torch.Tensor, items: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over the catalogue, mean over the positions with a target.
    states [B, L, d], items [I, d], targets [B, L] (item id + 1; 0 = no target)."""
    mask = targets > 0  # [B, L]
    logits = states[mask] @ items.T  # [N, I]
    return F.cross_entropy(logits, targets[mask] - 1)


def bce_loss(states: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """SASRec's loss: -log sigmoid(r_pos) - log(1 - sigmoid(r_neg)), mean over the positions with a target.
    negatives [B, L] (item id + 1) one sampled item per position."""
    mask = targets > 0  # [B, L]
    h = states[mask]  # [N, d]
    pos = (h * items[targets[mask] - 1]).sum(-1)  # [N]
    neg = (h * items[negatives[mask] - 1]).sum(-1)  # [N]
    return F.softplus(-pos).mean() + F.softplus(neg).mean()  # softplus(-x) = -log sigmoid(x)


def sample_negatives(windows: np.ndarray, num_items: int, rng: np.random.Generator) -> np.ndarray:
    """[B, L] item ids + 1 drawn uniformly among the items absent from each window (rows of `windows`, the
    L + 1 item ids + 1 of one training window; 0 = padding). Rejection sampling; a window holding every item
    keeps its last draw."""
    B = len(windows)
    present = np.zeros((B, num_items + 1), dtype=bool)
    present[np.arange(B)[:, None], windows] = True
    neg = rng.integers(1, num_items + 1, size=(B, windows.shape[1] - 1))
    for _ in range(20):
        bad = present[np.arange(B)[:, None], neg]
        if not bad.any():
            break
        neg[bad] = rng.integers(1, num_items + 1, size=int(bad.sum()))
    return neg


# ------------------------------------------------------------------------------------------------------- data
def left_pad(histories: Sequence[np.ndarray], length: int) -> np.ndarray:
    """[B, length] the last `length` items of each history, shifted to ids + 1 and left-padded with 0."""
    out = np.zeros((len(histories), length), dtype=np.int64)
    for b, h in enumerate(histories):
        h = np.asarray(h, dtype=np.int64)[-length:]
        if len(h):
            out[b, length - len(h) :] = h + 1
    return out


def training_windows(sequences: Sequence[np.ndarray], max_len: int) -> np.ndarray:
    """[N, max_len + 1] windows of item ids + 1 (left-padded with 0) ending at each sequence's last item and
    every max_len items before it; inputs are [:, :-1], targets [:, 1:]. Sequences under 2 items give none."""
    rows = []
    for seq in sequences:
        seq = np.asarray(seq, dtype=np.int64) + 1
        for end in range(len(seq), 1, -max_len):
            rows.append(seq[max(0, end - max_len - 1) : end])
    return left_pad([r - 1 for r in rows], max_len + 1) if rows else np.zeros((0, max_len + 1), dtype=np.int64)


def _check_items(sequences: Sequence[np.ndarray], num_items: int, what: str) -> None:
    for n, seq in enumerate(sequences):
        seq = np.asarray(seq)
        if seq.ndim != 1:
            raise PbrlError(f"{what} {n}: expected a 1-d array of item ids, got shape {seq.shape}")
        if len(seq) and (not np.issubdtype(seq.dtype, np.integer) or seq.min() < 0 or seq.max() >= num_items):
            raise PbrlError(f"{what} {n}: item ids must be whole numbers in [0, {num_items})")


def init_weights(net: nn.Module) -> None:
    """Xavier-normal on every weight matrix, as the reference PyTorch SASRec (pmixer/SASRec.pytorch) and RecBole
    initialise (torch's N(0, 1) embeddings would be scaled by sqrt(d) into a huge range); the padding row is 0."""
    for p in net.parameters():
        if p.dim() > 1:
            nn.init.xavier_normal_(p)
    with torch.no_grad():
        net.item_emb.weight[0].zero_()


# ---------------------------------------------------------------------------------------------- recommenders
class _NeuralSequential:
    """Fit / score loop shared by SASRec and GRU4Rec (the Recommender protocol of `pbrl.rec.baselines`)."""

    net_class: type[nn.Module]
    name = "seqrec"

    def __init__(self, num_items: int, config: SeqRecConfig | None = None, progress: bool = True):
        if isinstance(num_items, bool) or not isinstance(num_items, int) or num_items < 1:
            raise PbrlError(f"num_items: expected a positive whole number, got {num_items!r}")
        self.num_items = num_items
        self.config = config or SeqRecConfig()
        self.config.check()
        self.progress = progress
        self.device = torch.device(self.config.device)
        self.net: nn.Module | None = None
        self.history: list[dict[str, float]] = []
        """One entry per evaluation: epoch, train loss, validation metrics, seconds."""
        self.best_epoch = 0

    def fit(
        self,
        sequences: Sequence[np.ndarray],
        valid_histories: Sequence[np.ndarray] | None = None,
        valid_targets: np.ndarray | None = None,
    ) -> _NeuralSequential:
        """Train on `sequences` (item ids in time order); with a validation set, stop early on its NDCG@10 and keep
        the best epoch's weights, else train `epochs` epochs."""
        cfg = self.config
        _check_items(sequences, self.num_items, "sequence")
        has_valid = valid_histories is not None and valid_targets is not None
        if has_valid:
            _check_items(valid_histories, self.num_items, "validation history")
            valid_targets = np.asarray(valid_targets, dtype=np.int64)
            if len(valid_targets) != len(valid_histories) or len(valid_targets) == 0:
                raise PbrlError(
                    f"validation: {len(valid_histories)} histories but {len(valid_targets)} targets (need as many, > 0)"
                )
            _check_items([valid_targets], self.num_items, "validation targets")
        windows = training_windows(sequences, cfg.max_len)  # [N, L + 1]
        if len(windows) == 0:
            raise PbrlError("sequences: no sequence has 2 or more items to learn a next item from")
        set_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        self.net = self.net_class(self.num_items, cfg)
        init_weights(self.net)
        self.net.to(self.device)
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, betas=(0.9, 0.98))
        best, best_state, stale = -1.0, None, 0
        self.history = []
        steps_per_epoch = math.ceil(len(windows) / cfg.batch_size)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.epochs * steps_per_epoch, desc=self.name, unit="step", dynamic_ncols=True,
                       mininterval=1.0)
        t0 = time.perf_counter()
        for epoch in range(1, cfg.epochs + 1):
            self.net.train()
            order = rng.permutation(len(windows))
            total, count = 0.0, 0
            for s in range(0, len(order), cfg.batch_size):
                w = windows[order[s : s + cfg.batch_size]]  # [b, L + 1]
                seq = torch.from_numpy(w[:, :-1]).to(self.device)  # [b, L]
                tgt = torch.from_numpy(w[:, 1:]).to(self.device)  # [b, L]
                states = self.net(seq)  # [b, L, d]
                items = self.net.item_weights()  # [I, d]
                if cfg.loss == "ce":
                    loss = ce_loss(states, items, tgt)
                else:
                    neg = torch.from_numpy(sample_negatives(w, self.num_items, rng)).to(self.device)
                    loss = bce_loss(states, items, tgt, neg)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, count = total + float(loss.detach()) * len(w), count + len(w)
                if bar is not None:
                    bar.update(1)
            entry = {"epoch": epoch, "loss": total / count, "seconds": time.perf_counter() - t0}
            if has_valid and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
                m = self.evaluate(valid_histories, valid_targets)
                entry.update({k.replace("rec/", "valid_"): v for k, v in m.items()})
                if m["rec/ndcg@10"] > best:
                    best, stale, self.best_epoch = m["rec/ndcg@10"], 0, epoch
                    best_state = copy.deepcopy(self.net.state_dict())
                else:
                    stale += 1
                self.history.append(entry)
                if bar is not None:
                    bar.set_postfix(epoch=epoch, loss=f"{entry['loss']:.3f}", ndcg10=f"{m['rec/ndcg@10']:.4f}",
                                    best=f"{best:.4f}@{self.best_epoch}")
                if stale >= cfg.patience:
                    break
            elif not has_valid:
                self.history.append(entry)
                self.best_epoch = epoch
                if bar is not None:
                    bar.set_postfix(epoch=epoch, loss=f"{entry['loss']:.3f}")
        if bar is not None:
            bar.close()
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.net.eval()
        return self

    @torch.no_grad()
    def scores(self, histories: Sequence[np.ndarray], batch_size: int = 512) -> np.ndarray:
        """[B, I] the score of every item as the next item of each history (items most recent last)."""
        if self.net is None:
            raise PbrlError(f"{self.name}: scores() before fit()")
        _check_items(histories, self.num_items, "history")
        was_training = self.net.training
        self.net.eval()
        out = np.zeros((len(histories), self.num_items), dtype=np.float32)
        items = self.net.item_weights()  # [I, d]
        for s in range(0, len(histories), batch_size):
            seq = torch.from_numpy(left_pad(histories[s : s + batch_size], self.config.max_len)).to(self.device)
            last = self.net(seq)[:, -1]  # [b, d] the state after the most recent item
            out[s : s + len(seq)] = (last @ items.T).float().cpu().numpy()
        self.net.train(was_training)
        return out

    def evaluate(
        self, histories: Sequence[np.ndarray], targets: np.ndarray, ks: Sequence[int] = (1, 5, 10)
    ) -> dict[str, float]:
        """Full-ranking Recall@K / NDCG@K of `targets` after `histories` ({"rec/recall@K", "rec/ndcg@K"})."""
        sc = self.scores(histories).astype(np.float64)  # [B, I]
        if self.config.exclude_seen:
            for b, h in enumerate(histories):
                sc[b, np.asarray(h, dtype=np.int64)] = -np.inf
        return metrics_from_ranks(target_ranks(sc, np.asarray(targets, dtype=np.int64)), ks)


class SASRec(_NeuralSequential):
    """SASRec (Kang & McAuley 2018): causal self-attention over the history; see the module docstring."""

    net_class = SASRecNet
    name = "sasrec"


class GRU4Rec(_NeuralSequential):
    """GRU4Rec (Hidasi et al. 2016) as RecBole trains it for next-item prediction; see the module docstring."""

    net_class = GRU4RecNet
    name = "gru4rec"
