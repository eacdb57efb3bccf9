"""SAC update throughput: batched twin critics (one [2, ...] baddbmm per layer, fused target update) vs the usual
two separate critic MLPs updated in a Python loop (CORL/cleanrl style), measured side by side in one process.

    python baselines/sac_throughput.py --threads 1 --seconds 10

Both variants run the same losses on the same batches (Hopper-sized: obs 11, act 3, 256x256, batch 256). Prints
updates/s of each and their ratio; on CUDA (`--device cuda`) it also times the CUDA-graph replay of the batched one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from pbrl_envs.sac import SAC, Batch, SACConfig


class LoopTwinCritic(nn.Module):
    """Reference: two independent MLPs, evaluated one after the other; returns Q [2, B] like TwinCritic."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.qs = nn.ModuleList(
            nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, 1))
            for _ in range(2)
        )

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], -1)
        return torch.stack([q(x).squeeze(-1) for q in self.qs])


def looped_agent(obs_dim: int, act_dim: int, cfg: SACConfig, device: str) -> SAC:
    agent = SAC(obs_dim, act_dim, [-1.0] * act_dim, [1.0] * act_dim, cfg, device=device)
    agent.critic = LoopTwinCritic(obs_dim + act_dim, cfg.hidden).to(device)
    agent.critic_target = LoopTwinCritic(obs_dim + act_dim, cfg.hidden).to(device)
    agent.critic_target.load_state_dict(agent.critic.state_dict())
    agent.critic_target.requires_grad_(False)
    agent.critic_opt = torch.optim.Adam(agent.critic.parameters(), lr=cfg.critic_lr, foreach=False)
    agent.actor_opt = torch.optim.Adam(agent.actor.parameters(), lr=cfg.actor_lr, foreach=False)
    agent._critic_params = list(agent.critic.parameters())
    agent._target_params = list(agent.critic_target.parameters())
    return agent


def patch_loop_target_update(agent: SAC) -> None:
    """Replace the fused Polyak update by the per-parameter loop the reference implementations use."""
    tau = agent.config.tau

    @torch.no_grad()
    def soft_update() -> None:
        for p, t in zip(agent._critic_params, agent._target_params):
            t.mul_(1 - tau).add_(p, alpha=tau)

    agent._soft_update = soft_update


@dataclass
class Args:
    """Options of the SAC throughput benchmark."""

    threads: int = 1
    """torch threads."""
    seconds: float = 10.0
    """Timed seconds per variant (after warm-up), alternating in 4 rounds."""
    device: str = "cpu"
    """cpu or cuda."""
    hidden: int = 256
    """Hidden width."""
    batch_size: int = 256
    """Batch size."""


def time_updates(agent: SAC, batches: list[Batch], seconds: float, step=None) -> float:
    step = step or agent.update_tensors
    for b in batches[:5]:
        step(b)
    sync = torch.cuda.synchronize if agent.device.type == "cuda" else (lambda: None)
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step(batches[n % len(batches)])
        n += 1
    sync()
    return n / (time.perf_counter() - t0)


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    obs_dim, act_dim = 11, 3
    cfg = SACConfig(hidden=args.hidden, batch_size=args.batch_size)
    dev = args.device
    batches = [Batch(torch.randn(args.batch_size, obs_dim, device=dev),
                     torch.rand(args.batch_size, act_dim, device=dev) * 2 - 1,
                     torch.randn(args.batch_size, device=dev), torch.randn(args.batch_size, obs_dim, device=dev),
                     torch.zeros(args.batch_size, device=dev)) for _ in range(16)]
    batched = SAC(obs_dim, act_dim, [-1.0] * act_dim, [1.0] * act_dim, cfg, device=dev)
    looped = looped_agent(obs_dim, act_dim, cfg, dev)
    patch_loop_target_update(looped)
    rates = {"batched": [], "looped": []}
    for _ in range(4):  # alternate, so drifting machine load hits both alike
        rates["batched"].append(time_updates(batched, batches, args.seconds / 4))
        rates["looped"].append(time_updates(looped, batches, args.seconds / 4))
    b, lo = max(rates["batched"]), max(rates["looped"])
    print(f"device {dev}, threads {args.threads}, hidden {args.hidden}, batch {args.batch_size}")
    print(f"batched twin critics: {b:.1f} updates/s (rounds {[round(x, 1) for x in rates['batched']]})")
    print(f"looped twin critics:  {lo:.1f} updates/s (rounds {[round(x, 1) for x in rates['looped']]})")
    print(f"ratio batched/looped: {b / lo:.2f}")


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
