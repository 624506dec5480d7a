"""Shared pytest fixtures."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the OS picks it, so parallel runs do not clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _start_redis(binary: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start redis-server on a free port; retries a few ports because another process may grab one first."""
    log_path = workdir / "redis.log"
    for _ in range(3):
        port = free_port()
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--daemonize", "no", "--dir", str(workdir)],
                stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            if _redis_answers(port):
                return proc, port
            time.sleep(0.05)
        proc.kill()
        proc.wait()
    pytest.fail(f"redis-server did not start; log:\n{log_path.read_text(errors='replace')[-2000:]}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real, throwaway redis-server for the session; yields its URL redis://127.0.0.1:N/0."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server binary not found on PATH (run `make sysdeps`); Redis backend tests skipped")
    proc, port = _start_redis(binary, tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session Redis, emptied (FLUSHALL) so every test starts from a blank server."""
    import redis

    client = redis.Redis.from_url(redis_server)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server


ML100K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"


@pytest.fixture(scope="session")
def ml100k_path() -> Path:
    """MovieLens 100K beside the repo (../shared/data/ml-100k); tests using it skip when it is absent."""
    if not (ML100K / "u.data").is_file():
        pytest.skip(f"MovieLens 100K not found at {ML100K}")
    return ML100K


def small_train_config():
    from recsys.ranking.model import RankerParams
    from recsys.retrieval.als import ALSParams
    from recsys.training.config import TrainConfig

    # select_grid="small": the hyperparameter searches run (every bundle of the suite has a selection) on
    # their smallest grids, so the session's bundles stay seconds to train
    return TrainConfig(als=ALSParams(factors=16, iterations=8), ranker=RankerParams(num_boost_round=60),
                       n_candidates=100, max_ranker_users=400, select_grid="small")


@pytest.fixture(scope="session")
def small_dataset():
    """A small synthetic dataset (seconds to train on), with user attributes and item categories."""
    from recsys.data.synthetic import generate

    return generate(n_users=400, n_items=600, n_interactions=20_000, n_categories=8, seed=3)


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory: pytest.TempPathFactory, small_dataset) -> Path:
    """A real bundle (ALS + FAISS + EASE + LightGBM) trained on the small synthetic dataset."""
    from recsys.training.trainer import train

    out = tmp_path_factory.mktemp("bundles") / "small"
    train(small_dataset, out, small_train_config(), dataset_spec="synthetic:small", show_progress=False)
    return out


@pytest.fixture(scope="session")
def cluster(small_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    """The three real services on loopback, serving the small bundle."""
    from recsys.cluster import start_cluster

    c = start_cluster(small_bundle, port=0, log_dir=tmp_path_factory.mktemp("cluster-logs"))
    try:
        yield c
    finally:
        c.stop()
