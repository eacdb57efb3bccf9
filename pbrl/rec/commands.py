"""`pbrl rec prefs|baselines`: session-level preferences and the baseline recommenders on any session dataset."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import tyro

from pbrl.data.teachers import TeacherConfig


@dataclass
class RecPrefs:
    """Label window pairs of a session dataset by the return-to-go of their sessions; writes <out>/prefs.npz."""

    spec: tyro.conf.Positional[str]
    """Dataset: Minari id (e.g. pbrl/recsim/mixed-v0), movielens:<ratings.dat>, amazon:<json>, or a local path."""
    out: str
    """Output folder."""
    queries: int = 500
    """Number of labelled pairs."""
    length: int = 5
    """Window length in steps (sessions shorter than this are not drawn)."""
    teacher: tyro.conf.OmitArgPrefixes[TeacherConfig] = field(default_factory=TeacherConfig)
    """Teacher model applied to the returns-to-go (B-Pref; the myopic discount is not defined for them)."""
    seed: int = 0
    overwrite: bool = False
    """Replace a prefs.npz already in OUT (without it, one is refused)."""

    def run(self) -> None:
        from pbrl.data.preferences import PreferencePairs
        from pbrl.data.registry import load_dataset
        from pbrl.rec.sessions import session_preferences
        from pbrl.utils import refuse_existing

        refuse_existing(PreferencePairs.npz_path(self.out), self.overwrite)
        ds = load_dataset(self.spec)
        pairs = session_preferences(ds, self.queries, self.length, self.teacher, self.seed)
        pairs.meta["dataset"] = self.spec
        path = pairs.save(self.out)
        s = pairs.stats()
        print(f"wrote {path}: {int(s['pairs'])} pairs of {self.length} steps, tie rate {s['tie_rate']:.3f}, "
              f"balance {s['balance']:.3f}")


@dataclass
class RecBaselines:
    """Recall@K and NDCG@K of the popularity and co-occurrence recommenders on held-out last items."""

    spec: tyro.conf.Positional[str]
    """Dataset with item-id actions: Minari id, movielens:<ratings.dat>, amazon:<json>, or a local path."""
    by: Literal["user", "episode"] = "user"
    """Sequences per user (needs session_user metadata, as the log loaders write) or per episode."""
    ks: tuple[int, ...] = (1, 5, 10)
    """Cut-offs K."""
    exclude_seen: bool = False
    """Drop each history's own items from its ranking (for logs without repeats, e.g. ratings)."""
    window: int = 3
    """Co-occurrence: pairs up to this many steps apart count."""
    out: str | None = None
    """Also write the metrics as JSON here (an existing file is refused unless --overwrite)."""
    overwrite: bool = False
    """Replace the --out file if it exists."""

    def run(self) -> None:
        from pbrl.data.registry import load_dataset
        from pbrl.rec.baselines import (
            CooccurrenceRecommender,
            PopularityRecommender,
            evaluate_next_item,
            item_sequences,
        )
        from pbrl.utils import atomic_write_json, refuse_existing

        if self.out:
            refuse_existing(self.out, self.overwrite)
        ds = load_dataset(self.spec)
        by = self.by
        if by == "user" and "session_user" not in ds.metadata:
            by = "episode"  # simulator datasets: every session is a new user
        seqs = item_sequences(ds, by=by)
        n = int(ds.action_space.n)
        rows = {
            "popularity": evaluate_next_item(PopularityRecommender(n), seqs, self.ks, self.exclude_seen),
            "co-occurrence": evaluate_next_item(CooccurrenceRecommender(n, window=self.window), seqs, self.ks,
                                                self.exclude_seen),
        }
        keys = [f"rec/{m}@{k}" for k in self.ks for m in ("recall", "ndcg")]
        print(f"{self.spec}: {n} items, {int(rows['popularity']['rec/num_targets'])} held-out next items (by {by})")
        print("| recommender | " + " | ".join(k.removeprefix("rec/") for k in keys) + " |")
        print("|---|" + "---|" * len(keys))
        for name, m in rows.items():
            print(f"| {name} | " + " | ".join(f"{m[k]:.4f}" for k in keys) + " |")
        if self.out:
            atomic_write_json(self.out, {"dataset": self.spec, "by": by, "metrics": rows})
