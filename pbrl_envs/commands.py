"""Task commands contributed to `pbrl` through the `pbrl.commands` entry point: `pbrl rec catalog`, `pbrl rec reason-data`,
`pbrl llm chat-data`.

`build` and `read_card` are the library's recipe build and card reader (`pbrl.data.recipes`), named here for the
baseline scripts that import them from this module.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field

import tyro

from pbrl.data.recipes import build_recipe as build
from pbrl.data.recipes import read_card
from pbrl.data.teachers import TeacherConfig

__all__ = ["ChatData", "RecCatalog", "RecReasonData", "build", "read_card"]


@dataclass
class RecCatalog:
    """Write the RecSim-v0 catalog (id, title, topic, appeal, quality, text per item) as JSON lines."""

    out: tyro.conf.Positional[str]
    """Output .jsonl file."""
    num_items: int = 100
    """Catalog size (must match the environment the datasets came from)."""
    num_topics: int = 8
    """Number of topics."""
    catalog_seed: int = 0
    """Catalog seed."""

    def run(self) -> None:
        from pbrl_envs.recsim import RecSimEnv

        RecSimEnv(num_items=self.num_items, num_topics=self.num_topics, catalog_seed=self.catalog_seed
                  ).write_catalog(self.out)
        print(f"wrote {self.out}: {self.num_items} items")


@dataclass
class ChatData:
    """Write the verifiable chat task's data into one folder: a pre-training corpus, SFT conversations, held-out
    prompts and scripted preference pairs (pbrl_envs.chat)."""

    out: tyro.conf.Positional[str]
    """Output folder (corpus.jsonl, sft.jsonl, prompts.jsonl, heldout.jsonl, prefs.jsonl, card.json); must not
    exist unless --overwrite. prompts.jsonl holds the train prompts for `pbrl llm odpo ... --judge
    pbrl_envs.chat:judge`; heldout.jsonl the held-out ones for evaluation."""
    corpus_docs: int = 20_000
    """Pre-training documents ({"text": ...} per line; `pbrl llm pretrain OUT/corpus.jsonl`)."""
    train_tasks: int = 4000
    """Train-split tasks: SFT conversations with the reference answer, and one preference pair each."""
    heldout_tasks: int = 500
    """Held-out tasks ({"family", "seed", "prompt", "messages"}; `pbrl_envs.chat.make_task(seed, family)` rebuilds
    one)."""
    seed: int = 0
    teacher: tyro.conf.OmitArgPrefixes[TeacherConfig] = field(default_factory=TeacherConfig)
    """Scripted teacher of the pairs (B-Pref models; the scores run 0-1, so thresholds are in those units)."""
    overwrite: bool = False
    """Replace an existing OUT."""

    def run(self) -> None:
        from pbrl.errors import PbrlError
        from pbrl.utils import atomic_write_json, atomic_write_text, dumps_json
        from pbrl_envs.chat import corpus, make_tasks, write_pairs_jsonl

        if os.path.exists(self.out) and not self.overwrite:
            raise PbrlError(f"{self.out}: exists; pass --overwrite to replace it")
        train = make_tasks(self.train_tasks, self.seed, "train")
        heldout = make_tasks(self.heldout_tasks, self.seed + 1, "heldout")
        parent = os.path.dirname(os.path.abspath(self.out))
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".tmp-chat-", dir=parent)  # the folder appears whole or not at all
        try:
            lines = lambda rows: "".join(dumps_json(r) + "\n" for r in rows)  # noqa: E731
            atomic_write_text(os.path.join(tmp, "corpus.jsonl"),
                              lines({"text": d} for d in corpus(self.corpus_docs, self.seed)))
            atomic_write_text(os.path.join(tmp, "sft.jsonl"), lines(
                {"messages": [*t.messages, {"role": "assistant", "content": t.answer}], "family": t.family,
                 "seed": t.seed} for t in train))
            atomic_write_text(os.path.join(tmp, "prompts.jsonl"), lines(  # train prompts for online DPO
                {"family": t.family, "seed": t.seed, "prompt": t.prompt, "messages": t.messages} for t in train))
            atomic_write_text(os.path.join(tmp, "heldout.jsonl"), lines(
                {"family": t.family, "seed": t.seed, "prompt": t.prompt, "messages": t.messages} for t in heldout))
            counts = write_pairs_jsonl(os.path.join(tmp, "prefs.jsonl"), train, self.seed, self.teacher)
            card = {"seed": self.seed, "corpus_docs": self.corpus_docs, "train_tasks": len(train),
                    "heldout_tasks": len(heldout), "teacher": self.teacher, **{f"prefs_{k}": v for k, v in
                                                                                counts.items()}}
            atomic_write_json(os.path.join(tmp, "card.json"), card)
            if os.path.exists(self.out):
                shutil.rmtree(self.out)
            os.rename(tmp, self.out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"wrote {self.out}: {self.corpus_docs} corpus documents, {len(train)} SFT conversations, "
              f"{len(heldout)} held-out prompts, {counts['pairs']} preference pairs ({counts['ties']} ties dropped)")


@dataclass
class RecReasonData:
    """GREAM's reasoning curriculum from a RecSim log: at every clicked step, a chain of the five stages (evidence,
    latent preference, intent, recommendation, denoised history) written from the simulator's latent user state,
    answer <answer>ID</answer> = the clicked item (pbrl.rec.reasoning); chat JSONL for `pbrl llm sft`."""

    spec: tyro.conf.Positional[str]
    """A RecSim log built by a recipe (`pbrl data build recsim-mixed`): its Minari id or folder. The users' latent
    state is regenerated from its provenance (recipe, size, seed) and the replay is checked step by step."""
    ids: str
    """The catalog's semantic IDs: a semantic_ids.json (`pbrl.rec.semantic_ids.SemanticIds.save`) or its folder."""
    out: str
    """Output .jsonl (refused if it exists, unless --overwrite)."""
    min_history: int = 0
    """Skip steps with fewer history items (the paper keeps >= 4; a session starts with none)."""
    max_records: int | None = None
    """Keep a seeded random subset of at most this many steps."""
    seed: int = 0
    overwrite: bool = False

    def run(self) -> dict:
        import json
        from pathlib import Path

        import numpy as np

        from pbrl.data.registry import load_dataset
        from pbrl.errors import PbrlError
        from pbrl.rec.reasoning import UserStates, reasoning_records
        from pbrl.rec.semantic_ids import SemanticIds
        from pbrl.utils import atomic_write_text
        from pbrl_envs.recsim import ENV_ID, RecSimEnv
        from pbrl_envs.recsim_data import catalog_facts, logged_user_states

        if os.path.exists(self.out) and not self.overwrite:
            raise PbrlError(f"{self.out}: exists; pass --overwrite to replace it")
        if self.max_records is not None and self.max_records < 1:
            raise PbrlError(f"max_records: expected >= 1 or none, got {self.max_records}")
        ids_path = Path(self.ids) / "semantic_ids.json" if Path(self.ids).is_dir() else Path(self.ids)
        if not ids_path.is_file():
            raise PbrlError(f"{self.ids}: no semantic_ids.json")
        ids = SemanticIds.load(ids_path)
        ds = load_dataset(self.spec)
        if ds.metadata.get("env_id") != ENV_ID:
            raise PbrlError(f"{self.spec}: a log of {ds.metadata.get('env_id')!r}, not of {ENV_ID}")
        env = RecSimEnv()
        if ids.num_items != env.num_items:
            raise PbrlError(f"{self.ids}: IDs for {ids.num_items} items, but the RecSim catalog has {env.num_items}")
        states = logged_user_states(ds)  # refuses a log that does not replay
        steps = np.flatnonzero(ds.rewards > 0)  # clicked steps: the answer is the clicked item
        if self.max_records is not None and len(steps) > self.max_records:
            steps = np.sort(np.random.default_rng(self.seed).choice(steps, size=self.max_records, replace=False))
        obs = ds.observations[steps]  # [S, obs_dim]
        items, clicked = env.decode_history(obs), env.decode_clicks(obs)  # [S, k] most recent first
        hists = [[int(i) for i in row[::-1] if i >= 0] for row in items]
        clicks = [[bool(c) for c, i in zip(cr[::-1], row[::-1]) if i >= 0] for cr, row in zip(clicked, items)]
        sub = UserStates(states.interest[steps], states.boredom[steps], states.satisfaction[steps])
        rows = reasoning_records(hists, clicks, ds.actions[steps], sub, catalog_facts(env),
                                 [ids.item_text(i) for i in range(ids.num_items)],
                                 boredom_weight=env.w_boredom / env.w_interest, min_history=self.min_history)
        if not rows:
            raise PbrlError(f"{self.spec}: no clicked step with at least {self.min_history} history items")
        os.makedirs(os.path.dirname(os.path.abspath(self.out)), exist_ok=True)
        atomic_write_text(self.out, "".join(json.dumps(r) + "\n" for r in rows))
        print(f"wrote {self.out}: {len(rows)} reasoning records from {len(steps)} clicked steps of {self.spec}")
        print(f"train: pbrl llm sft --data {self.out} --max-masked-fraction 1.0 (a tokenizer with the ID tokens: "
              "pbrl.rec.align_data.alignment_tokenizer + pbrl.rec.reasoning.add_reasoning_tokens)")
        return {"records": len(rows), "clicked_steps": int(len(steps))}
