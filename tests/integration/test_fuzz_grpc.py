"""Fuzzed input over real gRPC (issue 11, item 6): hypothesis throws arbitrary field values at Recommend
and Feedback/Send on the running cluster, and arbitrary bytes as request bodies. Every case must end with
a correct answer or a clear INVALID_ARGUMENT / RESOURCE_EXHAUSTED (NOT_FOUND for an unloaded
model_version) naming the field; never INTERNAL, UNKNOWN, a hang or a crash; and every refused call must
be in the ranker's grpc_server_handled_total.

Example counts: RECSYS_FUZZ_EXAMPLES (default 40 per test in `make test`; `make fuzz` raises it).
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter

import grpc
import pytest
from google.protobuf import timestamp_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys.v1 import feedback_pb2 as fpb
from recsys.v1 import feedback_pb2_grpc as fpb_grpc
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc

from .load_helpers import Counters

pytestmark = pytest.mark.integration
EXAMPLES = int(os.environ.get("RECSYS_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("RECSYS_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
           grpc.StatusCode.NOT_FOUND}
RECOMMEND_FIELDS = ("user_id", "k ", "k must", "exclude_item_ids", "user_attributes", "context", "force_arms",
                    "model_version", "diversity_lambda", "request_id", "max_message_bytes", "not a valid")
SEND_FIELDS = ("events", "max_message_bytes", "not a valid")

# Text: any Unicode scalar value (proto strings are UTF-8: lone surrogates cannot be sent by any client)
chars = st.characters(blacklist_categories=("Cs",))
small_text = st.text(chars, max_size=20)
huge_text = st.builds(lambda c, n: c * n, chars, st.sampled_from([0, 1, 100, 101, 256, 257, 512, 513, 1000, 1001,
                                                                  100_000, 1_000_000]))
text = st.one_of(small_text, small_text, huge_text)
ids = st.one_of(st.sampled_from(["u1", "u2", "u3", "i1", "i5", "new-user", ""]), small_text, text)
user_ids = st.one_of(st.sampled_from(["u1", "u2", "u3", "new-user"]), small_text.filter(bool), ids)
floats = st.floats(allow_nan=True, allow_infinity=True)
int32 = st.integers(-2**31, 2**31 - 1)
int64 = st.integers(-2**63, 2**63 - 1)
k_values = st.one_of(st.integers(1, 200), st.integers(1, 200), st.sampled_from([-1, 0, 1, 200, 201, 10_000]), int32)
many = st.sampled_from([0, 1, 10, 100, 101, 10_000, 10_001, 150_000])
some = st.sampled_from([0, 1, 100, 101, 1000, 20_000])  # per event: a batch holds several


def repeated(element, sizes=many):
    """Short lists of arbitrary values, or enormous ones of one short value."""
    return st.one_of(st.lists(element, max_size=5), st.builds(lambda x, n: [x] * n, small_text, sizes))


def mapping(key, value, sizes=many):
    """Small maps of arbitrary entries, or enormous ones of short entries."""
    return st.one_of(st.dictionaries(key, value, max_size=5),
                     st.builds(lambda k, v, n: {f"{k}{i}": v for i in range(n)}, small_text, small_text, sizes))


timestamps = st.one_of(st.builds(timestamp_pb2.Timestamp, seconds=int64, nanos=int32),
                       st.builds(timestamp_pb2.Timestamp, seconds=st.integers(0, 2_000_000_000),
                                 nanos=st.integers(0, 999_999_999)))
contexts = st.builds(pb.Context, surface=st.one_of(small_text, text), device=st.one_of(small_text, text),
                     extra=st.one_of(st.dictionaries(small_text, small_text, max_size=3), mapping(small_text, text)),
                     time=st.one_of(st.none(), timestamps))


def sometimes(strategy, default):
    """Mostly the default (so most requests are valid but for one or two fields), else arbitrary."""
    return st.one_of(st.just(default), st.just(default), strategy)


@st.composite
def recommend_requests(draw) -> pb.RecommendRequest:
    req = pb.RecommendRequest(
        user_id=draw(user_ids), k=draw(k_values), exclude_item_ids=draw(sometimes(repeated(ids), [])),
        user_attributes=draw(sometimes(mapping(small_text, text), {})), explain=draw(st.booleans()),
        request_id=draw(sometimes(text, "")), include_seen=draw(st.booleans()),
        model_version=draw(sometimes(text, "")), force_arms=draw(sometimes(mapping(small_text, small_text), {})))
    if draw(st.booleans()):
        req.context.CopyFrom(draw(contexts))
    if draw(st.booleans()):
        req.diversity_lambda = draw(st.one_of(floats, st.floats(0, 1), st.floats(0, 1)))
    return req


interactions = st.builds(fpb.Interaction, user_id=ids, item_id=ids,
                         type=st.one_of(st.sampled_from(["view", "click", "rating", "purchase", "teleport", ""]), text),
                         request_id=st.one_of(st.just(""), text))


@st.composite
def feedback_events(draw) -> fpb.FeedbackEvent:
    ev = fpb.FeedbackEvent(event_id=draw(st.one_of(st.uuids().map(str), text)))
    if draw(st.booleans()):
        ev.timestamp.CopyFrom(draw(st.one_of(timestamps, st.builds(timestamp_pb2.Timestamp,
                                                                   seconds=st.integers(1_600_000_000, 1_800_000_000)))))
    kind = draw(st.sampled_from(["interaction", "item", "user", "none"]))
    if kind == "interaction":
        ev.interaction.CopyFrom(draw(interactions))
        if draw(st.booleans()):
            ev.interaction.value = draw(floats)
    elif kind == "item":
        ev.item.CopyFrom(fpb.ItemUpsert(item_id=draw(ids), title=draw(text), categories=draw(repeated(text, some)),
                                        attributes=draw(mapping(small_text, text, some))))
    elif kind == "user":
        ev.user.CopyFrom(fpb.UserUpsert(user_id=draw(ids), attributes=draw(mapping(small_text, text, some))))
    return ev


small_events = st.builds(lambda e, u, i, t: fpb.FeedbackEvent(event_id=e, interaction=fpb.Interaction(
    user_id=u, item_id=i, type=t)), small_text, small_text, small_text, st.sampled_from(["click", "view", "x"]))
send_requests = st.one_of(st.builds(fpb.SendRequest, events=st.lists(feedback_events(), max_size=8)),
                          st.builds(lambda ev, n: fpb.SendRequest(events=[ev] * n), small_events,
                                    st.sampled_from([10_000, 10_001, 50_000])))
CEILING = 8 * 1024 * 1024  # twice max_message_bytes: beyond it the transport refuses before the service sees it


@pytest.fixture(scope="module")
def channel(cluster):
    with grpc.insecure_channel(cluster.target, options=[("grpc.max_send_message_length", -1)]) as ch:
        yield ch


class Outcomes:
    """Codes the fuzzed calls got, to compare with what the ranker counted."""

    def __init__(self, cluster, method: str):
        self.counters = Counters(cluster.services["ranker_svc"].metrics_port)
        self.method = method
        self.codes: Counter[str] = Counter()
        self.beyond_ceiling = 0

    def check_counted(self) -> None:
        for code, n in self.codes.items():
            counted = self.counters.delta("grpc_server_handled_total", grpc_method=self.method, grpc_code=code)
            if code == "RESOURCE_EXHAUSTED":
                n -= self.beyond_ceiling  # refused by the transport: only the caller can see those
            assert counted == n, f"{code}: {n} calls, {counted} in grpc_server_handled_total"


def _call(fn, request, fields: tuple[str, ...], size: int = 0):
    if size > CEILING:  # the transport's own refusal names the message size
        fields = ("larger than max",)
    try:
        return grpc.StatusCode.OK, fn(request, timeout=20)
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
    assert code in ALLOWED, f"{code.name}: {details}"
    assert any(f in details for f in fields), f"{code.name} without a field name: {details!r}"
    return code, None


def _check_answer(req: pb.RecommendRequest, resp: pb.RecommendResponse) -> None:
    assert len(resp.items) <= req.k
    assert not set(req.exclude_item_ids) & {it.item_id for it in resp.items}
    assert len({it.item_id for it in resp.items}) == len(resp.items)
    assert all(math.isfinite(it.score) for it in resp.items)
    assert resp.request_id == (req.request_id or resp.request_id) and resp.request_id
    if req.HasField("diversity_lambda"):
        assert resp.diversity_lambda == req.diversity_lambda


def test_recommend_with_arbitrary_fields(cluster, channel):
    stub = pb_grpc.RecommenderStub(channel)
    outcomes = Outcomes(cluster, "Recommend")

    @FUZZ
    @given(recommend_requests())
    def case(req):
        size = req.ByteSize()
        code, resp = _call(stub.Recommend, req, RECOMMEND_FIELDS, size)
        outcomes.codes[code.name] += 1
        if size > CEILING:
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            outcomes.beyond_ceiling += 1
        if resp is not None:
            _check_answer(req, resp)

    case()
    print(f"Recommend: {sum(outcomes.codes.values())} cases, {dict(outcomes.codes)}")
    outcomes.check_counted()
    # what was answered was also logged: the exposure writer survived every accepted request
    stub.Recommend(pb.RecommendRequest(user_id="u1", k=3), timeout=5)
    deadline = time.monotonic() + 5
    while outcomes.counters.delta("recsys_exposures_total") < outcomes.codes["OK"] + 1:
        assert time.monotonic() < deadline, "exposures stopped being written"
        time.sleep(0.1)


def test_send_with_arbitrary_events(cluster, channel):
    stub = fpb_grpc.FeedbackStub(channel)
    outcomes = Outcomes(cluster, "Send")

    @FUZZ
    @given(send_requests)
    def case(req):
        size = req.ByteSize()
        code, resp = _call(stub.Send, req, SEND_FIELDS, size)
        outcomes.codes[code.name] += 1
        if size > CEILING:
            outcomes.beyond_ceiling += 1
        if resp is not None:
            assert resp.accepted + resp.duplicates + len(resp.rejected) == len(req.events)
            for r in resp.rejected:
                assert r.reason.startswith(f"events[{r.index}]"), r.reason

    case()
    print(f"Send: {sum(outcomes.codes.values())} cases, {dict(outcomes.codes)}")
    outcomes.check_counted()


@pytest.mark.parametrize("method", ["/recsys.v1.Recommender/Recommend", "/recsys.v1.Feedback/Send"])
def test_arbitrary_bytes_as_a_request_body(cluster, channel, method):
    call = channel.unary_unary(method)
    name = method.rsplit("/", 1)[1]
    outcomes = Outcomes(cluster, name)
    fields = RECOMMEND_FIELDS if name == "Recommend" else SEND_FIELDS

    @FUZZ
    @given(st.one_of(st.binary(max_size=200), st.binary(min_size=1, max_size=3).map(lambda b: b * 1000)))
    def case(body):
        code, _ = _call(call, body, fields)
        outcomes.codes[code.name] += 1

    case()
    print(f"{name} bytes: {sum(outcomes.codes.values())} cases, {dict(outcomes.codes)}")
    outcomes.check_counted()
