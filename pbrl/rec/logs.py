"""Real recommendation logs as sessions: MovieLens-1M `ratings.dat` and Amazon reviews 5-core JSON.

`load_dataset("movielens:<ratings.dat>")` and `load_dataset("amazon:<reviews json>")` route here. One transition per
rating or review, time-ordered within each user (ties keep file order); a user's interactions split into sessions
(episodes) where two consecutive ones are more than `session_gap` seconds apart.

- action: the item's dense index in [0, num_items) (items sorted by their original id) — Discrete(num_items)
- reward: the rating (1-5 stars)
- observation (Box in [0, 1], float32, `history_len` = k): the user's last k items before this step, most recent
  first, across earlier sessions too, as (dense index + 1) / num_items (0 = none yet), then their ratings / 5,
  then min(step in session, 100) / 100. `history_ids` decodes the items.
- termination: True at the end of a session followed by another of the same user (the user left); the user's last
  session ends truncated (the log stops, the user may come back).

Metadata: `items` = {"id": original ids as strings, "title": ..., "category": ..., "text": ...} indexed by action
(titles and categories when the item file is found: MovieLens `movies.dat` beside `ratings.dat`; Amazon
`meta_<Category>.json[.gz]` beside `[reviews_]<Category>_5.json[.gz]`, or `meta_path`); `session_user` = the user id
of every episode; `observation_layout`; `session_gap`.
"""

from __future__ import annotations

import ast
import datetime
import gzip
import json
import os
import re
from collections.abc import Iterator

import gymnasium as gym
import numpy as np

from pbrl.data.dataset import EpisodeDataset
from pbrl.errors import PbrlError

MAX_STEP_FEATURE = 100  # steps in session beyond this look alike in the observation


def _open_text(path: str, encoding: str = "utf-8"):
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding=encoding, errors="replace")
    return open(path, encoding=encoding, errors="replace")


def _lines(path: str, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    if not os.path.isfile(path):
        raise PbrlError(f"file not found: {path}")
    try:
        with _open_text(path, encoding) as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if line:
                    yield lineno, line
    except (OSError, EOFError) as e:
        raise PbrlError(f"{path}: cannot read ({e})") from None


def history_ids(observations: np.ndarray, num_items: int, history_len: int) -> np.ndarray:
    """[..., k] dense item indices in log observations, most recent first; -1 where the history is empty."""
    ids = np.asarray(observations)[..., :history_len]
    return np.rint(ids * num_items).astype(np.int64) - 1


# ---------------------------------------------------------------------------------------------------- MovieLens
def load_movielens(path: str, session_gap: float | None = 3600.0, history_len: int = 10) -> EpisodeDataset:
    """MovieLens-1M `ratings.dat` (`UserID::MovieID::Rating::Timestamp`, latin-1) -> sessions.

    `session_gap`: seconds between two ratings that start a new session (None: one session per user).
    Titles and genres come from `movies.dat` (`MovieID::Title::Genres`) in the same folder when it exists.
    """
    users, items, ratings, times = [], [], [], []
    for lineno, line in _lines(path, "latin-1"):
        parts = line.split("::")
        try:
            if len(parts) != 4:
                raise ValueError
            u, i, r, t = parts[0], parts[1], float(parts[2]), int(parts[3])
        except ValueError:
            raise PbrlError(
                f"{path}:{lineno}: expected 'UserID::MovieID::Rating::Timestamp', got {line[:80]!r}"
            ) from None
        users.append(u)
        items.append(i)
        ratings.append(r)
        times.append(t)
    titles, cats = {}, {}
    movies = os.path.join(os.path.dirname(os.path.abspath(path)), "movies.dat")
    if os.path.isfile(movies):
        for lineno, line in _lines(movies, "latin-1"):
            parts = line.split("::")
            if len(parts) != 3:
                raise PbrlError(f"{movies}:{lineno}: expected 'MovieID::Title::Genres', got {line[:80]!r}")
            titles[parts[0]] = parts[1]
            cats[parts[0]] = parts[2].replace("|", ", ")
    return sessions_dataset(users, items, ratings, times, session_gap=session_gap, history_len=history_len,
                            titles=titles, categories=cats, source=path, name="movielens",
                            numeric_item_ids=True)


# ------------------------------------------------------------------------------------------------------- Amazon
def _parse_record(line: str) -> dict:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        # the 2014 "loose" files are Python dict literals (single quotes), not JSON
        return ast.literal_eval(line)


def _review_time(rec: dict) -> int:
    if "unixReviewTime" in rec:
        return int(rec["unixReviewTime"])
    # "MM DD, YYYY" (the 2014 and 2018 releases' readable date)
    d = datetime.datetime.strptime(str(rec["reviewTime"]).strip(), "%m %d, %Y")
    return int(d.replace(tzinfo=datetime.timezone.utc).timestamp())


def _amazon_meta_path(path: str) -> str | None:
    folder, base = os.path.split(os.path.abspath(path))
    m = re.match(r"^(?:reviews_)?(.+?)(?:_5)?\.json(?:\.gz)?$", base)
    if not m:
        return None
    for name in (f"meta_{m.group(1)}.json", f"meta_{m.group(1)}.json.gz"):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def _amazon_category(rec: dict) -> str:
    cats = rec.get("categories") or rec.get("category") or []
    if cats and isinstance(cats[0], list):  # 2014: a list of category paths
        cats = cats[0]
    return ", ".join(str(c) for c in cats)


def load_amazon(path: str, session_gap: float | None = None, history_len: int = 10,
                meta_path: str | None = None) -> EpisodeDataset:
    """Amazon reviews 5-core (one JSON object per line, optionally .gz; 2014 or 2018 release) -> sessions.

    Fields used: `reviewerID`, `asin`, `overall` (1-5), `unixReviewTime` (or `reviewTime` "MM DD, YYYY").
    `session_gap`: seconds between two reviews that start a new session; None (the default) keeps one session per
    user, the usual sequential-recommendation setting (review dates have a resolution of one day).
    Titles and categories come from `meta_path` or `meta_<Category>.json[.gz]` beside the file, when present.
    """
    users, items, ratings, times = [], [], [], []
    for lineno, line in _lines(path):
        try:
            rec = _parse_record(line)
            u, i, r, t = str(rec["reviewerID"]), str(rec["asin"]), float(rec["overall"]), _review_time(rec)
        except (ValueError, SyntaxError, KeyError, TypeError) as e:
            what = f"missing field {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
            raise PbrlError(
                f"{path}:{lineno}: expected a review object with reviewerID, asin, overall and unixReviewTime "
                f"({what})"
            ) from None
        users.append(u)
        items.append(i)
        ratings.append(r)
        times.append(t)
    meta_path = meta_path or _amazon_meta_path(path)
    titles, cats = {}, {}
    if meta_path is not None:
        wanted = set(items)
        for lineno, line in _lines(meta_path):
            try:
                rec = _parse_record(line)
                asin = str(rec["asin"])
            except (ValueError, SyntaxError, KeyError, TypeError):
                raise PbrlError(f"{meta_path}:{lineno}: expected an item object with an 'asin' field") from None
            if asin in wanted:
                titles[asin] = str(rec.get("title", ""))
                cats[asin] = _amazon_category(rec)
    return sessions_dataset(users, items, ratings, times, session_gap=session_gap, history_len=history_len,
                            titles=titles, categories=cats, source=path, name="amazon")


# ------------------------------------------------------------------------------------------------------ shared
def sessions_dataset(users: list[str], items: list[str], ratings: list[float], times: list[int], *,
                     session_gap: float | None, history_len: int, titles: dict[str, str] | None = None,
                     categories: dict[str, str] | None = None, source: str = "", name: str = "reclog",
                     numeric_item_ids: bool = False) -> EpisodeDataset:
    """Interaction columns (one entry per rating) -> an EpisodeDataset of sessions (see the module docstring)."""
    if not users:
        raise PbrlError(f"{source}: no interactions found")
    if history_len < 1:
        raise PbrlError(f"history_len must be >= 1, got {history_len}")
    if session_gap is not None and session_gap < 0:
        raise PbrlError(f"session_gap must be >= 0 seconds or None, got {session_gap}")
    rating = np.asarray(ratings, dtype=np.float64)
    if not np.all(np.isfinite(rating)):
        raise PbrlError(f"{source}: rating {int(np.flatnonzero(~np.isfinite(rating))[0]) + 1} is not a number")
    time = np.asarray(times, dtype=np.int64)
    user_names, user = np.unique(np.asarray(users), return_inverse=True)
    item_key = [int(i) for i in items] if numeric_item_ids else items
    item_names, item = np.unique(np.asarray(item_key), return_inverse=True)
    num_items, k = len(item_names), history_len

    order = np.lexsort((np.arange(len(user)), time, user))  # by user, then time, then file order
    user, item, rating, time = user[order], item[order], rating[order], time[order]
    n = len(user)
    new_user = np.r_[True, user[1:] != user[:-1]]  # [N]
    gap = np.r_[0, np.diff(time)]
    new_session = new_user | ((gap > session_gap) if session_gap is not None else False)
    starts = np.r_[np.flatnonzero(new_session), n].astype(np.int64)  # [E+1]

    # hist[i, j] = (item, rating) of transition i - j when it belongs to the same user (history up to and with i)
    pos_in_user = np.arange(n) - np.maximum.accumulate(np.where(new_user, np.arange(n), 0))  # [N]
    lag = np.arange(k)  # [k]
    src = np.arange(n)[:, None] - lag[None, :]  # [N, k]
    ok = pos_in_user[:, None] >= lag[None, :]  # [N, k]
    src = np.where(ok, src, 0)
    ids_incl = np.where(ok, (item[src] + 1) / num_items, 0.0)  # [N, k]
    rat_incl = np.where(ok, rating[src] / 5.0, 0.0)  # [N, k]
    hist_incl = np.concatenate([ids_incl, rat_incl], axis=1).astype(np.float32)  # [N, 2k]

    # observation before transition i = history through i - 1 (empty at a user's first interaction)
    before = np.zeros_like(hist_incl)
    has_prev = ~new_user
    before[has_prev] = hist_incl[np.flatnonzero(has_prev) - 1]
    ep_of = np.searchsorted(starts, np.arange(n), side="right") - 1  # [N]
    step = np.arange(n) - starts[ep_of]  # [N]
    lengths = np.diff(starts)  # [E]
    num_ep = len(lengths)
    obs_dim = 2 * k + 1
    obs = np.zeros((n + num_ep, obs_dim), dtype=np.float32)  # [N+E, D]
    rows = np.arange(n) + ep_of  # transition t of episode e sits at observation row t + e
    obs[rows, : 2 * k] = before
    obs[rows, 2 * k] = np.minimum(step, MAX_STEP_FEATURE) / MAX_STEP_FEATURE
    last = starts[1:] - 1  # [E] each session's last transition
    final_rows = starts[1:] + np.arange(num_ep)
    obs[final_rows, : 2 * k] = hist_incl[last]
    obs[final_rows, 2 * k] = np.minimum(lengths, MAX_STEP_FEATURE) / MAX_STEP_FEATURE

    session_user = user[starts[:-1]]  # [E]
    same_user_next = np.r_[session_user[1:] == session_user[:-1], False]  # [E] another session of this user follows
    terminations = np.zeros(n, dtype=bool)
    truncations = np.zeros(n, dtype=bool)
    terminations[last[same_user_next]] = True
    truncations[last[~same_user_next]] = True

    ids = [str(x) for x in item_names.tolist()]
    items_meta: dict[str, list] = {"id": ids}
    if titles:
        items_meta["title"] = [titles.get(i, "") for i in ids]
        items_meta["category"] = [(categories or {}).get(i, "") for i in ids]
        items_meta["text"] = [f"{t} ({c})" if c else t for t, c in zip(items_meta["title"], items_meta["category"])]
    metadata = {
        "name": name,
        "env_id": None,
        "items": items_meta,
        "session_user": [str(u) for u in user_names[session_user].tolist()],
        "session_gap": session_gap,
        "observation_layout": {"ids": [0, k], "ratings": [k, 2 * k], "step": [2 * k, 2 * k + 1]},
        "provenance": [{"step": f"load_{name}", "source": os.path.basename(source), "session_gap": session_gap,
                        "history_len": k}],
    }
    return EpisodeDataset(
        obs, item.astype(np.int64), rating.astype(np.float32), terminations, truncations, starts, metadata=metadata,
        observation_space=gym.spaces.Box(0.0, 1.0, shape=(obs_dim,), dtype=np.float32),
        action_space=gym.spaces.Discrete(num_items),
    )
