"""Input limits and the retry policy as data: every size problem names its field, the limits come from the
settings, and the service config is one gRPC accepts."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from ranker_svc.server import validate
from ranker_svc.settings import RankerSettings
from recsys.events.validate import Limits
from recsys.rpc.admission import (
    Admission,
    Rejected,
    ServerLimits,
    ServiceTime,
    deadline_passed,
    guarded_deserializer,
)
from recsys.rpc.limits import CallLimit, RequestLimits, ResponseBudget, chunks, recommend_problem
from recsys.rpc.retry import INTERNAL_SERVICES, RETRYABLE, service_config
from recsys.v1 import recommender_pb2 as pb

LIM = RequestLimits(max_id_len=10, max_map_entries=2, max_map_key_len=5, max_map_value_len=8, max_exclude=3)


@pytest.mark.parametrize(("fields", "needle"), [
    ({"user_id": "u" * 11}, "user_id must be at most 10"),
    ({"exclude_item_ids": ["a", "b", "c", "d"]}, "exclude_item_ids: at most 3"),
    ({"exclude_item_ids": ["a", ""]}, "exclude_item_ids[1] must be a non-empty id"),
    ({"exclude_item_ids": ["a" * 11]}, "exclude_item_ids[0] must be at most 10"),
    ({"user_attributes": {"a": "1", "b": "2", "c": "3"}}, "user_attributes: at most 2 entries"),
    ({"user_attributes": {"toolong": "1"}}, "user_attributes: keys must be at most 5"),
    ({"user_attributes": {"a": "v" * 9}}, "user_attributes['a'] must be at most 8"),
    ({"context": pb.Context(extra={"k": "v" * 9})}, "context.extra['k']"),
    ({"context": pb.Context(surface="s" * 9)}, "context.surface"),
    ({"force_arms": {"e1": "a", "e2": "b", "e3": "c"}}, "force_arms: at most 2"),
    ({"model_version": "v" * 11}, "model_version must be at most 10"),
    # found by fuzzing: such a time was answered, then killed the exposure writer (ToMilliseconds raised)
    ({"context": pb.Context(time=Timestamp(seconds=2**62))}, "context.time.seconds must be between"),
    ({"context": pb.Context(time=Timestamp(seconds=1, nanos=-5))}, "context.time.nanos must be between"),
])
def test_each_size_problem_names_its_field(fields, needle):
    request = pb.RecommendRequest(user_id=fields.pop("user_id", "u"), k=5, **fields)
    assert needle in (recommend_problem(request, LIM) or "")
    assert needle in (validate(request, 200, LIM) or "")  # the ranker's validation applies them


def test_a_request_within_the_limits_passes():
    request = pb.RecommendRequest(user_id="u" * 10, k=5, exclude_item_ids=["a", "b", "c"],
                                  user_attributes={"age": "25-34"}, force_arms={"e": "arm"})
    assert recommend_problem(request, LIM) is None


def test_the_limits_come_from_the_settings():
    s = RankerSettings(max_id_len=7, max_map_entries=3, max_request_exclude=9, max_title_len=11,
                       max_send_batch=13, max_message_bytes=2048, max_in_flight=5)
    assert RequestLimits.of(s) == RequestLimits(max_id_len=7, max_map_entries=3, max_exclude=9)
    send = Limits.of(s)
    assert (send.max_id, send.max_attributes, send.max_title, send.max_batch) == (7, 3, 11, 13)
    server = ServerLimits.of(s)
    assert (server.max_message_bytes, server.max_in_flight) == (2048, 5)
    assert server.request == RequestLimits.of(s)  # checked by the deserializer too
    assert dict(server.transport_options())["grpc.max_receive_message_length"] == 4096  # the hard ceiling


def test_the_guarded_deserializer_refuses_before_parsing():
    limits = ServerLimits(max_message_bytes=100, max_in_flight=1)
    admission = Admission(limits.max_in_flight)
    des = guarded_deserializer(pb.RecommendRequest.FromString, "recsys.v1.RecommendRequest", limits, admission)
    assert des(pb.RecommendRequest(user_id="u", k=1).SerializeToString()).user_id == "u"
    bad = des(b"\xff\xff\xff\xff")
    assert isinstance(bad, Rejected) and bad.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid recsys.v1.RecommendRequest" in bad.details and bad.reason == "undecodable"
    big = des(b"\x0a\x70" + b"u" * 112)
    assert isinstance(big, Rejected) and big.reason == "too_large" and "max_message_bytes (100)" in big.details
    admission.count = 1  # full: shed without parsing
    shed = des(b"\xff")
    assert isinstance(shed, Rejected) and shed.reason == "overloaded"
    assert shed.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert deadline_passed(0.0).code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert deadline_passed(None) is None and deadline_passed(1.0) is None


def test_the_typical_time_refuses_only_a_busy_server_with_a_fresh_estimate():
    typical = ServiceTime()
    typical.observe(0.2)
    assert typical.refuse(0.05, busy=False) is None  # idle: the call has the server to itself
    refused = typical.refuse(0.05, busy=True)
    assert refused is not None and refused.code == grpc.StatusCode.DEADLINE_EXCEEDED and "200.0 ms" in refused.details
    assert typical.refuse(0.15, busy=True) is None
    typical.updated -= ServiceTime.STALE_S + 1
    assert typical.refuse(0.05, busy=True) is None  # an old estimate says nothing about now


def test_a_response_budget_stops_at_the_message_size():
    budget = ResponseBudget(100, "the answer")
    budget.spend(60, 1, 3)
    with pytest.raises(CallLimit) as err:
        budget.spend(60, 2, 3)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_message_bytes (100) after 2 of 3" in str(err.value)


class _Context:
    def __init__(self, remaining: list[float]):
        self.remaining = remaining

    def time_remaining(self) -> float:
        return self.remaining.pop(0)


def test_chunks_stop_when_the_deadline_passes():
    async def walk(remaining: list[float]) -> list:
        return [list(c) async for c in chunks(list(range(10)), 4, _Context(remaining))]

    assert asyncio.run(walk([1.0, 1.0])) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    with pytest.raises(CallLimit) as err:
        asyncio.run(walk([1.0, 0.0]))
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and "after 8 of 10" in str(err.value)


def test_the_service_config_retries_unavailable_only_under_a_budget():
    config = json.loads(service_config(INTERNAL_SERVICES))
    (method,) = config["methodConfig"]
    assert {n["service"] for n in method["name"]} == set(INTERNAL_SERVICES)
    assert method["retryPolicy"]["retryableStatusCodes"] == list(RETRYABLE) == ["UNAVAILABLE"]
    assert method["retryPolicy"]["maxAttempts"] >= 2
    assert config["retryThrottling"]["maxTokens"] > 0 and 0 < config["retryThrottling"]["tokenRatio"] < 1
    # gRPC accepts it: an invalid service config fails every call with INVALID_ARGUMENT "errors validating..."
    options = [("grpc.service_config", service_config(INTERNAL_SERVICES))]
    with grpc.insecure_channel("127.0.0.1:1", options=options) as ch, pytest.raises(grpc.RpcError) as err:
        ch.unary_unary("/recsys.v1.FeatureStore/GetUserFeatures")(b"", timeout=0.2)
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), err.value.details()


def test_the_guarded_deserializer_refuses_a_field_over_its_size_setting_as_it_parses():
    limits = ServerLimits(request=RequestLimits(max_map_entries=2, max_id_len=5))
    des = guarded_deserializer(pb.RecommendRequest.FromString, "recsys.v1.RecommendRequest", limits, Admission(0))
    ok = pb.RecommendRequest(user_id="u", k=1, user_attributes={"a": "1", "b": "2"})
    assert des(ok.SerializeToString()) == ok
    for req, problem in ((pb.RecommendRequest(user_id="u", k=1, user_attributes={"a": "1", "b": "2", "c": "3"}),
                          "user_attributes: at most 2 entries, got 3"),
                         (pb.RecommendRequest(user_id="u" * 6, k=1), "user_id must be at most 5 characters, got 6")):
        bad = des(req.SerializeToString())
        assert isinstance(bad, Rejected) and bad.code == grpc.StatusCode.INVALID_ARGUMENT
        assert (bad.details, bad.reason) == (problem, "too_big_field")
    # a type without a size check is only parsed
    raw = guarded_deserializer(pb.RecommendResponse.FromString, "recsys.v1.RecommendResponse", limits, Admission(0))
    assert raw(pb.RecommendResponse(request_id="r" * 50).SerializeToString()).request_id == "r" * 50
