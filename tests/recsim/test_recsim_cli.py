"""`pbrl rec prefs|baselines|catalog` end to end through the CLI dispatcher."""

import json

import numpy as np

from pbrl.cli import main
from pbrl.data.preferences import PreferencePairs

RATINGS = "1::10::5::100\n1::20::3::200\n1::30::3::300\n2::10::4::100\n2::20::4::150\n2::30::2::170\n3::10::1::5\n"


def test_rec_baselines_and_prefs_on_a_movielens_file(tmp_path, capsys):
    path = tmp_path / "ratings.dat"
    path.write_text(RATINGS)
    out = tmp_path / "m.json"
    assert main(["rec", "baselines", f"movielens:{path}", "--ks", "1", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| co-occurrence |" in text and "2 held-out next items (by user)" in text
    metrics = json.loads(out.read_text())["metrics"]
    # users 1 and 2 hold out item 30, which never occurs in the training prefixes: popularity ranks it last of 3
    assert metrics["popularity"]["rec/recall@2"] == 0.0
    assert main(["rec", "prefs", f"movielens:{path}", "--out", str(tmp_path / "p"), "--length", "1",
                 "--queries", "6"]) == 0
    pairs = PreferencePairs.load(str(tmp_path / "p"))
    assert len(pairs) == 6 and pairs.meta["teacher"].startswith("session-return-to-go")
    # a second run into the same outputs is refused in one line and leaves them as they were
    capsys.readouterr()
    before = {f: f.read_bytes() for f in (out, tmp_path / "p" / "prefs.npz")}
    assert main(["rec", "baselines", f"movielens:{path}", "--ks", "1", "--out", str(out)]) == 2
    assert main(["rec", "prefs", f"movielens:{path}", "--out", str(tmp_path / "p"), "--length", "1",
                 "--queries", "3"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(e.startswith("pbrl: error: ") and "--overwrite" in e for e in err)
    assert {f: f.read_bytes() for f in before} == before
    assert main(["rec", "prefs", f"movielens:{path}", "--out", str(tmp_path / "p"), "--length", "1",
                 "--queries", "3", "--overwrite"]) == 0
    assert len(PreferencePairs.load(str(tmp_path / "p"))) == 3


def test_rec_catalog_and_errors(tmp_path, capsys):
    assert main(["rec", "catalog", str(tmp_path / "c.jsonl"), "--num-items", "7"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert len(rows) == 7 and np.all([r["id"] == i for i, r in enumerate(rows)])
    assert main(["rec", "baselines", f"movielens:{tmp_path / 'missing.dat'}"]) == 2
    assert "not found" in capsys.readouterr().err
