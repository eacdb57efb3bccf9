"""GRPO step throughput: pbrl's SRPO trainer (`pbrl.rec.srpo.train_srpo`, group rollouts + update) vs TRL's
`GRPOTrainer`, side by side in one process on the same model, prompts and tokens per step.

The workload is GREAM's RL step on MovieLens-100k: the prompts are the seqrec prompts of an alignment-data folder
(`pbrl rec gream` / `pbrl rec align-data` writes align/valid.jsonl: each user's <= 20 items as semantic IDs, ~150
tokens), the model a randomly initialised Llama of the pipeline's shape over that folder's tokenizer, saved once and
loaded by both sides. Per step: P prompts x n rollouts of at most T = L + 2 new tokens (an ID, a dedup token, the end
of turn) at temperature 1, unconstrained (TRL has no trie), ending at <|im_end|>; the binary exact-match reward
(the same function on both sides); the GRPO z-score advantage; no group filter (pbrl's `filter_groups = False`, so
both draw one rollout per step); one pass of optimizer steps over minibatches of m prompts x n responses; the KL
loss to the frozen initial model (beta 0.001, so both keep a reference model); fp32 on the CPU. TRL:
`per_device_train_batch_size = m n`, `steps_per_generation = P / m`, `num_iterations = 1`.

Stages of a step: rollout (pbrl: HFSampler + the reward; TRL: `_generate` + `_calculate_rewards`) and the rest
(pbrl: old and reference log-probs and the minibatch updates; TRL: the rest of `_generate_and_score_completions`
and of the step, measured from one rollout's start to the next one's). Rates are generated tokens (EOS included)
/ stage seconds of one timed step (after `--warmup` steps per run); the sides alternate `--repeats` times and each
stage keeps its best step (a shared machine's other work only slows a step down); "all stages" adds the best
per-token times of the stages. The ratio is pbrl / TRL per generated token; target >= 1.5x.

    PYTHONPATH=. python baselines/grpo_throughput.py --align runs/gream/full-s0/align \\
        [--prompts 16] [--n 10] [--minibatch 4] [--steps 3] [--warmup 1] [--repeats 2] \\
        [--trl-gradient-checkpointing off] [--out results/grpo_throughput.md]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import recorded  # noqa: E402  (baselines/record.py)

from pbrl.errors import fail  # noqa: E402

STAGES = ("rollout", "rest")
_ID_TOKEN = re.compile(r"<\|[a-z]_\d+\|>")

Steps = list[dict[str, float]]
"""Timed steps: per step, each stage's seconds and the step's generated tokens."""


def best_rates(steps: Steps) -> dict[str, float]:
    """Per stage, the highest rate over the timed steps (generated tokens / stage seconds); for all stages the rate
    of the summed best per-token times, 1 / sum_s (1 / rate_s)."""
    out = {s: max(st["tokens"] / st[s] for st in steps) for s in STAGES}
    out["all"] = 1 / sum(1 / out[s] for s in STAGES)
    return out


def setup(args: argparse.Namespace, folder: Path):
    """The base model folder (random init, the align folder's tokenizer with eos = <|im_end|>), the prompts and
    their target items, the semantic IDs."""
    from pbrl.llm.models import TinyLMConfig, build_model, num_parameters
    from pbrl.llm.tokenizer import load_tokenizer
    from pbrl.rec.semantic_ids import SemanticIds
    from pbrl.rec.srpo import read_targets
    from pbrl.utils import read_json_lines

    align = Path(args.align)
    ids_path = align.parent / "ids" / "semantic_ids.json"
    for p in (align / "valid.jsonl", align / "tokenizer", ids_path):
        if not p.exists():
            fail(f"{p}: not found; run `pbrl rec gream` (or baselines/gream_llm.py) first")
    ids = SemanticIds.load(ids_path)
    tok = load_tokenizer(align / "tokenizer")
    tok.eos_token = "<|im_end|>"  # TRL stops a completion at the tokenizer's eos: the chat end-of-turn token
    cfg = TinyLMConfig(vocab_size=len(tok), hidden_size=args.hidden, num_layers=args.layers, num_heads=4,
                       num_kv_heads=2, intermediate_size=3 * args.hidden, max_position=512)
    model = build_model(cfg, seed=0)
    model.save_pretrained(folder / "base")
    tok.save_pretrained(folder / "base")
    prompts, targets = read_targets(align / "valid.jsonl", ids, tok)
    rows = [r for _, r in read_json_lines(align / "valid.jsonl")]
    messages = [[m for m in r["messages"] if m["role"] != "assistant"] for r in rows]
    return prompts[: args.pool], targets[: args.pool], messages[: args.pool], ids, tok, num_parameters(model)


def exact(ids, text: str, target: int) -> float:
    """The binary reward of a decoded completion: 1 when its ID tokens name exactly the target item."""
    toks = _ID_TOKEN.findall(text)
    return float(bool(toks) and ids.item_of(toks) == target)


def run_pbrl(args, folder: Path, data, repeat: int) -> Steps:
    from pbrl.rec.srpo import SrpoConfig, train_srpo

    prompts, targets, _, ids, tok, _ = data
    cfg = SrpoConfig(out=str(folder / f"pbrl{repeat}"), steps=args.warmup + args.steps,
                     prompts_per_step=args.prompts, minibatch_prompts=args.minibatch, n=args.n, decoding="none",
                     advantage="grpo", reward="binary", filter_groups=False, lr=1e-5, warmup_steps=0,
                     kl_coef=0.001, sample_batch=args.prompts, checkpoint_every=10**6, resume=False, progress=False,
                     device="cpu", seed=repeat)
    rows = train_srpo(cfg, folder / "base", prompts, targets, ids, tok)["history"][args.warmup:]
    # the prompts a step drew (the trainer's own draw, pbrl.rec.srpo._gen_rows)
    from pbrl.rec.srpo import _gen_rows

    drawn = [_gen_rows(len(prompts), cfg, args.warmup + i, 0) for i in range(len(rows))]
    return [{"rollout": r["perf/rollout_s"], "rest": r["perf/update_s"], "tokens": r["perf/generated_tokens"],
             "prompt_tokens": sum(len(prompts[p]) for p in d) / len(d)} for r, d in zip(rows, drawn)]


def run_trl(args, folder: Path, data, repeat: int) -> Steps:
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    from pbrl.llm.models import load_model
    from pbrl.llm.tokenizer import load_tokenizer

    _, targets, messages, ids, _, _ = data

    def reward(prompts, completions, item, **_):
        return [exact(ids, c[0]["content"] if isinstance(c, list) else c, t) for c, t in zip(completions, item)]

    times: dict[str, list[float]] = {"generate": [], "scoring": [], "generate_and_score": [], "starts": []}
    tokens: list[int] = []
    prompt_tokens: list[float] = []

    class Timed(GRPOTrainer):
        def _generate(self, prompts):
            t0 = time.perf_counter()
            out = super()._generate(prompts)
            times["generate"].append(time.perf_counter() - t0)
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
            prompt_tokens.append(float(out["prompt_mask"].sum(-1).float().mean()))
            return out

    per_step = args.prompts // args.minibatch  # optimizer steps per rollout
    total = (args.warmup + args.steps + 1) * per_step  # one more rollout than timed: a step ends at the next start
    data_ = datasets.Dataset.from_list([{"prompt": m, "item": int(t)} for m, t in zip(messages, targets)])
    cfg = GRPOConfig(output_dir=str(folder / f"trl{repeat}"), per_device_train_batch_size=args.minibatch * args.n,
                     num_generations=args.n, steps_per_generation=per_step, gradient_accumulation_steps=1,
                     num_iterations=1, max_completion_length=args.ids_levels + 2, temperature=1.0, top_p=1.0,
                     beta=0.001, learning_rate=1e-5, max_steps=total, use_cpu=True, bf16=False, report_to=[],
                     logging_steps=10**6, save_strategy="no", seed=repeat, disable_tqdm=True,
                     dataloader_num_workers=0, gradient_checkpointing=args.trl_gradient_checkpointing == "on")
    trainer = Timed(model=load_model(folder / "base"), reward_funcs=reward, args=cfg, train_dataset=data_,
                    processing_class=load_tokenizer(folder / "base"))
    with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints its final metrics dict
        trainer.train()
    lo, hi = args.warmup, args.warmup + args.steps
    if len(times["starts"]) < hi + 1:
        raise SystemExit(f"TRL ran {len(times['starts'])} rollouts, expected {hi + 1}")
    steps = []
    for i in range(lo, hi):
        rollout = times["generate"][i] + times["scoring"][i]
        steps.append({"rollout": rollout, "rest": times["starts"][i + 1] - times["starts"][i] - rollout,
                      "tokens": tokens[i], "prompt_tokens": prompt_tokens[i]})
    return steps


def run(args: argparse.Namespace) -> None:
    import transformers
    import trl

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = setup(args, folder)
        prompts, _, _, ids, _, params = data
        args.ids_levels = ids.levels
        lens = [len(p) for p in prompts]
        print(f"model: llama, {params / 1e6:.2f}M parameters (hidden {args.hidden}, {args.layers} layers), float32, "
              f"cpu; {args.prompts} GREAM seqrec prompts per step (drawn from {len(prompts)}, {min(lens)}-"
              f"{max(lens)} tokens) x {args.n} rollouts of at most {ids.levels + 2} new tokens, temperature 1, "
              f"unconstrained; binary exact-match reward, GRPO advantage; minibatch {args.minibatch} prompts x "
              f"{args.n}, one pass per rollout; KL loss beta 0.001; {args.steps} timed steps after {args.warmup} "
              f"warm-up, best step of {args.repeats} runs per side; threads={args.threads}; trl {trl.__version__}, "
              f"transformers {transformers.__version__}, torch {torch.__version__}")
        print()
        runs: dict[str, Steps] = {"pbrl": [], "trl": []}
        for r in range(args.repeats):
            runs["pbrl"] += run_pbrl(args, folder, data, r)
            runs["trl"] += run_trl(args, folder, data, r)
    ours, theirs = best_rates(runs["pbrl"]), best_rates(runs["trl"])
    print("| stage | pbrl tokens/s | TRL GRPOTrainer tokens/s | pbrl / TRL per generated token |")
    print("|---|---|---|---|")
    names = {"rollout": "rollout (sampling + reward)", "rest": "log-probs + updates", "all": "all stages"}
    for s in (*STAGES, "all"):
        print(f"| {names[s]} | {ours[s]:,.0f} | {theirs[s]:,.0f} | {ours[s] / theirs[s]:.2f}x |")
    ratio = ours["all"] / theirs["all"]
    print()
    span = lambda steps: f"{min(x['tokens'] for x in steps):.0f}-{max(x['tokens'] for x in steps):.0f}"  # noqa: E731
    print(f"generated tokens per step: pbrl {span(runs['pbrl'])}, TRL {span(runs['trl'])} (at most "
          f"{args.prompts * args.n * (ids.levels + 2)}); {len(runs['pbrl'])} timed steps per side; mean prompt "
          f"tokens per step: pbrl {np.mean([x['prompt_tokens'] for x in runs['pbrl']]):.1f}, TRL "
          f"{np.mean([x['prompt_tokens'] for x in runs['trl']]):.1f} (the same messages, the same chat template)")
    print(f"target (>= 1.5x per generated token over all stages): {'met' if ratio >= 1.5 else 'NOT met'} "
          f"({ratio:.2f}x); TRL gradient checkpointing {args.trl_gradient_checkpointing} (GRPOConfig's default: on)")
    p_len = float(np.mean([x["prompt_tokens"] for x in runs["pbrl"]]))
    T = ids.levels + 2
    print(f"why: pbrl shares each prompt over its {args.n} rollouts (sampling prefills it once; the log-prob and "
          f"update batches hold it once per group, pbrl.llm.ppo.build_shared_batch), about {p_len:.0f} + {args.n} x "
          f"{T} = {p_len + args.n * T:.0f} token positions per group; TRL repeats it in every row, {args.n} x "
          f"({p_len:.0f} + {T}) = {args.n * (p_len + T):.0f} ({args.n * (p_len + T) / (p_len + args.n * T):.1f}x "
          "more), with short answers after long prompts as here")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--align", default="runs/gream/full-s0/align", help="a pbrl rec gream run's align/ folder")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=16, help="prompts per step (P)")
    ap.add_argument("--pool", type=int, default=256, help="prompts the steps draw from")
    ap.add_argument("--n", type=int, default=10, help="rollouts per prompt")
    ap.add_argument("--minibatch", type=int, default=4, help="prompts per optimizer step (m)")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--repeats", type=int, default=2, help="runs per side, alternating; each stage's best step kept")
    ap.add_argument("--trl-gradient-checkpointing", choices=("on", "off"), default="off",
                    help="TRL's GRPOConfig turns it on by default (a second forward in backward); off = TRL at its "
                    "fastest on a model this small")
    ap.add_argument("--out", default=None, help="also write the output with its conditions (results/...md)")
    args = ap.parse_args()
    if args.prompts % args.minibatch:
        raise SystemExit("--minibatch must divide --prompts")
    with recorded(args.out, "GRPO step throughput: pbrl SRPO trainer vs TRL GRPOTrainer", args.threads):
        run(args)


if __name__ == "__main__":
    main()
