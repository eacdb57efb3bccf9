"""Inverse-scaling report and command (McKenzie et al., "Inverse Scaling: When Bigger Isn't Better", TMLR 2023):
`pbrl llm inverse-scaling TASK --models M1 M2 ... --out DIR`.

The rows, per-row metrics, standard errors, chance baselines and model sizes come from
``pbrl.llm.inverse_scaling_metrics`` (its docstring has the row formats and the pipeline's equations; its public
names are importable from here too). This module turns an ``evaluate_task`` result into the trend over parameters
or training FLOPs (``pbrl.llm.trends.classify_trend``, k standard errors), the markdown table and the plot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tyro

from pbrl.errors import PbrlError
from pbrl.llm.inverse_scaling_metrics import (
    COLUMNS,
    KINDS,
    NUMERIC_MAX_NEW_TOKENS,
    NUMERIC_SAMPLES,
    NUMERIC_TEMPERATURE,
    Encoder,
    Kind,
    TaskRow,
    chance,
    classification_scores,
    detect_kind,
    evaluate_task,
    last_logprobs,
    logodds_scores,
    mean_sem,
    numeric_estimate,
    numeric_estimates,
    parse_classes,
    parse_number,
    read_task,
    resolve_model_folder,
    score_rows,
    start_ids,
    summarize,
    token_logprobs,
    training_record,
)

# ----------------------------------------------------------------------------------------------- trends and report
METRIC_ORIENTATION: dict[str, bool] = {"accuracy": True, "loss": False, "abs_error": False,
                                       "logodds_difference": True, "class_probability_mass": True,
                                       "total_logprob": True, "estimate": True, "abs_distance_to_anchor": True,
                                       "closer_to_anchor": False}
"""Whether a higher value of a metric is better, as the trend classifier reads it. logodds_difference: a rise
counts as positive (the pipeline gives the metric no direction of its own); pass ``higher_is_better`` to read it
the other way. Numeric: a larger distance to the anchor and fewer estimates closer to it mean less anchoring."""
PROPORTIONS = ("accuracy", "closer_to_anchor")
"""Means of 0/1 values: their trend is tested with ``pbrl.llm.trends.proportion_se``."""
TREND_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("loss", "accuracy"), "sequence_prob": ("loss",),
    "logodds": ("logodds_difference", "accuracy"), "absolute_logodds": ("logodds_difference", "accuracy"),
    "numeric": ("abs_error", "closer_to_anchor"),
}
"""The metrics whose trend a report classifies and draws, per kind (the first is the pipeline's default plot)."""


def trend_table(result: dict[str, Any], x_axis: str = "params", higher_is_better: bool | None = None,
                k: float = 2.0) -> dict[str, dict[str, Any]]:
    """{metric: {x, y, se, test_se, trend, higher_is_better}} over the models of an ``evaluate_task`` result, x =
    parameters or training FLOPs (every model needs its FLOPs for the latter). ``se`` is the pipeline's SEM (drawn);
    ``test_se`` the error the trend is classified with: the SEM, or for 0/1 metrics ``proportion_se``."""
    from pbrl.llm.trends import classify_trend, proportion_se

    models = result["models"]
    if x_axis == "params":
        xs = [float(m["num_parameters"]) for m in models]
    elif x_axis == "flops":
        if any(m["training_flops"] is None for m in models):
            unknown = ", ".join(m["label"] for m in models if m["training_flops"] is None)
            raise PbrlError(f"x_axis: flops needs every model's training FLOPs; unknown for {unknown} (only models "
                            "pbrl pre-trained record them); use params")
        xs = [float(m["training_flops"]) for m in models]
    else:
        raise PbrlError(f"x_axis: expected params or flops, got {x_axis!r}")
    out = {}
    for name in TREND_METRICS[result["kind"]]:
        ys = [m["metrics"][name]["mean"] for m in models]
        se = [m["metrics"][name]["sem"] for m in models]
        test_se = se
        if name in PROPORTIONS:  # a perfect score has a zero SEM: the test uses the add-one error instead
            test_se = [proportion_se(y, m["metrics"][name]["n"]) if m["metrics"][name]["n"] else math.nan
                       for y, m in zip(ys, models)]
        hib = METRIC_ORIENTATION[name] if higher_is_better is None or name == "accuracy" else higher_is_better
        trend = None
        if len(models) >= 2 and len(set(xs)) == len(xs) and all(math.isfinite(v) for v in ys + test_se):
            trend = classify_trend(xs, ys, test_se, higher_is_better=hib, k=k)
        out[name] = {"x": xs, "y": ys, "se": se, "test_se": test_se, "trend": trend, "higher_is_better": hib}
    return out


def _fmt(ms: dict[str, float]) -> str:
    return "-" if not ms or not math.isfinite(ms["mean"]) else f"{ms['mean']:.4g} ± {ms['sem']:.2g}"


def markdown_report(result: dict[str, Any], trends: dict[str, dict[str, Any]], x_axis: str = "params") -> str:
    """One table (a row per model, smallest first: parameters, training FLOPs, every metric mean ± SEM), the chance
    baselines and the classified trends."""
    models = result["models"]
    names = list(models[0]["metrics"]) if models else []
    names = [n for n in names if n != "invalid"]
    lines = [f"Task `{result['task']}` ({result['kind']}, {result['n_rows']} rows); mean ± SEM (std / sqrt(n)).", "",
             "| model | parameters | training FLOPs | " + " | ".join(names) +
             (" | invalid rows |" if result["kind"] == "numeric" else " |"),
             "|---|---|---|" + "---|" * (len(names) + (result["kind"] == "numeric"))]
    for m in sorted(models, key=lambda m: m["num_parameters"]):  # the family in size order, as the plot reads
        flops = "unknown" if m["training_flops"] is None else f"{m['training_flops']:.3g}"
        cells = [_fmt(m["metrics"][n]) for n in names]
        if result["kind"] == "numeric":
            cells.append(str(m["metrics"]["invalid"]))
        lines.append(f"| {m['label']} | {m['num_parameters']:,} | {flops} | " + " | ".join(cells) + " |")
    if result["chance"]:
        lines += ["", "Chance (equal probability on the classes): " +
                  ", ".join(f"{k} {v:.4g}" for k, v in result["chance"].items()) + "."]
    lines += ["", f"Trends over {'parameters' if x_axis == 'params' else 'training FLOPs'} (pbrl.llm.trends, "
              "k = 2 standard errors; accuracy tested with the add-one proportion error):", ""]
    for name, t in trends.items():
        lines.append(f"- {name} ({'higher' if t['higher_is_better'] else 'lower'} is better): "
                     f"{t['trend'] or 'not classified (fewer than 2 models, shared x or non-finite values)'}")
    return "\n".join(lines) + "\n"


def plot_result(result: dict[str, Any], trends: dict[str, dict[str, Any]], path: str | Path,
                x_axis: str = "params") -> str:
    """The paper's plot of an ``evaluate_task`` result: one panel per trend metric, chance dashed."""
    from pbrl.llm.trends import Panel, Series, plot_trends

    xlabel = "parameters" if x_axis == "params" else "training FLOPs"
    panels = []
    for name, t in trends.items():
        chance_v = result["chance"].get(name)
        panels.append(Panel(ylabel=name, xlabel=xlabel, chance=chance_v,
                            ylim=(-0.02, 1.02) if name in ("accuracy", "closer_to_anchor") else None,
                            log_y=name == "loss" and result["kind"] != "sequence_prob" and min(t["y"]) > 0,
                            title=f"{Path(result['task']).stem}: {t['trend'] or '-'}",
                            series=[Series(Path(result["task"]).stem, t["x"], t["y"], t["se"])]))
    return plot_trends(panels, path)


OUT_FILES = ("results.json", "results.md", "trend.png")


@dataclass
class LlmInverseScaling:
    """Score local causal LMs on an inverse-scaling task file (the prize's row formats) and classify the trend."""

    task: tyro.conf.Positional[str] = ""
    """Task file: CSV or JSONL rows of one kind (classification, sequence_prob, logodds, absolute_logodds,
    numeric)."""
    models: list[str] = field(default_factory=list)
    """Model folders in any order (local HF causal LMs, or pbrl pretrain run folders)."""
    kind: str | None = None
    """Row kind; default: detected from the columns (logodds for prompt + other_prompt rows)."""
    out: str = "runs/inverse_scaling"
    """Output folder: results.json (every row's metrics), results.md (the table), trend.png (the plot)."""
    labels: list[str] | None = None
    """Names of the models in the table (default: the folder names)."""
    x_axis: str = "params"
    """The trend's x: params or flops (flops only when every model was pre-trained by pbrl)."""
    higher_is_better: bool | None = None
    """Override the direction of the non-accuracy trend metric (default: lower is better for losses and errors)."""
    start: str = "auto"
    """Token put before every prompt: auto (eos for a pbrl-pretrained model, else the tokenizer's own specials),
    eos, bos or none."""
    batch_size: int = 32
    """Sequences per forward pass."""
    device: str = "cpu"
    """cpu, cuda, cuda:N or mps."""
    seed: int = 0
    """Sampling seed of numeric rows."""
    overwrite: bool = False
    """Replace the results of an earlier run in --out."""
    threads: int | None = None
    """Torch CPU threads (default: the free cores)."""
    progress: bool = True
    """Show a progress bar (rows/s)."""

    def run(self) -> dict[str, Any]:
        from pbrl.utils import (
            atomic_write_text,
            check_fresh_out,
            dumps_json,
            remove_paths,
            threads_line,
            use_threads,
        )

        n, note = use_threads(self.threads)
        print(f"pbrl llm inverse-scaling on {self.task}: {threads_line(n, note)}", flush=True)
        if self.x_axis not in ("params", "flops"):
            raise PbrlError(f"--x-axis: expected params or flops, got {self.x_axis!r}")
        old = check_fresh_out(self.out, OUT_FILES, self.overwrite, "pass --overwrite or a new --out")
        result = evaluate_task(self.models, self.task, self.kind, start=self.start, batch_size=self.batch_size,
                               device=self.device, seed=self.seed, progress=self.progress, labels=self.labels)
        trends = trend_table(result, self.x_axis, self.higher_is_better)
        remove_paths(old)
        out = Path(self.out)
        out.mkdir(parents=True, exist_ok=True)
        report = markdown_report(result, trends, self.x_axis)
        atomic_write_text(str(out / "results.json"), dumps_json({**result, "trends": trends}, indent=1))
        atomic_write_text(str(out / "results.md"), report)
        plot_result(result, trends, out / "trend.png", self.x_axis)
        print(report, end="")
        print(f"wrote {out}/results.json, {out}/results.md, {out}/trend.png")
        return {**result, "trends": trends}


__all__ = [
    "COLUMNS", "KINDS", "METRIC_ORIENTATION", "NUMERIC_MAX_NEW_TOKENS", "NUMERIC_SAMPLES",
    "NUMERIC_TEMPERATURE", "OUT_FILES", "PROPORTIONS", "TREND_METRICS", "chance", "classification_scores",
    "detect_kind", "Encoder", "evaluate_task", "Kind", "last_logprobs", "LlmInverseScaling", "logodds_scores",
    "markdown_report", "mean_sem", "numeric_estimate", "numeric_estimates", "parse_classes", "parse_number",
    "plot_result", "read_task", "resolve_model_folder", "score_rows", "start_ids", "summarize", "TaskRow",
    "token_logprobs", "training_record", "trend_table"]
