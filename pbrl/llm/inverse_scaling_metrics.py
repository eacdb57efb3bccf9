"""Inverse-scaling tasks and metrics (McKenzie et al., "Inverse Scaling: When Bigger Isn't Better", TMLR 2023):
the rows of the prize's task files, each model's per-row scores, their means and standard errors, the chance
baselines and the models' parameters and training FLOPs. The trend report, its plot and the command
(`pbrl llm inverse-scaling TASK --models M1 M2 ... --out DIR`) are in ``pbrl.llm.inverse_scaling``.

Row formats (the prize's CSV or JSONL files; in CSV, ``classes`` is a JSON or Python-literal list string):

    classification     prompt, classes, answer_index
    sequence_prob      prompt, completion
    logodds            prompt, other_prompt, classes (2, single-token), answer_index
    absolute_logodds   the same columns as logodds
    numeric            prompt, true_answer, anchor

Metrics, as the organisers' pipeline (inverse-scaling-eval-pipeline, eval_pipeline/models.py and plot_loss.py)
computes them. For classification, with c_j the tokens of class j and x the prompt:

    logp_j        = sum_t log p(c_{j,t} | x, c_{j,<t})          (run on prompt + class, class tokens summed)
    loss          = -log softmax_j(logp)[answer]
    correct       = [argmax_j logp_j == answer]                  (ties: the first class)
    total_logprob = logsumexp_j logp_j                           (the probability mass on the classes)

sequence_prob:   loss = -sum_t log p(completion_t | prompt, completion_<t).
logodds:         at the last position of a prompt, with z the logits of the two classes' (single) tokens,
                 logodds = log_softmax(z)_0 - log_softmax(z)_1;  score = logodds(prompt) - logodds(other_prompt),
                 times -1 when answer_index = 1 (absolute_logodds: |score|); correct = [argmax z(other_prompt) ==
                 answer]; total_logprob = mean over the two prompts of logsumexp of the classes' full-vocabulary
                 log-probs at the last position.
numeric:         10 samples at temperature 0.5 of at most 7 new tokens; each sample's text up to its first newline,
                 stripped of spaces, commas and parentheses and of trailing full stops, is read as a float (a sample
                 that is not a number is left out); estimate = mean of the valid samples. The pipeline stops with an
                 error when a row has no valid sample; here the row is counted as ``invalid`` and left out of the
                 means instead. Reported: mean estimate, |estimate - true_answer|, |estimate - anchor| and the share
                 of rows whose estimate lies closer to the anchor than to the true answer.

Every metric's standard error is the pipeline's, std / sqrt(n) (numpy's std, ddof = 0). Chance baselines (the
pipeline's "equal probability" line): accuracy mean_i(1 / n_classes_i) for classification and logodds rows, loss
mean_i(-log(1 / n_classes_i)) for classification; none for sequence_prob and numeric.

Tokenization: the prompt is tokenized with the start the model was trained with (``start``: a pbrl-pretrained
model saw every document after <eos>, so "auto" puts <eos> first for it and the tokenizer's own special tokens
otherwise), each class without special tokens. A class's tokens must be what the tokenizer gives for prompt + class
after the prompt's own tokens (the pipeline counts the class's tokens separately and takes that many from the end of
prompt + class, so a class that merges with the prompt's last token would be scored wrongly); and a class must start
with a space where the tokenizer puts word boundaries into its tokens (byte-level BPE: " worm" and "worm" are
different tokens) unless the prompt ends with whitespace. A row that breaks either rule is refused with one
PbrlError naming file:line.

Models: local HF causal LM folders (``pbrl.llm.models.load_model``; a pbrl pretrain run folder is read through its
``model/``). Parameters are counted (tied weights once); training FLOPs are 6 N D (N parameters, D training tokens =
steps x batch_size x seq_length from the run's summary.json and config.json) for a model pbrl pre-trained, None
otherwise.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from pbrl.errors import PbrlError

Kind = Literal["classification", "sequence_prob", "logodds", "absolute_logodds", "numeric"]
KINDS: tuple[str, ...] = ("classification", "sequence_prob", "logodds", "absolute_logodds", "numeric")
COLUMNS: dict[str, tuple[str, ...]] = {
    "classification": ("prompt", "classes", "answer_index"),
    "sequence_prob": ("prompt", "completion"),
    "logodds": ("prompt", "other_prompt", "classes", "answer_index"),
    "absolute_logodds": ("prompt", "other_prompt", "classes", "answer_index"),
    "numeric": ("prompt", "true_answer", "anchor"),
}
NUMERIC_SAMPLES, NUMERIC_TEMPERATURE, NUMERIC_MAX_NEW_TOKENS = 10, 0.5, 7
"""The pipeline's sampling for numeric rows."""


@dataclass(frozen=True)
class TaskRow:
    """One row of a task file; ``where`` is "file:line" for messages."""

    where: str
    prompt: str
    classes: tuple[str, ...] = ()
    answer_index: int = 0
    other_prompt: str = ""
    completion: str = ""
    true_answer: float = math.nan
    anchor: float = math.nan


# ----------------------------------------------------------------------------------------------- reading rows
def _raw_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line, object) of every data row of a CSV or JSONL file."""
    if not path.is_file():
        raise PbrlError(f"{path}: no such task file (expected a .csv or .jsonl file)")
    if path.suffix == ".jsonl":
        from pbrl.utils import read_json_lines

        out = []
        for n, obj in read_json_lines(path):
            if not isinstance(obj, dict):
                raise PbrlError(f"{path}:{n}: expected a JSON object per line")
            out.append((n, obj))
        return out
    if path.suffix != ".csv":
        raise PbrlError(f"{path}: expected a .csv or .jsonl task file")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            out = []
            for obj in reader:
                if None in obj:  # more cells than header columns
                    raise PbrlError(f"{path}:{reader.line_num}: {len(obj[None])} more cells than header columns")
                out.append((reader.line_num, dict(obj)))
    except UnicodeDecodeError as e:
        raise PbrlError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except csv.Error as e:
        raise PbrlError(f"{path}: unreadable CSV ({e})") from None
    return out


def detect_kind(columns: set[str]) -> str:
    """The task kind a row's columns imply (logodds for prompt + other_prompt rows: absolute_logodds has the same
    columns and must be asked for)."""
    if "other_prompt" in columns:
        return "logodds"
    if "completion" in columns:
        return "sequence_prob"
    if "true_answer" in columns or "anchor" in columns:
        return "numeric"
    return "classification"


def parse_classes(value: Any, where: str) -> tuple[str, ...]:
    """A list of at least two strings, given as a list (JSONL) or as a JSON / Python-literal list string (CSV)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise PbrlError(f"{where}: classes: expected a list of strings, got {value!r:.80}") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(c, str) and c for c in value):
        raise PbrlError(f"{where}: classes: expected a list of non-empty strings, got {value!r:.80}")
    if len(value) < 2:
        raise PbrlError(f"{where}: classes: expected at least 2 classes, got {len(value)}")
    return tuple(value)


def _int(value: Any, name: str, where: str) -> int:
    if isinstance(value, bool):
        raise PbrlError(f"{where}: {name}: expected a whole number, got {value!r}")
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise PbrlError(f"{where}: {name}: expected a whole number, got {value!r:.40}") from None
    if not f.is_integer():
        raise PbrlError(f"{where}: {name}: expected a whole number, got {value!r:.40}")
    return int(f)


def _float(value: Any, name: str, where: str) -> float:
    try:
        f = float(str(value).replace(",", "")) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        f = math.nan
    if not math.isfinite(f):
        raise PbrlError(f"{where}: {name}: expected a finite number, got {value!r:.40}")
    return f


def read_task(path: str | Path, kind: str | None = None) -> tuple[str, list[TaskRow]]:
    """(kind, rows) of a task file; ``kind`` None: detected from the columns (see ``detect_kind``). One PbrlError
    naming file:line for a missing column, an unparsable cell or an answer_index out of range."""
    path = Path(path)
    if kind is not None and kind not in KINDS:
        raise PbrlError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    raw = _raw_rows(path)
    if not raw:
        raise PbrlError(f"{path}: the task file holds no rows")
    if kind is None:
        kind = detect_kind(set(raw[0][1]))
    rows = []
    for line, obj in raw:
        where = f"{path}:{line}"
        missing = [c for c in COLUMNS[kind] if obj.get(c) is None or (c == "prompt" and obj.get(c) == "")]
        if missing:
            raise PbrlError(f"{where}: missing column{'s' * (len(missing) > 1)} {', '.join(missing)} "
                            f"(a {kind} row needs {', '.join(COLUMNS[kind])})")
        prompt = obj["prompt"]
        if not isinstance(prompt, str):
            raise PbrlError(f"{where}: prompt: expected a string, got {type(prompt).__name__}")
        if kind == "sequence_prob":
            if not isinstance(obj["completion"], str) or not obj["completion"]:
                raise PbrlError(f"{where}: completion: expected a non-empty string")
            rows.append(TaskRow(where, prompt, completion=obj["completion"]))
        elif kind == "numeric":
            rows.append(TaskRow(where, prompt, true_answer=_float(obj["true_answer"], "true_answer", where),
                                anchor=_float(obj["anchor"], "anchor", where)))
        else:
            classes = parse_classes(obj["classes"], where)
            answer = _int(obj["answer_index"], "answer_index", where)
            if not 0 <= answer < len(classes):
                raise PbrlError(f"{where}: answer_index {answer} is out of range for {len(classes)} classes")
            other = ""
            if kind in ("logodds", "absolute_logodds"):
                other = obj["other_prompt"]
                if not isinstance(other, str) or not other:
                    raise PbrlError(f"{where}: other_prompt: expected a non-empty string")
                if len(classes) != 2:
                    raise PbrlError(f"{where}: classes: a {kind} row needs exactly 2 classes, got {len(classes)}")
            rows.append(TaskRow(where, prompt, classes=classes, answer_index=answer, other_prompt=other))
    return kind, rows


# ----------------------------------------------------------------------------------------------- tokenization
@dataclass
class Encoder:
    """Token ids of prompts (after ``start``) and of classes / completions (no specials), with the boundary checks
    of the module docstring."""

    tokenizer: Any
    start: list[int] = field(default_factory=list)

    def text(self, s: str) -> list[int]:
        return list(self.tokenizer(s, add_special_tokens=False)["input_ids"])

    def prompt(self, s: str) -> list[int]:
        return self.start + self.text(s)

    def needs_space(self, cont: str) -> bool:
        """Whether the tokenizer puts a word's leading space into its tokens, so that ``cont`` written without one
        is tokenized as a different word: byte-level BPE and SentencePiece do (" worm" is one token, "worm"
        another), a whitespace-split word vocabulary and a plain byte-level one (the space a token of its own) do
        not."""
        bare = self.text(cont)
        return self.text(" " + cont)[-len(bare):] != bare

    def continuation(self, prompt: str, cont: str, name: str, where: str) -> list[int]:
        """The tokens of ``cont`` after ``prompt``, checked to be a token-boundary continuation of it."""
        if not cont:
            raise PbrlError(f"{where}: {name} is empty")
        if not cont[0].isspace() and prompt and not prompt[-1].isspace() and self.needs_space(cont):
            raise PbrlError(f"{where}: {name} {cont!r:.40} has no leading space, which this tokenizer needs "
                            f"between the prompt and the {name} (the official rows start classes with a space)")
        p, c, pc = self.text(prompt), self.text(cont), self.text(prompt + cont)
        if pc != p + c:
            raise PbrlError(f"{where}: {name} {cont!r:.40} does not start on a token boundary after the prompt "
                            f"(prompt + {name} tokenizes as {len(pc)} tokens, not the prompt's {len(p)} plus its "
                            f"own {len(c)}); give it a leading space or end the prompt with one")
        return c


def start_ids(tokenizer, start: str, pbrl_pretrained: bool) -> list[int]:
    """The ids put before every prompt: "eos" (pbrl's pre-training separator), "bos", "none", or "auto" (eos for a
    model pbrl pre-trained, else what the tokenizer adds itself)."""
    if start == "auto":
        if pbrl_pretrained:
            start = "eos"
        else:
            with_specials = list(tokenizer("a", add_special_tokens=True)["input_ids"])
            bare = list(tokenizer("a", add_special_tokens=False)["input_ids"])
            return with_specials[: len(with_specials) - len(bare)] if with_specials[-len(bare):] == bare else []
    if start == "none":
        return []
    tid = tokenizer.eos_token_id if start == "eos" else tokenizer.bos_token_id if start == "bos" else None
    if start not in ("eos", "bos"):
        raise PbrlError(f"start: expected auto, eos, bos or none, got {start!r}")
    if tid is None:
        raise PbrlError(f"start: the tokenizer has no {start} token")
    return [int(tid)]


# ----------------------------------------------------------------------------------------------- scoring
@torch.inference_mode()
def token_logprobs(model, seqs: Sequence[Sequence[int]], batch_size: int = 32) -> list[np.ndarray]:
    """log p(t_i | t_<i) for i = 1 .. len - 1 of every sequence (float64 arrays), batched and right-padded."""
    device = next(model.parameters()).device
    out: list[np.ndarray] = [np.zeros(0)] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # similar lengths share a batch
    for k in range(0, len(order), batch_size):
        idx = order[k : k + batch_size]
        L = max(len(seqs[i]) for i in idx)
        ids = torch.zeros(len(idx), L, dtype=torch.long)
        mask = torch.zeros(len(idx), L, dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, : len(seqs[i])] = torch.tensor(seqs[i], dtype=torch.long)
            mask[r, : len(seqs[i])] = 1
        ids, mask = ids.to(device), mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()  # [B, L - 1, V]
        # log p = z_token - logsumexp(z), without a second full-vocabulary copy of the logits
        picked = logits.gather(-1, ids[:, 1:, None])[..., 0].double()  # [B, L - 1]
        lp = (picked - torch.logsumexp(logits, dim=-1).double()).cpu().numpy()
        for r, i in enumerate(idx):
            out[i] = lp[r, : len(seqs[i]) - 1]
    return out


@torch.inference_mode()
def last_logprobs(model, seqs: Sequence[Sequence[int]], batch_size: int = 32) -> np.ndarray:
    """Full-vocabulary log-probs of the next token after every sequence [N, V] (right-padded, the last real
    position read)."""
    device = next(model.parameters()).device
    rows = []
    for k in range(0, len(seqs), batch_size):
        chunk = seqs[k : k + batch_size]
        L = max(len(s) for s in chunk)
        ids = torch.zeros(len(chunk), L, dtype=torch.long)
        mask = torch.zeros(len(chunk), L, dtype=torch.long)
        for r, s in enumerate(chunk):
            ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[r, : len(s)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # [B, L, V]
        last = torch.tensor([len(s) - 1 for s in chunk], device=device)
        z = logits[torch.arange(len(chunk), device=device), last].double()  # [B, V]
        rows.append(torch.log_softmax(z, -1).cpu().numpy())
    return np.concatenate(rows)


def classification_scores(logp: np.ndarray, answer: int) -> dict[str, float]:
    """loss, correct and total_logprob of one row from its class log-probs logp [C] (module docstring)."""
    norm = logp - np.logaddexp.reduce(logp)
    return {"loss": float(-norm[answer]), "correct": float(int(np.argmax(norm)) == answer),
            "total_logprob": float(np.logaddexp.reduce(logp))}


def logodds_scores(lp_prompt: np.ndarray, lp_other: np.ndarray, answer: int, absolute: bool) -> dict[str, float]:
    """The logodds row metrics from the two classes' full-vocabulary log-probs [2] at the last position of the
    prompt and of the other prompt (a log_softmax over the two is a shift, so logits or log-probs give the same)."""
    def odds(lp: np.ndarray) -> float:
        two = lp - np.logaddexp.reduce(lp)
        return float(two[0] - two[1])

    diff = odds(lp_prompt) - odds(lp_other)
    if answer == 1:
        diff = -diff
    if absolute:
        diff = abs(diff)
    total = float(np.mean([np.logaddexp.reduce(lp_prompt), np.logaddexp.reduce(lp_other)]))
    return {"logodds_difference": diff, "correct": float(int(np.argmax(lp_other)) == answer),
            "total_logprob": total}


def parse_number(text: str) -> float | None:
    """The pipeline's BasicParser on one sample: strip, drop commas and parentheses and trailing full stops, float
    (None when that is not a number)."""
    s = text.strip().replace(",", "").replace(")", "").replace("(", "").rstrip(".")
    try:
        v = float(s)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def numeric_estimate(samples: Sequence[str]) -> float | None:
    """Mean of the valid numbers among the samples, each cut at its first newline (None: no valid sample)."""
    vals = [v for v in (parse_number(s.split("\n")[0]) for s in samples) if v is not None]
    return sum(vals) / len(vals) if vals else None


def mean_sem(xs: Sequence[float]) -> dict[str, float]:
    """Mean and the pipeline's standard error std / sqrt(n) (ddof = 0)."""
    a = np.asarray(xs, dtype=np.float64)
    if a.size == 0:
        return {"mean": math.nan, "sem": math.nan, "n": 0}
    return {"mean": float(a.mean()), "sem": float(a.std() / math.sqrt(a.size)), "n": int(a.size)}


def chance(kind: str, rows: Sequence[TaskRow]) -> dict[str, float]:
    """The equal-probability baselines: accuracy mean(1 / n_classes), loss mean(-log(1 / n_classes))."""
    if kind not in ("classification", "logodds", "absolute_logodds"):
        return {}
    n = np.array([len(r.classes) for r in rows], dtype=np.float64)
    out = {"accuracy": float((1 / n).mean())}
    if kind == "classification":
        out["loss"] = float(np.log(n).mean())
    return out


def score_rows(model, tokenizer, kind: str, rows: Sequence[TaskRow], *, start: list[int] | None = None,
               batch_size: int = 32, seed: int = 0) -> dict[str, list[float]]:
    """Per-row metrics of one model on the rows (lists aligned with ``rows``; numeric estimates NaN where no
    sample was a number)."""
    enc = Encoder(tokenizer, list(start or []))
    if kind == "classification":
        seqs, spans = [], []
        for r in rows:
            p = enc.prompt(r.prompt)
            for c in r.classes:
                ct = enc.continuation(r.prompt, c, "class", r.where)
                seqs.append(p + ct)
                spans.append(len(ct))
        lps = token_logprobs(model, seqs, batch_size)
        out: dict[str, list[float]] = {"loss": [], "correct": [], "total_logprob": []}
        k = 0
        for r in rows:
            logp = np.array([lps[k + j][-spans[k + j]:].sum() for j in range(len(r.classes))])
            k += len(r.classes)
            for name, v in classification_scores(logp, r.answer_index).items():
                out[name].append(v)
        return out
    if kind == "sequence_prob":
        seqs, spans = [], []
        for r in rows:
            ct = enc.continuation(r.prompt, r.completion, "completion", r.where)
            seqs.append(enc.prompt(r.prompt) + ct)
            spans.append(len(ct))
        lps = token_logprobs(model, seqs, batch_size)
        return {"loss": [float(-lp[-n:].sum()) for lp, n in zip(lps, spans)]}
    if kind in ("logodds", "absolute_logodds"):
        class_ids = []
        for r in rows:
            ids = []
            for c in r.classes:
                for prompt in (r.prompt, r.other_prompt):
                    ct = enc.continuation(prompt, c, "class", r.where)
                if len(ct) != 1:
                    raise PbrlError(f"{r.where}: class {c!r:.40} is {len(ct)} tokens; a {kind} class must be one "
                                    "token (the score reads the next-token logits)")
                ids.append(ct[0])
            class_ids.append(ids)
        lp = last_logprobs(model, [enc.prompt(r.prompt) for r in rows], batch_size)
        lo = last_logprobs(model, [enc.prompt(r.other_prompt) for r in rows], batch_size)
        out = {"logodds_difference": [], "correct": [], "total_logprob": []}
        for i, r in enumerate(rows):
            s = logodds_scores(lp[i, class_ids[i]], lo[i, class_ids[i]], r.answer_index,
                               kind == "absolute_logodds")
            for name, v in s.items():
                out[name].append(v)
        return out
    if kind == "numeric":
        return {"estimate": numeric_estimates(model, tokenizer, enc, rows, seed=seed)}
    raise PbrlError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")


def numeric_estimates(model, tokenizer, enc: Encoder, rows: Sequence[TaskRow], *, seed: int = 0,
                      batch_size: int = 16) -> list[float]:
    """The pipeline's numeric sampling through ``pbrl.llm.sampler.HFSampler`` (NaN where no sample is a number)."""
    from pbrl.llm.sampler import HFSampler, SamplingConfig

    sampler = HFSampler(model)
    cfg = SamplingConfig(n=NUMERIC_SAMPLES, temperature=NUMERIC_TEMPERATURE, max_new_tokens=NUMERIC_MAX_NEW_TOKENS,
                         eos_token_id=tokenizer.eos_token_id, seed=seed)
    out = []
    for k in range(0, len(rows), batch_size):
        chunk = rows[k : k + batch_size]
        gen = sampler.generate([enc.prompt(r.prompt) for r in chunk], cfg)
        for per_prompt in gen.tokens:
            texts = [tokenizer.decode(t, skip_special_tokens=True) for t in per_prompt]
            est = numeric_estimate(texts)
            out.append(math.nan if est is None else est)
    return out


def summarize(kind: str, rows: Sequence[TaskRow], per_row: dict[str, list[float]]) -> dict[str, Any]:
    """Mean and SEM of every metric (numeric: over the rows with an estimate, plus the anchoring numbers)."""
    if kind != "numeric":
        out = {name: mean_sem(v) for name, v in per_row.items()}
        if "correct" in out:
            out["accuracy"] = out.pop("correct")
        if "total_logprob" in per_row:  # the pipeline's printed "probability mass on the classes"
            out["class_probability_mass"] = mean_sem(np.exp(per_row["total_logprob"]).tolist())
        return out
    est = np.array(per_row["estimate"], dtype=np.float64)
    ok = np.isfinite(est)
    true = np.array([r.true_answer for r in rows])[ok]
    anchor = np.array([r.anchor for r in rows])[ok]
    e = est[ok]
    return {"estimate": mean_sem(e.tolist()), "abs_error": mean_sem(np.abs(e - true).tolist()),
            "abs_distance_to_anchor": mean_sem(np.abs(e - anchor).tolist()),
            "closer_to_anchor": mean_sem((np.abs(e - anchor) < np.abs(e - true)).astype(float).tolist()),
            "invalid": int((~ok).sum())}


# ----------------------------------------------------------------------------------------------- models
def resolve_model_folder(path: str | Path) -> tuple[Path, Path | None]:
    """(HF model folder, pbrl pretrain run folder or None): a run folder is read through its model/, and a model/
    folder inside a run folder is recognised as pbrl's."""
    path = Path(path)
    if (path / "model" / "config.json").is_file() and (path / "summary.json").is_file():
        return path / "model", path
    if (path / "metrics.jsonl").is_file() or (path / "checkpoint.pt").is_file():  # a pbrl run folder
        raise PbrlError(f"{path}: a pbrl run folder without a finished model/ (resume the run to finish it)")
    if not (path / "config.json").is_file():
        raise PbrlError(f"{path}: expected a local HF model folder (config.json) or a pbrl pretrain run folder")
    parent = path.parent
    if path.name == "model" and (parent / "summary.json").is_file() and (parent / "config.json").is_file():
        return path, parent
    return path, None


def training_record(run: Path | None, num_parameters: int) -> dict[str, Any]:
    """Training tokens and FLOPs (6 N D) of a pbrl pretrain run folder; None for both when unknown (not a pretrain
    run of pbrl, or its record lacks the counts)."""
    none = {"training_tokens": None, "training_flops": None, "trained_by": None}
    if run is None:
        return none
    try:
        cfg = json.loads((run / "config.json").read_text())
        summary = json.loads((run / "summary.json").read_text())
        c = cfg["config"]
        if "corpus" not in c or "seq_length" not in c:  # only pre-training runs count their tokens this way
            return none
        tokens = int(summary["step"]) * int(c["batch_size"]) * int(c["seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return none
    return {"training_tokens": tokens, "training_flops": 6.0 * num_parameters * tokens,
            "trained_by": "pbrl llm pretrain"}


def evaluate_task(models: Sequence[str | Path], task_file: str | Path, kind: str | None = None, *,
                  start: str = "auto", batch_size: int = 32, device: str = "cpu", seed: int = 0,
                  progress: bool = True, labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Score every model on a task file: {kind, task, n_rows, chance, models: [{label, path, num_parameters,
    training_tokens, training_flops, metrics: {name: {mean, sem, n}}, per_row: {...}, seconds}]}."""
    from pbrl.llm.models import load_model, num_parameters
    from pbrl.llm.tokenizer import load_tokenizer
    from pbrl.utils import resolve_device

    if not models:
        raise PbrlError("--models: give one or more model folders")
    if labels is not None and len(labels) != len(models):
        raise PbrlError(f"labels: {len(labels)} labels for {len(models)} models")
    if batch_size < 1:
        raise PbrlError(f"batch_size: expected >= 1, got {batch_size}")
    kind, rows = read_task(task_file, kind)
    dev = resolve_device(device)
    resolved = [resolve_model_folder(m) for m in models]  # every folder checked before any model is loaded
    results = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(models) * len(rows), desc="inverse-scaling", unit="row")
    try:
        for i, (folder, run) in enumerate(resolved):
            t0 = time.perf_counter()
            tok = load_tokenizer(folder)
            model = load_model(folder).to(dev).eval()
            n = num_parameters(model)
            per_row = score_rows(model, tok, kind, rows, start=start_ids(tok, start, run is not None),
                                 batch_size=batch_size, seed=seed)
            dt = time.perf_counter() - t0
            results.append({"label": labels[i] if labels is not None else (run or folder).name,
                            "path": str(models[i]), "num_parameters": n, **training_record(run, n),
                            "metrics": summarize(kind, rows, per_row), "per_row": per_row, "seconds": dt})
            if bar is not None:
                bar.update(len(rows))
                bar.set_postfix(model=results[-1]["label"], rows_s=f"{len(rows) / max(dt, 1e-9):.0f}")
            del model
    finally:
        if bar is not None:
            bar.close()
    return {"kind": kind, "task": str(task_file), "n_rows": len(rows), "chance": chance(kind, rows),
            "models": results}
