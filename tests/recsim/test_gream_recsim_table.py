"""gream_recsim's table from the committed records: the paper's setup is printed once per file, filled from them."""

from __future__ import annotations

import json
from pathlib import Path

from baselines.gream_recsim import write_table

RECORDS = Path(__file__).resolve().parents[2] / "results" / "records" / "gream_recsim-small"


def test_the_paper_setup_section_names_this_budget_and_can_be_left_out():
    recs = [json.loads(p.read_text()) for p in sorted(RECORDS.glob("seed_*.json"))]
    text = write_table(recs, None)
    assert text.count("## The paper's setup beside this one") == 1
    b = recs[0]["settings"]
    assert f"{b['levels']} levels x K = {b['k']}" in text and "4 levels x K = 256" in text
    assert "## The paper's setup" not in write_table(recs, None, paper=False)
