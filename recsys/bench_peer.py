"""The bench's peer (issue 13): the same stages composed as a Ray Serve application
(recsys/bench_peer_app.py), started in a process of its own per configuration (Ray Serve's default, and
RAY_SERVE_THROUGHPUT_OPTIMIZED=1) and called over its HTTP ingress with one keep-alive connection, in
blocks interleaved with the cluster's calls (recsys/bench_floor.py). Skipped, saying why, without the
`bench` extra."""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from recsys.cluster import free_port

CONFIGS = {"default": {}, "throughput_optimized": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}}


def missing() -> str | None:
    """Why the peer cannot run here (None: it can)."""
    for mod in ("ray", "ray.serve", "starlette", "uvicorn", "fastapi"):
        try:
            if importlib.util.find_spec(mod) is None:
                raise ImportError(mod)
        except (ImportError, ValueError):
            return f"Ray Serve is not installed ({mod} missing): pip install -e '.[bench]' to measure the peer"
    return None


class Peer:
    """One Ray Serve application serving `bundle`, in a child process (its own session, so that Ray's
    processes go with it); `call` sends one recommendation request over a keep-alive HTTP connection."""

    def __init__(self, bundle: Path, index: str = "exact", config: str = "default", start_timeout: float = 600.0):
        self.bundle, self.index, self.config, self.timeout = Path(bundle), index, config, start_timeout
        self.port = free_port()
        self.log = Path(tempfile.mkstemp(prefix=f"recsys-bench-peer-{config}-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None
        self.conn: http.client.HTTPConnection | None = None
        self.start_s = 0.0

    def __enter__(self) -> Peer:
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1") | CONFIGS[self.config]
        t0 = time.monotonic()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "recsys.bench_peer_app", str(self.bundle), "--index",
                                          self.index, "--port", str(self.port)], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=log, env=env, start_new_session=True)
        try:
            self._wait_ready(t0)
        except BaseException:
            self.__exit__()
            raise
        self.start_s = time.monotonic() - t0
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        return self

    def _wait_ready(self, t0: float) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        while time.monotonic() - t0 < self.timeout:
            if sel.select(timeout=1.0):
                line = self.proc.stdout.readline()
                if line.startswith(b"{") and "ready" in json.loads(line):
                    return
                if not line and self.proc.poll() is not None:
                    break
            elif self.proc.poll() is not None:
                break
        tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"the Ray Serve peer ({self.config}) did not start:\n{tail}")

    def call(self, user_id: str, k: int = 10, n_candidates: int | None = None) -> list[str]:
        assert self.conn is not None
        body = json.dumps({"user_id": user_id, "k": k, "n_candidates": n_candidates})
        self.conn.request("POST", "/", body, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"peer answered HTTP {resp.status}: {data[:200]!r}")
        return json.loads(data)["items"]

    def sequential(self, users: Sequence[str], k: int = 10, n_candidates: int | None = None
                   ) -> tuple[list[float], int]:
        """One call at a time, as recsys.latency.sequential: latencies (s) and the failed calls."""
        lat, errors = [], 0
        for u in users:
            t0 = time.perf_counter()
            try:
                self.call(u, k, n_candidates)
                lat.append(time.perf_counter() - t0)
            except (RuntimeError, OSError, http.client.HTTPException):
                errors += 1
                self._reconnect()
        return lat, errors

    def _reconnect(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def __exit__(self, *exc) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            if self.proc.stdin:
                self.proc.stdin.close()  # the child shuts Serve and Ray down
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # our child's own session, nothing else
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
