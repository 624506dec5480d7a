"""The services' event loop (setting event_loop, recsys/rpc/server.py): uvloop by default, asyncio on
request, a clear exit for anything else, and a real gRPC server answering on each."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from recsys.rpc.server import event_loop_runner
from recsys.settings import CATALOG


async def _serve_one_check() -> tuple[str, int]:
    """A real aio server on loopback and one health check through a real channel, on the running loop."""
    server = aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            resp = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    finally:
        await server.stop(None)
    return type(asyncio.get_running_loop()).__module__, resp.status


@pytest.mark.parametrize(("name", "module"), [("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_grpc_serves_on_each_loop(name, module):
    loop_module, status = event_loop_runner(name)(_serve_one_check())
    assert loop_module.split(".")[0] == module
    assert status == health_pb2.HealthCheckResponse.SERVING


def test_asyncio_is_the_default():
    """uvloop grew the ranker's memory more under map-heavy concurrent requests (test_bounded_work)."""
    assert CATALOG["event_loop"].default == "asyncio"


def test_an_unknown_loop_is_a_clear_error():
    with pytest.raises(SystemExit, match="event_loop must be uvloop or asyncio, got 'trio'"):
        event_loop_runner("trio")
    proc = subprocess.run([sys.executable, "-m", "candidate_svc", "--event-loop", "trio"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0 and "event_loop must be uvloop or asyncio, got 'trio'" in proc.stderr, \
        proc.stderr[-2000:]


def test_a_service_runs_on_uvloop(tmp_path):
    """The setting reaches a real service process: its health answers, and uvloop's extension is mapped."""
    from recsys.cluster import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "feature_svc", "--plaintext", "--port", str(port),
                             "--metrics-port", "0", "--host", "127.0.0.1", "--event-loop", "uvloop",
                             "--stream", f"file://{tmp_path / 'events'}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "uvloop" in maps
    finally:
        proc.terminate()
        proc.wait(30)
