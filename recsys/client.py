"""A small synchronous client for the Recommend API (CLI, demo, tests)."""

from __future__ import annotations

import grpc

from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc


class RecommenderClient:
    def __init__(self, target: str):
        self.channel = grpc.insecure_channel(target)
        self.stub = pb_grpc.RecommenderStub(self.channel)

    def recommend(self, user_id: str, k: int = 10, *, timeout: float = 5.0, **fields) -> pb.RecommendResponse:
        return self.stub.Recommend(pb.RecommendRequest(user_id=user_id, k=k, **fields), timeout=timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> RecommenderClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
