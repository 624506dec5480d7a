"""The bench's candidate sweep against the in-process floor (issue 13 point 1).

At each candidate count (25, 100, 300, 500: the shape of Metarank's published curve) the ranker is
restarted with that `n_candidates` setting and the same requests go, one at a time, k = 10, to:
  - the cluster (three services on loopback, the ranker's cache and exposure log off: every call runs
    the whole pipeline, as the floor does);
  - the floor: the same pipeline (recsys.pipeline.recommend) on the same bundle in this process, through the
    in-process sources that wrap the very objects the services wrap (OfflineStack), no gRPC;
  - optionally the Ray Serve peer (recsys/bench_peer.py) at the same count.
in alternating blocks (their order rotating), so a drift of the shared machine lands on all of them.
Beside the latencies: per-stage and per-hop means (the ranker's stage histograms and each service's
server-side handling time, scraped before and after; the floor's own stage timings)."""

from __future__ import annotations

import asyncio
import gc
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import faiss
from threadpoolctl import threadpool_limits

from recsys.cluster import Cluster
from recsys.latency import RecommendClient, summarize
from recsys.scrape import mean_by_label_since, scrape

COUNTS = (25, 100, 300, 500)
PLAIN_RANKER = ["--cache", "none", "--no-exposures"]  # the plain configuration: every call computes
_DEPS = {"fetch_user": ("feature_svc", "GetUserFeatures"), "retrieve": ("candidate_svc", "Retrieve"),
         "fetch_items": ("feature_svc", "GetItemFeatures")}


class Floor:
    """The pipeline in this process on `bundle`, with the candidate index the cluster's candidate_svc uses."""

    def __init__(self, bundle: Path, index: str = "exact"):
        from recsys.feature_tables import FeatureTables
        from recsys.pipeline.model import ServingModel
        from recsys.pipeline.offline import OfflineStack
        from recsys.pipeline.recommend import PipelineConfig
        from recsys.retrieval.artifacts import RetrievalArtifacts
        from recsys.retrieval.generator import GeneratorConfig

        t0 = time.perf_counter()
        model = ServingModel.load(Path(bundle))
        cfg = PipelineConfig().with_defaults(model.defaults)  # what ranker_svc serves (setting bundle_reranker)
        self.stack = OfflineStack(RetrievalArtifacts.load(Path(bundle) / "retrieval"),
                                  FeatureTables.load(Path(bundle) / "features"), model, cfg,
                                  GeneratorConfig(n=cfg.n_candidates, index=index, history_window=cfg.history_window))
        self.load_s = time.perf_counter() - t0
        gc.collect()
        gc.freeze()  # as the services do once loaded (recsys/rpc/host.py): the collector skips the bundle
        self.loop = asyncio.new_event_loop()

    def block(self, users: Sequence[str], n_candidates: int, k: int = 10
              ) -> tuple[list[float], int, dict[str, float]]:
        """One call at a time: latencies (s), failures, and the summed seconds per stage."""
        stack = self.stack.with_pipeline(n_candidates=n_candidates)
        lat: list[float] = []
        stages: dict[str, float] = defaultdict(float)
        threads = faiss.omp_get_max_threads()
        # one thread each, as the services run (recsys/rpc/server.py): a 2-core machine's cores are shared
        with threadpool_limits(1):
            faiss.omp_set_num_threads(1)
            try:
                self._calls(stack, users, k, lat, stages)
            finally:
                faiss.omp_set_num_threads(threads)
        return lat, len(users) - len(lat), dict(stages)

    def _calls(self, stack, users: Sequence[str], k: int, lat: list[float], stages: dict[str, float]) -> None:
        from recsys.pipeline.recommend import recommend
        from recsys.pipeline.types import RecommendParams

        for u in users:
            t0 = time.perf_counter()
            try:
                rec = self.loop.run_until_complete(
                    recommend(RecommendParams(user_id=u, k=k), stack.model, stack.features, stack.candidates,
                              stack.pipeline))
            except Exception:  # noqa: BLE001 (counted as the cluster counts a failed call)
                continue
            lat.append(time.perf_counter() - t0)
            for name, s in rec.timings.items():
                stages[name] += s

    def close(self) -> None:
        self.loop.close()


def set_candidates(cluster: Cluster, n: int) -> float:
    """Restart the ranker with `n_candidates` = n (the last flag wins); seconds it took."""
    svc = cluster.services["ranker_svc"]
    cmd = list(svc.cmd)
    while "--n-candidates" in cmd:
        i = cmd.index("--n-candidates")
        del cmd[i:i + 2]
    svc.cmd = [*cmd, "--n-candidates", str(n)]
    return cluster.restart("ranker_svc")


def _scrape_all(cluster: Cluster) -> dict[str, dict]:
    return {name: scrape(cluster.services[name].metrics_port) for name in ("ranker_svc", "feature_svc",
                                                                          "candidate_svc")}


def hops(before: dict[str, dict], after: dict[str, dict], client_ms: float,
         floor_stages_ms: dict[str, float]) -> dict[str, dict[str, float]]:
    """Mean ms per stage as the ranker saw it, per dependency server side, their difference (serialization,
    transport and event-loop wait), the floor's stage; and the client → ranker hop."""
    stages = mean_by_label_since(before["ranker_svc"], after["ranker_svc"], "recsys_stage_duration_seconds",
                                 "stage")
    server = {name: mean_by_label_since(before[name], after[name], "grpc_server_handling_seconds", "grpc_method")
              for name in ("ranker_svc", "feature_svc", "candidate_svc")}
    out: dict[str, dict[str, float]] = {}
    ranker_ms = server["ranker_svc"].get("Recommend", float("nan"))
    out["client → ranker"] = {"ranker_ms": ranker_ms, "server_ms": ranker_ms, "hop_ms": client_ms - ranker_ms,
                              "client_ms": client_ms, "floor_ms": float("nan")}
    for stage, ms in stages.items():
        row = {"ranker_ms": ms, "floor_ms": floor_stages_ms.get(stage, float("nan"))}
        if stage in _DEPS:
            svc, method = _DEPS[stage]
            row["server_ms"] = server[svc].get(method, float("nan"))
            row["hop_ms"] = ms - row["server_ms"]
        out[stage] = row
    return out


def sweep(cluster: Cluster, floor: Floor, users: Sequence[str], counts: Sequence[int] = COUNTS,
          requests: int = 200, block: int = 25, k: int = 10, peer=None, progress=None) -> list[dict]:
    """Per candidate count: cluster, floor (and peer) latency of the same `requests` users, interleaved in
    blocks; ratios cluster/floor and cluster/peer of the p50s; per-stage and per-hop means."""
    rows = []
    for n in counts:
        restart_s = set_candidates(cluster, n)
        client = RecommendClient(cluster.target, k)
        try:
            warm = list(users[:20])
            client.block(warm)
            floor.block(warm, n, k)
            if peer is not None:
                peer.sequential(warm, k, n)
            before = _scrape_all(cluster)
            lat: dict[str, list[float]] = defaultdict(list)
            errors: dict[str, int] = defaultdict(int)
            floor_stages: dict[str, float] = defaultdict(float)
            arms = ["cluster", "floor"] + (["peer"] if peer is not None else [])
            for b, start in enumerate(range(0, requests, block)):
                chunk = [users[(start + j) % len(users)] for j in range(min(block, requests - start))]
                for arm in arms[b % len(arms):] + arms[:b % len(arms)]:
                    if arm == "cluster":
                        got, failed, _ = client.block(chunk)
                    elif arm == "floor":
                        got, failed, st = floor.block(chunk, n, k)
                        for name, s in st.items():
                            floor_stages[name] += s
                    else:
                        got, failed = peer.sequential(chunk, k, n)
                    lat[arm] += got
                    errors[arm] += failed
                if progress is not None:
                    progress(len(chunk))
            after = _scrape_all(cluster)
        finally:
            client.close()
        row: dict = {"n_candidates": n, "ranker_restart_s": restart_s}
        for arm in lat:
            row[arm] = summarize(lat[arm]) | {"errors": errors[arm]}
        c50 = row["cluster"].get("p50_ms", float("nan"))
        row["cluster_over_floor_p50"] = c50 / row["floor"]["p50_ms"] if row["floor"].get("p50_ms") else float("nan")
        if "peer" in row:
            row["cluster_over_peer_p50"] = c50 / row["peer"]["p50_ms"] if row["peer"].get("p50_ms") else float("nan")
        nfloor = max(1, len(lat["floor"]))
        row["stages"] = hops(before, after, row["cluster"].get("mean_ms", float("nan")),
                             {s: 1000.0 * v / nfloor for s, v in floor_stages.items()})
        rows.append(row)
    return rows
