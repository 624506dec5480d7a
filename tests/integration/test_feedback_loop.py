"""The feedback loop end to end through the real services: Feedback/Send → the event stream → the
consumers → the next Recommend; the per-user cache; exposures on the stream."""

from __future__ import annotations

import time

import grpc
import pytest

from recsys.client import RecommenderClient, interaction, item_upsert
from recsys.events.codec import EXPOSURE_TOPIC, decode
from recsys.stream import open_stream, topic_url
from recsys.v1 import feedback_pb2 as fpb

from .feedback_helpers import counter, user_state, wait_for

pytestmark = pytest.mark.integration


def _known_user(small_dataset) -> str:
    return str(small_dataset.interactions["user_id"].value_counts().index[5])


def test_a_click_changes_the_next_recommend_and_is_never_returned_again(cluster, small_dataset):
    user = _known_user(small_dataset)
    with RecommenderClient(cluster.target) as client:
        first = client.recommend(user, 10)
        clicked = first.items[0].item_id
        resp = client.send([interaction(user, clicked, "click", request_id=first.request_id)])
        assert (resp.accepted, resp.duplicates, len(resp.rejected)) == (1, 0, 0)
        again = client.recommend(user, 10)  # served from the cache, minus the clicked item
        assert again.cached and clicked not in {it.item_id for it in again.items}
        wait_for(lambda: clicked in user_state(cluster, user)[0].history, 5, "the click reaching feature_svc")
        fresh = client.recommend(user, 10, diversity_lambda=0.95)  # another setting: computed, not cached
        assert not fresh.cached and clicked not in {it.item_id for it in fresh.items}
        before = client.recommend(user, 10, diversity_lambda=0.95)
        assert before.cached
        # the fold-in user vector and neighbour scores moved: the same items score differently now
        first_scores = {it.item_id: it.score for it in first.items}
        moved = any(abs(first_scores[it.item_id] - it.score) > 1e-6 for it in fresh.items if it.item_id in first_scores)
        reordered = [it.item_id for it in fresh.items] != [it.item_id for it in first.items if it.item_id != clicked]
        assert moved or reordered


def test_the_same_batch_sent_twice_is_counted_once(cluster, small_dataset):
    items = small_dataset.interactions["item_id"].value_counts().index[:5].tolist()
    user = "idempotent-user"
    batch = [interaction(user, str(i), "view", event_id=f"idem-{k}") for k, i in enumerate(items)]
    with RecommenderClient(cluster.target) as client:
        first = client.send(batch)
        second = client.send(batch)
    assert (first.accepted, first.duplicates) == (5, 0)
    assert (second.accepted, second.duplicates) == (0, 5)
    wait_for(lambda: counter(cluster, user) >= 5, 5, "the batch reaching feature_svc")
    time.sleep(0.5)  # a second application would have landed by now
    assert counter(cluster, user) == 5.0
    assert user_state(cluster, user)[0].history == [str(i) for i in items]


def test_bad_events_are_rejected_one_by_one_with_the_field(cluster):
    events = [
        interaction("u-bad", "i1", event_id="ok-1"),
        fpb.FeedbackEvent(interaction=fpb.Interaction(user_id="u", item_id="i", type="click")),
        interaction("u-bad", "i1", "teleport", event_id="bad-type"),
        interaction("u-bad", "i1", event_id="future", timestamp=time.time() + 86_400),
        interaction("", "i1", event_id="no-user"),
    ]
    with RecommenderClient(cluster.target) as client:
        resp = client.send(events)
        assert resp.accepted == 1
        reasons = {r.index: r.reason for r in resp.rejected}
        assert sorted(reasons) == [1, 2, 3, 4]
        assert reasons[1].startswith("events[1].event_id")
        assert reasons[2].startswith("events[2].interaction.type")
        assert reasons[3].startswith("events[3].timestamp")
        assert reasons[4].startswith("events[4].interaction.user_id")
        with pytest.raises(grpc.RpcError) as err:
            client.send([interaction("u", "i") for _ in range(10_001)])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "events" in err.value.details()


def test_every_response_is_logged_as_an_exposure(cluster, small_dataset):
    user = _known_user(small_dataset)
    with RecommenderClient(cluster.target) as client:
        resp = client.recommend(user, 7, request_id="exposure-check-1")
    stream = open_stream(topic_url(f"file://{cluster.log_dir / 'events'}", EXPOSURE_TOPIC))

    def logged():
        position = None
        while batch := stream.scan(position, 1000):
            for e in batch:
                rec = decode(e.data)
                if rec.WhichOneof("kind") == "exposure" and rec.exposure.request_id == "exposure-check-1":
                    return rec.exposure
            position = batch[-1].id
        return None

    try:
        wait_for(lambda: logged() is not None, 5, "the exposure on the stream")
        exp = logged()
    finally:
        stream.close()
    assert exp.user_id == user and exp.model_version == resp.model_version
    assert [(it.item_id, it.position) for it in exp.items] == [(it.item_id, k) for k, it in enumerate(resp.items)]


def test_cached_lists_respect_k_exclusions_and_versions(cluster, small_dataset):
    user = str(small_dataset.interactions["user_id"].value_counts().index[9])
    with RecommenderClient(cluster.target) as client:
        a = client.recommend(user, 10)
        b = client.recommend(user, 5)
        assert b.cached and [it.item_id for it in b.items] == [it.item_id for it in a.items][:5]
        excluded = a.items[1].item_id
        c = client.recommend(user, 10, exclude_item_ids=[excluded])
        assert c.cached and excluded not in {it.item_id for it in c.items} and len(c.items) == 10
        d = client.recommend(user, 10, explain=True)
        assert not d.cached and d.items[0].contributions


def test_a_new_item_is_recommended_without_retraining(cluster, small_dataset):
    user = str(small_dataset.interactions["user_id"].value_counts().index[3])
    history = small_dataset.interactions[small_dataset.interactions["user_id"] == user]["item_id"]
    cats = small_dataset.items.set_index("item_id").loc[history, "categories"].explode().value_counts()
    favourite = str(cats.index[0])
    with RecommenderClient(cluster.target) as client:
        resp = client.send([item_upsert("upserted-item-1", "A brand new thing", [favourite])])
        assert resp.accepted == 1

        def shown() -> bool:  # explain bypasses the cache: a fresh answer each time
            return "upserted-item-1" in {it.item_id for it in client.recommend(user, 10, explain=True).items}

        seconds = wait_for(shown, 5, "the new item in the user's top 10")
        assert seconds < 5
        item = next(it for it in client.recommend(user, 10, explain=True).items if it.item_id == "upserted-item-1")
        assert item.title == "A brand new thing" and item.categories == [favourite]  # its features exist too


def test_a_huge_batch_for_one_user_never_stalls_recommend(cluster, small_dataset):
    """The probe of issue 9: 10,000 events for one user in one call used to hold the store's lock on the
    event loop for seconds, failing every concurrent Recommend."""
    import threading

    from recsys.v1 import features_pb2, features_pb2_grpc

    items = small_dataset.interactions["item_id"].unique().tolist()
    user = "firehose-user"
    batch = [interaction(user, str(items[k % len(items)]), "view", event_id=f"fire-{k}") for k in range(10_000)]
    direct = [features_pb2.Event(user_id=user, item_id=str(items[k % len(items)]), event="view")
              for k in range(10_000)]
    readers = [str(u) for u in small_dataset.interactions["user_id"].unique()[:40]]
    failures: list[str] = []
    done = threading.Event()

    def write() -> None:
        with RecommenderClient(cluster.target) as client, \
                grpc.insecure_channel(cluster.services["feature_svc"].address) as ch:
            assert client.send(batch, timeout=30).accepted == 10_000
            features_pb2_grpc.FeatureStoreStub(ch).RecordEvents(features_pb2.RecordEventsRequest(events=direct),
                                                               timeout=30)
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    with RecommenderClient(cluster.target) as client:
        while not done.is_set() and len(failures) < 5:
            for u in readers:
                try:
                    client.recommend(u, 10, explain=True, timeout=2.0)  # explain: computed, never cached
                except grpc.RpcError as exc:
                    failures.append(f"{u}: {exc.code().name}")
    writer.join()
    assert not failures
    wait_for(lambda: len(user_state(cluster, user)[0].history) == min(1000, len(items)), 10, "the batch applied")
