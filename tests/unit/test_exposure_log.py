"""The exposure log's queue: encoded on the loop after the handler, bounded, and written in order."""

from __future__ import annotations

import asyncio

from ranker_svc.exposures import ExposureLog
from recsys.events.codec import EXPOSURE_TOPIC
from recsys.metrics import EXPOSURES_DROPPED
from recsys.stream import open_stream, topic_url
from recsys.v1 import recommender_pb2 as rpb
from recsys.v1 import stream_pb2 as spb


def _answer(request_id: str, *items: str) -> rpb.RecommendResponse:
    ranked = [rpb.RecommendedItem(item_id=i, score=1.0 / (p + 1)) for p, i in enumerate(items)]
    return rpb.RecommendResponse(request_id=request_id, model_version="v1", items=ranked)


def test_records_are_encoded_after_the_handler_and_written_in_order(tmp_path) -> None:
    url = topic_url(f"file://{tmp_path / 'log'}", EXPOSURE_TOPIC)

    async def run() -> None:
        log = ExposureLog(open_stream(url))
        log.start()
        log.record(rpb.RecommendRequest(user_id="u1", k=2), _answer("r1", "i1", "i2"))
        log.record(rpb.RecommendRequest(user_id="u2", k=1), _answer("r2", "i3"), shadow=True)
        assert len(log._queue) == 0 and len(log._pending) == 2  # the handler did not pay for encoding
        await asyncio.sleep(0)
        assert len(log._queue) == 2 and not log._pending  # one loop step later, both are encoded
        await log.close()

    asyncio.run(run())
    exposures = [spb.StreamRecord.FromString(e.data).exposure for e in open_stream(url).scan()]
    assert [(x.request_id, x.user_id, x.shadow) for x in exposures] == [("r1", "u1", False), ("r2", "u2", True)]
    assert [(it.item_id, it.position) for it in exposures[0].items] == [("i1", 0), ("i2", 1)]


def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path) -> None:
    url = topic_url(f"file://{tmp_path / 'log'}", EXPOSURE_TOPIC)
    dropped = EXPOSURES_DROPPED.labels("queue_full")

    async def run() -> int:
        log = ExposureLog(open_stream(url), capacity=3)
        before = dropped._value.get()
        for n in range(5):  # pending (not yet encoded) entries count against the capacity too
            log.record(rpb.RecommendRequest(user_id=f"u{n}", k=1), _answer(f"r{n}", "i1"))
        assert log.forget("u1") == 1 and log.forget("u4") == 0
        log.start()
        await log.close()
        return int(dropped._value.get() - before)

    assert asyncio.run(run()) == 2
    users = [spb.StreamRecord.FromString(e.data).exposure.user_id for e in open_stream(url).scan()]
    assert users == ["u0", "u2"]  # u1 was forgotten while queued


def test_a_burst_is_encoded_a_slice_per_turn_of_the_loop(tmp_path) -> None:
    """Answers finishing together are encoded 32 at a time, with the loop free between slices."""
    url = topic_url(f"file://{tmp_path / 'log'}", EXPOSURE_TOPIC)

    async def run() -> list[int]:
        log = ExposureLog(open_stream(url))
        log.start()
        for n in range(80):
            log.record(rpb.RecommendRequest(user_id=f"u{n}", k=1), _answer(f"r{n}", "i1"))
        seen = []
        for _ in range(3):
            await asyncio.sleep(0)
            seen.append(len(log._queue))
        await log.close()
        return seen

    assert asyncio.run(run()) == [32, 64, 80]
    assert len(list(open_stream(url).scan())) == 80
