"""Alignment SFT records: they parse with pbrl's SFT loader and every seqrec answer is the right item's real ID."""

import json
import re

import numpy as np
import pytest

from pbrl.errors import PbrlError
from pbrl.llm.sft import encode_chats, read_chats
from pbrl.rec.align_data import (
    TASKS,
    alignment_records,
    alignment_tokenizer,
    item_genres,
    preference_statement,
    title_description,
    write_alignment_data,
)
from pbrl.rec.movielens import RecLog, leave_one_out
from pbrl.rec.semantic_ids import SemanticIds, dedup_ranks

TEXTS = ["Alpha (1995); Action, Comedy", "Beta (1996); Drama", "Gamma (1990); Drama, Romance",
         "Delta (1999); Comedy", "Epsilon (1980); Action", "Zeta (1994); Drama, Comedy"]
TOKEN = re.compile(r"<\|[a-z]_\d+\|>")


def toy():
    seqs = [np.array([0, 1, 2, 3, 4, 5]), np.array([5, 4, 3, 2]), np.array([1, 2])]
    log = RecLog(name="toy", user_sequences=seqs, item_texts=TEXTS, item_raw_ids=[str(i) for i in range(6)],
                 user_raw_ids=["u0", "u1", "u2"])
    codes = np.array([[1, 1], [1, 2], [2, 1], [2, 2], [1, 1], [3, 3]])  # items 0 and 4 collide
    ids = SemanticIds(codes=codes, dedup=dedup_ranks(codes), k=3)
    return log, leave_one_out(seqs, max_history=3), ids


def history_items(prompt, ids):
    """The items of the comma-separated IDs inside a prompt (read back through the index)."""
    found = re.findall(r"((?:<\|[a-z]_\d+\|>)+)", prompt)
    return [ids.item_of(TOKEN.findall(chunk)) for chunk in found]


def test_preference_statement_by_hand():
    assert item_genres("Toy Story (1995); Animation, Children's, Comedy") == ["Animation", "Children's", "Comedy"]
    assert item_genres("No genres here") == []
    assert title_description("Toy Story (1995); Animation, Comedy") == ("Toy Story (1995)", "Animation, Comedy")
    assert title_description("Plain") == ("Plain", "")
    s = preference_statement([TEXTS[1], TEXTS[2], TEXTS[5], TEXTS[0]])
    assert s == "The user mostly chooses Drama (3 of 4 items), Comedy (2) and Romance (1)."  # Romance seen before Action
    assert preference_statement(["x", "y"]) is None


def test_records_parse_and_seqrec_answers_are_the_right_ids(tmp_path):
    log, split, ids = toy()
    counts = write_alignment_data(log, split, ids, tmp_path, seed=0, max_history=3)
    # seqrec slides over the training parts [0,1,2,3], [5,4] and [1,2] (user 2 is too short to evaluate)
    assert counts == {"sft": {"seqrec": 3 + 1 + 1, "item2index": 6, "index2item": 6, "preference": 3},
                      "valid": {"seqrec": 2}}
    chats = read_chats(tmp_path / "sft.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert len(chats) == len(rows) == 20
    windows = set()
    for seq in split.train:
        for i in range(1, len(seq)):
            windows.add((tuple(seq[max(0, i - 3): i].tolist()), int(seq[i])))
    seen = set()
    for row in rows:
        user, answer = row["messages"][0]["content"], row["messages"][1]["content"]
        if row["task"] == "seqrec":
            item = ids.item_of(TOKEN.findall(answer))
            assert item is not None and item == row["item"] and answer == "".join(ids.item_tokens(item))
            hist = tuple(history_items(user, ids))
            assert (hist, item) in windows
            seen.add((hist, item))
        elif row["task"] == "item2index":
            title, desc = TEXTS[row["item"]].split("; ")
            assert ids.item_of(TOKEN.findall(answer)) == row["item"] and f'"{title}"' in user
            assert ("described as" not in user) or f'"{desc}"' in user
        elif row["task"] == "index2item":
            title, desc = TEXTS[row["item"]].split("; ")
            assert answer in (title, f"{title}\n\n{desc}") and ids.item_of(TOKEN.findall(user)) == row["item"]
            assert (answer == title) == ("description" not in user)
    assert seen == windows  # every training window once
    assert ids.item_tokens(0)[-1] == "<|c_1|>" and ids.item_tokens(4)[-1] == "<|c_2|>"  # collisions told apart
    valid = [json.loads(line) for line in (tmp_path / "valid.jsonl").read_text().splitlines()]
    assert [v["item"] for v in valid] == split.valid_targets.tolist() == [4, 3]
    assert history_items(valid[0]["messages"][0]["content"], ids) == [1, 2, 3]  # <= 3 items before the target
    # same seed -> same bytes; another seed -> another order
    write_alignment_data(log, split, ids, tmp_path / "again", seed=0, max_history=3)
    assert (tmp_path / "again" / "sft.jsonl").read_bytes() == (tmp_path / "sft.jsonl").read_bytes()


def test_tokenizer_makes_ids_single_tokens_and_sft_encodes():
    pytest.importorskip("tokenizers")
    log, split, ids = toy()
    train, _ = alignment_records(log, split, ids, max_history=3)
    tok = alignment_tokenizer(train, ids, vocab_size=400)
    row = next(r for r in train if r["task"] == "seqrec")
    answer = row["messages"][1]["content"]
    enc = tok(answer, add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(enc) == ids.item_tokens(row["item"])
    # the answer is a few tokens after a long history: SFT's LIONs filter (labels > 90 % masked) would drop it
    _, c = encode_chats(tok, [(1, row["messages"])], max_length=512)
    assert c["dropped_masked"] == 1
    examples, c = encode_chats(tok, [(1, row["messages"])], max_length=512, max_masked_fraction=1.0)
    assert c["kept"] == 1
    trained = [i for i, m in zip(examples[0].ids, examples[0].mask) if m]
    assert tok.convert_ids_to_tokens(trained)[: len(enc)] == ids.item_tokens(row["item"])


def test_bad_input():
    log, split, ids = toy()
    with pytest.raises(PbrlError, match="tasks: expected some of seqrec"):
        alignment_records(log, split, ids, tasks=("seqrec", "bogus"))
    small = SemanticIds(codes=ids.codes[:5], dedup=dedup_ranks(ids.codes[:5]), k=3)
    with pytest.raises(PbrlError, match="semantic IDs cover 5 items but the log toy has 6"):
        alignment_records(log, split, small)
    bare = RecLog(name="bare", user_sequences=log.user_sequences, item_texts=[f"item {i}" for i in range(6)],
                  item_raw_ids=log.item_raw_ids, user_raw_ids=log.user_raw_ids)
    with pytest.raises(PbrlError, match="preference: the item texts of bare carry no genres"):
        alignment_records(bare, split, ids)
    assert set(TASKS) == {"seqrec", "item2index", "index2item", "preference"}


def atomic_folder(tmp_path):
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "toy.item").write_text("item_id:token\ttitle:token_seq\tclass:token_seq\n" + "".join(
        f"{i}\t{t.split(' (')[0]}\t{' '.join(t.split('; ')[1].split(', '))}\n" for i, t in enumerate(TEXTS)))
    rows = [(u, i, n) for u, seq in enumerate([[0, 1, 2, 3, 4, 5], [5, 4, 3, 2], [1, 2]]) for n, i in enumerate(seq)]
    (folder / "toy.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + "".join(
        f"{u}\t{i}\t{n}\n" for u, i, n in rows))
    return folder


def test_align_data_command(tmp_path, capsys):
    from pbrl.rec.gream_commands import RecAlignData

    folder = atomic_folder(tmp_path)
    _, _, ids = toy()
    ids.save(tmp_path / "ids" / "semantic_ids.json")
    out = tmp_path / "align"
    counts = RecAlignData(log=str(folder), ids=str(tmp_path / "ids"), out=str(out), max_history=3,
                          vocab_size=300).run()
    assert counts["sft"]["seqrec"] == 5 and counts["valid"] == {"seqrec": 2}
    assert len(read_chats(out / "sft.jsonl")) == 20 and (out / "tokenizer" / "tokenizer.json").is_file()
    assert "--max-masked-fraction 1.0" in capsys.readouterr().out
    from pbrl.llm.tokenizer import load_tokenizer

    tok = load_tokenizer(out / "tokenizer", chat=True)
    assert tok.convert_ids_to_tokens(tok("<|a_1|><|b_1|><|c_2|>", add_special_tokens=False)["input_ids"]) == \
        ["<|a_1|>", "<|b_1|>", "<|c_2|>"]
    before = (out / "sft.jsonl").read_bytes()
    with pytest.raises(PbrlError, match=r"align: not empty; pass --overwrite"):
        RecAlignData(log=str(folder), ids=str(tmp_path / "ids"), out=str(out)).run()
    small = SemanticIds(codes=ids.codes[:5], dedup=dedup_ranks(ids.codes[:5]), k=3)
    small.save(tmp_path / "small.json")
    with pytest.raises(PbrlError, match=r"small.json: IDs for 5 items, but .* has 6"):
        RecAlignData(log=str(folder), ids=str(tmp_path / "small.json"), out=str(out), overwrite=True).run()
    assert (out / "sft.jsonl").read_bytes() == before  # a refused run leaves the old data whole
    RecAlignData(log=str(folder), ids=str(tmp_path / "ids"), out=str(out), overwrite=True, tokenizer=False,
                 tasks=("seqrec",), max_history=3).run()
    assert not (out / "tokenizer").exists() and len(read_chats(out / "sft.jsonl")) == 5
