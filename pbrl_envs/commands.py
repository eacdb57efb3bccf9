"""Task commands contributed to `pbrl` through the `pbrl.tasks` entry point: `pbrl rec catalog`.

`build` and `read_card` are the library's recipe build and card reader (`pbrl.data.recipes`), named here for the
baseline scripts that import them from this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import tyro

from pbrl.data.recipes import build_recipe as build
from pbrl.data.recipes import read_card

__all__ = ["RecCatalog", "build", "read_card"]


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
