"""PPO throughput by stage: `pbrl llm ppo` (`pbrl.llm.ppo.train_ppo`) vs TRL's `GRPOTrainer` (TRL no longer ships a
PPO trainer), side by side in one process on the same model, prompts and tokens per step.

Both sides start from the same saved random-init tiny model (`build_model`, a word tokenizer with the chat template)
and train on the same P prompts of the verifiable chat task (`pbrl_envs.chat`, scored by its judge at the last
token) with n samples per prompt of at most T new tokens at temperature 1 (no nucleus), ending at <|im_end|>; one
rollout of P x n responses per step, then one pass of optimizer steps on minibatches of m responses, the KL to the
frozen initial model in the objective (beta 0.01), fp32 on the CPU. TRL: `per_device_train_batch_size = m`,
`steps_per_generation = P n / m`, `num_iterations = 1`, `beta = 0.01` (so it keeps a reference model and computes
the old and reference log-probs after each rollout). A step's stages:

    rollout   sampling (pbrl: HFSampler; TRL: `_generate`, HF `generate`)
    scoring   the reward function (the same judge on both sides)
    forward   pbrl: old and reference log-probs and the critic's values; TRL: the rest of
              `_generate_and_score_completions` (old and reference log-probs, advantages, padding)
    update    pbrl: actor and critic minibatch updates; TRL: the rest of the step (the loss, backward and
              optimizer steps of the minibatches, and the Trainer's own per-step work)

pbrl does more work per step than GRPO: a critic (a second transformer) is evaluated and trained. Every rate is
generated tokens (EOS included) / stage seconds of one timed step (steps after `--warmup` per run); the ratio is
pbrl / TRL per generated token. TRL's step time is measured from one rollout's start to the next one's. The two
sides run one after the other, `--repeats` times alternating, and each stage keeps its best step (a shared
machine's other work only slows a step down); "all stages" adds up the best per-token times of the stages. The
issue's ratio counts the critic (PPO's cost); a second line gives it without the critic's seconds (pbrl's
`perf/critic_forward_s` and `perf/critic_update_s` taken out of its forward and update stages), GRPO's work only.

`--profile` adds one more run per side under `torch.profiler` (untimed: the profiler slows every op) and prints,
per stage and millisecond of a step, the CPU time in matrix products (aten::mm / addmm / bmm), in attention
(scaled_dot_product kernels) and in everything else (elementwise ops, copies, concatenations, the optimizer, the
Python between ops): pbrl's stages from its `ppo/<stage>` profiler labels, TRL's from labels put around
`_generate`, `_calculate_rewards`, `_generate_and_score_completions` (forward = the rest of it), and the Trainer's
`training_step` with the optimizer step (update).

    python baselines/ppo_throughput.py [--threads 1] [--prompts 8] [--n 4] [--new-tokens 32] [--minibatch 8]
        [--hidden 128 256] [--layers 4] [--steps 3] [--warmup 1] [--repeats 3] [--profile]
        [--out results/ppo_throughput.md]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import recorded  # noqa: E402  (baselines/record.py)

from pbrl.errors import fail  # noqa: E402

STAGES = ("rollout", "scoring", "forward", "update")
CRITIC = {"forward": "critic_forward", "update": "critic_update"}
"""pbrl's stages that hold critic work, and the step key of the critic's seconds in each."""


def setup(args: argparse.Namespace, folder: Path):
    from pbrl.llm.models import TinyLMConfig, build_model, num_parameters
    from pbrl.llm.tokenizer import word_tokenizer
    from pbrl_envs.chat import make_tasks

    tasks = make_tasks(args.prompts, seed=0)
    tok = word_tokenizer([t.prompt + " " + t.answer for t in make_tasks(500, seed=0)], chat=True)
    tok.eos_token = "<|im_end|>"  # TRL stops a completion at the tokenizer's eos: the chat end-of-turn token
    cfg = TinyLMConfig(vocab_size=len(tok), hidden_size=args.hidden, num_layers=args.layers,
                       num_heads=max(1, args.hidden // 32), num_kv_heads=max(1, args.hidden // 64),
                       intermediate_size=2 * args.hidden, max_position=512)
    model = build_model(cfg, seed=0)
    model.save_pretrained(folder / "base")
    tok.save_pretrained(folder / "base")
    rows = [{"messages": t.messages, "family": t.family, "seed": t.seed} for t in tasks]
    (folder / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows, tok, num_parameters(model), cfg


Steps = list[dict[str, float]]
"""Timed steps: per step, each stage's seconds and the step's generated tokens."""


def best_rates(steps: Steps, without_critic: bool = False) -> dict[str, float]:
    """Per stage, the highest rate over the timed steps (generated tokens / stage seconds); for all stages, the
    rate of the summed best per-token times: 1 / sum_s (1 / rate_s). ``without_critic``: each stage's seconds
    less the critic's part of it (``CRITIC``; steps without those keys have no critic)."""

    def seconds(st: dict[str, float], s: str) -> float:
        return st[s] - (st.get(CRITIC[s], 0.0) if without_critic and s in CRITIC else 0.0)

    out = {s: max(st["tokens"] / seconds(st, s) for st in steps) for s in STAGES}
    out["all"] = 1 / sum(1 / out[s] for s in STAGES)
    return out


def op_kind(name: str) -> str:
    """The profiler's op name -> "matmul", "attention" or "other"."""
    if name.startswith(("aten::mm", "aten::addmm", "aten::bmm")):
        return "matmul"
    if "scaled_dot_product" in name:
        return "attention"
    return "other"


def stage_shares(events, labels: dict[str, str], steps: int) -> dict[str, dict[str, float]]:
    """Milliseconds per step by stage and op kind from a profiler's events: the self CPU time of every event
    under a label (``labels``: label -> stage; a label inside another's stage counts for its own stage only).
    Kinds as ``op_kind``; the labels' own self time (Python between ops) counts as other."""
    out = {stage: dict.fromkeys(("matmul", "attention", "other"), 0.0) for stage in dict.fromkeys(labels.values())}

    def walk(e, stage: str) -> None:
        if e.name in labels and labels[e.name] != stage:
            return  # counted under its own label
        out[stage][op_kind(e.name)] += e.self_cpu_time_total / 1e3 / steps
        for c in e.cpu_children:
            walk(c, stage)

    for e in events:
        if e.name in labels:
            walk(e, labels[e.name])
    return out


def run_pbrl(args, folder: Path, repeat: int) -> Steps:
    from pbrl.llm.ppo import PpoConfig, train_ppo
    from pbrl_envs.chat import judge

    cfg = PpoConfig(prompts=str(folder / "prompts.jsonl"), model_path=str(folder / "base"), out=str(folder / f"pbrl{repeat}"),
                    steps=args.warmup + args.steps, prompts_per_step=args.prompts, n=args.n,
                    max_new_tokens=args.new_tokens, sample_batch=args.prompts, ppo_epochs=1,
                    minibatch_size=args.minibatch, actor_lr=1e-5, critic_lr=1e-5, kl_beta=0.01,
                    checkpoint_every=10**6, progress=False, device="cpu", resume=False)
    rows = train_ppo(cfg, judge=judge)["history"][args.warmup:]
    return [{**{s: r[f"perf/{s}_s"] for s in STAGES}, **{k: r[f"perf/{k}_s"] for k in CRITIC.values()},
             "tokens": r["perf/generated_tokens"]} for r in rows]


def run_trl(args, folder: Path, rows, repeat: int) -> Steps:
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    from pbrl.llm.models import load_model
    from pbrl.llm.tokenizer import load_tokenizer
    from pbrl_envs.chat import judge

    def chat_reward(prompts, completions, family, seed, **_):
        return [judge({"family": f, "seed": s}, c[0]["content"] if isinstance(c, list) else c)
                for c, f, s in zip(completions, family, seed)]

    times: dict[str, list[float]] = {"rollout": [], "scoring": [], "generate_and_score": [], "starts": []}
    tokens: list[int] = []

    label = torch.profiler.record_function  # no cost without an active profiler

    class Timed(GRPOTrainer):
        def _generate(self, prompts):
            t0 = time.perf_counter()
            with label("trl/rollout"):
                out = super()._generate(prompts)
            times["rollout"].append(time.perf_counter() - t0)
            return out

        def _calculate_rewards(self, *a, **k):
            t0 = time.perf_counter()
            with label("trl/scoring"):
                out = super()._calculate_rewards(*a, **k)
            times["scoring"].append(time.perf_counter() - t0)
            return out

        def _generate_and_score_completions(self, inputs):
            t0 = time.perf_counter()
            times["starts"].append(t0)
            with label("trl/forward"):
                out = super()._generate_and_score_completions(inputs)
            times["generate_and_score"].append(time.perf_counter() - t0)
            tokens.append(int(out["completion_mask"].sum()))
            return out

        def training_step(self, *a, **k):
            with label("trl/update"):
                return super().training_step(*a, **k)

        def create_optimizer(self, *a, **k):
            opt = super().create_optimizer(*a, **k)
            step = opt.step

            def labelled_step(*sa, **sk):
                with label("trl/update"):
                    return step(*sa, **sk)

            opt.step = labelled_step
            return opt

    per_step = args.prompts * args.n // args.minibatch  # optimizer steps per rollout
    # one more rollout than timed: a step's time runs from its rollout's start to the next one's
    total = (args.warmup + args.steps + 1) * per_step
    data = datasets.Dataset.from_list([{"prompt": r["messages"], "family": r["family"], "seed": r["seed"]}
                                       for r in rows])
    cfg = GRPOConfig(output_dir=str(folder / f"trl{repeat}"), per_device_train_batch_size=args.minibatch,
                     num_generations=args.n, steps_per_generation=per_step, gradient_accumulation_steps=1,
                     num_iterations=1, max_completion_length=args.new_tokens, temperature=1.0, top_p=1.0,
                     beta=0.01, learning_rate=1e-5, max_steps=total, use_cpu=True, bf16=False, report_to=[],
                     logging_steps=10**6, save_strategy="no", seed=0, disable_tqdm=True,
                     dataloader_num_workers=0)
    tok = load_tokenizer(folder / "base")
    model = load_model(folder / "base")
    trainer = Timed(model=model, reward_funcs=chat_reward, args=cfg, train_dataset=data, processing_class=tok)
    with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints its final metrics dict
        trainer.train()
    lo, hi = args.warmup, args.warmup + args.steps
    if len(times["starts"]) < hi + 1:
        raise SystemExit(f"TRL ran {len(times['starts'])} rollouts, expected {hi + 1}")
    steps = []
    for i in range(lo, hi):
        gen_score = times["generate_and_score"][i]
        st = {"rollout": times["rollout"][i], "scoring": times["scoring"][i], "tokens": tokens[i]}
        st["forward"] = gen_score - st["rollout"] - st["scoring"]
        st["update"] = times["starts"][i + 1] - times["starts"][i] - gen_score
        steps.append(st)
    return steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step (P)")
    ap.add_argument("--n", type=int, default=4, help="samples per prompt")
    ap.add_argument("--new-tokens", type=int, default=32, help="most new tokens per response (T)")
    ap.add_argument("--minibatch", type=int, default=8, help="responses per optimizer step (m)")
    ap.add_argument("--hidden", type=int, nargs="+", default=[128, 256], help="model widths, one table each")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--repeats", type=int, default=3, help="runs per side, alternating; each stage's best step kept")
    ap.add_argument("--profile", action="store_true", help="also one profiled run per side: per stage the "
                    "milliseconds in matrix products, attention and everything else")
    ap.add_argument("--out", default=None, help="also write the output with its conditions, e.g. "
                    "results/ppo_throughput.md")
    args = ap.parse_args()
    if (args.prompts * args.n) % args.minibatch:
        fail("--minibatch must divide prompts x n")
    with recorded(args.out, "PPO throughput by stage: pbrl llm ppo vs TRL GRPOTrainer", args.threads):
        run(args)


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    for hidden in args.hidden:
        run_one(argparse.Namespace(**{**vars(args), "hidden": hidden}))
        print()


def run_one(args: argparse.Namespace) -> None:
    import transformers
    import trl

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows, tokenizer, params, cfg = setup(args, folder)
        from pbrl.llm.odpo import prompt_ids

        prompt_tokens = sum(len(prompt_ids(tokenizer, r)) for r in rows)  # of the step's P prompts
        print(f"model: llama, {params / 1e6:.2f}M parameters (hidden {cfg.hidden_size}, {cfg.num_layers} layers, "
              f"vocab {cfg.vocab_size}), float32, cpu; {args.prompts} chat-task prompts x {args.n} samples, at most "
              f"{args.new_tokens} new tokens, temperature 1; minibatch {args.minibatch}, one pass per rollout; "
              f"{args.steps} timed steps after {args.warmup} warm-up, best step of {args.repeats} runs per side; "
              f"threads={args.threads}; "
              f"trl {trl.__version__}, transformers {transformers.__version__}, torch {torch.__version__}")
        print()
        # the sides alternate, repeats times; each stage keeps its best step (load on a shared machine only slows)
        runs: dict[str, Steps] = {"pbrl": [], "trl": []}
        for r in range(args.repeats):
            runs["pbrl"] += run_pbrl(args, folder, r)
            runs["trl"] += run_trl(args, folder, rows, r)
        shares = profile_stages(args, folder, rows) if args.profile else None
    ours, theirs = best_rates(runs["pbrl"]), best_rates(runs["trl"])
    print("| stage | pbrl tokens/s | TRL GRPO tokens/s | pbrl / TRL per generated token |")
    print("|---|---|---|---|")
    for s in (*STAGES, "all"):
        name = "all stages" if s == "all" else s
        print(f"| {name} | {ours[s]:,.0f} | {theirs[s]:,.0f} | {ours[s] / theirs[s]:.2f}x |")
    ratio = ours["all"] / theirs["all"]
    print()
    tok = lambda steps: f"{min(x['tokens'] for x in steps):.0f}-{max(x['tokens'] for x in steps):.0f}"  # noqa: E731
    print(f"generated tokens per step: pbrl {tok(runs['pbrl'])}, TRL {tok(runs['trl'])} "
          f"(at most {args.prompts * args.n * args.new_tokens}); {len(runs['pbrl'])} timed steps per side")
    gen = sum(x["tokens"] for x in runs["pbrl"]) / len(runs["pbrl"])
    shared, rows_ = prompt_tokens + gen, args.n * prompt_tokens + gen
    print(f"token positions of one model's pass over a step's responses (prompts {prompt_tokens} tokens in all, "
          f"{gen:.0f} generated on average): pbrl {shared:.0f} (each prompt once for its {args.n} samples), TRL "
          f"{rows_:.0f} (each prompt {args.n} times), {rows_ / shared:.2f}x as many for TRL")
    print(f"target (>= 1.5x per generated token over all stages): {'met' if ratio >= 1.5 else 'NOT met'} "
          f"({ratio:.2f}x); pbrl's update trains two transformers (policy and critic), TRL's GRPO one (no "
          "critic); in forward both run two (pbrl: reference and critic, the old log-probs from the sampler; "
          "TRL: the policy's old and the reference log-probs)")
    bare = best_rates(runs["pbrl"], without_critic=True)
    crit = 1 - ours["all"] / bare["all"]
    print(f"without the critic (pbrl's forward and update less the critic's seconds, GRPO's work only; not the "
          f"issue's measure): pbrl {bare['all']:,.0f} tokens/s, {bare['all'] / theirs['all']:.2f}x TRL; the critic "
          f"is {100 * crit:.0f}% of pbrl's step (forward {bare['forward'] / theirs['forward']:.2f}x, update "
          f"{bare['update'] / theirs['update']:.2f}x TRL without it)")
    if shares is not None:
        print()
        print("profiled (one more run per side under torch.profiler, which slows every op; milliseconds of CPU "
              "time per step):")
        print()
        print("| side | stage | matmul | attention | other | other share |")
        print("|---|---|---|---|---|---|")
        for side, stages in shares.items():
            for stage, ms in stages.items():
                total = sum(ms.values())
                print(f"| {side} | {stage} | {ms['matmul']:,.0f} | {ms['attention']:,.0f} | {ms['other']:,.0f} | "
                      f"{100 * ms['other'] / max(total, 1e-9):.0f}% |")


def profile_stages(args: argparse.Namespace, folder: Path, rows) -> dict[str, dict[str, dict[str, float]]]:
    """One run per side of ``args.warmup + 1`` steps under ``torch.profiler``: per side ``stage_shares`` of its
    stages (all the run's steps, per step)."""
    from torch.profiler import ProfilerActivity, profile

    one = argparse.Namespace(**{**vars(args), "steps": 1})
    n = one.warmup + 1
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_pbrl(one, folder, "profiled")
    pbrl_labels = {"ppo/rollout": "rollout", "ppo/scoring": "scoring", "ppo/forward/reference": "forward (reference)",
                   "ppo/forward/critic": "forward (critic)", "ppo/update/actor": "update (actor)",
                   "ppo/update/critic": "update (critic)"}
    out = {"pbrl": stage_shares(prof.events(), pbrl_labels, n)}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_trl(one, folder, rows, "profiled")
    trl_labels = {f"trl/{s}": s for s in STAGES}
    # TRL ran one more rollout than its timed steps (a step runs from one rollout's start to the next one's)
    out["TRL"] = stage_shares(prof.events(), trl_labels, n + 1)
    return out


if __name__ == "__main__":
    main()
