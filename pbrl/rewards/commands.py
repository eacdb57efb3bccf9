"""CLI commands of the reward branch: `pbrl reward train`, `pbrl relabel`, `pbrl reward report`.

The LM learner (`--model lm`) goes through the same three: `pbrl reward train PAIRS.jsonl --model lm --out DIR`
trains on {prompt, chosen, rejected} records, `pbrl reward report PAIRS.jsonl --reward DIR` scores held-out pairs
and `pbrl relabel RESPONSES.jsonl DIR OUT.jsonl` scores {prompt, response} rows (reward, per-token rewards).

The choices are read from the one list of each: `--model` from `RewardConfig.model` (`learner.LearnerName`, checked
equal to the learner registry), `--normalize` from `normalizers.NormalizerName`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Annotated

import tyro

from pbrl.rewards.normalizers import NormalizerName, ShiftName
from pbrl.rewards.train import RewardConfig
from pbrl.utils import round_floats


@dataclass
class RewardTrain:
    """Train a reward learner on preference labels; writes config.json, reward.pt and metrics.jsonl to --out."""

    spec: tyro.conf.Positional[str]
    """Dataset: a Minari id, d4rl:<path>, or a local path; with --model lm a JSONL file (or datasets folder) of
    {prompt, chosen, rejected} records."""
    out: Annotated[str, tyro.conf.arg(metavar="DIR")]
    """Output folder of the reward model."""
    prefs: Annotated[str | None, tyro.conf.arg(metavar="PATH")] = None
    """Preference labels (control models; required there): a pbrl prefs.npz (or its folder), a Uni-RLHF or a
    Preference Transformer label folder."""
    config: Annotated[RewardConfig, tyro.conf.arg(name="")] = dataclasses.field(default_factory=RewardConfig)
    quiet: bool = False
    """No progress bar."""
    overwrite: bool = False
    """Replace the reward model already in OUT (without it, an OUT that holds one is refused)."""
    threads: int | None = None
    """Torch CPU threads (default: the free cores, i.e. the cores minus the 1-minute load average)."""
    tensorboard: bool = False
    """Also log the epoch rows as TensorBoard scalars in OUT/tb (needs `pip install tensorboard`)."""

    def run(self) -> None:
        from pbrl.data import PreferencePairs, load_dataset
        from pbrl.errors import PbrlError
        from pbrl.rewards.learner import get_learner
        from pbrl.rewards.train import REWARD_FILES, train_reward
        from pbrl.utils import check_fresh_out, threads_line, use_threads

        own_data = hasattr(get_learner(self.config.model), "fit")  # the lm learner reads its records itself
        if not own_data and self.prefs is None:
            raise PbrlError(f"--prefs is required for the {self.config.model} reward model (preference labels)")
        check_fresh_out(self.out, REWARD_FILES, self.overwrite, "pass --overwrite to replace it")
        n, note = use_threads(self.threads)
        print(f"pbrl reward train {self.config.model} on {self.spec}: {self.config.epochs} epochs, "
              f"{threads_line(n, note)}", flush=True)
        ds = self.spec if own_data else load_dataset(self.spec)
        pairs = None if own_data else PreferencePairs.load(self.prefs)
        model = train_reward(
            ds,
            pairs,
            self.config,
            out_dir=self.out,
            progress=not self.quiet,
            source={"dataset": self.spec, "prefs": self.prefs},
            overwrite=self.overwrite,
            tensorboard=self.tensorboard,
        )
        summary = {"out": self.out, **model.info["final"], "epochs_run": model.info["epochs_run"]}
        print(json.dumps(round_floats(summary)))  # 4 significant digits; metrics.jsonl keeps them whole


@dataclass
class Relabel:
    """Relabel every transition of a dataset with a learned reward and save it as a local Minari dataset."""

    spec: tyro.conf.Positional[str]
    """Dataset: a Minari id, d4rl:<path>, or a local path; for an LM reward model a JSONL of {prompt, response}."""
    reward: Annotated[str, tyro.conf.arg(metavar="DIR")]
    """Reward model folder (written by `pbrl reward train`)."""
    out: Annotated[str, tyro.conf.arg(metavar="MINARI_ID")]
    """Minari dataset id to write, e.g. pbrl/hopper/medium-replay-relabeled-v0; for an LM reward model the JSONL
    file of scored rows (each row + reward, reward_normalized, segments, token_rewards)."""
    normalize: NormalizerName = "member-zscore"
    """member-zscore (DTR), direct, location (SegmentRM), scale (x1000 / return range), none (ensemble mean)."""
    shift: ShiftName = "none"
    """After the normalizer: minmax maps the dataset's rewards onto [0, 1] (keeps a survival incentive where
    episodes terminate; see pbrl.rewards.normalizers), none leaves them."""
    overwrite: bool = False
    """Replace an existing dataset of that id."""
    device: Annotated[str, tyro.conf.arg(metavar="DEVICE")] = "cpu"
    """Torch device of the batched inference."""
    threads: int | None = None
    """Torch CPU threads (default: the free cores, i.e. the cores minus the 1-minute load average)."""

    def run(self) -> None:
        import sys

        import numpy as np

        from pbrl.rewards.lm import is_lm_folder, score_file
        from pbrl.rewards.relabel import relabel_to_minari
        from pbrl.utils import threads_line, use_threads

        n, note = use_threads(self.threads)
        # stdout stays one JSON object: the first line goes to stderr
        print(f"pbrl relabel {self.spec} with {self.reward} ({self.normalize}, shift {self.shift}): "
              f"{threads_line(n, note)}",
              file=sys.stderr, flush=True)
        if is_lm_folder(self.reward):  # SPEC: {prompt, response} rows; OUT: the scored rows (JSONL)
            print(json.dumps(round_floats(score_file(self.reward, self.spec, self.out, self.overwrite, self.device))))
            return
        ds, path = relabel_to_minari(
            self.spec, self.reward, self.out, self.normalize, self.overwrite, self.device, progress=True,
            shift=self.shift,
        )
        r = ds.rewards
        print(
            json.dumps(
                round_floats({
                    "out": self.out,
                    "path": path,
                    "transitions": ds.num_transitions,
                    "normalizer": self.normalize,
                    "shift": self.shift,
                    "reward_mean": float(r.mean()),
                    "reward_std": float(r.std()),
                    "reward_min": float(r.min()),
                    "reward_max": float(r.max()),
                    "return_mean": float(np.mean(ds.episode_returns())),
                })
            )
        )


@dataclass
class RewardReport:
    """Held-out accuracy and the correlation of learned with true rewards (per step and per segment)."""

    spec: tyro.conf.Positional[str]
    """Dataset with true rewards: a Minari id, d4rl:<path>, or a local path; for an LM reward model a JSONL of
    {prompt, chosen, rejected} records (with score_chosen / score_rejected: their correlation is reported too)."""
    reward: Annotated[str, tyro.conf.arg(metavar="DIR")]
    """Reward model folder."""
    prefs: Annotated[str | None, tyro.conf.arg(metavar="PATH")] = None
    """Held-out preference labels to score (optional)."""
    segments: int = 2000
    """Random windows for the segment-return correlation."""
    normalize: NormalizerName = "none"
    """Normalizer applied before correlating (correlations are invariant to the affine ones)."""
    seed: int = 0
    """Seed of the random windows."""
    threads: int | None = None
    """Torch CPU threads (default: the free cores, i.e. the cores minus the 1-minute load average)."""

    def run(self) -> None:
        import sys

        from pbrl.data import PreferencePairs, load_dataset
        from pbrl.rewards.lm import is_lm_folder, report_file
        from pbrl.rewards.report import reward_report
        from pbrl.rewards.train import load_reward_model
        from pbrl.utils import threads_line, use_threads

        n, note = use_threads(self.threads)
        # stdout stays one JSON document: the first line goes to stderr
        print(f"pbrl reward report {self.reward} on {self.spec}: {threads_line(n, note)}", file=sys.stderr, flush=True)
        if is_lm_folder(self.reward):  # SPEC: held-out {prompt, chosen, rejected} records
            print(json.dumps(round_floats(report_file(self.reward, self.spec)), indent=2))
            return
        ds = load_dataset(self.spec)
        pairs = PreferencePairs.load(self.prefs) if self.prefs else None
        rep = reward_report(
            ds, load_reward_model(self.reward), pairs, self.segments, self.normalize, self.seed, progress=True
        )
        print(json.dumps(round_floats(rep), indent=2))  # 4 significant digits
