"""Sampler throughput: `HFSampler` vs HF `model.generate(num_return_sequences=n, do_sample=True)`.

Side by side in one process, on the same randomly initialised model (`build_model`, HF sdpa attention) and the same
left-padded prompts, at n = 1 and n = 5 samples per prompt, temperature 1 and top-p 0.95 on both sides. No EOS, so
every completion has exactly `--new-tokens` tokens and both sides do the same decoding work; tokens/s counts
generated tokens (prompts x n x new tokens) over the wall time of the whole call (prefill included). `generate`
expands each prompt n times before its prefill; `HFSampler` prefills each prompt once and copies its KV cache to
the n rows. Each cell is the best of `--repeats` timed calls after one warm-up.

    python baselines/sampler_throughput.py [--threads 2] [--prompts 8] [--prompt-len 128] [--new-tokens 32]
        [--hidden 256] [--layers 4] [--repeats 3] [--out results/sampler_throughput.md]
"""

from __future__ import annotations

import argparse
import time

import torch
from record import recorded  # baselines/record.py (the script's folder is on sys.path)

from pbrl.llm.models import TinyLMConfig, build_model, num_parameters
from pbrl.llm.sampler import HFSampler, SamplingConfig


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=128, help="longest prompt; the others are 50-100%% of it")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--ns", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="also write the output with its conditions, e.g. "
                    "results/sampler_throughput.md")
    args = ap.parse_args()
    with recorded(args.out, "Sampler throughput: HFSampler vs HF generate", args.threads):
        run(args)


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    cfg = TinyLMConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers,
                       num_heads=max(1, args.hidden // 64), num_kv_heads=max(1, args.hidden // 128),
                       intermediate_size=4 * args.hidden)
    model = build_model(cfg, backend="hf_sdpa").eval()
    model.generation_config.pad_token_id = 0
    g = torch.Generator().manual_seed(0)
    lens = torch.randint(args.prompt_len // 2, args.prompt_len + 1, (args.prompts,), generator=g).tolist()
    lens[0] = args.prompt_len
    prompts = [torch.randint(1, args.vocab, (n,), generator=g).tolist() for n in lens]
    L = max(lens)
    ids = torch.zeros(len(prompts), L, dtype=torch.long)
    mask = torch.zeros(len(prompts), L, dtype=torch.long)
    for i, p in enumerate(prompts):  # left padding, as generate expects for decoder-only models
        ids[i, L - len(p):] = torch.tensor(p)
        mask[i, L - len(p):] = 1
    sampler = HFSampler(model)
    print(f"model: {cfg.arch}, {num_parameters(model) / 1e6:.1f}M parameters (hidden {cfg.hidden_size}, "
          f"{cfg.num_layers} layers, vocab {cfg.vocab_size}), float32; {len(prompts)} prompts of {min(lens)}-{L} "
          f"tokens; {args.new_tokens} new tokens; temperature 1, top-p 0.95; threads={torch.get_num_threads()}")
    print("\n| n | generated tokens | HF generate tokens/s | HFSampler tokens/s | HFSampler / generate |")
    print("|---|---|---|---|---|")
    for n in args.ns:
        config = SamplingConfig(n=n, temperature=1.0, top_p=0.95, max_new_tokens=args.new_tokens, seed=0)

        def ours(n: int = n, config: SamplingConfig = config) -> None:
            out = sampler.generate(prompts, config)
            assert out.num_tokens == len(prompts) * n * args.new_tokens

        @torch.inference_mode()
        def hf(n: int = n) -> None:
            out = model.generate(
                input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=0.95, top_k=0,
                num_return_sequences=n, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                eos_token_id=None, pad_token_id=0,
            )
            assert out.shape == (len(prompts) * n, L + args.new_tokens)

        tokens = len(prompts) * n * args.new_tokens
        t_hf, t_ours = best_time(hf, args.repeats), best_time(ours, args.repeats)
        print(f"| {n} | {tokens:,} | {tokens / t_hf:,.0f} | {tokens / t_ours:,.0f} | {t_hf / t_ours:.2f}x |")


if __name__ == "__main__":
    main()
