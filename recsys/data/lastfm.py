"""Last.fm (HetRec 2011 "lastfm-2k") importer into the canonical Dataset.

The data is implicit and timeless: each user's top artists with a play count, an artist list and a friend
graph. So interactions are "play" events whose value is the play count (Dataset.weights() takes its log1p),
timestamps are missing (cleaning sets them to 0 and notes it; temporal splits and the sequence source
refuse such data), items have a title but no categories (none exist; none are invented) and the friend
graph becomes Dataset.social. Every malformed row is a DatasetError naming the file and physical line.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.canonical import Table, read_table, unique_ids
from recsys.data.schema import INTERACTION_COLUMNS, SOCIAL_COLUMNS, Dataset, DatasetError

ARTISTS_FILE = "artists.dat"
PLAYS_FILE = "user_artists.dat"
FRIENDS_FILE = "user_friends.dat"
FRIENDS_HEADER = ["userID", "friendID"]
_NONE = csv.QUOTE_NONE  # artist names contain quote characters that are part of the name


def _root(path: str | Path) -> Path:
    """The folder with the .dat files; its parent holding hetrec2011-lastfm-2k/ (the archive's name) works too."""
    root = Path(path)
    if not (root / PLAYS_FILE).exists():
        inner = [d for d in (root / "hetrec2011-lastfm-2k", root / "lastfm-2k") if (d / PLAYS_FILE).exists()]
        root = inner[0] if inner else root
    if not root.is_dir():
        raise DatasetError(str(root), f"not a directory (expected the Last.fm folder with {PLAYS_FILE})")
    return root


def _no_repeats(t: Table, a: pd.Series, b: pd.Series, column: str, what: str) -> None:
    """Raise on a repeated (a, b) pair, naming the line of its first occurrence: a repeat would count twice."""
    key = a + "\t" + b

    def message(r: int) -> str:
        first = int(np.flatnonzero((key == key.iloc[r]).to_numpy())[0])
        return f"duplicate {what} {a.iloc[r]!r} -> {b.iloc[r]!r} (first on line {t.line(first)})"

    t.first_bad(key.duplicated().to_numpy(), column, message)


def _artists(root: Path) -> pd.DataFrame:
    t = read_table(root / ARTISTS_FILE, sep="\t", quoting=_NONE)
    t.require(["id", "name"])
    ids = unique_ids(t, "id")
    n = len(ids)
    items = pd.DataFrame({
        "item_id": ids.to_numpy(), "title": t.strings("name").to_numpy(),
        "categories": pd.Series([[] for _ in range(n)], dtype=object).to_numpy(),
    })
    items["item_id"] = items["item_id"].astype("str")
    items["title"] = items["title"].astype("str")
    return items


def _plays(root: Path, artist_ids: pd.Series) -> pd.DataFrame:
    t = read_table(root / PLAYS_FILE, sep="\t", quoting=_NONE, dtype={"weight": "float64"})
    t.require(["userID", "artistID", "weight"])
    users, artists = t.ids("userID"), t.ids("artistID")
    plays = t.numbers("weight", allow_empty=False)
    t.first_bad(plays <= 0, "weight", lambda r: f"play count must be positive, got {t.strings('weight').iloc[r]!r}")
    unknown = ~artists.isin(artist_ids).to_numpy()
    t.first_bad(unknown, "artistID", lambda r: f"unknown artist id {artists.iloc[r]!r} (not in {ARTISTS_FILE})")
    _no_repeats(t, users, artists, "artistID", "user-artist pair")
    stamps = pd.array([pd.NA] * len(users), dtype="Int64")  # no time in this data: missing, not made up
    df = pd.DataFrame({
        "user_id": users.to_numpy(), "item_id": artists.to_numpy(), "timestamp": stamps,
        "event": "play", "value": plays.astype(np.float64),
    })
    for c in ("user_id", "item_id", "event"):
        df[c] = df[c].astype("str")
    return df[INTERACTION_COLUMNS]


def _has_header(path: Path) -> bool:
    """The README says user_friends.dat has a header; some copies have none. A first line of ids is data."""
    try:
        with path.open("rb") as f:
            for raw in f:
                if raw.strip():
                    fields = raw.decode("utf-8", errors="replace").strip().split("\t")
                    return [x.strip().lower() for x in fields] == [h.lower() for h in FRIENDS_HEADER]
    except OSError:
        return True  # read_table reports the problem with the file's name
    return True


def _friends(root: Path, user_ids: pd.Series) -> pd.DataFrame | None:
    path = root / FRIENDS_FILE
    if not path.exists():
        return None
    t = read_table(path, sep="\t", quoting=_NONE, names=None if _has_header(path) else FRIENDS_HEADER)
    t.require(FRIENDS_HEADER)
    users, friends = t.ids("userID"), t.ids("friendID")
    known = set(user_ids.tolist())
    for col, s in (("userID", users), ("friendID", friends)):
        t.first_bad(~s.isin(known).to_numpy(), col, lambda r, s=s: f"unknown user id {s.iloc[r]!r} "
                                                                  f"(no plays in {PLAYS_FILE})")
    t.first_bad((users == friends).to_numpy(), "friendID", lambda r: f"user {users.iloc[r]!r} lists themself")
    _no_repeats(t, users, friends, "friendID", "friend link")
    social = pd.DataFrame({"user_id": users.to_numpy(), "friend_id": friends.to_numpy()}).astype("str")
    return social[SOCIAL_COLUMNS]


def load_lastfm(path: str | Path) -> Dataset:
    """Last.fm lastfm-2k: user_artists.dat play counts, artists.dat names, user_friends.dat (optional)."""
    root = _root(path)
    items = _artists(root)
    interactions = _plays(root, items["item_id"])
    social = _friends(root, interactions["user_id"].drop_duplicates())
    name = root.resolve().name
    return Dataset(interactions=interactions, items=items, name=name if "lastfm" in name else f"lastfm-{name}",
                   social=social)
