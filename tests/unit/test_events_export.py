"""`recsys events export` and `recsys train --events`: what the stream recorded becomes training data."""

from __future__ import annotations

import json

import pandas as pd

from recsys.client import interaction, item_upsert
from recsys.data.cleaning import clean
from recsys.data.synthetic import generate
from recsys.events.codec import encode_event, encode_exposure
from recsys.events.export import POSITION_FILE, export_events, merge_events
from recsys.stream import open_stream
from recsys.v1 import feedback_pb2 as fpb
from recsys.v1 import stream_pb2 as spb


def test_export_then_merge(tmp_path) -> None:
    stream = open_stream(f"file://{tmp_path / 'log'}")
    events = [interaction("u1", "i1", "click", event_id="a", timestamp=1_700_000_000),
              interaction("u1", "i2", "rating", event_id="b", value=4.0, timestamp=1_700_000_100),
              item_upsert("brand-new", "Brand new", ["Drama", "Comedy"], event_id="c"),
              fpb.FeedbackEvent(event_id="d", user=fpb.UserUpsert(user_id="u1", attributes={"country": "DE"}))]
    stream.append([(ev.event_id, encode_event(ev, 1_700_000_200_000)) for ev in events])
    stream.append([(None, encode_exposure(spb.Exposure(request_id="r", user_id="u1"), 1))])  # not training data
    summary = export_events(stream, tmp_path / "out")
    assert (summary.interactions, summary.items, summary.users, summary.entries) == (2, 1, 1, 5)
    inter = pd.read_csv(tmp_path / "out" / "interactions.csv", dtype=str)
    assert inter[["user_id", "item_id", "event"]].values.tolist() == [["u1", "i1", "click"], ["u1", "i2", "rating"]]
    assert json.loads((tmp_path / "out" / POSITION_FILE).read_text())["position"] == stream.last_id()

    ds = generate(n_users=50, n_items=80, n_interactions=1000, n_categories=4, seed=1)
    merged, position = merge_events(ds, tmp_path / "out")
    assert position == stream.last_id()
    assert len(merged.interactions) == len(clean(ds).interactions) + 2  # merged data is cleaned again
    new = merged.items[merged.items["item_id"] == "brand-new"].iloc[0]
    assert new["title"] == "Brand new" and list(new["categories"]) == ["Drama", "Comedy"]
    assert len(merged.items) == len(ds.items) + 1
    assert merged.users[merged.users["user_id"] == "u1"].iloc[0]["country"] == "DE"
    # an export that starts after the last position has nothing new
    again = export_events(stream, tmp_path / "later", after=position)
    assert again.entries == 0 and again.position == position
    stream.close()
