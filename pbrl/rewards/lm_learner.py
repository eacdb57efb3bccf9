"""LM reward learner (registry name `lm`): bandit, token and segment-level reward models on the shared interface
(SegmentRM, Yin et al. 2025, arXiv 2501.02790; the anchors' code is OpenRLHF's fork DenseRewardRLHF-PPO).

A "step" is one token. A causal LM backbone (a tiny one built from `TinyLMConfig`, or any local HF folder) with a
fresh linear value head gives a value r(x, y_<=t) at every token of prompt x + response y. A segmenter cuts the
response into K segments ending at e_1 < ... < e_K (the control segmenter's `segment_ends`, with token masks):

    entropy (segment):  token t ends a segment when the frozen reference LM's next-token entropy
                        H_t = -sum_v p(v | x, y_<=t) log p(v | x, y_<=t) exceeds c  (the boundary falls BEFORE a
                        hard-to-predict token); response tokens only; the last segment ends at EOS-1 (the stop
                        token gets no segment reward). c = `segmenter.entropy_threshold`, or the
                        `entropy_quantile` quantile of the training responses' entropies when None;
    step (token):       every response token but the stop token (c = 0);
    query (bandit):     one segment ending at the stop token (c = infinity);
    fixed:              every k response tokens (RewardConfig's default segmenter; pass one of the three above
                        for SegmentRM's models).

    sequence score   S(y) = (1/K) sum_k r(x, y_<=e_k)         Bradley–Terry: -log sigmoid(S(y_w) - S(y_l))

trained by the shared `pair_loss` (losses.py) on {prompt, chosen, rejected} pairs of any lengths, each ensemble
member on its own order of the pairs. After training, the location-aware normalizer (normalizers.py, the code the
control `location` normalizer runs) is fitted on the ensemble-mean segment rewards of the training pairs (chosen
and rejected), keyed by p = k/K:  mu(p) = a_mu ln p + b_mu,  sigma(p) = max(a_sigma ln p + b_sigma, floor)
(Huber, epsilon 1.35), and stored with the model; for the bandit model p = 1 always and it is the scalar (mean,
std) normalizer. Dense rewards for RL (`token_rewards`, densified by segment.py's `densify_segments`):

    r~_k = (r(e_k) - mu(k/K)) / sigma(k/K);   r_t = r~_k / l_k for t in segment k;   0 on and after EOS (segment,
    token);   r_t <- clamp(r_t, -10, 10)        (PPO then adds -beta (log pi - log pi_ref) per token itself)

The stop token is the first token of the response that is the tokenizer's eos or its end-of-turn token
(<|im_end|>); a response without one is scored through its last token (which then ends the last segment).
Padding is on the right with attention masks (the anchors pad on the left; values do not depend on it).

Entry points: `train_reward(DATA, None, RewardConfig(model="lm", lm=...))` / `pbrl reward train DATA.jsonl --model lm`,
`load_reward_model(DIR)`, `token_rewards`, `evaluate_lm_pairs`; loading a folder (`load_lm_reward`), scoring
{prompt, response} rows (`score_responses`) and the file commands are in ``pbrl.rewards.lm``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from pbrl.errors import PbrlError
from pbrl.llm.models import TinyLMConfig
from pbrl.rewards.learner import CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME, RewardModel, StepOutput
from pbrl.rewards.losses import bradley_terry_loss, preference_accuracy
from pbrl.rewards.normalizers import location_apply, location_fit, location_points
from pbrl.rewards.segment import SegmenterConfig, densify_segments, last_valid, segment_ends
from pbrl.rewards.units import RawRewards
from pbrl.utils import atomic_torch_save, atomic_write_json

if TYPE_CHECKING:
    from pbrl.llm.prefs_data import PreferenceRecord
    from pbrl.rewards.train import RewardConfig

CLAMP = 10.0
"""Dense rewards are clamped to [-CLAMP, CLAMP] (the anchors' clamp)."""
SIGMA_FLOOR = 0.1
"""The normalizer's sigma(p) is at least SIGMA_FLOOR times the pooled std of the segment rewards (the anchors apply
no floor; their fitted line would cross 0 only past about 2,500 segments, but a short tiny-model fit can cross
earlier)."""
BACKBONE_DIR, REFERENCE_DIR, TOKENIZER_DIR = "backbone", "reference", "tokenizer"


@dataclass
class LMRewardConfig:
    """The backbone of the LM reward learner (`RewardConfig.model = "lm"` only)."""

    model_path: str | None = None
    """A local HF causal LM folder to start from (e.g. the model/ of `pbrl llm sft`); by default a tiny model of
    `tiny` is built (random init)."""
    tokenizer_path: str | None = None
    """A local tokenizer folder; default: the one in model_path, else a word tokenizer trained on the data."""
    tiny: TinyLMConfig = field(default_factory=TinyLMConfig)
    """Shape of the tiny backbone built when no model_path is given (vocab_size follows the tokenizer)."""
    reference_path: str | None = None
    """The frozen LM whose next-token entropies place segment ends (entropy segmenter); default: the backbone's
    initial weights, as in the anchors (the checkpoint that starts the reward model)."""
    max_length: int | None = None
    """Longest prompt + response in tokens; default: the backbone's context (max_position_embeddings)."""
    batch_size_eval: int = 64
    """Rows per forward pass when scoring."""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LMRewardConfig:
        raw = dict(raw)
        raw["tiny"] = TinyLMConfig(**raw.get("tiny", {}))
        return cls(**raw)


# ----------------------------------------------------------------------------------------------- data
@dataclass
class LMPairs:
    """Tokenized preference pairs: chosen[i] is preferred over rejected[i] as an answer to prompt[i]."""

    prompt: list[list[int]]
    chosen: list[list[int]]
    rejected: list[list[int]]
    source: str = "pairs"

    def __len__(self) -> int:
        return len(self.prompt)

    def subset(self, idx: Sequence[int]) -> LMPairs:
        return LMPairs(*([getattr(self, k)[i] for i in idx] for k in ("prompt", "chosen", "rejected")), self.source)

    @property
    def label(self) -> np.ndarray:
        """P(b preferred) with a = chosen, b = rejected: 0 for every pair."""
        return np.zeros(len(self), np.float32)


def _nonempty(text: Any) -> bool:
    if isinstance(text, str):
        return bool(text.strip())
    return any(str(m.get("content", "")).strip() for m in text)


def tokenize_lm_pairs(
    records: Sequence[PreferenceRecord], tokenizer, max_length: int, source: str = "pairs"
) -> LMPairs:
    """Token ids of each record (`prefs_data.tokenize_records`: prompt with <bos>, responses with their stop token),
    refused with one line naming `source` and the record when a prompt is empty or prompt + response is longer
    than `max_length`."""
    from pbrl.llm.prefs_data import tokenize_records

    for i, rec in enumerate(records):
        if not _nonempty(rec.prompt):
            raise PbrlError(f"{source}: record {i}: empty prompt (a reward needs a prompt to answer)")
    toks = tokenize_records(records, tokenizer)
    for i, t in enumerate(toks):
        for name in ("chosen", "rejected"):
            n = len(t.prompt) + len(getattr(t, name))
            if n > max_length:
                raise PbrlError(f"{source}: record {i}: prompt + {name} is {n} tokens, longer than the reward "
                                f"model's context of {max_length} (pass a larger --lm.max-length or shorter data)")
    return LMPairs([t.prompt for t in toks], [t.chosen for t in toks], [t.rejected for t in toks], source)


def stop_ids_of(tokenizer) -> list[int]:
    """The ids that end a response: eos and, for chat tokenizers, <|im_end|>."""
    from pbrl.llm.tokenizer import IM_END

    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    vocab = tokenizer.get_vocab()
    if IM_END in vocab:
        ids.append(int(vocab[IM_END]))
    return sorted(set(ids))


def eos_index(response: Sequence[int], stop_ids: Sequence[int]) -> tuple[int, bool]:
    """(index of the first stop token, True), or (len - 1, False) for a response without one."""
    for i, t in enumerate(response):
        if t in stop_ids:
            return i, True
    return len(response) - 1, False


def build_rows(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], stop_ids: Sequence[int], bandit: bool,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows prompt + response, right-padded: ids [B, T] long (-1 on padding) and the segmenter's token mask [B, T]
    bool: the response tokens a segment may end at (through the stop token for the bandit model, through the one
    before it otherwise; a response that is only its stop token keeps that token)."""
    t = max(len(p) + len(r) for p, r in zip(prompts, responses))
    ids = torch.full((len(prompts), t), -1, dtype=torch.long)
    mask = torch.zeros((len(prompts), t), dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        if not r:
            raise PbrlError(f"response {i}: empty (a response has at least its stop token)")
        ids[i, : len(p) + len(r)] = torch.tensor([*p, *r])
        e, has_eos = eos_index(r, stop_ids)
        last = e if (bandit or not has_eos or e == 0) else e - 1  # the EOS-1 rule
        mask[i, len(p) : len(p) + last + 1] = True
    return ids.to(device), mask.to(device)


# ----------------------------------------------------------------------------------------------- network
def _body(lm: nn.Module) -> nn.Module:
    """The decoder stack of an HF causal LM (without its LM head)."""
    return getattr(lm, lm.base_model_prefix)


class LMValueEnsemble(nn.Module):
    """M causal LM bodies, each with a linear value head -> a value at every token; score = mean at segment ends."""

    def __init__(self, backbones: Sequence[nn.Module]) -> None:
        super().__init__()
        self.bodies = nn.ModuleList([_body(b) for b in backbones])
        hidden = backbones[0].config.hidden_size
        self.heads = nn.ModuleList([nn.Linear(hidden, 1) for _ in backbones])

    @property
    def members(self) -> int:
        return len(self.bodies)

    def values(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [M, B, T] (-1 = padding) -> values [M, B, T] (float32)."""
        out = []
        for m, (body, head) in enumerate(zip(self.bodies, self.heads)):
            x = ids[m]
            h = body(input_ids=x.clamp_min(0), attention_mask=(x >= 0).long()).last_hidden_state  # [B, T, H]
            out.append(head(h).squeeze(-1).float())
        return torch.stack(out)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, ends: torch.Tensor | None = None) -> StepOutput:
        """x [M, B, T] token ids, mask / ends [M, B, T] bool -> StepOutput (weights 1/K at the segment ends)."""
        if ends is None:
            raise PbrlError("the LM reward model needs segment ends")
        values = self.values(x)
        e = (ends & mask.bool()).to(values.dtype)
        return StepOutput(values, e / e.sum(-1, keepdim=True).clamp_min(1.0))


@torch.no_grad()
def next_token_entropy(lm: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """H_t = -sum_v p log p of the LM's distribution of token t+1 given tokens <= t; ids [B, T] (-1 = padding) ->
    [B, T] float32."""
    logits = lm(input_ids=ids.clamp_min(0), attention_mask=(ids >= 0).long()).logits.float()  # [B, T, V]
    logp = torch.log_softmax(logits, -1)
    return -(logp.exp() * logp).sum(-1)


# ----------------------------------------------------------------------------------------------- learner
def lm_segmenter(seg: SegmenterConfig) -> SegmenterConfig:
    """c = 0 is the token-level model and c = infinity the bandit one (so they never depend on entropies)."""
    if seg.kind == "entropy" and seg.entropy_threshold is not None:
        if seg.entropy_threshold == 0:
            return dataclasses.replace(seg, kind="step")
        if math.isinf(seg.entropy_threshold):
            return dataclasses.replace(seg, kind="query")
    if seg.kind == "fixed" and seg.k < 1:
        raise PbrlError(f"segmenter.k must be >= 1, got {seg.k}")
    return seg


class LMRewardLearner(RewardModel):
    """The LM reward learner (registry name `lm`); see the module docstring."""

    def __init__(
        self,
        config: RewardConfig,
        tokenizer: Any,
        backbones: Sequence[nn.Module],
        reference: nn.Module | None,
        length: int,
        info: dict[str, Any] | None = None,
    ) -> None:
        if config.ensemble < 1:
            raise PbrlError(f"ensemble must be >= 1, got {config.ensemble}")
        self.config, self.spec, self.length = config, None, int(length)
        self.segmenter = lm_segmenter(config.segmenter)
        self.tokenizer = tokenizer
        self.stop_ids = stop_ids_of(tokenizer)
        self.net = LMValueEnsemble(backbones)
        self._backbone_config = backbones[0].config  # saved so that `load` rebuilds the architecture
        self.reference = reference.eval().requires_grad_(False) if reference is not None else None
        self.threshold: float | None = self.segmenter.entropy_threshold
        self.norm: dict[str, Any] | None = None  # the fitted location normalizer
        self.info = dict(info or {})

    @property
    def bandit(self) -> bool:
        return self.segmenter.kind == "query"

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    # ------------------------------------------------------------------ protocol hooks
    def prepare(self, dataset: LMPairs) -> None:
        """Entropy segmenter without a threshold: c = the `entropy_quantile` quantile of the response tokens'
        entropies over `dataset`."""
        if self.segmenter.kind != "entropy" or self.threshold is not None:
            return
        h = self.reference_signal(dataset)
        _, mask = self._rows(dataset.prompt * 2, dataset.chosen + dataset.rejected)
        self.threshold = float(np.quantile(h[mask].numpy(), self.segmenter.entropy_quantile))

    def features(self, dataset: LMPairs) -> torch.Tensor:
        """Rows [2P, T] of token ids (chosen then rejected; -1 = padding)."""
        return self._rows(dataset.prompt * 2, dataset.chosen + dataset.rejected)[0]

    def reference_signal(self, dataset: LMPairs) -> torch.Tensor | None:
        """Next-token entropies [2P, T] of the reference LM over the rows of `features` (None unless entropy)."""
        if self.segmenter.kind != "entropy":
            return None
        return self._entropies(dataset.prompt * 2, dataset.chosen + dataset.rejected)

    def ends(self, mask: torch.Tensor, signal: torch.Tensor | None) -> torch.Tensor:
        """Segment ends [.., T] from the segmenter's token mask (`build_rows`) — the control segmenter's rule;
        fixed-length segments count k tokens from the response's first token (not the row's)."""
        if self.segmenter.kind == "fixed":
            k = torch.cumsum(mask.long(), -1)  # [.., T] 1-based position inside the response
            return (mask & (k % self.segmenter.k == 0)) | last_valid(mask)
        return segment_ends(self.segmenter, mask, signal, self.threshold)

    def output(self, x: torch.Tensor, mask: torch.Tensor, signal: torch.Tensor | None = None) -> StepOutput:
        """x [B, T] or [M, B, T] token ids; mask the segmenter's token mask -> StepOutput [M, B, T]."""
        if x.dim() == 2:
            x, mask = x.expand(self.members, -1, -1), mask.expand(self.members, -1, -1)
            signal = signal.expand(self.members, -1, -1) if signal is not None else None
        return self.net(x, mask, self.ends(mask, signal))

    def units(self, dataset: LMPairs, batch_size: int | None = None) -> RawRewards:
        """One unit per segment of every chosen and then every rejected response (flat token order). Tokens after
        a response's last end (its stop token and after) are counted in its last unit, so that every token has
        one; `token_rewards` gives them 0."""
        seg = self.segments(dataset.prompt * 2, dataset.chosen + dataset.rejected, batch_size)
        values = np.concatenate([s["values"] for s in seg], 1)  # [M, S]
        lengths = np.concatenate([s["lengths"] for s in seg])
        unit_of, offset = [], 0
        for s in seg:
            unit_of.append(offset + np.minimum(np.cumsum(s["ends"]) - s["ends"], len(s["lengths"]) - 1))
            offset += len(s["lengths"])
        return RawRewards(values, np.concatenate(unit_of), lengths, np.concatenate([s["position"] for s in seg]))

    def check(self, dataset: LMPairs, source: str) -> None:
        for i, (p, c, r) in enumerate(zip(dataset.prompt, dataset.chosen, dataset.rejected)):
            if max(len(p) + len(c), len(p) + len(r)) > self.length:
                raise PbrlError(f"{source}: record {i}: longer than the reward model's context of {self.length}")

    # ------------------------------------------------------------------ scoring
    def _rows(self, prompts, responses) -> tuple[torch.Tensor, torch.Tensor]:
        return build_rows(prompts, responses, self.stop_ids, self.bandit)

    def _batches(self, n_rows: Sequence[int], batch_size: int | None):
        """Index batches of similar length (less padding)."""
        order = np.argsort(np.asarray(n_rows), kind="stable")
        b = batch_size or self.config.lm.batch_size_eval
        return [order[i : i + b] for i in range(0, len(order), b)]

    @torch.inference_mode()
    def _entropies(self, prompts, responses, batch_size: int | None = None) -> torch.Tensor:
        """[N, T] next-token entropies of the reference over the padded rows (0 on padding)."""
        if self.reference is None:
            raise PbrlError("the entropy segmenter needs a reference LM (was the model trained with one?)")
        ids, _ = self._rows(prompts, responses)
        out = torch.zeros(ids.shape, dtype=torch.float32)
        dev = next(self.reference.parameters()).device
        for idx in self._batches([len(p) + len(r) for p, r in zip(prompts, responses)], batch_size):
            sub = ids[torch.from_numpy(idx)]
            t = int((sub >= 0).sum(-1).max())
            out[torch.from_numpy(idx), :t] = next_token_entropy(self.reference, sub[:, :t].to(dev)).cpu()
        return out * (ids >= 0)

    @torch.inference_mode()
    def segments(
        self, prompts, responses, batch_size: int | None = None, progress: bool = False
    ) -> list[dict[str, np.ndarray]]:
        """Per response: values [M, K] at its segment ends, ends [R] bool over its tokens, lengths [K], positions
        k/K [K], and the index of its stop token (`eos`, -1 if it has none). `progress`: a bar in responses/s."""
        from tqdm.auto import tqdm

        self.net.eval()
        dev = self.device
        out: list[dict[str, np.ndarray]] = [{} for _ in prompts]
        bar = tqdm(total=len(prompts), desc="scoring", unit="response", leave=False, disable=not progress)
        for idx in self._batches([len(p) + len(r) for p, r in zip(prompts, responses)], batch_size):
            bar.update(len(idx))
            ps, rs = [prompts[i] for i in idx], [responses[i] for i in idx]
            ids, mask = build_rows(ps, rs, self.stop_ids, self.bandit, dev)
            sig = self._entropies(ps, rs, batch_size).to(dev) if self.segmenter.kind == "entropy" else None
            ends = self.ends(mask, sig)  # [B, T]
            values = self.net.values(ids.expand(self.members, -1, -1))  # [M, B, T]
            for j, i in enumerate(idx):
                p, r = len(ps[j]), len(rs[j])
                e = ends[j, p : p + r].cpu().numpy()
                pos = np.flatnonzero(e)
                k = len(pos)
                eos, has = eos_index(rs[j], self.stop_ids)
                out[i] = {
                    "values": values[:, j, p : p + r][:, torch.from_numpy(pos).to(dev)].cpu().numpy(),
                    "ends": e,
                    "lengths": np.diff(np.concatenate([[-1], pos])).astype(np.int64),
                    "position": np.arange(1, k + 1) / k,
                    "eos": np.int64(eos if has else -1),
                }
        bar.close()
        return out

    def normalized(self, seg: dict[str, np.ndarray]) -> np.ndarray:
        """r~_k of one response's segments (ensemble mean, then the stored normalizer) -> [K]."""
        if self.norm is None:
            raise PbrlError("the LM reward model has no fitted normalizer (was it trained?)")
        n = self.norm
        fit = (n["a_mu"], n["b_mu"], n["a_sigma"], n["b_sigma"])
        return location_apply(seg["values"].mean(0), seg["position"], fit, n["sigma_floor"])

    def fit_normalizer(self, dataset: LMPairs, batch_size: int | None = None) -> dict[str, float]:
        """Fit the location-aware normalizer on the segment rewards of `dataset`'s chosen and rejected responses."""
        seg = self.segments(dataset.prompt * 2, dataset.chosen + dataset.rejected, batch_size)
        v = np.concatenate([s["values"].mean(0) for s in seg])
        p = np.concatenate([s["position"] for s in seg])
        a_mu, b_mu, a_sd, b_sd = location_fit(v, p, bins=None)
        ln_p, mean, std = location_points(v, p, bins=None)
        self.norm = {"a_mu": a_mu, "b_mu": b_mu, "a_sigma": a_sd, "b_sigma": b_sd,
                     "sigma_floor": float(max(SIGMA_FLOOR * v.std(), 1e-6)), "segments": int(len(v)),
                     # the per-key points the lines were fitted to, kept to draw the fit (SegmentRM's figure)
                     "points": {"ln_p": ln_p.tolist(), "mean": mean.tolist(), "std": std.tolist()}}
        return self.norm

    # ------------------------------------------------------------------ checkpoint
    def save(self, out_dir: str | os.PathLike, header: dict[str, Any] | None = None) -> None:
        """reward.pt (value ensemble and reference weights), config.json, and the backbone's / reference's HF
        configs and the tokenizer in sub-folders (what `LMRewardLearner.load` rebuilds them from)."""
        out = Path(out_dir)
        state = {"net": self.net.state_dict()}
        if self.reference is not None:
            state["reference"] = self.reference.state_dict()
            self.reference.config.save_pretrained(out / REFERENCE_DIR)
        self._backbone_config.save_pretrained(out / BACKBONE_DIR)
        self.tokenizer.save_pretrained(out / TOKENIZER_DIR)
        atomic_torch_save(state, str(out / WEIGHTS_NAME))
        atomic_write_json(str(out / CONFIG_NAME), {
            **(header or {}),
            "format_version": FORMAT_VERSION,
            "model": self.kind,
            "config": dataclasses.asdict(self.config),
            "length": self.length,
            "threshold": self.threshold,
            "normalizer": self.norm,
            "stop_ids": self.stop_ids,
            "info": self.info,
        })

    @classmethod
    def load(cls, folder: Path, cfg: dict[str, Any], device: str = "cpu") -> LMRewardLearner:
        """Rebuild a saved LM reward model from `folder` (its config.json already read into `cfg`)."""
        from transformers import AutoConfig, AutoModelForCausalLM

        from pbrl.llm.tokenizer import load_tokenizer
        from pbrl.rewards.train import RewardConfig
        from pbrl.utils import safe_torch_load

        try:
            config = RewardConfig.from_dict(cfg["config"])
            length = int(cfg["length"])
            hf = AutoConfig.from_pretrained(folder / BACKBONE_DIR, local_files_only=True)
            ref_cfg = (AutoConfig.from_pretrained(folder / REFERENCE_DIR, local_files_only=True)
                       if (folder / REFERENCE_DIR).is_dir() else None)
        except (KeyError, TypeError, ValueError, OSError) as e:
            raise PbrlError(f"{folder}: not an LM reward model folder ({type(e).__name__}: {e})") from None
        state = safe_torch_load(folder / WEIGHTS_NAME, map_location=device, what="reward weights")
        config.device = device
        backbones = [AutoModelForCausalLM.from_config(hf) for _ in range(config.ensemble)]
        reference = AutoModelForCausalLM.from_config(ref_cfg) if ref_cfg is not None else None
        model = cls(config, load_tokenizer(folder / TOKENIZER_DIR), backbones, reference, length, cfg.get("info"))
        try:
            model.net.load_state_dict(state["net"])
            if reference is not None:
                reference.load_state_dict(state["reference"])
        except (KeyError, RuntimeError) as e:
            raise PbrlError(f"{folder / WEIGHTS_NAME}: weights do not fit the config ({type(e).__name__})") from None
        model.threshold, model.norm = cfg.get("threshold"), cfg.get("normalizer")
        model.stop_ids = list(cfg.get("stop_ids", model.stop_ids))
        model.net.to(device).eval()
        if model.reference is not None:
            model.reference.to(device)
        return model

    # ------------------------------------------------------------------ training
    @classmethod
    def fit(
        cls,
        data: str | os.PathLike | Sequence[PreferenceRecord],
        config: RewardConfig,
        out_dir: str | os.PathLike | None = None,
        progress: bool = True,
        source: dict[str, Any] | None = None,
        overwrite: bool = True,
        tensorboard: bool = False,
    ) -> LMRewardLearner:
        """`train_reward` for the LM learner: `data` is a JSONL file / datasets folder of {prompt, chosen,
        rejected} records (or the records); settings in `config` (training) and `config.lm` (backbone)."""
        return _fit(cls, data, config, out_dir, progress, source, overwrite, tensorboard)


def _tokenizer(lm: LMRewardConfig, records: Sequence[PreferenceRecord]):
    from pbrl.llm.tokenizer import load_tokenizer, word_tokenizer

    path = lm.tokenizer_path or lm.model_path
    if path:
        return load_tokenizer(path)
    texts: list[str] = []
    for r in records:
        for t in (r.prompt, r.chosen, r.rejected):
            texts.extend([t] if isinstance(t, str) else [m["content"] for m in t])
    return word_tokenizer(texts, chat=True)


def _backbones(lm: LMRewardConfig, tokenizer, members: int, seed: int) -> list[nn.Module]:
    """Members' starting LMs: copies of model_path, or tiny models of `lm.tiny` with seeds seed, seed + 1, ..."""
    from pbrl.llm.models import build_model, load_model

    if lm.model_path:
        base = load_model(lm.model_path).float()
        if base.config.vocab_size < len(tokenizer):
            raise PbrlError(f"{lm.model_path}: vocabulary of {base.config.vocab_size} tokens is smaller than the "
                            f"tokenizer's {len(tokenizer)}")
        return [base] + [copy.deepcopy(base) for _ in range(members - 1)]
    tiny = dataclasses.replace(lm.tiny, vocab_size=max(lm.tiny.vocab_size, len(tokenizer)))
    return [build_model(tiny, seed=seed + m) for m in range(members)]


def _fit(cls, data, config, out_dir, progress, source, overwrite, tensorboard) -> LMRewardLearner:
    from tqdm.auto import tqdm

    from pbrl.llm.models import load_model
    from pbrl.llm.prefs_data import load_preferences
    from pbrl.rewards.train import REWARD_FILES, pair_loss
    from pbrl.runs import RunFolder
    from pbrl.utils import adam, check_fresh_out, estimate_line, git_revision, remove_paths, resolve_device

    stale = check_fresh_out(str(out_dir), REWARD_FILES, overwrite, "pass --overwrite to replace it") if out_dir else []
    lm: LMRewardConfig = config.lm
    if config.batch_size < 1 or config.epochs < 0:
        raise PbrlError(f"batch_size must be >= 1 and epochs >= 0; got {config.batch_size}, {config.epochs}")
    seg = lm_segmenter(config.segmenter)
    name = str(data) if isinstance(data, (str, os.PathLike)) else "records"
    from pbrl.llm.prefs_data import PreferenceRecord

    records = (load_preferences(data) if isinstance(data, (str, os.PathLike))
               else list(data) if isinstance(data, (list, tuple)) else [])
    if not records or not all(isinstance(r, PreferenceRecord) for r in records):
        raise PbrlError(f"the lm reward model trains on {{prompt, chosen, rejected}} records (a JSONL file or a "
                        f"list of PreferenceRecord), not on {type(data).__name__}")
    dev = resolve_device(config.device)
    tokenizer = _tokenizer(lm, records)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        backbones = _backbones(lm, tokenizer, config.ensemble, config.seed)
    hf_config = backbones[0].config
    context = int(hf_config.max_position_embeddings)
    if lm.max_length is not None and not 0 < lm.max_length <= context:
        raise PbrlError(f"lm.max_length must be in [1, {context}] (the backbone's context), got {lm.max_length}")
    length = lm.max_length or context
    pairs = tokenize_lm_pairs(records, tokenizer, length, name)
    reference = None
    if seg.kind == "entropy":  # frozen before training changes the backbone
        reference = load_model(lm.reference_path).float() if lm.reference_path else copy.deepcopy(backbones[0])
    model = cls(config, tokenizer, backbones, reference, length)
    model.net.to(dev)
    if model.reference is not None:
        model.reference.to(dev)

    rng = np.random.default_rng(config.seed)
    n_all = len(pairs)
    perm = rng.permutation(n_all)
    n_val = int(round(config.val_fraction * n_all)) if config.val_fraction > 0 else 0
    train, val = pairs.subset(perm[n_val:]), (pairs.subset(perm[:n_val]) if n_val else None)
    if len(train) == 0:
        raise PbrlError(f"no training pairs left after holding out val_fraction={config.val_fraction}")
    model.prepare(train)
    remove_paths(stale)
    threads = torch.get_num_threads()
    cfg_dict = dataclasses.asdict(config)
    run = (RunFolder(out_dir, cfg_dict, device=str(dev), extra={"threads": threads}, tensorboard=tensorboard)
           if out_dir is not None else None)

    # rows: 0..n-1 chosen, n..2n-1 rejected; token ids, segmenter masks and entropies are fixed: computed once
    n = len(train)
    ids, mask = model._rows(train.prompt * 2, train.chosen + train.rejected)  # [2n, T]
    signal = model.reference_signal(train)  # [2n, T] or None
    row_len = (ids >= 0).sum(-1)
    opt = adam(model.net.parameters(), config.lr)
    m, b = config.ensemble, config.batch_size
    history: list[dict[str, float]] = []
    stopped_early = False
    step = 0
    bar = tqdm(range(config.epochs), desc="reward/lm", unit="epoch", disable=not progress)
    for epoch in bar:
        model.net.train()
        t0 = time.perf_counter()
        perms = np.stack([rng.permutation(n) for _ in range(m)])  # [M, n] each member its own order
        losses, accs = [], []
        for i in range(math.ceil(n / b)):
            idx = torch.from_numpy(perms[:, i * b : (i + 1) * b])  # [M, B]
            rows = torch.cat([idx, idx + n], dim=1)  # [M, 2B]: chosen rows, then their rejected rows
            t = int(row_len[rows].max())
            x, msk = ids[rows, :t].to(dev), mask[rows, :t].to(dev)  # [M, 2B, T]
            sig = signal[rows, :t].to(dev) if signal is not None else None
            y = torch.zeros(idx.shape, device=dev)  # P(rejected preferred) = 0
            loss, acc = pair_loss(model.net, x, msk, model.ends(msk, sig), y, config.mask_ties)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # members' losses summed
            opt.step()
            step += 1
            losses.append(loss.mean().item())
            accs.append(acc.nan_to_num(0.5).mean().item())
        dt = time.perf_counter() - t0
        row = {"epoch": epoch + 1, "step": step, "reward/loss": float(np.mean(losses)),
               "reward/train_accuracy": float(np.mean(accs)), "perf/pairs_per_s": n * m / max(dt, 1e-9)}
        if val is not None:
            ev = evaluate_lm_pairs(model, val)
            row.update({"reward/val_accuracy": ev["accuracy"], "reward/val_loss": ev["loss"]})
        history.append(row)
        post = [f"{k.split('/')[-1]}={v:.3g}" for k, v in row.items() if k.startswith("reward/")]
        bar.set_postfix_str(", ".join(post + [f"{row['perf/pairs_per_s']:.3g} pairs/s"]))
        if run is not None:
            run.log(row)
        if epoch == 0 and progress and config.epochs > 1:
            total = (time.perf_counter() - t0) * config.epochs
            bar.write(estimate_line(total, f"{config.epochs} epochs", f"{time.perf_counter() - t0:.3g} s/epoch",
                                    " (less if it stops early)" if config.early_stop else "", "pass fewer --epochs"))
        if config.early_stop and row["reward/train_accuracy"] > config.early_stop_accuracy:
            stopped_early = True
            break
    bar.close()
    model.net.eval()
    norm = model.fit_normalizer(train)
    revision = git_revision()
    model.info = {
        "dataset": name, "pairs": n_all, "train_pairs": n, "val_pairs": n_val, "epochs_run": len(history),
        "steps": step, "stopped_early": stopped_early, "bf16": False, "threads": threads,
        "segmenter": seg.kind, "threshold": model.threshold, "normalizer": norm,
        "final": history[-1] if history else {}, "source": source or {}, "git_revision": revision,
    }
    if run is not None:
        model.save(run.path, header={"git_revision": revision, "device": str(dev), "fingerprint": run.fingerprint,
                                     "threads": threads})
        run.write_summary(model.info)
    return model


def sequence_scores(
    model: LMRewardLearner, prompts, responses, batch_size: int | None = None, progress: bool = False
) -> np.ndarray:
    """S(y) = (1/K) sum_k r(x, y_<=e_k) of every member -> [M, N] (unnormalized, as in the loss)."""
    seg = model.segments(prompts, responses, batch_size, progress)
    return np.stack([s["values"].mean(1) for s in seg], 1)


def evaluate_lm_pairs(
    model: LMRewardLearner, pairs: LMPairs, batch_size: int | None = None, progress: bool = False
) -> dict[str, float]:
    """Accuracy and Bradley–Terry loss of the ensemble-mean score, and the mean member accuracy (as for control)."""
    return pair_metrics(sequence_scores(model, pairs.prompt * 2, pairs.chosen + pairs.rejected, batch_size,
                                        progress), pairs.label)


def pair_metrics(scores: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """scores [M, 2P] (the chosen responses, then the rejected ones), label [P] = P(rejected preferred)."""
    sa, sb = torch.from_numpy(scores).chunk(2, dim=1)  # [M, P] chosen, rejected
    y = torch.from_numpy(label)
    return {
        "accuracy": float(preference_accuracy(sa.mean(0), sb.mean(0), y)),
        "loss": float(bradley_terry_loss(sa.mean(0), sb.mean(0), y)),
        "member_accuracy": float(preference_accuracy(sa, sb, y).mean()),
    }


def dense_rewards(model: LMRewardLearner, seg: dict[str, np.ndarray]) -> torch.Tensor:
    """One response's dense rewards [R]: r~_k / l_k over segment k, 0 after the last end, clamped."""
    ends = torch.from_numpy(seg["ends"])
    v = torch.zeros(len(ends), dtype=torch.float64)
    v[ends] = torch.from_numpy(model.normalized(seg))
    return densify_segments(v, ends).clamp(-CLAMP, CLAMP).float()


def token_rewards(model, prompt_ids: list[list[int]], response_ids: list[list[int]]) -> list[torch.Tensor]:
    """Dense per-token rewards of each response, for PPO.

    prompt_ids[i], response_ids[i]: token ids (the prompt with its specials, the response as generated, ending at
    its stop token when it has one). Returns one float32 tensor [len(response_ids[i])] per response (on the CPU):
    the location-normalized segment rewards r~_k = (r(e_k) - mu(k/K)) / sigma(k/K) spread evenly over their
    segments (r_t = r~_k / l_k), 0 on the stop token (segment and token models) and after it, clamped to
    [-10, 10]. No KL term: PPO adds -beta (log pi - log pi_ref) itself.
    """
    if len(prompt_ids) != len(response_ids):
        raise PbrlError(f"token_rewards: {len(prompt_ids)} prompts but {len(response_ids)} responses")
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        if not p or not r:
            raise PbrlError(f"token_rewards: response {i}: empty {'prompt' if not p else 'response'}")
        if len(p) + len(r) > model.length:
            raise PbrlError(f"token_rewards: response {i}: prompt + response is {len(p) + len(r)} tokens, longer "
                            f"than the reward model's context of {model.length}")
    return [dense_rewards(model, s) for s in model.segments(prompt_ids, response_ids)]
