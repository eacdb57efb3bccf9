"""Reward-learner throughput: batched ensemble (one module, members on a leading axis) vs a naive per-member loop.

Measures, side by side in one process on the same data:
- training pairs/s (Bradley-Terry steps of the step-wise MLP ensemble; pairs counted per member, as each member
  sees its own batch), for several segment lengths;
- relabel transitions/s (scoring every transition with every member).
The loop baseline is the Uni-RLHF layout: M separate `nn.Sequential` members, a Python loop over them for the
forward passes and losses, one Adam over all parameters. Both sides start from identical weights. Training is timed
in float32 and under bf16 autocast (`RewardConfig.bf16`), for both sides, so the table separates what batching buys
from what the precision buys.

    python baselines/reward_throughput.py [--members 3] [--threads 2] [--steps 20] [--rows 1000000] [--default-heap]
        [--out results/reward_throughput.md]
"""

from __future__ import annotations

import argparse
import time

import torch
from record import recorded  # baselines/record.py (the script's folder is on sys.path)
from torch import nn

from pbrl.rewards.losses import bradley_terry_loss
from pbrl.rewards.nets import StepRewardMLP, sequence_score
from pbrl.rewards.relabel import step_chunk_rows
from pbrl.utils import adam, reuse_freed_heap


def loop_members(ens: StepRewardMLP) -> list[nn.Sequential]:
    """Separate members with the ensemble's weights."""
    members = []
    linears = [*ens.hidden, ens.out]
    for m in range(ens.members):
        layers: list[nn.Module] = []
        for j, lin in enumerate(linears):
            ref = nn.Linear(lin.weight.shape[1], lin.weight.shape[2])
            with torch.no_grad():
                ref.weight.copy_(lin.weight[m].T)
                ref.bias.copy_(lin.bias[m, 0])
            layers += [ref, nn.LeakyReLU() if j < len(linears) - 1 else nn.Tanh()]
        members.append(nn.Sequential(*layers))
    return members


def bench(fn, steps: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


def train_step_times(
    m: int, b: int, d: int, length: int, hidden: tuple[int, ...], steps: int, bf16: bool = False
) -> tuple[float, float]:
    """Seconds per Bradley-Terry step: (batched ensemble, loop of members), optionally under bf16 autocast."""
    ens = StepRewardMLP(d, m, hidden)
    refs = loop_members(ens)
    opt_b = adam(ens.parameters(), 3e-4)  # fused Adam on both sides, as pbrl trains
    opt_l = adam([p for r in refs for p in r.parameters()], 3e-4)
    x = torch.randn(m, 2 * b, length, d)  # each member its own pairs
    mask = torch.ones(m, 2 * b, length, dtype=torch.bool)
    y = torch.rand(m, b)

    def step_batched() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            s = sequence_score(ens(x, mask))  # [M, 2B] float32
        loss = bradley_terry_loss(s[:, :b], s[:, b:], y).sum()
        opt_b.zero_grad(set_to_none=True)
        loss.backward()
        opt_b.step()

    def step_loop() -> None:
        loss = 0.0
        for i, r in enumerate(refs):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                v = r(x[i]).squeeze(-1)  # [2B, T]
            s = v.float().sum(-1)  # [2B]
            loss = loss + bradley_terry_loss(s[:b], s[b:], y[i])
        opt_l.zero_grad(set_to_none=True)
        loss.backward()
        opt_l.step()

    return bench(step_batched, steps), bench(step_loop, steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=14, help="step feature size (hopper: 11 obs + 3 act)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lengths", type=int, nargs="+", default=[25, 50, 200])
    ap.add_argument("--hidden", type=int, nargs="+", default=[256, 256, 256])
    ap.add_argument("--default-heap", action="store_true",
                    help="keep glibc's default heap (the pbrl command line calls reuse_freed_heap)")
    ap.add_argument("--out", default=None, help="also write the output with its conditions, e.g. "
                    "results/reward_throughput.md")
    args = ap.parse_args()
    with recorded(args.out, "Reward learner throughput: batched ensemble vs per-member loop", args.threads):
        run(args)


def run(args: argparse.Namespace) -> None:
    heap = "glibc default" if args.default_heap else f"freed blocks reused: {reuse_freed_heap()}"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    m, b, d = args.members, args.batch, args.dim
    print(f"members={m} batch={b} dim={d} hidden={args.hidden} threads={torch.get_num_threads()} heap: {heap}")

    print("\nTraining pairs/s (fp32 = float32; bf16 = bf16 autocast, float32 scores and loss)")
    print("\n| segment length | loop fp32 | batched fp32 | loop bf16 | batched bf16 | batched/loop fp32 "
          "| batched/loop bf16 | batched bf16 / loop fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    for length in args.lengths:
        n = max(2, args.steps * 25 // length)
        tb, tl = train_step_times(m, b, d, length, tuple(args.hidden), n)
        tb16, tl16 = train_step_times(m, b, d, length, tuple(args.hidden), n, bf16=True)
        print(f"| {length} | {m * b / tl:,.0f} | {m * b / tb:,.0f} | {m * b / tl16:,.0f} | {m * b / tb16:,.0f} "
              f"| {tl / tb:.2f}x | {tl16 / tb16:.2f}x | {tl / tb16:.2f}x |")

    ens = StepRewardMLP(d, m, tuple(args.hidden)).eval()
    refs = [r.eval() for r in loop_members(ens)]
    feats = torch.randn(args.rows, d)
    chunk = step_chunk_rows("cpu")  # pbrl's relabel chunk, for both sides

    @torch.inference_mode()
    def relabel_batched() -> None:
        for i in range(0, args.rows, chunk):
            x = feats[i : i + chunk]
            ens(x[None, None].expand(m, 1, -1, -1), torch.ones(1, len(x), dtype=torch.bool))

    @torch.inference_mode()
    def relabel_loop() -> None:
        for i in range(0, args.rows, chunk):
            x = feats[i : i + chunk]
            torch.stack([r(x).squeeze(-1) for r in refs])

    tb, tl = bench(relabel_batched, 1), bench(relabel_loop, 1)
    print("\n| relabel rows | batched transitions/s | loop transitions/s | batched / loop |")
    print("|---|---|---|---|")
    print(f"| {args.rows:,} | {args.rows / tb:,.0f} | {args.rows / tl:,.0f} | {tl / tb:.2f}x |")


if __name__ == "__main__":
    main()
