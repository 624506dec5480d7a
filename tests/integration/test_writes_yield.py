"""Writes yield to reads (recsys/rpc/priority.py): a Feedback/Send call is not counted as a call in flight,
its worker checks and encodes the batch in chunks with a yield to requests before each, and a read that is
in flight holds those chunks back (bounded), over a real gRPC server and a real disk-log stream."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from grpc import aio

from ranker_svc.feedback import FeedbackServicer
from recsys.client import interaction
from recsys.events.validate import Limits
from recsys.rpc.priority import IN_FLIGHT
from recsys.rpc.server import Server
from recsys.stream import open_stream
from recsys.v1 import feedback_pb2 as fpb
from recsys.v1 import feedback_pb2_grpc as fpb_grpc

pytestmark = pytest.mark.integration


def _batch(n: int, tag: str) -> fpb.SendRequest:
    return fpb.SendRequest(events=[interaction(f"u{k % 7}", f"i{k}", "view", event_id=f"{tag}-{k}")
                                   for k in range(n)])


async def _send_with(pace, stream_dir, request: fpb.SendRequest, during=None) -> fpb.SendResponse:
    server = Server("127.0.0.1", 0)
    stream = open_stream(f"file://{stream_dir}")
    server.add(fpb_grpc.add_FeedbackServicer_to_server, FeedbackServicer(stream, Limits(), pace=pace),
               "recsys.v1.Feedback")
    port = await server.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = fpb_grpc.FeedbackStub(channel).Send(request, timeout=30)
            if during is not None:
                await during()
            return await call
    finally:
        await server.server.stop(None)
        stream.close()


def test_a_send_is_not_a_read_in_flight_and_paces_its_batch_in_chunks(tmp_path):
    seen: list[int] = []

    def pace() -> None:
        seen.append(IN_FLIGHT.count)
        IN_FLIGHT.yield_to_requests()

    resp = asyncio.run(_send_with(pace, tmp_path / "events", _batch(100, "pace")))
    assert resp.accepted == 100 and not resp.rejected
    # 100 events: 4 chunks checked, 4 chunks encoded; the Send itself never counted as in flight
    assert len(seen) == 8 and set(seen) == {0}


def test_a_read_in_flight_holds_the_writes_chunks_back(tmp_path):
    """A read entered while the batch is worked on: the next chunk waits for it to leave, at most the bound."""
    waits: list[float] = []
    entered = threading.Event()

    def pace() -> None:
        t0 = time.perf_counter()
        IN_FLIGHT.yield_to_requests(1.0)
        waits.append(time.perf_counter() - t0)
        if len(waits) == 1:
            IN_FLIGHT.enter()  # a Recommend arrives (the event loop thread would do this; the count is shared)
            entered.set()

    async def read_leaves_after_a_while() -> None:
        await asyncio.to_thread(entered.wait, 10)
        await asyncio.sleep(0.2)
        IN_FLIGHT.leave()

    resp = asyncio.run(_send_with(pace, tmp_path / "events", _batch(40, "hold"), read_leaves_after_a_while))
    assert resp.accepted == 40
    assert IN_FLIGHT.count == 0
    assert waits[0] < 0.1  # nothing in flight at first
    assert 0.1 < waits[1] < 1.0  # the read held the second chunk until it left (well before the 1 s bound)
