"""The parts of Users/Forget on real objects: the registry (file and Redis), the redaction of stream
records, the features consumer, the bundle loader, export and training data, the ranker's memory, and the
callers file's rule that "*" never grants Forget."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ranker_svc.degraded import DegradedAnswers
from ranker_svc.exposures import ExposureLog
from recsys.client import interaction
from recsys.data.schema import Dataset
from recsys.events.apply import FeatureApplier
from recsys.events.codec import EXPOSURE_TOPIC, encode_event, encode_exposure
from recsys.events.export import FORGOTTEN_FILE, export_events, exported_forgotten, merge_events
from recsys.events.forget import encode_forget, names_user, redacted_record, redactor
from recsys.forget import Forgotten, Tombstone, TombstonesUnavailable, open_tombstones, user_digest
from recsys.forget.tables import drop_users
from recsys.rpc.auth import served_methods
from recsys.rpc.callers import parse_callers
from recsys.storage import EmbeddedStorage
from recsys.stream import Entry, open_stream, topic_url
from recsys.v1 import recommender_pb2 as rpb
from recsys.v1 import stream_pb2 as spb
from recsys.v1 import users_pb2  # noqa: F401  (the Users service's descriptor)

from ..storage.test_storage_contract import make_tables

T0 = 1_700_000_000_000


@pytest.mark.parametrize("backend", ["file", pytest.param("redis", marks=pytest.mark.redis)])
def test_the_registry_keeps_each_receipts_latest_state_and_no_raw_id(backend, tmp_path, request) -> None:
    url = f"file://{tmp_path / 'events'}" if backend == "file" else \
        f"{request.getfixturevalue('redis_url')}?key=t:events&max_len=5"
    with open_tombstones(url) as registry:
        assert registry.receipts() == [] and not registry.forgotten()
        registry.record(Tombstone("r1", user_digest("ü-sér"), T0, "desk"))
        registry.record(Tombstone("r2", user_digest("ü-sér"), T0 + 5))
        registry.record(Tombstone("r1", user_digest("ü-sér"), T0, "desk", {"features.records": 1}, done=True))
        registry.record(Tombstone("r3", user_digest("other"), T0 + 1))
    with open_tombstones(url) as again:  # another process's view
        receipts = again.receipts()
        forgotten = again.forgotten()
    assert [t.receipt for t in receipts] == ["r1", "r3", "r2"]
    assert receipts[0].done and receipts[0].erased == {"features.records": 1}
    assert forgotten.since("ü-sér") == T0 + 5 and forgotten.hides("other", T0 + 1)
    assert not forgotten.hides("other", T0 + 2) and forgotten.since("nobody") is None
    if backend == "file":
        text = (tmp_path / "events" / "forgotten.jsonl").read_text()
        assert "ü-sér" not in text and user_digest("ü-sér") in text


def test_an_unwritable_registry_says_so(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with open_tombstones(f"file://{tmp_path / 'file'}") as registry, pytest.raises(TombstonesUnavailable):
        registry.record(Tombstone("r", "d", 1))
    with pytest.raises(ValueError, match="scheme"):
        open_tombstones("kafka://broker/topic")


def test_redacted_records_have_every_length_and_the_redactor_takes_only_the_users_records() -> None:
    for size in [2, *range(4, 600), 16_383, 16_384, 16_390, 2_097_160]:
        rec = spb.StreamRecord()
        rec.ParseFromString(redacted_record(size, T0))
        assert rec.ByteSize() == size and rec.WhichOneof("kind") == "redacted"
    click = encode_event(interaction("u1", "i1", event_id="a"), T0)
    theirs = encode_event(interaction("u10", "u1", event_id="b"), T0)  # the id appears, as an item id
    later = encode_event(interaction("u1", "i2", event_id="c"), T0 + 1)
    shown = encode_exposure(spb.Exposure(request_id="r", user_id="u1"), T0)
    forget = encode_forget("u1", "r1", "", T0)
    select = redactor("u1", T0)
    assert [select(d) is not None for d in (click, theirs, later, shown, forget, b"\xff garbage u1")] == \
        [True, False, False, True, False, False]
    erased = spb.StreamRecord()
    erased.ParseFromString(select(click))
    assert len(select(click)) == len(click) and not names_user(erased, "u1")


def test_the_features_consumer_erases_at_the_forget_and_skips_what_came_before() -> None:
    store = EmbeddedStorage()
    store.load(make_tables())
    applier = FeatureApplier(store, "g")

    def entries(*records: bytes) -> list[Entry]:
        return [Entry(str(k), r) for k, r in enumerate(records)]

    before = encode_event(interaction("u1", "i5", event_id="a"), T0 - 10)
    late = encode_event(interaction("u1", "i4", event_id="b"), T0 - 5)  # accepted before, appended after
    applier(entries(before, encode_forget("u1", "r", "", T0), late))
    assert store.get_users(["u1"]) == [None]
    applier(entries(encode_event(interaction("u1", "i3", event_id="c"), T0 + 1)))
    assert store.get_users(["u1"])[0].history == ["i3"]  # after the forget: a new user
    # a replay honours the registry's forget even when the forget record is gone with the retention
    fresh = EmbeddedStorage()
    fresh.load(make_tables())
    FeatureApplier(fresh, "g", Forgotten({user_digest("u2"): T0}))(
        entries(encode_event(interaction("u2", "i1", event_id="d"), T0 - 1)))
    assert fresh.get_users(["u2"])[0].history == []


def test_the_bundle_loader_drops_users_forgotten_after_the_bundles_training(tmp_path) -> None:
    tables = make_tables()
    kept, n = drop_users(tables, Forgotten({user_digest("u1"): T0, user_digest("nobody"): T0}))
    assert n == 1 and kept.user_ids.tolist() == ["u2", "ü-sér 🚀"]
    np.testing.assert_array_equal(kept.user_values, tables.user_values[1:])
    assert kept.user_history == tables.user_history[1:] and kept.user_attributes == tables.user_attributes[1:]
    assert Forgotten({user_digest("u1"): T0}).after(T0).latest == {}  # trained without them already
    assert drop_users(tables, Forgotten())[1] == 0


def test_export_and_training_data_leave_forgotten_users_out(tmp_path) -> None:
    url = f"file://{tmp_path / 'log'}"
    stream = open_stream(url)
    stream.append([(ev.event_id, encode_event(ev, at)) for ev, at in (
        (interaction("gone", "i1", event_id="a"), T0 - 1), (interaction("kept", "i1", event_id="b"), T0 - 1),
        (interaction("back", "i2", event_id="c"), T0 - 1))])
    stream.append([("f", encode_forget("back", "r", "", T0))])
    stream.append([("d", encode_event(interaction("back", "i3", event_id="d"), T0 + 1))])
    summary = export_events(stream, tmp_path / "out", forgotten=Forgotten({user_digest("gone"): T0}))
    stream.close()
    inter = pd.read_csv(tmp_path / "out" / "interactions.csv", dtype=str)
    assert inter[["user_id", "item_id"]].values.tolist() == [["kept", "i1"], ["back", "i3"]]
    assert summary.interactions == 2
    raw = json.loads((tmp_path / "out" / FORGOTTEN_FILE).read_text())
    assert "gone" not in json.dumps(raw) and set(raw["users"]) == {user_digest("gone"), user_digest("back")}
    forgotten, through = exported_forgotten(tmp_path / "out")
    assert through >= T0 and len(forgotten) == 2
    base = Dataset(interactions=pd.DataFrame({"user_id": ["gone", "kept", "back"], "item_id": ["i9", "i9", "i9"],
                                              "timestamp": [1, 2, 3], "event": ["view"] * 3, "value": [1.0] * 3}),
                   users=pd.DataFrame({"user_id": ["gone", "kept"], "age": ["30", "40"]}))
    merged, _ = merge_events(base, tmp_path / "out")
    assert sorted(map(tuple, merged.interactions[["user_id", "item_id"]].values.tolist())) == \
        [("back", "i3"), ("kept", "i1"), ("kept", "i9")]
    assert merged.users["user_id"].tolist() == ["kept"]
    assert any("forgotten users" in note for note in merged.notes)


def test_the_ranker_forgets_last_good_lists_and_queued_exposures(tmp_path) -> None:
    degraded = DegradedAnswers()
    resp = rpb.RecommendResponse(items=[rpb.RecommendedItem(item_id="i1")], model_version="v")
    degraded.remember("u1", resp)
    degraded.remember("u1", rpb.RecommendResponse(items=resp.items, model_version="w"))
    degraded.remember("u2", resp)
    import time

    started = time.perf_counter()  # a computation in flight while the user is forgotten
    assert degraded.forget("u1") == 2 and len(degraded) == 1
    degraded.remember("u1", resp, started=started)
    assert len(degraded) == 1  # its answer came from the erased data: not kept
    degraded.remember("u1", resp, started=time.perf_counter())
    assert len(degraded) == 2

    url = topic_url(f"file://{tmp_path / 'log'}", EXPOSURE_TOPIC)

    async def run() -> None:
        log = ExposureLog(open_stream(url))
        req = rpb.RecommendRequest(user_id="u1", k=1)
        log.record(req, resp)
        log.record(rpb.RecommendRequest(user_id="u2", k=1), resp)
        assert log.forget("u1") == 1
        log.record(req, resp)  # after the forget: a new user's exposure
        log.start()
        await log.close()

    asyncio.run(run())
    users = [spb.StreamRecord.FromString(e.data).exposure.user_id for e in open_stream(url).scan()]
    assert users == ["u2", "u1"]


def test_a_wildcard_caller_never_gets_forget() -> None:
    known = served_methods(["recsys.v1.Recommender", "recsys.v1.Users"])
    text = "callers:\n" + "".join(f"  - {{name: {n}, token_sha256: {c * 64}, methods: [{m}]}}\n" for n, c, m in (
        ("wild", "a", "'*'"), ("service", "b", "Users"), ("method", "c", "Forget"), ("full", "d", "Users/Forget")))
    callers = {c.name: c.methods for c in parse_callers(text, "callers.yaml", known).callers}
    assert callers["wild"] == {"/recsys.v1.Recommender/Recommend"}
    assert all(m == {"/recsys.v1.Users/Forget"} for n, m in callers.items() if n != "wild")


def test_concurrent_receipts_from_processes_of_one_machine_all_land(tmp_path) -> None:
    url = f"file://{tmp_path / 'events'}"
    threads = [threading.Thread(target=lambda k=k: open_tombstones(url).record(Tombstone(f"r{k}", "d", k)))
               for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(open_tombstones(url).receipts()) == 20
