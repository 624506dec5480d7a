"""Data without time or with valued implicit events (Last.fm): play-count weights, the temporal split's
refusal, the sequence source's skip, the social side data, and the --dataset help."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from recsys.cli import DATASET_HELP, main
from recsys.data import Dataset, temporal_split
from recsys.data.spec import PATH_SCHEMES
from recsys.data.split import NoTimeError, has_time_order
from recsys.retrieval.sequence import sequence_neighbors
from recsys.retrieval.sources.sequence import SequenceSource


def _inter(events: list[str], values: list[float], ts: list | None = None) -> pd.DataFrame:
    n = len(events)
    return pd.DataFrame({"user_id": [f"u{k % 2}" for k in range(n)], "item_id": [f"i{k}" for k in range(n)],
                         "timestamp": ts if ts is not None else list(range(n)), "event": events, "value": values})


def test_weights_by_event_type():
    ds = Dataset(_inter(["rating", "play", "play", "click", "view", "mystery"], [4.0, 1.0, 352_698.0, 1.0, 1.0, 9.0]))
    np.testing.assert_allclose(ds.weights(), [4.0, np.log(2.0), np.log1p(352_698.0), 2.0, 1.0, 1.0])
    ratings = Dataset(_inter(["rating"] * 3, [1.0, 3.5, 5.0]))
    np.testing.assert_array_equal(ratings.weights(), [1.0, 3.5, 5.0])  # MovieLens: the rating, unchanged


def test_temporal_split_refuses_data_without_time():
    same = _inter(["play"] * 6, [1.0] * 6, ts=[0] * 6)
    with pytest.raises(NoTimeError, match="dataset 'lastfm-2k': no user's interactions differ in time"):
        temporal_split(same, name="dataset 'lastfm-2k'")
    absent = _inter(["play"] * 4, [1.0] * 4, ts=pd.array([pd.NA] * 4, dtype="Int64"))
    with pytest.raises(NoTimeError, match="4 of 4 interactions have no timestamp"):
        temporal_split(absent)
    # one user with time order is enough: the others' ties follow row order, as documented
    mixed = _inter(["play"] * 6, [1.0] * 6, ts=[5, 5, 5, 6, 5, 7])
    train, test = temporal_split(mixed, test_fraction=0.34)
    assert len(test) == 2
    np.testing.assert_array_equal(has_time_order(np.array([0, 1, 0, 1, 2]), np.array([1, 3, 2, 3, 9])),
                                  [True, False, True, False, False])


def test_eval_temporal_on_timeless_data_is_a_clear_error(tmp_path, capsys):
    root = tmp_path / "lastfm"
    root.mkdir()
    (root / "artists.dat").write_text("id\tname\turl\tpictureURL\n" + "".join(f"{i}\ta{i}\t\t\n" for i in range(6)))
    (root / "user_artists.dat").write_text("userID\tartistID\tweight\n"
                                           + "".join(f"{u}\t{i}\t{u + i + 1}\n" for u in range(3) for i in range(6)))
    assert main(["eval", "--dataset", f"lastfm:{root}", "--protocol", "temporal"]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "error: dataset 'lastfm': no user's interactions differ in time" in out and "--protocol msr" in out


def _training_data(users, items, ts, n_items=6, neighbors=200):
    return SimpleNamespace(user_codes=np.array(users), item_codes=np.array(items), timestamps=np.array(ts),
                           catalog=SimpleNamespace(n_items=n_items),
                           cfg=SimpleNamespace(sequence_neighbors=neighbors, sequence_window=1))


def test_sequence_source_skips_data_without_time():
    assert SequenceSource.build(_training_data([0, 0, 1, 1], [0, 1, 2, 3], [0, 0, 0, 0])) is None
    # user 1's rows share one time: only user 0's order is learned, not user 1's row order
    src = SequenceSource.build(_training_data([0, 0, 0, 1, 1, 1], [0, 1, 2, 3, 4, 5], [1, 2, 3, 7, 7, 7]))
    expected = sequence_neighbors(np.array([0, 0, 0]), np.array([0, 1, 2]), np.array([1, 2, 3]), 6)
    assert (src.table != expected).nnz == 0 and src.table[3].nnz == 0 and src.table[0, 1] > 0
    assert SequenceSource.build(_training_data([0, 0], [0, 1], [1, 2], neighbors=0)) is None


def test_social_side_data_is_checked():
    social = pd.DataFrame({"user_id": ["u0"], "friend_id": ["u1"]})
    assert Dataset(_inter(["play"], [1.0]), social=social).social is social
    with pytest.raises(ValueError, match=r"social needs columns \['user_id', 'friend_id'\]"):
        Dataset(_inter(["play"], [1.0]), name="x", social=social.rename(columns={"friend_id": "friend"}))


def test_dataset_help_lists_every_spec_form():
    for form in ("synthetic[:", "canonical directory", *(f"{s}:PATH" for s in PATH_SCHEMES)):
        assert form in DATASET_HELP
