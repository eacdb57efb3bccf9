"""baselines/record.py: the header of a recorded benchmark names the revision that ran, taken at the start."""

from __future__ import annotations

import baselines.record as record


def test_the_header_names_the_revision_at_the_start(tmp_path, monkeypatch):
    revs = iter(["abc123", "abc123+dirty"])  # the tree changes while the benchmark runs
    monkeypatch.setattr(record, "git_revision", lambda: next(revs))
    monkeypatch.setattr(record, "busy_cores", lambda: 0.0)
    out = tmp_path / "bench.md"
    with record.recorded(str(out), "Bench"):
        print("| a | 1 |")
        record.git_revision()  # what a revision read at the end would see
    text = out.read_text()
    assert "(git abc123)" in text and "dirty" not in text
    assert text.startswith("# Bench\n") and text.rstrip().endswith("| a | 1 |")
