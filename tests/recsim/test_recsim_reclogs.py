"""MovieLens-1M and Amazon 5-core loaders, on small files written here in those exact formats."""

import gzip
import json

import numpy as np
import pytest

from pbrl.data import load_dataset
from pbrl.errors import PbrlError
from pbrl.rec.logs import history_ids, load_amazon, load_movielens

# user 1: 3 ratings within minutes, then one 2 days later (2 sessions); user 2: 2 ratings. Lines shuffled on purpose.
RATINGS = """\
1::1193::5::978300760
2::1357::5::978298709
1::661::3::978302109
1::3408::4::978300275
2::3068::4::978299000
1::2355::5::978473109
"""
MOVIES = """\
661::James and the Giant Peach (1996)::Animation|Children's|Musical
1193::One Flew Over the Cuckoo's Nest (1975)::Drama
1357::Shine (1996)::Drama|Romance
2355::Bug's Life, A (1998)::Animation|Children's|Comedy
3068::Verdict, The (1982)::Drama
3408::Erin Brockovich (2000)::Drama
"""


@pytest.fixture
def movielens(tmp_path):
    (tmp_path / "ratings.dat").write_text(RATINGS, encoding="latin-1")
    (tmp_path / "movies.dat").write_text(MOVIES, encoding="latin-1")
    return str(tmp_path / "ratings.dat")


def test_movielens_sessions_actions_rewards(movielens):
    ds = load_dataset(f"movielens:{movielens}")
    items = ds.metadata["items"]
    assert items["id"] == ["661", "1193", "1357", "2355", "3068", "3408"]  # dense index = sorted original id
    ids = [items["id"][a] for a in ds.actions]
    # user 1 time-ordered: 3408 (..275), 1193 (..760), 661 (..2109) | 2355 two days later; then user 2
    assert ids == ["3408", "1193", "661", "2355", "1357", "3068"]
    np.testing.assert_array_equal(ds.rewards, [4, 5, 3, 5, 5, 4])
    np.testing.assert_array_equal(ds.episode_starts, [0, 3, 4, 6])
    assert ds.metadata["session_user"] == ["1", "1", "2"]
    np.testing.assert_array_equal(ds.terminations, [0, 0, 1, 0, 0, 0])  # user 1 left after session 1
    np.testing.assert_array_equal(ds.truncations, [0, 0, 0, 1, 0, 1])  # the log ends the last sessions
    assert items["title"][0] == "James and the Giant Peach (1996)"
    assert items["category"][0] == "Animation, Children's, Musical"
    assert ds.action_space.n == 6 and ds.observation_space.contains(ds.observations_all[0])


def test_movielens_observation_is_the_users_recent_history(movielens):
    ds = load_movielens(movielens, history_len=2)
    n = 6
    obs = ds.observations  # [N, 2k+1]
    # user 1's 4th rating (session 2, step 0) sees 661 then 1193 (most recent first), rated 3 and 5
    np.testing.assert_array_equal(history_ids(obs[3], n, 2), [0, 1])
    np.testing.assert_allclose(obs[3, 2:4], [3 / 5, 5 / 5])
    assert obs[3, 4] == 0.0  # step 0 of its session
    np.testing.assert_array_equal(history_ids(obs[0], n, 2), [-1, -1])  # a user's first rating: no history
    np.testing.assert_array_equal(history_ids(obs[4], n, 2), [-1, -1])  # user 2 does not see user 1's items
    # the final observation of session 1 holds its last two items; next_observations line up with observations
    np.testing.assert_array_equal(history_ids(ds.next_observations[2], n, 2), [0, 1])
    np.testing.assert_array_equal(ds.next_observations[0], ds.observations[1])


def test_movielens_session_gap_is_configurable(movielens):
    assert load_movielens(movielens, session_gap=None).num_episodes == 2  # one per user
    assert load_movielens(movielens, session_gap=600).num_episodes == 4  # 3408 -> 1193 is 485 s, 1193 -> 661 1349 s


def test_movielens_without_movies_file_keeps_ids(tmp_path):
    (tmp_path / "ratings.dat").write_text(RATINGS)
    ds = load_movielens(str(tmp_path / "ratings.dat"))
    assert "title" not in ds.metadata["items"] and len(ds.metadata["items"]["id"]) == 6


def test_movielens_bad_line_names_file_and_line(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n1::661::x::978302109\n")
    with pytest.raises(PbrlError, match=r"ratings.dat:2: expected 'UserID::MovieID::Rating::Timestamp'"):
        load_dataset(f"movielens:{tmp_path / 'ratings.dat'}")
    with pytest.raises(PbrlError, match="not found"):
        load_dataset(f"movielens:{tmp_path / 'missing.dat'}")


REVIEWS = [
    {"reviewerID": "A2", "asin": "B001", "reviewerName": "x", "helpful": [0, 0], "reviewText": "ok",
     "overall": 4.0, "summary": "fine", "unixReviewTime": 1400000000, "reviewTime": "05 13, 2014"},
    {"reviewerID": "A1", "asin": "B002", "overall": 5.0, "unixReviewTime": 1300000000},
    {"reviewerID": "A1", "asin": "B001", "overall": 2.0, "unixReviewTime": 1200000000},
    {"reviewerID": "A2", "asin": "B003", "overall": 3.0, "unixReviewTime": 1390000000},
    {"reviewerID": "A1", "asin": "B003", "overall": 1.0, "unixReviewTime": 1300000000},
]


def _write_amazon(folder, name, rows, gz=False, loose_line=None):
    lines = [json.dumps(r) for r in rows]
    if loose_line is not None:
        lines.append(loose_line)
    text = "\n".join(lines) + "\n"
    path = folder / name
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return str(path)


def test_amazon_sessions_one_per_user_by_default(tmp_path):
    path = _write_amazon(tmp_path, "reviews_Beauty_5.json", REVIEWS)
    ds = load_dataset(f"amazon:{path}")
    ids = [ds.metadata["items"]["id"][a] for a in ds.actions]
    # A1 by time (the 2 reviews at 1300000000 keep file order), then A2
    assert ids == ["B001", "B002", "B003", "B003", "B001"]
    np.testing.assert_array_equal(ds.rewards, [2, 5, 1, 3, 4])
    np.testing.assert_array_equal(ds.episode_starts, [0, 3, 5])
    assert ds.metadata["session_user"] == ["A1", "A2"] and ds.truncations.sum() == 2
    assert load_amazon(path, session_gap=86400 * 30).num_episodes == 4  # A1's first review is years earlier


def test_amazon_gzip_loose_records_readable_dates_and_metadata(tmp_path):
    loose = "{'reviewerID': 'A3', 'asin': 'B002', 'overall': 5.0, 'reviewTime': '01 02, 2015'}"
    path = _write_amazon(tmp_path, "Beauty_5.json.gz", REVIEWS, gz=True, loose_line=loose)
    meta = [{"asin": "B001", "title": "Soap", "categories": [["Beauty", "Bath"]]},
            {"asin": "B003", "title": "Brush", "category": ["Beauty", "Tools"]},
            {"asin": "B999", "title": "unused"}]
    _write_amazon(tmp_path, "meta_Beauty.json", meta)
    ds = load_amazon(path)
    items = ds.metadata["items"]
    assert items["id"] == ["B001", "B002", "B003"]
    assert items["title"] == ["Soap", "", "Brush"] and items["category"] == ["Beauty, Bath", "", "Beauty, Tools"]
    assert items["text"][0] == "Soap (Beauty, Bath)"
    assert ds.metadata["session_user"] == ["A1", "A2", "A3"]


def test_amazon_bad_record_names_the_line(tmp_path):
    rows = REVIEWS[:2] + [{"reviewerID": "A9", "overall": 3.0, "unixReviewTime": 1}]
    path = _write_amazon(tmp_path, "x_5.json", rows)
    with pytest.raises(PbrlError, match=r"x_5.json:3: .*missing field 'asin'"):
        load_amazon(path)
    empty = tmp_path / "empty_5.json"
    empty.write_text("\n")
    with pytest.raises(PbrlError, match="no interactions"):
        load_amazon(str(empty))


def test_log_datasets_round_trip_through_minari(movielens):
    ds = load_movielens(movielens)
    ds.to_minari("pbrl/movielens/tiny-v0")
    back = load_dataset("pbrl/movielens/tiny-v0")
    np.testing.assert_array_equal(back.actions, ds.actions)
    np.testing.assert_array_equal(back.observations_all, ds.observations_all)
    assert back.metadata["items"] == ds.metadata["items"]
