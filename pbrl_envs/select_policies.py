"""Pick a training run's medium and expert actors and copy them (with the medium-replay chain) into the suite.

    python -m pbrl_envs.select_policies --run runs/behavior/hopper --family hopper --medium-return 1078

medium = the first checkpoint whose stochastic (data-collecting) return reaches `--medium-return` (D4RL: one third
of the expert's score), unless `--medium-step` names one; expert = the checkpoint with the best stochastic return
(or `--expert-step`). Writes `checkpoints/<family>_actor_<step>.pt` for every checkpoint up to medium (the
medium-replay chain) and the expert, and `checkpoints/<family>.json` (the policy card `pbrl_envs.suite` reads).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from pbrl.errors import PbrlError
from pbrl.utils import atomic_write_json, safe_torch_load

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"


@dataclass
class SelectPolicies:
    """Copy a run's medium/expert actors and the medium-replay chain into the suite's checkpoints."""

    run: Path
    """Training run folder (config.json, evals.json, actor_<step>.pt) written by pbrl_envs.train_behavior."""
    family: str
    """Suite family the policies are for, e.g. hopper."""
    medium_return: float | None = None
    """Stochastic return the medium actor must reach (first checkpoint that does)."""
    medium_step: int | None = None
    """Use this checkpoint as medium instead."""
    expert_step: int | None = None
    """Use this checkpoint as expert instead of the best one."""
    out: Path = CHECKPOINTS
    """Folder the checkpoints and the card go to."""
    note: str = ""
    """Free text stored in the card (how the run was trained)."""
    reeval_episodes: int = 0
    """Re-evaluate every checkpoint's sampled actor over this many episodes before choosing (0 = use evals.json,
    whose few training-time episodes are noisy)."""

    def run_(self) -> dict:
        evals_path, config_path = self.run / "evals.json", self.run / "config.json"
        for p in (evals_path, config_path):
            if not p.is_file():
                raise PbrlError(f"{p}: missing (is {self.run} a pbrl_envs.train_behavior run folder?)")
        evals = json.loads(evals_path.read_text())
        config = json.loads(config_path.read_text())
        if self.reeval_episodes > 0:
            evals = self._reevaluate(evals, config)
        by_step = {int(e["step"]): e for e in evals}
        if self.medium_step is not None:
            medium = self.medium_step
        elif self.medium_return is not None:
            hits = [s for s in sorted(by_step) if by_step[s]["return_stoch_mean"] >= self.medium_return]
            if not hits:
                best = max(e["return_stoch_mean"] for e in evals)
                raise PbrlError(f"{evals_path}: no checkpoint reaches {self.medium_return} (best {best:.1f})")
            medium = hits[0]
        else:
            raise PbrlError("give --medium-return or --medium-step")
        expert = self.expert_step or max(by_step, key=lambda s: by_step[s]["return_stoch_mean"])
        for s in (medium, expert):
            if s not in by_step:
                raise PbrlError(f"{evals_path}: no checkpoint at step {s}")
        # before learning_starts the actions were uniform random: the chain starts at the first actor that acted
        starts = int(config["train"].get("learning_starts", 0))
        chain = [s for s in sorted(by_step) if starts <= s <= medium]
        self.out.mkdir(parents=True, exist_ok=True)
        checkpoints = {}
        for s in sorted(set(chain) | {expert}):
            name = f"{self.family}_actor_{s:07d}.pt"
            shutil.copyfile(self.run / by_step[s]["checkpoint"], self.out / name)
            keep = ("step", "return_det_mean", "return_det_std", "return_stoch_mean", "return_stoch_std", "wall_s")
            checkpoints[str(s)] = {"file": name, **{k: by_step[s][k] for k in keep if k in by_step[s]}}
        card = {
            "env_id": config["env_id"], "hidden": config["hidden"], "obs_dim": config["obs_dim"],
            "act_dim": config["act_dim"], "act_low": config["act_low"], "act_high": config["act_high"],
            "medium_step": medium, "expert_step": expert, "replay_steps": chain,
            "checkpoints": checkpoints,
            "training": {"seed": config["seed"], "sac": config["sac"], "train": config["train"],
                         "device": config.get("device"), "git_revision": config.get("git_revision"),
                         "steps_trained": max(by_step), "note": self.note},
            "evals": [{k: e[k] for k in ("step", "return_stoch_mean", "return_det_mean")} for e in evals],
        }
        if self.reeval_episodes > 0:
            card["training"]["reeval_episodes"] = self.reeval_episodes
        atomic_write_json(str(self.out / f"{self.family}.json"), card)
        print(f"{self.family}: medium step {medium} (stoch return {by_step[medium]['return_stoch_mean']:.1f}), "
              f"expert step {expert} ({by_step[expert]['return_stoch_mean']:.1f}), chain of {len(chain)}")
        return card

    def _reevaluate(self, evals: list[dict], config: dict) -> list[dict]:
        import torch

        from pbrl_envs.sac import Actor
        from pbrl_envs.train_behavior import evaluate_actor

        torch.set_num_threads(1)
        out = []
        for e in evals:
            actor = Actor(config["obs_dim"], config["act_dim"], config["hidden"], config["act_low"],
                          config["act_high"])
            actor.load_state_dict(safe_torch_load(self.run / e["checkpoint"], what="actor checkpoint"))
            ret = evaluate_actor(actor, config["env_id"], self.reeval_episodes, 30_000, deterministic=False)
            e = dict(e, return_stoch_mean=float(ret.mean()), return_stoch_std=float(ret.std()),
                     train_eval_stoch_mean=e["return_stoch_mean"])
            print(f"  step {e['step']}: {ret.mean():.1f} +- {ret.std():.1f} (training eval "
                  f"{e['train_eval_stoch_mean']:.1f})", flush=True)
            out.append(e)
        return out


if __name__ == "__main__":
    import sys

    import tyro

    try:
        tyro.cli(SelectPolicies).run_()
    except PbrlError as e:
        sys.exit(f"select_policies: error: {e}")
