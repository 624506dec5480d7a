"""Last.fm importer: the real lastfm-2k files when present (read in place, never copied), and tiny files
written here for the parser and every malformed-input error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.data import DatasetError, load_dataset
from recsys.data.lastfm import load_lastfm

LASTFM = Path("/work/shared/data/lastfm-2k")
needs_lastfm = pytest.mark.skipif(not (LASTFM / "user_artists.dat").exists(), reason="Last.fm 2k not available")

ARTISTS = ("id\tname\turl\tpictureURL\n"
           "1\tMALICE\thttp://a/1\thttp://p/1.jpg\n"
           '2\t"Weird" Al\thttp://a/2\t\n'
           "3\tRoyce da 5'9\"\thttp://a/3\thttp://p/3.jpg\n"
           "4\tNobody Plays Me\thttp://a/4\t\n")
PLAYS = "userID\tartistID\tweight\r\n2\t1\t100\r\n2\t2\t3\r\n7\t2\t1\r\n7\t3\t352698\r\n"
FRIENDS = "2\t7\r\n7\t2\r\n"  # no header, as in the shared copy


def _write(root: Path, **files: str) -> Path:
    """A lastfm folder; a keyword replaces one file (user_friends=None leaves it out)."""
    content = {"artists": ARTISTS, "user_artists": PLAYS, "user_friends": FRIENDS} | files
    root.mkdir(parents=True, exist_ok=True)
    for name, text in content.items():
        if text is not None:
            (root / f"{name}.dat").write_bytes(text.encode("utf-8"))
    return root


@needs_lastfm
def test_real_lastfm_2k():
    ds = load_lastfm(LASTFM)
    inter = ds.interactions
    assert len(inter) == 92_834
    assert inter["user_id"].nunique() == 1892 and inter["item_id"].nunique() == 17_632
    assert set(inter["event"]) == {"play"} and inter["timestamp"].isna().all()
    assert inter["value"].min() == 1 and inter["value"].max() == 352_698 and inter["value"].median() == 260
    np.testing.assert_allclose(ds.weights(), np.log1p(inter["value"].to_numpy()))
    assert len(ds.items) == 17_632 and all(len(c) == 0 for c in ds.items["categories"])
    titles = set(ds.items["title"])
    assert '"Weird Al" Yankovic' in titles and "Royce da 5'9\"" in titles  # quotes are part of names
    assert ds.users is None
    assert len(ds.social) == 25_434 and list(ds.social.columns) == ["user_id", "friend_id"]
    links = set(zip(ds.social["user_id"], ds.social["friend_id"], strict=True))
    assert all((b, a) in links for a, b in links)  # the friend graph is stored in both directions
    assert set(ds.social["user_id"]) <= set(inter["user_id"])

    cleaned = load_dataset(f"lastfm:{LASTFM}")
    assert len(cleaned.interactions) == 92_834 and (cleaned.interactions["timestamp"] == 0).all()
    assert any(n.startswith("no interaction has a timestamp: set all 92834 to 0") for n in cleaned.notes)
    assert cleaned.social is ds.social or cleaned.social.equals(ds.social)


def test_parses_tiny_files(tmp_path):
    ds = load_lastfm(_write(tmp_path / "lastfm"))
    inter = ds.interactions
    assert inter[["user_id", "item_id"]].values.tolist() == [["2", "1"], ["2", "2"], ["7", "2"], ["7", "3"]]
    assert inter["value"].tolist() == [100.0, 3.0, 1.0, 352_698.0] and set(inter["event"]) == {"play"}
    assert inter["timestamp"].isna().all()
    assert ds.items["title"].tolist() == ["MALICE", '"Weird" Al', "Royce da 5'9\"", "Nobody Plays Me"]
    assert ds.items["item_id"].tolist() == ["1", "2", "3", "4"]  # unplayed artists stay in the catalog
    assert ds.social.values.tolist() == [["2", "7"], ["7", "2"]]
    assert ds.name == "lastfm"


def test_friends_header_either_way_and_optional(tmp_path):
    with_header = load_lastfm(_write(tmp_path / "a", user_friends="userID\tfriendID\r\n" + FRIENDS))
    assert with_header.social.values.tolist() == [["2", "7"], ["7", "2"]]
    assert load_lastfm(_write(tmp_path / "b", user_friends=None)).social is None


def test_spec_and_cleaning(tmp_path):
    root = _write(tmp_path / "hetrec2011-lastfm-2k")
    ds = load_dataset(f"lastfm:{tmp_path}")  # the archive's parent folder works too
    assert ds.name == "hetrec2011-lastfm-2k" and (ds.interactions["timestamp"] == 0).all()
    assert ds.social is not None and len(ds.social) == 2
    assert load_dataset(f"lastfm:{root}", clean_data=False).interactions["timestamp"].isna().all()
    with pytest.raises(ValueError, match="needs a path"):
        load_dataset("lastfm:")
    with pytest.raises(DatasetError, match="not a directory"):
        load_dataset(f"lastfm:{tmp_path / 'missing'}")


@pytest.mark.parametrize(("files", "where", "message"), [
    ({"user_artists": PLAYS + "7\t4\r\n"}, "user_artists.dat:6", "expected 3 fields"),
    ({"user_artists": PLAYS.replace("\t3\r\n", "\tmany\r\n")}, "user_artists.dat:3 (column 'weight')",
     "not a finite number: 'many'"),
    ({"user_artists": PLAYS + "7\t99\t5\r\n"}, "user_artists.dat:6 (column 'artistID')",
     "unknown artist id '99' (not in artists.dat)"),
    ({"user_artists": PLAYS + "7\t4\t0\r\n"}, "user_artists.dat:6 (column 'weight')", "must be positive"),
    ({"user_artists": PLAYS + "2\t1\t5\r\n"}, "user_artists.dat:6 (column 'artistID')",
     "duplicate user-artist pair '2' -> '1' (first on line 2)"),
    ({"user_artists": PLAYS.replace("weight", "plays")}, "user_artists.dat:1", "missing required column 'weight'"),
    ({"artists": ARTISTS + "2\tAgain\thttp://a\t\n"}, "artists.dat:6 (column 'id')", "duplicate id '2'"),
    ({"artists": ARTISTS + "5\tShort\n"}, "artists.dat:6", "expected 4 fields"),
    ({"user_friends": FRIENDS + "2\t8\r\n"}, "user_friends.dat:3 (column 'friendID')",
     "unknown user id '8' (no plays in user_artists.dat)"),
    ({"user_friends": FRIENDS + "2\t2\r\n"}, "user_friends.dat:3 (column 'friendID')", "lists themself"),
    ({"user_friends": FRIENDS + "2\t7\r\n"}, "user_friends.dat:3 (column 'friendID')", "first on line 1"),
    ({"user_friends": "userID\tfriendID\n2\n"}, "user_friends.dat:2", "expected 2 fields"),
    ({"user_artists": None}, "user_artists.dat", "file not found"),
])
def test_bad_input_names_file_and_line(tmp_path, files, where, message):
    with pytest.raises(DatasetError) as err:
        load_lastfm(_write(tmp_path / "lastfm", **files))
    assert where in str(err.value) and message in str(err.value)
