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
machine's other work only slows a step down); "all stages" adds up the best per-token times of the stages.

    python baselines/ppo_throughput.py [--threads 1] [--prompts 8] [--n 4] [--new-tokens 32] [--minibatch 8]
        [--hidden 128 256] [--layers 4] [--steps 3] [--warmup 1] [--repeats 3] [--out results/ppo_throughput.md]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import torch
from record import recorded  # baselines/record.py (the script's folder is on sys.path)

STAGES = ("rollout", "scoring", "forward", "update")


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


def best_rates(steps: Steps) -> dict[str, float]:
    """Per stage, the highest rate over the timed steps (generated tokens / stage seconds); for all stages, the
    rate of the summed best per-token times: 1 / sum_s (1 / rate_s)."""
    out = {s: max(st["tokens"] / st[s] for st in steps) for s in STAGES}
    out["all"] = 1 / sum(1 / out[s] for s in STAGES)
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
    return [{**{s: r[f"perf/{s}_s"] for s in STAGES}, "tokens": r["perf/generated_tokens"]} for r in rows]


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

    class Timed(GRPOTrainer):
        def _generate(self, prompts):
            t0 = time.perf_counter()
            out = super()._generate(prompts)
            times["rollout"].append(time.perf_counter() - t0)
            return out

        def _calculate_rewards(self, *a, **k):
            t0 = time.perf_counter()
            out = super()._calculate_rewards(*a, **k)
            times["scoring"].append(time.perf_counter() - t0)
            return out

        def _generate_and_score_completions(self, inputs):
            t0 = time.perf_counter()
            times["starts"].append(t0)
            out = super()._generate_and_score_completions(inputs)
            times["generate_and_score"].append(time.perf_counter() - t0)
            tokens.append(int(out["completion_mask"].sum()))
            return out

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
    ap.add_argument("--out", default=None, help="also write the output with its conditions, e.g. "
                    "results/ppo_throughput.md")
    args = ap.parse_args()
    if (args.prompts * args.n) % args.minibatch:
        raise SystemExit("--minibatch must divide prompts x n")
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
        rows, _tok, params, cfg = setup(args, folder)
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
    print(f"target (>= 1.5x per generated token over all stages): {'met' if ratio >= 1.5 else 'NOT met'} "
          f"({ratio:.2f}x); pbrl's update trains two transformers (policy and critic), TRL's GRPO one (no "
          "critic); in forward both run two (pbrl: reference and critic, the old log-probs from the sampler; "
          "TRL: the policy's old and the reference log-probs)")


if __name__ == "__main__":
    main()
