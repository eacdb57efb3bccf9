"""The `pbrl` command.

Thin by design: each subcommand is a dataclass (fields = options, parsed by tyro) with a `run()` method that calls
library functions. Commands are looked up by their words (`pbrl data info ...`) and imported lazily, so
`pbrl data list` does not pay for importing transformers. User errors (`PbrlError`) print as one line, exit 2.

To add a command: write its dataclass in the branch's `commands.py` and add one row to `COMMANDS`.
"""

from __future__ import annotations

import importlib
import sys

from pbrl.errors import PbrlError
from pbrl.utils import reuse_freed_heap

# words -> ("module:Class", one-line help). A group's default command uses the group's words alone.
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("data", "info"): ("pbrl.data.commands:DataInfo", "describe a dataset (Minari id, d4rl:<path>, local path)"),
    ("data", "collect"): ("pbrl.data.commands:DataCollect", "collect random-policy episodes from a gymnasium env"),
    ("data", "list"): ("pbrl_envs.commands:DataList", "list local datasets and the benchmark suite"),
    ("data", "build"): ("pbrl_envs.commands:DataBuild", "build a benchmark-suite dataset locally"),
    ("prefs", "info"): ("pbrl.data.commands:PrefsInfo", "counts, tie rate and label balance of a label folder"),
    ("prefs",): ("pbrl.data.commands:PrefsLabel", "label segment pairs of a dataset with a scripted teacher"),
    ("reward", "train"): ("pbrl.rewards.commands:RewardTrain", "train a reward learner (step | segment | pt) on labels"),
    ("reward", "report"): ("pbrl.rewards.commands:RewardReport", "held-out accuracy, learned vs true reward correlation"),
    ("relabel",): ("pbrl.rewards.commands:Relabel", "relabel a dataset with a learned reward, save as Minari"),
    ("rec", "prefs"): ("pbrl_envs.recsim_commands:RecPrefs", "label session windows by return-to-go (session teacher)"),
    ("rec", "baselines"): ("pbrl_envs.recsim_commands:RecBaselines", "Recall@K / NDCG@K of popularity and co-occurrence"),
    ("rec", "catalog"): ("pbrl_envs.recsim_commands:RecCatalog", "write the RecSim-v0 item catalog as JSON lines"),
    ("train",): ("pbrl.policies.commands:TrainCommand", "train an offline policy (iql cql td3bc bc dt qt dtr) on a dataset"),
    ("eval",): ("pbrl.policies.commands:EvalCommand", "evaluate a saved policy in its environment"),
    ("pipeline",): ("pbrl.pipeline:PipelineConfig", "prefs -> reward -> relabel -> policy -> normalized score"),
    ("quickstart",): ("pbrl.commands:Quickstart", "the embedded default task end to end, learned vs true reward"),
    ("sweep",): ("pbrl.commands:Sweep", "run a grid of runs locally or on Ray, skipping finished ones"),
    ("table",): ("pbrl.commands:Table", "results tables (markdown, csv, figures) from run records"),
    ("llm", "dpo"): ("pbrl.llm.commands:LlmDpo", "DPO with prefix sharing / packing on preference JSONL"),
    ("llm", "synth"): ("pbrl.llm.commands:LlmSynth", "synthetic preference JSONL with one of six length profiles"),
}


def _usage() -> str:
    width = max(len(" ".join(words)) for words in COMMANDS)
    rows = [f"  pbrl {' '.join(words):<{width}}  {help_}" for words, (_, help_) in COMMANDS.items()]
    return "usage: pbrl COMMAND [ARGS] (pbrl COMMAND --help for its options)\n\ncommands:\n" + "\n".join(rows)


def _resolve(argv: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """Longest run of leading words that names a command, and the remaining arguments."""
    for n in range(min(len(argv), 3), 0, -1):
        words = tuple(argv[:n])
        if words in COMMANDS:
            return words, argv[n:]
    raise PbrlError(f"unknown command {' '.join(argv[:2])!r}; run `pbrl --help` for the list")


def main(argv: list[str] | None = None) -> int:
    import tyro

    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    try:
        words, rest = _resolve(argv)
        target, help_ = COMMANDS[words]
        module, cls_name = target.split(":")
        cls = getattr(importlib.import_module(module), cls_name)
        cmd = tyro.cli(cls, args=rest, prog="pbrl " + " ".join(words), description=help_)
        reuse_freed_heap()  # the command owns the process: large activations are reused, not page-faulted anew
        cmd.run()
    except PbrlError as e:
        print(f"pbrl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pbrl: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
