"""The verifiable chat task suite: reference answers, hand-computed partial credit, splits, corpus, preference pairs."""

import json

import numpy as np
import pytest

from pbrl.data.teachers import TeacherConfig
from pbrl.errors import PbrlError
from pbrl.llm.prefs_data import load_preferences
from pbrl_envs import chat


@pytest.fixture(scope="module")
def train_tasks():
    return chat.make_tasks(350, seed=0)


def test_there_are_at_least_six_families_and_each_has_its_turn(train_tasks):
    assert len(chat.FAMILIES) >= 6
    assert {t.family for t in train_tasks} == set(chat.FAMILIES)


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_every_reference_answer_scores_one(split):
    for t in chat.make_tasks(140, seed=3, split=split):
        assert chat.score(t, t.answer) == 1.0, (t.family, t.prompt, t.answer)
        assert len(chat.part_credits(t, t.answer)) == len(t.parts) >= 2
        assert t.messages == [{"role": "user", "content": t.prompt}]
        assert chat.make_task(t.seed, t.family) == t  # the seed rebuilds the task


@pytest.mark.parametrize(
    "family, args, response, expected",
    [
        # sort [7, 3, 5] ascending: parts = 3 positions + "exactly 3 items"
        ("sort", ("asc", ("7", "3", "5")), "3 5 7", 1.0),
        ("sort", ("asc", ("7", "3", "5")), "3 7 5", 2 / 4),
        ("sort", ("asc", ("7", "3", "5")), "3 5", 2 / 4),
        ("sort", ("desc", ("7", "3", "5")), "7 5 3 1", 3 / 4),
        ("sort", ("alpha", ("fox", "cat", "hat")), "cat fox hat", 1.0),
        # keep evens of [3, 8, 5, 2]: keeps 8, keeps 2, drops the others, exact list
        ("filter", (("even",), ("3", "8", "5", "2")), "8 2", 1.0),
        ("filter", (("even",), ("3", "8", "5", "2")), "8 5 2", 2 / 4),
        ("filter", (("even",), ("3", "8", "5", "2")), "8", 2 / 4),
        ("filter", (("even",), ("3", "8", "5", "2")), "2 8", 3 / 4),
        ("filter", (("letter", "b"), ("bee", "cat", "box")), "bee box", 1.0),
        # count the evens of [3, 8, 5, 2] = 2: "one number", "count is 2"
        ("count", (("even",), ("3", "8", "5", "2")), "2", 1.0),
        ("count", (("even",), ("3", "8", "5", "2")), "2 items", 0.5),
        ("count", (("even",), ("3", "8", "5", "2")), "3", 0.5),
        ("count", (("greater", "4"), ("3", "8", "5", "2")), "2", 1.0),
        ("count", (("even",), ("3", "8", "5", "2")), "two", 0.0),
        ("transform", ("add1", ("4", "9")), "5 10", 1.0),
        ("transform", ("add1", ("4", "9")), "5 9", 2 / 3),
        ("transform", ("upper", ("cat", "dog")), "CAT DOG", 1.0),
        ("transform", ("reverse", ("cat", "dog", "hen")), "hen dog cat", 1.0),
        ("arithmetic", (7, "+", 12), "19", 1.0),
        ("arithmetic", (7, "+", 12), "18", 0.5),
        ("arithmetic", (9, "*", 12), "the answer is 108", 0.5),
        ("arithmetic", (30, "-", 12), "18", 1.0),
        # comma list [red, fox]: 2 positions + layout
        ("format", ("comma", ("red", "fox")), "red, fox", 1.0),
        ("format", ("comma", ("red", "fox")), "red fox", 2 / 3),
        ("format", ("comma", ("red", "fox")), "fox, red", 1 / 3),
        ("format", ("comma", ("red", "fox")), "1. red\n2. fox", 2 / 3),
        ("format", ("numbered", ("red", "fox")), "1. red\n2. fox", 1.0),
        ("format", ("numbered", ("red", "fox")), "", 0.0),
        # constraints: animal, color, ends with a number (one part each)
        ("constrained", ((("animal",), ("color",), ("ends_number",)), ("red", "fox", "sees", 7)),
         "the red fox sees it 7", 1.0),
        ("constrained", ((("animal",), ("color",), ("ends_number",)), ("red", "fox", "sees", 7)),
         "the red thing sees it", 1 / 3),
        ("constrained", ((("animal",), ("color",), ("ends_number",)), ("red", "fox", "sees", 7)),
         "my dog 3", 2 / 3),
        ("constrained", ((("mentions", "cup"), ("starts", "look"), ("words", 7)), ("red", "fox", "sees", 7)),
         "look at the cup", 1.0),
        ("constrained", ((("mentions", "cup"), ("starts", "look"), ("words", 7)), ("red", "fox", "sees", 7)),
         "look cup", 2 / 3),
        ("constrained", ((("mentions", "cup"), ("starts", "look"), ("words", 7)), ("red", "fox", "sees", 7)),
         "a b c d e f g h", 0.0),
    ],
)
def test_hand_computed_scores(family, args, response, expected):
    task = chat.build_task(family, args)
    assert chat.score(task, task.answer) == 1.0
    assert chat.score(task, response) == pytest.approx(expected, abs=1e-12)


def test_reference_answers_of_hand_built_tasks():
    assert chat.build_task("sort", ("desc", ("7", "13", "5"))).answer == "13 7 5"
    assert chat.build_task("filter", (("odd",), ("3", "8", "5"))).answer == "3 5"
    assert chat.build_task("count", (("letter", "c"), ("cat", "cup", "dog"))).answer == "2"
    assert chat.build_task("arithmetic", (6, "*", 7)).answer == "42"
    assert chat.build_task("format", ("numbered", ("red", "fox"))).answer == "1. red\n2. fox"
    t = chat.build_task("constrained", ((("color",), ("ends_number",), ("starts", "my")), ("blue", "owl", "likes", 4)))
    assert t.answer == "my blue thing likes it 4"
    assert t.parts == ("names a color", "ends with a number", "starts with the word my")


def test_corrupted_answers_score_below_one_and_lower_on_average(train_tasks):
    rng = np.random.default_rng(0)
    means = []
    for level in chat.LEVELS:
        scores = [chat.score(t, chat.corrupt(t, rng, level)) for t in train_tasks]
        if level > 0:
            assert max(scores) < 1.0
        means.append(np.mean(scores))
    assert means[0] == 1.0
    assert all(a > b for a, b in zip(means, means[1:])), means  # graded quality
    # multi-part families hand out partial credit strictly between 0 and 1 for some corruptions
    partial = {t.family for t in train_tasks if 0 < chat.score(t, chat.corrupt(t, rng, 0.25)) < 1}
    assert {"sort", "filter", "transform", "format", "constrained"} <= partial


def test_the_same_seed_gives_the_same_tasks_corpus_and_pairs():
    assert chat.make_tasks(30, seed=5) == chat.make_tasks(30, seed=5)
    assert chat.make_tasks(30, seed=5) != chat.make_tasks(30, seed=6)
    assert chat.corpus(40, seed=2) == chat.corpus(40, seed=2)
    tasks = chat.make_tasks(30, seed=5)
    assert chat.preference_pairs(tasks, seed=1) == chat.preference_pairs(tasks, seed=1)
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    assert [chat.corrupt(t, rng_a, 0.5) for t in tasks] == [chat.corrupt(t, rng_b, 0.5) for t in tasks]


def test_train_and_heldout_never_share_a_key():
    train = chat.make_tasks(700, seed=0)
    held = chat.make_tasks(200, seed=1, split="heldout")
    assert len({t.key for t in train}) == 700 and len({t.key for t in held}) == 200  # unique within a split
    assert not {(t.family, t.args) for t in train} & {(t.family, t.args) for t in held}
    assert not {t.prompt for t in train} & {t.prompt for t in held}
    assert all(chat.split_of(*t.key) == "train" for t in train)
    assert all(chat.split_of(*t.key) == "heldout" for t in held)
    assert {t.family for t in held} == set(chat.FAMILIES)
    # the pre-training corpus is drawn from the train split: no held-out prompt appears in it
    docs = chat.corpus(3000, seed=0)
    first_lines = {d.split("\n", 1)[0] for d in docs}
    assert not {t.prompt for t in held} & first_lines
    assert len({t.prompt for t in train} & first_lines) > 20  # the check can fail: train prompts do appear


def test_the_corpus_renders_prompts_and_reference_answers_as_plain_text():
    docs = chat.corpus(50, seed=4, task_fraction=1.0)
    assert len(docs) == 50
    tasks = chat.make_tasks(50, seed=5, unique=False)
    assert docs == [f"{t.prompt}\n{t.answer}" for t in tasks]
    assert all("<" not in d for d in docs)  # no chat markup in the pre-training text


def test_the_exact_teacher_prefers_the_higher_score_and_drops_ties(train_tasks):
    rows, counts = chat.preference_pairs(train_tasks, seed=0, return_counts=True)
    assert counts["pairs"] == len(rows) and counts["pairs"] + counts["ties"] + counts["skipped"] == len(train_tasks)
    assert counts["ties"] > 0 and counts["skipped"] == 0
    assert all(r["score_chosen"] > r["score_rejected"] for r in rows)
    by_prompt = {t.prompt: t for t in train_tasks}
    for r in rows:  # the recorded scores are the scorer's
        task = by_prompt[r["prompt"][0]["content"]]
        assert chat.score(task, r["chosen"]) == r["score_chosen"]
        assert chat.score(task, r["rejected"]) == r["score_rejected"]


def test_the_labels_come_from_the_teacher(train_tasks):
    # a teacher that always errs (mistake probability 1) prefers the lower score every time
    rows = chat.preference_pairs(train_tasks, seed=0, teacher=TeacherConfig(name="mistake", epsilon=1.0))
    assert rows and all(r["score_chosen"] < r["score_rejected"] for r in rows)
    # skip: queries whose better response scores below the threshold are dropped and counted
    _, counts = chat.preference_pairs(train_tasks, seed=0, teacher=TeacherConfig(name="skip", skip_threshold=1.0),
                                      return_counts=True)
    assert counts["skipped"] > 0 and counts["pairs"] + counts["ties"] + counts["skipped"] == len(train_tasks)
    # a stochastic teacher sometimes picks the worse response
    rows = chat.preference_pairs(train_tasks, seed=0, teacher=TeacherConfig(name="stochastic", beta=1.0))
    wrong = np.mean([r["score_chosen"] < r["score_rejected"] for r in rows])
    assert 0.05 < wrong < 0.5


def test_pairs_jsonl_loads_back_with_prefs_data(tmp_path, train_tasks):
    path = tmp_path / "pairs.jsonl"
    counts = chat.write_pairs_jsonl(path, train_tasks[:60], seed=2)
    records = load_preferences(path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == len(rows) == counts["pairs"] > 0
    assert set(rows[0]) == {"prompt", "chosen", "rejected", "score_chosen", "score_rejected"}
    assert records[0].prompt == rows[0]["prompt"] and records[0].prompt[0]["role"] == "user"
    assert records[0].chosen == rows[0]["chosen"] and isinstance(records[0].rejected, str)
    with pytest.raises(PbrlError, match="exists"):
        chat.write_pairs_jsonl(path, train_tasks[:60], seed=2)
    chat.write_pairs_jsonl(path, train_tasks[:10], seed=2, overwrite=True, conversational=False)
    assert all(isinstance(r.prompt, str) for r in load_preferences(path))


def test_bad_arguments_raise_one_line_errors():
    task = chat.make_task(0)
    with pytest.raises(PbrlError, match="level"):
        chat.corrupt(task, np.random.default_rng(0), 1.5)
    with pytest.raises(PbrlError, match="split"):
        chat.make_tasks(3, split="test")
    with pytest.raises(PbrlError, match="family"):
        chat.make_tasks(3, families=["poetry"])
    with pytest.raises(PbrlError, match="levels"):
        chat.preference_pairs([task], levels=(0.5, 0.5))


def test_chat_data_command_writes_every_file_and_refuses_an_existing_folder(tmp_path):
    import json

    from pbrl.cli import main
    from pbrl_envs.chat import make_task, score

    out = tmp_path / "chat"
    assert main(["llm", "chat-data", str(out), "--corpus-docs", "50", "--train-tasks", "40",
                 "--heldout-tasks", "10"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "corpus.jsonl", "heldout.jsonl", "prefs.jsonl",
                                                     "prompts.jsonl", "sft.jsonl"]
    read = lambda name: [json.loads(x) for x in (out / name).read_text().splitlines()]  # noqa: E731
    assert len(read("corpus.jsonl")) == 50 and all(r["text"] for r in read("corpus.jsonl"))
    for row in read("sft.jsonl"):  # the assistant turn is the reference answer: full marks
        assert score(make_task(row["seed"], row["family"]), row["messages"][-1]["content"]) == 1.0
    for row in read("heldout.jsonl"):  # a held-out prompt is rebuilt from its seed
        assert make_task(row["seed"], row["family"]).prompt == row["prompt"]
    from pbrl_envs.chat import judge

    sft = read("sft.jsonl")
    for row, conv in zip(read("prompts.jsonl"), sft):  # the online-DPO judge scores a train prompt's response
        assert judge(row, conv["messages"][-1]["content"]) == 1.0 and judge(row, "") < 1.0
    card = json.loads((out / "card.json").read_text())
    assert card["prefs_pairs"] == len(read("prefs.jsonl")) and card["train_tasks"] == 40
    assert main(["llm", "chat-data", str(out)]) == 2  # no silent overwrite
    assert [p.name for p in tmp_path.iterdir()] == ["chat"]  # nothing left behind
