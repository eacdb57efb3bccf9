"""The `pbrl` command.

Thin by design: each subcommand is a dataclass (fields = options, parsed by tyro) with a `run()` method that calls
library functions. Commands are looked up by their words (`pbrl data info ...`) and imported lazily, so
`pbrl data list` does not pay for importing transformers. User errors (`PbrlError`) and argument errors (a missing
positional, `--steps abc`, an unknown flag) print as one line, `pbrl: error: ...`, and exit 2.

To add a library command: write its dataclass in the branch's `commands.py` and add one row to `COMMANDS`. A tasks
package adds its own through its `pbrl.commands` entry point (`pbrl.plugins.register_command`).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import sys
import textwrap
from typing import Any

from pbrl.errors import EXIT_USAGE, PbrlError, error_line
from pbrl.utils import reuse_freed_heap

ABOUT = ("pbrl is a library and command line for offline preference-based reinforcement learning: preferences "
         "over trajectory segments -> a learned reward -> a relabeled dataset -> offline policies (IQL, CQL, "
         "TD3+BC, DT, DTR) and LLM recommenders.")
"""The first sentence of `pbrl --help`: what pbrl is."""

# words -> ("module:Class", one-line help). A group's default command uses the group's words alone.
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("data", "info"): ("pbrl.data.commands:DataInfo", "describe a dataset (Minari id, d4rl:<path>, local path)"),
    ("data", "collect"): ("pbrl.data.commands:DataCollect", "collect random-policy episodes from a gymnasium env"),
    ("data", "list"): ("pbrl.data.commands:DataList", "list local datasets and the registered dataset recipes"),
    ("data", "build"): ("pbrl.data.commands:DataBuild", "build a registered recipe's dataset locally"),
    ("prefs", "info"): ("pbrl.data.commands:PrefsInfo", "counts, tie rate and label balance of a label folder"),
    ("prefs",): ("pbrl.data.commands:PrefsLabel", "label segment pairs of a dataset with a scripted teacher"),
    ("reward", "train"): ("pbrl.rewards.commands:RewardTrain", "train a reward learner (step | segment | pt) on labels"),
    ("reward", "report"): ("pbrl.rewards.commands:RewardReport", "held-out accuracy, learned vs true reward correlation"),
    ("relabel",): ("pbrl.rewards.commands:Relabel", "relabel a dataset with a learned reward, save as Minari"),
    ("rec", "prefs"): ("pbrl.rec.commands:RecPrefs", "label session windows by return-to-go (session teacher)"),
    ("rec", "baselines"): ("pbrl.rec.commands:RecBaselines", "Recall@K / NDCG@K of popularity and co-occurrence"),
    ("rec", "ids"): ("pbrl.rec.gream_commands:RecIds", "semantic item IDs (ml-100k, a RecBole folder, or a log with item texts such as a RecSim log): text embeddings -> residual balanced k-means codes"),
    ("rec", "align-data"): ("pbrl.rec.gream_commands:RecAlignData", "GREAM alignment SFT data (seqrec, item2index, index2item, preference)"),
    ("rec", "srpo"): ("pbrl.rec.srpo:RecSrpo", "SRPO on a semantic-ID recommender: RSVR reward + pass@k-bonus advantage (or binary GRPO), ID-constrained rollouts"),
    ("rec", "gream"): ("pbrl.rec.gream:RecGream", "GREAM end to end on a log: IDs -> alignment SFT -> SRPO / GRPO -> beam evaluation, resumable"),
    ("train",): ("pbrl.policies.commands:TrainCommand", "train an offline policy (iql cql td3bc bc dt qt dtr) on a dataset"),
    ("eval",): ("pbrl.policies.commands:EvalCommand", "evaluate a saved policy in its environment"),
    ("pipeline",): ("pbrl.pipeline:PipelineConfig", "prefs -> reward -> relabel -> policy -> normalized score"),
    ("quickstart",): ("pbrl.commands:Quickstart", "the embedded default task end to end, learned vs true reward"),
    ("sweep",): ("pbrl.commands:Sweep", "run a grid of runs locally or on Ray, skipping finished ones"),
    ("table",): ("pbrl.commands:Table", "results tables (markdown, csv, figures) from run records"),
    ("plot",): ("pbrl.plot:Plot", "learning and loss curves of one or several run folders as PNG"),
    ("llm", "pretrain"): ("pbrl.llm.commands:LlmPretrain", "pre-train a tiny base LM and its BPE + chat-template tokenizer on a text corpus"),
    ("llm", "sft"): ("pbrl.llm.commands:LlmSft", "SFT on chat JSONL: assistant-only loss, best-fit-decreasing packing with document masking"),
    ("llm", "odpo"): ("pbrl.llm.odpo:LlmOdpo", "online DPO: n samples per prompt, a judge (module:function), best vs worst, DPO rounds"),
    ("llm", "ppo"): ("pbrl.llm.ppo:LlmPpo", "PPO on per-token rewards: a judge (module:function) at the last token or an LM reward model's dense rewards"),
    ("llm", "lions"): ("pbrl.llm.lions:LlmLions", "the LIONs stages end to end on a chat-data folder: SFT -> offline DPO -> online DPO, resumable"),
    ("llm", "dpo"): ("pbrl.llm.commands:LlmDpo", "DPO with prefix sharing / packing on preference JSONL"),
    ("llm", "synth"): ("pbrl.llm.commands:LlmSynth", "synthetic preference JSONL with one of six length profiles"),
    ("llm", "hyperfit"): ("pbrl.llm.hyperfit:LlmHyperfit", "hyperfitting: full fine-tuning on a few sequences at a fixed lr until the loss is near zero, text statistics per epoch"),
    ("llm", "textstats"): ("pbrl.llm.hyperfit:LlmTextstats", "TTR, distinct-n, repetition, validation loss and entropy of a model's greedy text (and the entropy-matched temperature)"),
    ("llm", "inverse-scaling"): ("pbrl.llm.inverse_scaling:LlmInverseScaling", "an inverse-scaling task (official row formats) over several models, with the trend classified"),
}


def all_commands() -> dict[tuple[str, ...], tuple[str, str]]:
    """The library's commands and those the installed tasks packages contribute, grouped by their first word."""
    from pbrl.plugins import load_commands

    merged = dict(COMMANDS)
    for words, cmd in load_commands().items():
        if words in COMMANDS:
            raise PbrlError(f"a tasks package registers {' '.join(words)!r}, a library command")
        merged[words] = (cmd.target, cmd.help)
    order = {words[0]: i for i, words in reversed(list(enumerate(merged)))}  # a group stays together in the list
    return dict(sorted(merged.items(), key=lambda kv: order[kv[0][0]]))


def _usage(commands: dict[tuple[str, ...], tuple[str, str]]) -> str:
    width = max(len(" ".join(words)) for words in commands)
    rows = [f"  pbrl {' '.join(words):<{width}}  {help_}" for words, (_, help_) in commands.items()]
    return (f"{textwrap.fill(ABOUT, 100)}\n\nusage: pbrl COMMAND [ARGS] (pbrl COMMAND --help for its options)\n\ncommands:\n"
            + "\n".join(rows))


def _resolve(argv: list[str], commands: dict) -> tuple[tuple[str, ...], list[str]]:
    """Longest run of leading words that names a command, and the remaining arguments."""
    for n in range(min(len(argv), 3), 0, -1):
        words = tuple(argv[:n])
        if words in commands:
            return words, argv[n:]
    raise PbrlError(f"unknown command {' '.join(argv[:2])!r}; run `pbrl --help` for the list")


class _ArgumentError(Exception):
    """An argument error, raised from tyro's parse-error hook to replace its boxed message by one line."""


def _event_message(event: Any) -> str | None:
    """One line for a tyro parse-error event, or None to use the generic rendering."""
    kind = type(event).__name__

    def name(arg: Any) -> str:
        return arg.display_name()

    if kind == "MissingArgs":
        names = ", ".join(name(a.arg) for a in event.missing_arguments)
        extra = f" (and unrecognized: {' '.join(event.unrecognized_tokens)})" if event.unrecognized_tokens else ""
        return f"missing required argument{'s' if len(event.missing_arguments) > 1 else ''}: {names}{extra}"
    if kind == "InvalidChoice":
        return f"{name(event.argument)}: invalid choice {event.value!r}; choose from {', '.join(event.choices)}"
    if kind == "UnrecognizedArgs":
        return f"unrecognized arguments: {' '.join(event.tokens)}"
    if kind == "BadValue":
        if event.offending_value is None:
            return f"{name(event.argument)}: expected more values"
        return f"{name(event.argument)}: unexpected value {event.offending_value!r}"
    if kind == "InstantiationFailure":
        msg = " ".join(str(event.message).split())
        if event.argument is not None and name(event.argument) not in msg:
            msg = f"{name(event.argument)}: {msg}"
        return msg
    return None


def _hook_context() -> contextlib.AbstractContextManager:
    """tyro's (private, versioned) parse-error hook when this tyro has one; the text fallback covers the rest."""
    errors = getattr(importlib.import_module("tyro"), "_errors", None)
    if errors is None or not hasattr(errors, "on_parse_error"):
        return contextlib.nullcontext()

    def hook(event: Any) -> None:
        try:
            msg = _event_message(event)
        except Exception:  # an event whose fields changed: fall back to the rendered text
            msg = None
        if msg:
            raise _ArgumentError(msg)

    return errors.on_parse_error(hook)


_BOX = re.compile(r"[\u2500-\u257f]")  # box-drawing characters


def one_line(rendered: str) -> str:
    """tyro's boxed error text reduced to one line: the box's title and first section (before its first rule)."""
    lines = [ln for ln in rendered.splitlines() if ln.strip()]
    out: list[str] = []
    for i, ln in enumerate(lines):
        body = _BOX.sub(" ", ln).strip()
        if i > 0 and re.fullmatch(r"[\s\u2500-\u257f]+", ln):  # a horizontal rule ends the first section
            break
        if body:
            out.append(body)
    return " ".join(" ".join(out).split())


def _help_config() -> tuple[Any, ...]:
    """tyro markers for every command: positionals are named by their field (`NAME`, `SPEC`, not `STR`), and an
    optional option shows its type (`--size INT`, not `--size {None}|INT`): leaving it out keeps its None default,
    so None is never typed on the command line."""
    import tyro

    return (tyro.conf.PositionalMetavarFromFieldName, tyro.conf.DisallowNone)


def parse(cls: type, args: list[str], prog: str, description: str) -> Any:
    """`tyro.cli(cls, args)` whose argument errors raise PbrlError with one line; `--help` prints as tyro prints it."""
    import tyro

    config = _help_config()
    buf = io.StringIO()
    error: str | None = None
    try:
        with _hook_context(), contextlib.redirect_stderr(buf):
            cfg = tyro.cli(cls, args=args, prog=prog, description=description, config=config)
    except _ArgumentError as e:
        error = str(e)
    except SystemExit as e:
        if e.code in (0, None):  # --help: tyro printed it
            sys.stderr.write(buf.getvalue())
            raise
        error = one_line(buf.getvalue()) or "invalid arguments"
    if error is not None:
        raise PbrlError(f"{prog}: {error}")
    sys.stderr.write(buf.getvalue())  # warnings of a successful parse
    return cfg


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        commands = all_commands()
        if not argv or argv[0] in ("-h", "--help", "help"):
            print(_usage(commands))
            return 0
        words, rest = _resolve(argv, commands)
        target, help_ = commands[words]
        module, cls_name = target.split(":")
        cls = getattr(importlib.import_module(module), cls_name)
        cmd = parse(cls, rest, "pbrl " + " ".join(words), help_)
        reuse_freed_heap()  # the command owns the process: large activations are reused, not page-faulted anew
        cmd.run()
    except PbrlError as e:
        error_line(e)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("pbrl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `pbrl data list | head`: the reader left; say nothing more (Python's docs' recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
