"""SFT training throughput: pbrl `train_sft` packed and padded vs TRL's `SFTTrainer` with its own packing.

Side by side in one process, on the same model weights (a randomly initialised `TinyLMConfig` Llama saved once and
loaded by every run), the same tokenizer (the chat task's byte-level BPE, trained on its pre-training corpus) and the
same conversations (the chat task's SFT chats, as in sft.jsonl of `pbrl llm chat-data`):

  pbrl packed   `train_sft(layout="packed")`: each step's conversations packed by best-fit decreasing into rows of
                `pack_length` tokens, document masking through the varlen backend (attention per document)
  pbrl padded   `train_sft(layout="padded")`: one right-padded row per conversation (HF's sdpa, causal)
  TRL packed    `SFTTrainer` with `SFTConfig(packing=True, packing_strategy="bfd")`: the whole set packed by best-fit
                decreasing into rows of `max_length` = `pack_length`; TRL then forces padding-free mode (rows
                flattened into one row per step, position ids restarting per document, no attention mask). Without
                FlashAttention (CPU: HF's sdpa) transformers rebuilds the document mask from the position ids
                (`find_packed_sequence_indices`): a dense block-diagonal causal mask over the flattened row, so no
                token attends across documents (checked below on one packed batch against per-document forwards).

All three: assistant-only loss (pbrl: `assistant_mask`; TRL: `assistant_only_loss=True` through the same ChatML
template with `{% generation %}` markers around each assistant turn's content and its <|im_end|>; the script checks
that TRL's token ids and loss masks equal pbrl's for every conversation), the token-mean loss of each step, AdamW
(torch's fused kernel), linear warmup then cosine decay to 0.1 x lr, gradient clipping at 1, float32, one epoch over
the same `steps * batch_size` conversations. TRL's rows per step are chosen so that it takes the same number of steps
over the same tokens (same tokens per step on average). Denormals are flushed for all three (as `train_sft` does).

Timing: every run trains from the same initial weights, so a mode's step k is the same computation in every round.
One untimed warm-up round, then `rounds` rounds. Within a round the three runs advance together, step k of each mode
in turn (rotating the order from round to round), so that the load of a shared machine hits all alike: pbrl through
`train_sft(stop_after=1)` resumed from its checkpoint (the same trajectory as one uninterrupted run), TRL in a thread
that a callback holds at the end of each step. A step's time covers building its batch, forward, backward, clipping
and the optimizer step (pbrl: its per-step `perf` row; TRL: from its release to `on_step_end`, its batch fetch and
collation inside). The first `warmup` steps of each run are left out (optimizer state allocation). tokens/s = real
(non-pad) tokens of the timed steps / the sum over those steps of the median (over rounds) step time.

Packed vs padded: the padded layout computes on its padded slots too. bound = padded slots / real tokens is the
speedup packing would give if time were proportional to the tokens computed; efficiency = (packed tokens/s / padded
tokens/s) / bound (target >= 95%). pbrl packed / TRL packed: target >= 1.5x.

    python baselines/sft_throughput.py [--threads 1] [--batch-size 32] [--steps 9] [--rounds 3]
        [--out results/sft_throughput.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

try:
    from baselines.record import recorded
except ImportError:  # run as a script: the script's folder is on sys.path
    from record import recorded  # type: ignore[no-redef]

from pbrl.errors import PbrlError, run_script
from pbrl.llm.models import TinyLMConfig, build_model, num_parameters
from pbrl.llm.sft import SftConfig, encode_chats, read_chats, train_sft
from pbrl.utils import denormals_flushed, dumps_json

# ChatML with generation markers: TRL's assistant_only_loss masks what falls inside {% generation %}, here each
# assistant turn's content and its <|im_end|> (the tokens pbrl's assistant_mask trains); <bos> first, as pbrl
# prepends it. The rendered text equals pbrl's template's.
TRL_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

MODES = ("pbrl_packed", "pbrl_padded", "trl_packed")


@dataclass
class BenchConfig:
    """Sizes of one benchmark run (the output's first lines print them)."""

    model: TinyLMConfig = field(default_factory=lambda: TinyLMConfig(
        hidden_size=256, num_layers=6, num_heads=8, num_kv_heads=4, intermediate_size=640, max_position=512))
    vocab_size: int = 1024  # BPE target (the corpus may yield fewer)
    corpus_docs: int = 3000  # tokenizer training documents
    batch_size: int = 32  # conversations per pbrl step
    steps: int = 9  # steps per run (one epoch over steps * batch_size conversations)
    warmup: int = 1  # first steps of each run left out of the timing
    rounds: int = 3
    max_length: int = 128  # longest conversation; also pack_length and TRL's packed row length
    lr: float = 5e-4
    warmup_steps: int = 2  # of the lr schedule
    threads: int = 1
    seed: int = 0
    trl: bool = True


def check(cfg: BenchConfig) -> None:
    """One PbrlError line for settings that cannot run."""
    for name in ("batch_size", "steps", "rounds", "max_length", "threads", "corpus_docs"):
        if getattr(cfg, name) < 1:
            raise PbrlError(f"--{name.replace('_', '-')}: expected a positive whole number, got {getattr(cfg, name)}")
    if not 0 <= cfg.warmup < cfg.steps:
        raise PbrlError(f"--warmup: expected 0 <= warmup < steps ({cfg.steps}), got {cfg.warmup}")
    if cfg.warmup_steps < 0 or not cfg.lr > 0:
        raise PbrlError(f"--lr ({cfg.lr}) must be > 0 and --warmup-steps ({cfg.warmup_steps}) >= 0")


# ----------------------------------------------------------------------------------------------- data and model
def prepare(cfg: BenchConfig, work: Path, log=print) -> dict:
    """Tokenizer (BPE on the chat corpus), the SFT conversations (steps * batch_size chats of the train split) and
    the initial model, written under `work`. -> paths and the pbrl-encoded examples."""
    from pbrl.llm.tokenizer import bpe_tokenizer
    from pbrl_envs.chat import corpus, make_tasks

    tok = bpe_tokenizer(corpus(cfg.corpus_docs, cfg.seed), cfg.vocab_size, chat=True)
    tok.save_pretrained(work / "tokenizer")
    n = cfg.steps * cfg.batch_size
    # the first n train tasks that pass train_sft's filters (over 90% masked: short answers are dropped), so that
    # every mode trains on exactly the same conversations
    chats = [[*t.messages, {"role": "assistant", "content": t.answer}] for t in make_tasks(3 * n, cfg.seed, "train")]
    examples, _ = encode_chats(tok, list(enumerate(chats)), max_length=cfg.max_length, overlong="refuse")
    kept = {tuple(e.ids) for e in examples}
    chats = [c for c, e in zip(chats, encode_chats(tok, list(enumerate(chats)), max_length=cfg.max_length,
                                                   overlong="refuse", max_masked_fraction=1.0)[0])
             if tuple(e.ids) in kept][:n]
    if len(chats) < n:
        raise PbrlError(f"only {len(chats)} of the {3 * n} chat tasks pass the SFT filters; {n} are needed")
    data = work / "sft.jsonl"
    data.write_text("".join(dumps_json({"messages": c}) + "\n" for c in chats))
    examples, counts = encode_chats(tok, read_chats(data), max_length=cfg.max_length, overlong="refuse")
    if counts["kept"] != n:
        raise PbrlError(f"{counts['read'] - counts['kept']} of {n} conversations were dropped by the SFT filters")
    model = build_model(dataclasses.replace(cfg.model, vocab_size=len(tok)), backend="hf_sdpa", seed=cfg.seed)
    model.save_pretrained(work / "model")
    tok.save_pretrained(work / "model")
    return {"data": data, "model": work / "model", "tokenizer": work / "tokenizer", "examples": examples,
            "params": num_parameters(model), "vocab": len(tok)}


# ----------------------------------------------------------------------------------------------- pbrl
def pbrl_step(cfg: BenchConfig, prep: dict, layout: str, out: Path) -> dict:
    """The next step of the `train_sft` run in `out` (from the saved weights at first, then resumed from its
    checkpoint, `stop_after=1`: the same trajectory as one uninterrupted run) -> {seconds, tokens (real), slots,
    trained}: its per-step `perf` row (batch building, forward, backward, clipping, optimizer step)."""
    res = train_sft(SftConfig(
        data=str(prep["data"]), out=str(out), model_path=str(prep["model"]), max_length=cfg.max_length,
        overlong="refuse", layout=layout, batch_size=cfg.batch_size, steps=cfg.steps, lr=cfg.lr,
        warmup_steps=cfg.warmup_steps, min_lr_ratio=0.1, max_grad_norm=1.0, seed=cfg.seed, device="cpu",
        progress=False, resume=True, stop_after=1, checkpoint_every=10**9, threads=cfg.threads))
    r = res["history"][-1]
    dt = 1 / r["perf/steps_per_s"]
    tokens = round(r["perf/tokens_per_s"] * dt)
    return {"seconds": dt, "tokens": tokens, "slots": round(tokens / (1 - r["sft/padding_fraction"])),
            "trained": r["sft/trained_tokens"]}


# ----------------------------------------------------------------------------------------------- TRL
def trl_tokenizer(path: Path):
    from pbrl.llm.tokenizer import load_tokenizer

    tok = load_tokenizer(path, chat=True)
    tok.chat_template = TRL_TEMPLATE
    return tok


def check_trl_tokens(tok, prep: dict) -> None:
    """TRL's tokenization (apply_chat_template with the assistant-token mask) must give pbrl's ids and masks."""
    chats = [m for _, m in read_chats(prep["data"])]
    for i, (msgs, ex) in enumerate(zip(chats, prep["examples"])):
        enc = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        if list(enc["input_ids"]) != ex.ids or list(enc["assistant_masks"]) != ex.mask:
            raise PbrlError(f"conversation {i}: TRL's tokens or assistant mask differ from pbrl's")


def trl_rows_per_step(cfg: BenchConfig, prep: dict) -> tuple[int, int, int]:
    """(packed rows in the set, rows per step, steps) for TRL's BFD packing of the same tokens."""
    import datasets
    from trl.data_utils import pack_dataset

    ds = datasets.Dataset.from_list([{"input_ids": e.ids} for e in prep["examples"]])
    rows = len(pack_dataset(ds, cfg.max_length, "bfd"))
    per_step = -(-rows // cfg.steps)
    return rows, per_step, -(-rows // per_step)


class TrlStepper:
    """TRL's SFTTrainer from the saved weights, run in a thread one optimizer step at a time, so that its steps can
    alternate with pbrl's: `step()` lets it take its next step and waits for that step's end -> {seconds, tokens
    (real), trained}. A step's time runs from its release to its `on_step_end` (the batch fetch and collation, the
    forward, backward, clipping, optimizer and scheduler steps)."""

    def __init__(self, cfg: BenchConfig, prep: dict, per_step: int, out: Path):
        self.go, self.done = threading.Semaphore(0), threading.Semaphore(0)
        self.seconds: list[float] = []
        self.counts: list[tuple[int, int]] = []
        self.error: BaseException | None = None
        self.finished = self.closing = False
        self.thread = threading.Thread(target=self._train, args=(cfg, prep, per_step, out), daemon=True)
        self.thread.start()
        self._wait()  # built, at the start of training

    def _wait(self) -> None:
        self.done.acquire()
        if self.error is not None:
            raise self.error

    def step(self) -> dict:
        if self.finished:
            raise RuntimeError("TRL: no steps left")
        self.go.release()
        self._wait()
        k = len(self.seconds) - 1
        # the label at each document's first token is dropped by TRL's collator (it would be predicted across the
        # boundary); that token is <bos>, never trained, so the trained counts equal pbrl's
        return {"seconds": self.seconds[k], "tokens": self.counts[k][0], "trained": self.counts[k][1]}

    def close(self) -> None:
        self.closing = True
        self.go.release()  # the waiting callback (after the last step, or earlier) returns and training stops
        self.thread.join()

    def _train(self, cfg: BenchConfig, prep: dict, per_step: int, out: Path) -> None:
        try:
            import datasets
            from transformers import PrinterCallback, TrainerCallback
            from trl import SFTConfig, SFTTrainer

            from pbrl.llm.models import load_model

            torch.set_num_threads(cfg.threads)  # both are per thread, as in the main thread
            torch.set_flush_denormal(True)
            me = self

            class Baton(TrainerCallback):
                def on_train_begin(self, args, state, control, **kw):
                    me.done.release()
                    me.go.acquire()
                    control.should_training_stop = me.closing
                    me.t0 = time.perf_counter()

                def on_step_end(self, args, state, control, **kw):
                    me.seconds.append(time.perf_counter() - me.t0)
                    me.finished = state.global_step >= state.max_steps
                    me.done.release()
                    me.go.acquire()
                    control.should_training_stop = me.closing  # closed early (an error elsewhere): stop here
                    me.t0 = time.perf_counter()

            tok = trl_tokenizer(prep["tokenizer"])
            chats = [m for _, m in read_chats(prep["data"])]
            ds = datasets.Dataset.from_list([{"messages": m} for m in chats])
            model = load_model(prep["model"], backend="hf_sdpa")
            args = SFTConfig(
                output_dir=str(out), per_device_train_batch_size=per_step, max_steps=-1, num_train_epochs=1,
                learning_rate=cfg.lr, lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1},
                warmup_steps=cfg.warmup_steps, weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch_fused",
                packing=True, packing_strategy="bfd", max_length=cfg.max_length, assistant_only_loss=True,
                train_sampling_strategy="sequential", use_cpu=True, report_to="none", save_strategy="no",
                logging_steps=10**9, disable_tqdm=True, dataloader_num_workers=0, seed=cfg.seed, data_seed=cfg.seed,
            )
            trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[Baton()])
            collate = trainer.data_collator

            def counting(examples):  # tokens and trained labels of each step's batch (one batch per step, in order)
                batch = collate(examples)
                self.counts.append((sum(sum(e["seq_lengths"]) for e in examples),
                                    int((batch["labels"] != -100).sum())))
                return batch

            trainer.data_collator = counting
            trainer.remove_callback(PrinterCallback)  # its end-of-training line would land in the results file
            trainer.train()
        except BaseException as e:  # handed to the waiting main thread
            self.error = e
            self.finished = True
            self.done.release()


def check_trl_document_masking(prep: dict, per_step: int, cfg: BenchConfig) -> float:
    """Largest |logit| difference between TRL's packed, flattened first batch (HF sdpa, position ids, no attention
    mask) and each document run alone. ~1e-6 means no attention across documents."""
    import datasets
    from trl.data_utils import pack_dataset
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from pbrl.llm.models import load_model

    ds = datasets.Dataset.from_list([{"input_ids": e.ids} for e in prep["examples"]])
    packed = pack_dataset(ds, cfg.max_length, "bfd")
    rows = [packed[i] for i in range(min(per_step, len(packed)))]
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)
    model = load_model(prep["model"], backend="hf_sdpa").eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        flat = model(**inputs, use_cache=False).logits[0]  # as SFTTrainer.compute_loss calls it
        ids, at, worst = batch["input_ids"][0], 0, 0.0
        for n in (n for r in rows for n in r["seq_lengths"]):
            alone = model(input_ids=ids[None, at : at + n]).logits[0]
            worst = max(worst, float((flat[at : at + n] - alone).abs().max()))
            at += n
    return worst


# ----------------------------------------------------------------------------------------------- measuring
def quiet() -> None:
    """No per-run progress bars or notices from transformers / datasets (each round builds several runs)."""
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def measure(cfg: BenchConfig, log=print) -> dict:
    """Runs every mode (warm-up round + `rounds` rotating rounds) -> per-mode tokens/s and the ratios."""
    check(cfg)
    torch.set_num_threads(cfg.threads)
    quiet()
    with tempfile.TemporaryDirectory(prefix="sft-throughput-") as tmp, denormals_flushed():
        work = Path(tmp)
        prep = prepare(cfg, work, log)
        modes = list(MODES if cfg.trl else MODES[:2])
        trl_rows = per_step = trl_steps = None
        leak = None
        if cfg.trl:
            check_trl_tokens(trl_tokenizer(prep["tokenizer"]), prep)
            trl_rows, per_step, trl_steps = trl_rows_per_step(cfg, prep)
            leak = check_trl_document_masking(prep, per_step, cfg)
        lengths = [len(e.ids) for e in prep["examples"]]
        import transformers
        import trl

        log(f"CPU, torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}")
        log(f"model: llama, {prep['params'] / 1e6:.2f}M parameters (hidden {cfg.model.hidden_size}, "
            f"{cfg.model.num_layers} layers, {cfg.model.num_heads} heads / {cfg.model.num_kv_heads} kv heads, MLP "
            f"{cfg.model.intermediate_size}, vocab {prep['vocab']} byte-level BPE on {cfg.corpus_docs} chat corpus "
            f"documents), float32, random init (the same saved weights for every run); torch threads = "
            f"{torch.get_num_threads()}")
        log(f"data: {len(lengths)} chat-task SFT conversations (train split, seed {cfg.seed}) of {min(lengths)}-"
            f"{max(lengths)} tokens (mean {statistics.mean(lengths):.1f}), {sum(lengths):,} tokens, "
            f"{sum(e.num_trained for e in prep['examples']):,} trained (assistant-only); one epoch per run")
        log(f"pbrl: {cfg.batch_size} conversations per step, {cfg.steps} steps, pack_length {cfg.max_length}, "
            f"padded rows to a multiple of 8; lr {cfg.lr} warmup {cfg.warmup_steps} then cosine to 0.1x")
        if cfg.trl:
            log(f"TRL: packing=True (bfd, padding-free forced), max_length {cfg.max_length}: {trl_rows} packed rows, "
                f"{per_step} rows per step (flattened into one row), {trl_steps} steps; assistant_only_loss=True; "
                f"cosine_with_min_lr (min_lr_rate 0.1), warmup {cfg.warmup_steps}, adamw_torch_fused")
            log(f"TRL packed attention check: largest |logit| difference between its first flattened batch and "
                f"each document alone = {leak:.1e} ({'no' if leak < 1e-4 else 'ATTENDS'} cross-document attention)")
        runs: dict[str, list[list[dict]]] = {m: [] for m in modes}

        def one_round(r: int, order: list[str]) -> dict[str, list[dict]]:
            """Every mode's run, step by step: step k of each mode in turn, then step k + 1."""
            rows: dict[str, list[dict]] = {m: [] for m in order}
            trl = TrlStepper(cfg, prep, per_step, work / f"trl-{r}") if cfg.trl else None
            try:
                for _ in range(cfg.steps):
                    for m in order:
                        if m == "trl_packed":
                            if not trl.finished:
                                rows[m].append(trl.step())
                        else:
                            rows[m].append(pbrl_step(cfg, prep, m.split("_")[1], work / f"{m}-{r}"))
            finally:
                if trl is not None:
                    trl.close()
            return rows

        t0 = time.perf_counter()
        one_round(-1, modes)  # warm-up round, untimed
        log(f"warm-up round: {time.perf_counter() - t0:.0f} s; {cfg.rounds} timed rounds, each mode's steps "
            "alternating with the others', modes in rotating order")
        for r in range(cfg.rounds):
            t1 = time.perf_counter()
            rows = one_round(r, modes[r % len(modes):] + modes[: r % len(modes)])
            for m in modes:
                runs[m].append(rows[m])
            rates = {m: sum(s["tokens"] for s in rows[m][cfg.warmup:])
                     / sum(s["seconds"] for s in rows[m][cfg.warmup:]) for m in modes}
            log(f"round {r + 1}/{cfg.rounds}: {time.perf_counter() - t1:.0f} s; tokens/s "
                + ", ".join(f"{m} {v:,.0f}" for m, v in rates.items()))
        res = summarize(cfg, runs)
        res.update({"params": prep["params"], "trl_rows": trl_rows, "trl_rows_per_step": per_step,
                    "trl_steps": trl_steps, "trl_cross_document_logit_diff": leak})
        return res


def summarize(cfg: BenchConfig, runs: dict[str, list[list[dict]]]) -> dict:
    """Per mode: real tokens of the timed steps, the sum of per-step medians over rounds, tokens/s; the ratios."""
    out: dict = {"modes": {}}
    for m, rs in runs.items():
        n = len(rs[0])
        if any(len(r) != n for r in rs):
            raise RuntimeError(f"{m}: runs with different step counts")
        timed = range(cfg.warmup, n)
        seconds = sum(statistics.median(r[k]["seconds"] for r in rs) for k in timed)
        tokens = sum(rs[0][k]["tokens"] for k in timed)
        row = {"steps": n, "timed_steps": len(timed), "tokens": tokens, "seconds": seconds,
               "tokens_per_s": tokens / seconds, "tokens_per_step": tokens / len(timed),
               "trained_epoch": sum(s["trained"] for s in rs[0]), "tokens_epoch": sum(s["tokens"] for s in rs[0]),
               "step_ms": [[round(1e3 * s["seconds"], 1) for s in r] for r in rs]}
        if "slots" in rs[0][0]:
            row["slots"] = sum(rs[0][k]["slots"] for k in timed)
        out["modes"][m] = row
    pk, pd = out["modes"]["pbrl_packed"], out["modes"]["pbrl_padded"]
    out["packed_over_padded"] = pk["tokens_per_s"] / pd["tokens_per_s"]
    out["bound"] = pd["slots"] / pd["tokens"]
    out["efficiency"] = out["packed_over_padded"] / out["bound"]
    if "trl_packed" in out["modes"]:
        out["packed_over_trl"] = pk["tokens_per_s"] / out["modes"]["trl_packed"]["tokens_per_s"]
    return out


def report(cfg: BenchConfig, res: dict, log=print) -> None:
    names = {"pbrl_packed": "pbrl packed (BFD, varlen)", "pbrl_padded": "pbrl padded (HF sdpa)",
             "trl_packed": "TRL SFTTrainer packed (bfd, padding-free, HF sdpa)"}
    log("\n| mode | steps timed | real tokens / step | row slots / step | tokens/s | vs pbrl packed |")
    log("|---|---|---|---|---|---|")
    pk = res["modes"]["pbrl_packed"]["tokens_per_s"]
    for m, r in res["modes"].items():
        slots = f"{r['slots'] / r['timed_steps']:,.0f}" if "slots" in r else f"{r['tokens_per_step']:,.0f}"
        log(f"| {names[m]} | {r['timed_steps']} | {r['tokens_per_step']:,.0f} | {slots} | {r['tokens_per_s']:,.0f} "
            f"| {r['tokens_per_s'] / pk:.2f}x |")
    log("\nTrained (assistant) tokens per epoch: " + ", ".join(
        f"{m} {r['trained_epoch']:,}" for m, r in res["modes"].items()) + "; real tokens per epoch: " + ", ".join(
        f"{m} {r['tokens_epoch']:,}" for m, r in res["modes"].items()) + ".")
    ok = lambda b: "**met**" if b else "**not met**"  # noqa: E731
    if "packed_over_trl" in res:
        log(f"\npbrl packed / TRL packed: {res['packed_over_trl']:.2f}x (target >= 1.5x: "
            f"{ok(res['packed_over_trl'] >= 1.5)}).")
    log(f"pbrl packed / pbrl padded: {res['packed_over_padded']:.2f}x; token-count bound (padded slots / real "
        f"tokens) {res['bound']:.3f}x; efficiency = ratio / bound = {res['efficiency']:.1%} (target >= 95%: "
        f"{ok(res['efficiency'] >= 0.95)}).")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    d = BenchConfig()
    ap.add_argument("--threads", type=int, default=d.threads, help="torch threads (default 1)")
    ap.add_argument("--batch-size", type=int, default=d.batch_size, help="conversations per pbrl step")
    ap.add_argument("--steps", type=int, default=d.steps, help="steps per run (one epoch)")
    ap.add_argument("--warmup", type=int, default=d.warmup, help="first steps of each run not timed")
    ap.add_argument("--rounds", type=int, default=d.rounds)
    ap.add_argument("--max-length", type=int, default=d.max_length, help="longest chat = pack length")
    ap.add_argument("--hidden", type=int, default=d.model.hidden_size)
    ap.add_argument("--layers", type=int, default=d.model.num_layers)
    ap.add_argument("--no-trl", action="store_true", help="skip the TRL anchor")
    ap.add_argument("--json", default=None, help="also write the measured numbers as JSON")
    ap.add_argument("--out", default=None, help="also write the output with its conditions, e.g. "
                    "results/sft_throughput.md")
    a = ap.parse_args(argv)
    h = a.hidden
    model = dataclasses.replace(d.model, hidden_size=h, num_layers=a.layers, num_heads=max(1, h // 32),
                                num_kv_heads=max(1, h // 64), intermediate_size=(5 * h) // 2)
    cfg = BenchConfig(model=model, batch_size=a.batch_size, steps=a.steps, warmup=a.warmup, rounds=a.rounds,
                      max_length=a.max_length, threads=a.threads, trl=not a.no_trl)
    check(cfg)
    for p in (a.out, a.json):
        if p is not None and not Path(p).parent.is_dir():
            raise PbrlError(f"{p}: the folder does not exist")
    print(f"SFT throughput: {len(MODES) if cfg.trl else 2} modes x ({cfg.rounds} + 1 warm-up) runs of {cfg.steps} "
          f"steps; a few minutes on 1 thread", flush=True)
    with recorded(a.out, "SFT throughput: pbrl train_sft packed / padded vs TRL SFTTrainer packed", cfg.threads):
        res = measure(cfg)
        report(cfg, res)
    if a.json is not None:
        from pbrl.utils import atomic_write_text

        atomic_write_text(a.json, json.dumps({"config": dataclasses.asdict(cfg), **res}, indent=1) + "\n")
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    run_script(main)
