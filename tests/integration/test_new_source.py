"""A candidate source defined in this file alone reaches the ranker's features and Recommend's `sources`.

This is the worked example of docs/architecture.md ("Add a candidate source"): nothing under recsys/
changes. The services are hosted in-process (a thread with its own event loop), so they see the class
registered here.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from candidate_svc.server import serve as serve_candidates
from candidate_svc.settings import CandidateSettings
from feature_svc.server import serve as serve_features
from feature_svc.settings import FeatureSettings
from ranker_svc.server import serve as serve_ranker
from ranker_svc.settings import RankerSettings
from recsys.bundle import read_metadata
from recsys.client import RecommenderClient
from recsys.cluster import free_port
from recsys.retrieval.sources import DEFAULT_SOURCES, register_source
from recsys.retrieval.sources.base import CandidateSource, Catalog, Proposal, SourceRequest, TrainingData
from recsys.v1 import candidates_pb2, candidates_pb2_grpc

pytestmark = pytest.mark.integration


@register_source
class NewestSource(CandidateSource):
    """The items whose first interaction is the most recent: what just arrived in the catalog."""

    name = "newest"
    columns = ("newest_score",)
    relative = ("newest_score",)
    primary = "newest_score"
    quota = 0.1

    def __init__(self, catalog: Catalog, freshness: np.ndarray):
        self.catalog, self.freshness = catalog, freshness  # float32 [I] in [0, 1], 1 = newest

    @classmethod
    def build(cls, data: TrainingData) -> NewestSource:
        first = np.full(data.catalog.n_items, np.inf)
        np.minimum.at(first, data.item_codes, data.timestamps.astype(np.float64))
        seen = np.isfinite(first)
        fresh = np.zeros(data.catalog.n_items, np.float32)
        fresh[seen] = (np.argsort(np.argsort(first[seen])) + 1) / seen.sum()
        return cls(data.catalog, fresh)

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], catalog: Catalog) -> NewestSource:
        return cls(catalog, np.load(directory / "newest.npy"))

    def save(self, directory: Path) -> dict[str, Any]:
        np.save(directory / "newest.npy", self.freshness)
        return {}

    def propose(self, req: SourceRequest) -> Proposal:
        ranked = np.argsort(-self.freshness, kind="stable")[: req.depth]
        return Proposal(ranked, lambda items: {"newest_score": self.freshness[items]})


@pytest.fixture(scope="module")
def bundle(small_dataset, tmp_path_factory) -> Path:
    from recsys.training.trainer import train
    from tests.conftest import small_train_config

    cfg = small_train_config()
    cfg.sources = [*DEFAULT_SOURCES, "newest"]
    out = tmp_path_factory.mktemp("newest") / "b"
    train(small_dataset, out, cfg, show_progress=False)
    return out


def host_in_thread(bundle: Path):
    """The three services in one background event loop; returns (ports, stop)."""
    ports = {"feature": free_port(), "candidate": free_port(), "ranker": free_port()}
    b = [str(bundle)]
    # a fresh event stream of its own: never the working directory's default
    common = {"host": "127.0.0.1", "metrics_port": 0, "bundle": b, "plaintext": True,
              "stream": f"file://{tempfile.mkdtemp(prefix='recsys-stream-')}"}
    ready = threading.Event()
    state: dict = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        state["loop"] = loop

        async def main() -> None:
            events = [asyncio.Event() for _ in range(3)]
            tasks = [asyncio.create_task(serve_features(FeatureSettings(port=ports["feature"], **common), events[0])),
                     asyncio.create_task(serve_candidates(CandidateSettings(port=ports["candidate"], **common),
                                                          events[1])),
                     asyncio.create_task(serve_ranker(RankerSettings(
                         port=ports["ranker"], feature_addr=f"127.0.0.1:{ports['feature']}",
                         candidate_addr=f"127.0.0.1:{ports['candidate']}", **common), events[2]))]
            state["tasks"] = tasks
            await asyncio.gather(*(e.wait() for e in events))
            ready.set()
            await asyncio.gather(*tasks, return_exceptions=True)

        loop.run_until_complete(main())
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(120), "the in-process services did not start"

    def stop() -> None:
        for t in state["tasks"]:
            state["loop"].call_soon_threadsafe(t.cancel)
        thread.join(30)

    return ports, stop


def test_a_source_defined_here_reaches_features_and_the_response(bundle):
    meta = json.loads((bundle / "retrieval" / "retrieval.json").read_text())
    assert meta["sources"][-1] == "newest" and meta["quotas"]["newest"] == 0.1
    features = read_metadata(bundle).params["ranker_features"]
    assert {"newest_score_z", "newest_score_of_max"} <= set(features)  # relative versions only
    assert "newest_score" not in features

    ports, stop = host_in_thread(bundle)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{ports['candidate']}") as ch:
            cands = candidates_pb2_grpc.CandidateRetrieverStub(ch).Retrieve(
                candidates_pb2.RetrieveRequest(user_id="u1", history=["i1", "i2", "i3"]), timeout=10)
        assert "newest" in cands.source_names and "newest_score" in cands.score_names
        assert "newest_score" in cands.relative_score_names
        bit = list(cands.source_names).index("newest")
        assert any(m >> bit & 1 for m in cands.source_masks)
        with RecommenderClient(f"127.0.0.1:{ports['ranker']}") as client:
            seen = set()
            for u in ("u1", "u2", "u3", "u4", "u5", "u6"):
                seen |= {s for it in client.recommend(u, 50, diversity_lambda=1.0).items for s in it.sources}
        assert "newest" in seen
    finally:
        stop()
