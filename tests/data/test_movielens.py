"""MovieLens importers: the real 100K files when present, and small malformed fixtures."""

from pathlib import Path

import numpy as np
import pytest

from recsys.data import DatasetError, load_dataset, load_movielens_100k, load_movielens_latest

ML100K = Path("/work/shared/data/ml-100k")
needs_ml100k = pytest.mark.skipif(not (ML100K / "u.data").exists(), reason="MovieLens 100K not available")

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
          "War", "Western"]


def _flags(*names: str) -> str:
    return "|".join("1" if g in names else "0" for g in GENRES)


def _write_ml100k(root: Path, **overrides: str | bytes) -> Path:
    files = {
        "u.data": "1\t10\t4\t881250949\n2\t10\t5\t881250950\n1\t20\t3\t881250951\n",
        "u.genre": "".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n",
        "u.item": (f"10|Caf\xe9 (1995)|01-Jan-1995||http://x|{_flags('Comedy', 'Drama')}\n"
                   f"20|unknown||||{_flags('unknown')}\n"
                   f"30|Mixed (1990)|01-Jan-1990|||{_flags('unknown', 'Drama')}\n").encode("latin-1"),
        "u.user": "\n1|24|M|technician|85711\n2|61|F|other|T8H1N\n",
    }
    files.update(overrides)
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_bytes(text if isinstance(text, bytes) else text.encode("latin-1"))
    return root


@needs_ml100k
def test_real_movielens_100k():
    ds = load_movielens_100k(ML100K)
    inter = ds.interactions
    assert len(inter) == 100_000
    assert inter["user_id"].nunique() == 943 and inter["item_id"].nunique() == 1682
    assert set(inter["event"]) == {"rating"} and set(inter["value"]) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert inter["timestamp"].dtype == np.int64 and inter["timestamp"].min() > 8e8
    items = ds.items.set_index("item_id")
    assert len(items) == 1682 and len(ds.users) == 943
    assert items.loc["1", "title"] == "Toy Story (1995)"
    assert items.loc["1", "categories"] == ["Animation", "Children's", "Comedy"]
    assert items.loc["543", "title"] == "Misérables, Les (1995)"  # latin-1 decoded
    assert items.loc["267", "categories"] == ["unknown"] and np.isnan(items.loc["267", "year"])
    assert items.loc["1373", "categories"] == ["unknown"]  # no real item has "unknown" plus a genre
    assert items.loc["1", "year"] == 1995
    all_genres = {g for cats in items["categories"] for g in cats}
    assert all_genres == set(GENRES)
    users = ds.users.set_index("user_id")
    assert users.loc["1"].to_dict() == {"age_bucket": "18-24", "gender": "M", "occupation": "technician",
                                        "zip_prefix": "8"}
    assert set(users["gender"]) == {"M", "F"}

    cleaned = load_dataset(f"movielens-100k:{ML100K}")
    assert len(cleaned.interactions) == 100_000
    assert cleaned.items["year"].notna().all() and cleaned.items["year_missing"].sum() == 1
    assert "dropped 0 ratings without a value and 0 outside [0.5, 5]" in cleaned.notes


def test_ml100k_fixture(tmp_path):
    ds = load_movielens_100k(_write_ml100k(tmp_path / "ml"))
    assert ds.interactions["value"].tolist() == [4.0, 5.0, 3.0]
    items = ds.items.set_index("item_id")
    assert items.loc["10", "title"] == "Café (1995)" and items.loc["10", "categories"] == ["Comedy", "Drama"]
    assert items.loc["20", "categories"] == ["unknown"] and np.isnan(items.loc["20", "year"])
    assert items.loc["30", "categories"] == ["Drama"]  # "unknown" dropped next to a real genre
    assert ds.users.set_index("user_id").loc["2", "zip_prefix"] == "T"
    assert ds.users.set_index("user_id").loc["2", "age_bucket"] == "55-64"
    # the parent of the unzipped folder works too
    (tmp_path / "parent").mkdir()
    _write_ml100k(tmp_path / "parent" / "ml-100k")
    assert len(load_movielens_100k(tmp_path / "parent").interactions) == 3


@pytest.mark.parametrize(("name", "content", "line", "column"), [
    ("u.data", "1\t10\t4\t881250949\n1\t10\tfive\t881250949\n", 2, "rating"),
    ("u.data", "1\t10\t4\t881250949\n\n1\t10\t4\n", 3, None),
    ("u.data", "1\t10\t4\t881250949\n1\t10\t4\tsoon\n", 2, "timestamp"),
    ("u.user", "\n1|24|M|technician|85711\n2|old|F|other|1\n", 3, "age"),
    ("u.item", f"10|A|01-Jan-1995||u|{_flags('Drama')}\n20|B|someday||u|{_flags('Drama')}\n", 2, "release_date"),
    ("u.item", f"10|A|01-Jan-1995||u|{_flags('Drama').replace('1', '2')}\n", 1, "Drama"),
    ("u.item", f"10|A|01-Jan-1995||u|{_flags('Drama')}\n10|B|||u|{_flags('Drama')}\n", 2, "item_id"),
])
def test_ml100k_malformed(tmp_path, name, content, line, column):
    root = _write_ml100k(tmp_path / "ml", **{name: content})
    with pytest.raises(DatasetError) as info:
        load_movielens_100k(root)
    assert info.value.path.endswith(name) and f"{name}:{line}" in str(info.value)
    assert info.value.column == column


def _write_latest(root: Path, ratings: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ratings.csv").write_text(ratings or (
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,0.5,964981247\n2,1,5.0,964982224\n"
    ))
    (root / "movies.csv").write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '3,"American President, The (1995)",(no genres listed)\n'
        "7,Untitled,Drama\n"
    )
    return root


def test_movielens_latest(tmp_path):
    root = _write_latest(tmp_path / "ml-latest-small")
    ds = load_movielens_latest(root)
    assert ds.interactions["value"].tolist() == [4.0, 0.5, 5.0]
    assert ds.interactions["user_id"].tolist() == ["1", "1", "2"]
    items = ds.items.set_index("item_id")
    assert items.loc["3", "title"] == "American President, The (1995)" and items.loc["3", "categories"] == []
    assert items.loc["1", "categories"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert items.loc["1", "year"] == 1995 and np.isnan(items.loc["7", "year"])
    cleaned = load_dataset(f"movielens:{root}")
    assert len(cleaned.interactions) == 3


@pytest.mark.parametrize(("ratings", "line", "column"), [
    ("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,4.0,not-a-time\n", 3, "timestamp"),
    ("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n\n1,2,good,964982703\n", 4, "rating"),
    ("userId,movieId,rating\n1,1,4.0\n", 1, "timestamp"),
])
def test_movielens_latest_malformed(tmp_path, ratings, line, column):
    root = _write_latest(tmp_path / "ml", ratings)
    with pytest.raises(DatasetError) as info:
        load_movielens_latest(root)
    assert "ratings.csv" in str(info.value) and info.value.line == line and info.value.column == column
