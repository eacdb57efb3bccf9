"""Train the suite's behaviour policies with SAC and save small actor checkpoints along training.

    python -m pbrl_envs.train_behavior --env Hopper-v5 --steps 300000 --out runs/behavior/hopper
    python -m pbrl_envs.train_behavior --env Hopper-v5 Walker2d-v5 HalfCheetah-v5 --seeds 0 1 --out runs/behavior

One (env, seed) writes into `--out`; several write into `--out/<env>-s<seed>/`, one process each (one torch thread
each by default), so a 16-core machine trains 16 of them at once. Each run folder holds

    config.json             the resolved config, env spaces and the git revision
    actor_<step>.pt         the actor's state_dict every `--ckpt-every` environment steps (weights only, < 1 MB)
    evals.json              per checkpoint: step, wall time, mean/std return of the deterministic and the
                            stochastic (data-collecting) policy over `--eval-episodes` episodes
    final.pt                the full agent (actor, critics, optimisers) at the end, kept out of the suite
    resume.pt               agent, replay buffer, step and RNG state at the latest checkpoint (for `--resume`)

`--resume` continues a run from its resume.pt up to `--steps`. resume.pt holds tensors, numbers, strings, lists and
dicts only and is read with `weights_only=True` (a crafted file cannot run code; an older file that needs pickled
objects is refused with one line). The agent, buffer, evaluations and torch RNG are
restored exactly; the environment starts a fresh episode at the resumed step (the episode in progress at the
checkpoint is cut), so a resumed run is close to, not bit-identical with, an uninterrupted one.

Files are written to a temporary name and renamed into place, so an interrupted run leaves only whole files.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pbrl.errors import PbrlError
from pbrl.utils import atomic_torch_save, atomic_write_json, git_revision, safe_torch_load
from pbrl_envs.sac import SAC, Actor, Batch, SACConfig


@dataclass
class TrainBehaviorConfig:
    """Train SAC behaviour policies for one or several gymnasium environments."""

    env: list[str] = field(default_factory=lambda: ["Hopper-v5"])
    """Gymnasium ids, e.g. Hopper-v5 Walker2d-v5 HalfCheetah-v5 Pendulum-v1."""
    out: Path = Path("runs/behavior")
    """Output folder (one run) or parent folder of `<env>-s<seed>` run folders (several runs)."""
    steps: int = 300_000
    """Environment steps (= gradient steps after `learning_starts`)."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Seeds; every env is trained once per seed."""
    learning_starts: int = 5_000
    """Uniform-random steps that fill the buffer before the first update."""
    ckpt_every: int = 10_000
    """Save the actor and evaluate it every this many environment steps."""
    eval_episodes: int = 5
    """Episodes per evaluation (each of deterministic and stochastic actions)."""
    hidden: int = 256
    """Hidden width of actor and critics."""
    batch_size: int = 256
    """Transitions per gradient step."""
    threads: int = 1
    """torch threads per run."""
    max_parallel: int = 0
    """Runs at once when training several (0 = all)."""
    device: str = "cpu"
    """Torch device of the networks and the replay buffer (cuda falls back to cpu when absent)."""
    cuda_graph: bool = True
    """On CUDA, record the sample-and-update step once as a CUDA graph and replay it (3 warm-up updates first)."""
    time_limit_s: float = 0.0
    """Stop (after a last checkpoint) once training has run this long; 0 = no limit."""
    resume: bool = False
    """Continue from `resume.pt` in the run folder when there is one (else start fresh)."""


def evaluate_actor(actor: Actor, env_id: str, episodes: int, seed: int, deterministic: bool) -> np.ndarray:
    """Returns of `episodes` full episodes run side by side in a vector env (one forward pass per step)."""
    import gymnasium as gym

    envs = gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(episodes)])
    gen = torch.Generator().manual_seed(seed)
    obs, _ = envs.reset(seed=[seed + i for i in range(episodes)])
    returns = np.zeros(episodes)
    done = np.zeros(episodes, dtype=bool)
    while not done.all():
        with torch.no_grad():
            act = actor.act(torch.as_tensor(obs, dtype=torch.float32), deterministic, gen).numpy()
        obs, rew, term, trunc, _ = envs.step(act)
        returns += np.where(done, 0.0, rew)  # envs that finished keep stepping (autoreset); ignore them
        done |= term | trunc
    envs.close()
    return returns


class _Updater:
    """Samples a batch from the device replay buffer and updates the agent; on CUDA, replays a recorded graph.

    The buffer is one flat tensor [capacity, O + A + 1 + O + 1] (obs, act, reward, next_obs, terminal) so each
    environment step is one host-to-device copy; batch indices are drawn on the device as floor(u * n) with n a
    device tensor, so the whole sample-and-update step has static shapes and records into one CUDA graph.
    """

    def __init__(self, agent: SAC, capacity: int, obs_dim: int, act_dim: int, batch_size: int, graph: bool):
        dev = agent.device
        self.agent, self.obs_dim, self.act_dim, self.batch_size = agent, obs_dim, act_dim, batch_size
        self.buf = torch.zeros(capacity, 2 * obs_dim + act_dim + 2, device=dev)
        self.n = torch.zeros((), device=dev)
        self.graph = None
        self.out: dict[str, torch.Tensor] = {}
        self.use_graph = graph and dev.type == "cuda"

    def add(self, i: int, row: np.ndarray) -> None:
        self.buf[i].copy_(torch.from_numpy(row))
        self.n.fill_(i + 1)

    def _step(self) -> dict[str, torch.Tensor]:
        o, a = self.obs_dim, self.act_dim
        idx = (torch.rand(self.batch_size, device=self.buf.device) * self.n).long()  # [B] uniform in [0, n)
        rows = self.buf[idx]  # [B, D]
        batch = Batch(rows[:, :o], rows[:, o:o + a], rows[:, o + a], rows[:, o + a + 1:2 * o + a + 1], rows[:, -1])
        return self.agent.update_tensors(batch)

    def __call__(self) -> dict[str, torch.Tensor]:
        if not self.use_graph:
            return self._step()
        if self.graph is None:
            # warm up on a side stream (allocator and optimiser state), then record one update
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    self._step()
            torch.cuda.current_stream().wait_stream(s)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = self._step()
        self.graph.replay()
        return self.out


def train_one(cfg: TrainBehaviorConfig, env_id: str, seed: int, out: Path) -> list[dict]:
    """Train one SAC agent; returns the evaluation records (also in out/evals.json)."""
    import copy

    import gymnasium as gym

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(seed)
    device = torch.device(cfg.device if cfg.device != "cuda" or torch.cuda.is_available() else "cpu")
    out.mkdir(parents=True, exist_ok=True)
    env = gym.make(env_id)
    obs_dim = int(np.prod(env.observation_space.shape))
    act_dim = int(np.prod(env.action_space.shape))
    low, high = env.action_space.low, env.action_space.high
    sac_cfg = SACConfig(hidden=cfg.hidden, batch_size=cfg.batch_size)
    graph = cfg.cuda_graph and device.type == "cuda"
    agent = SAC(obs_dim, act_dim, low, high, sac_cfg, device=device, capturable=graph)
    atomic_write_json(str(out / "config.json"), {
        "env_id": env_id, "seed": seed, "obs_dim": obs_dim, "act_dim": act_dim,
        "act_low": low.tolist(), "act_high": high.tolist(), "hidden": cfg.hidden, "device": str(device),
        "train": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
        "sac": dataclasses.asdict(sac_cfg), "git_revision": git_revision(),
    })
    updater = _Updater(agent, cfg.steps, obs_dim, act_dim, cfg.batch_size, graph)

    evals: list[dict] = []
    start, ep_rets, wall0 = 0, [], 0.0
    resume_path = out / "resume.pt"
    if cfg.resume and resume_path.exists():
        state = safe_torch_load(resume_path, map_location=device, what="resume file")
        start, ep_rets, evals, wall0 = _restore(state, resume_path, agent, updater)
        print(f"[{env_id} s{seed}] resumed at step {start}", flush=True)
    o, _ = env.reset(seed=seed + start)
    env.action_space.seed(seed + start)
    t0 = time.perf_counter() - wall0
    t_start = t_last = time.perf_counter()  # the time limit counts this call only
    step_last = start
    ep_ret, info = 0.0, {}
    for step in range(start, cfg.steps):
        if step < cfg.learning_starts:
            a = env.action_space.sample()
        else:
            with torch.no_grad():
                obs_t = torch.as_tensor(o, dtype=torch.float32, device=device).unsqueeze(0)
                a = agent.actor.act(obs_t, False)[0].cpu().numpy()
        o2, r, term, trunc, _ = env.step(a)
        # time limits bootstrap, true terminations do not
        updater.add(step, np.concatenate([o, a, [r], o2, [float(term)]]).astype(np.float32))
        ep_ret += float(r)
        if term or trunc:
            ep_rets.append(ep_ret)
            ep_ret = 0.0
            o, _ = env.reset()
        else:
            o = o2

        if step >= cfg.learning_starts:
            info = updater()

        n = step + 1
        out_of_time = cfg.time_limit_s > 0 and time.perf_counter() - t_start > cfg.time_limit_s
        if n % cfg.ckpt_every == 0 or n == cfg.steps or out_of_time:
            now = time.perf_counter()
            sps = (n - step_last) / (now - t_last)
            actor = copy.deepcopy(agent.actor).cpu()
            path = out / f"actor_{n:07d}.pt"
            atomic_torch_save(actor.state_dict(), str(path))
            det = evaluate_actor(actor, env_id, cfg.eval_episodes, 10_000 + seed * 100, True)
            sto = evaluate_actor(actor, env_id, cfg.eval_episodes, 20_000 + seed * 100, False)
            rec = {
                "step": n, "checkpoint": path.name, "wall_s": round(now - t0, 1),
                "return_det_mean": float(det.mean()), "return_det_std": float(det.std()),
                "return_stoch_mean": float(sto.mean()), "return_stoch_std": float(sto.std()),
                "train_return_last10": float(np.mean(ep_rets[-10:])) if ep_rets else None,
                "perf/steps_per_s": round(sps, 1), **{k: round(float(v), 4) for k, v in info.items()},
            }
            evals.append(rec)
            atomic_write_json(str(out / "evals.json"), evals)
            # plain numbers, lists and tensors only, so that resume reads it with weights_only=True
            atomic_torch_save({
                "agent": agent.state_dict(), "buffer": updater.buf[:n].cpu(), "step": int(n),
                "ep_rets": [float(x) for x in ep_rets], "evals": evals, "wall_s": float(rec["wall_s"]),
                "torch_rng": torch.get_rng_state(),
            }, str(resume_path))
            print(f"[{env_id} s{seed}] step {n} det {det.mean():.1f} stoch {sto.mean():.1f} "
                  f"({sps:.0f} steps/s)", flush=True)
            t_last, step_last = time.perf_counter(), n
            if out_of_time:
                break
    atomic_torch_save(agent.state_dict(), str(out / "final.pt"))
    env.close()
    return evals


_RESUME_KEYS = ("agent", "buffer", "step", "ep_rets", "evals", "wall_s", "torch_rng")


def _restore(state: object, path: Path, agent: SAC, updater: _Updater) -> tuple[int, list, list, float]:
    """Load a resume.pt's agent, buffer and RNG into this run; (step, episode returns, evals, wall seconds).

    A file of another run (other env, widths) or of another layout raises one PbrlError naming it."""
    if not isinstance(state, dict) or any(k not in state for k in _RESUME_KEYS):
        have = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise PbrlError(f"{path}: not a resume file of train_behavior (expected keys {list(_RESUME_KEYS)}, has {have})")
    start = int(state["step"])
    try:
        agent.load_state_dict(state["agent"])
        updater.buf[:start].copy_(state["buffer"])
        torch.set_rng_state(state["torch_rng"])
    except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise PbrlError(f"{path}: does not match this run ({type(e).__name__}: {msg[:200]})") from None
    updater.n.fill_(start)
    return start, list(state["ep_rets"]), list(state["evals"]), float(state["wall_s"])


def _run(args: tuple[TrainBehaviorConfig, str, int, str]) -> str:
    cfg, env_id, seed, out = args
    train_one(cfg, env_id, seed, Path(out))
    return out


def main(cfg: TrainBehaviorConfig) -> None:
    jobs = [(env_id, seed) for env_id in cfg.env for seed in cfg.seeds]
    if len(jobs) == 1:
        train_one(cfg, jobs[0][0], jobs[0][1], cfg.out)
        return
    import multiprocessing as mp

    args = [(cfg, e, s, str(cfg.out / f"{e}-s{s}")) for e, s in jobs]
    # spawn: each worker starts with a fresh torch (thread pools do not survive fork well)
    with mp.get_context("spawn").Pool(cfg.max_parallel or len(jobs)) as pool:
        for done in pool.imap_unordered(_run, args):
            print(f"finished {done}", flush=True)


if __name__ == "__main__":
    import sys

    import tyro

    try:
        main(tyro.cli(TrainBehaviorConfig))
    except PbrlError as e:
        sys.exit(f"train_behavior: error: {e}")
