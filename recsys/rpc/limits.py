"""Bounded work per call: how big the parts of a request may be, how big an answer may grow, and how a
long answer stops when its caller's deadline passes. Every bound is a setting (docs/operations.md).

Requests: `*_problem` return the first size problem as a message naming the field (INVALID_ARGUMENT), so
a caller cannot make a service hold, copy or forward unbounded ids, maps or lists.
Answers: a handler that builds an answer from many records (feature_svc's batch reads) walks them in
`chunks`, checking the deadline between chunks (and letting gRPC's cancellation in), and charges each
record to a `ResponseBudget` of `max_message_bytes`; either raises `CallLimit` with the status to return.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class RequestLimits:
    """The request size settings of a service (the defaults are recsys/settings.py's)."""

    max_id_len: int = 512
    max_map_entries: int = 100
    max_map_key_len: int = 100
    max_map_value_len: int = 1000
    max_exclude: int = 10_000

    @classmethod
    def of(cls, settings: object) -> RequestLimits:
        d = cls()
        return cls(max_id_len=getattr(settings, "max_id_len", d.max_id_len),
                   max_map_entries=getattr(settings, "max_map_entries", d.max_map_entries),
                   max_map_key_len=getattr(settings, "max_map_key_len", d.max_map_key_len),
                   max_map_value_len=getattr(settings, "max_map_value_len", d.max_map_value_len),
                   max_exclude=getattr(settings, "max_request_exclude", d.max_exclude))


def text_problem(value: str, field: str, limit: int) -> str | None:
    if len(value) > limit:
        return f"{field} must be at most {limit} characters, got {len(value)}"
    return None


def ids_problem(values: Sequence[str], field: str, max_count: int, max_len: int) -> str | None:
    """At most `max_count` non-empty ids of at most `max_len` characters."""
    if len(values) > max_count:
        return f"{field}: at most {max_count} ids, got {len(values)}"
    for i, x in enumerate(values):
        if not x:
            return f"{field}[{i}] must be a non-empty id"
        if len(x) > max_len:
            return f"{field}[{i}] must be at most {max_len} characters, got {len(x)}"
    return None


def map_problem(entries: Mapping[str, object], field: str, lim: RequestLimits) -> str | None:
    if len(entries) > lim.max_map_entries:
        return f"{field}: at most {lim.max_map_entries} entries, got {len(entries)}"
    for key, value in entries.items():
        if len(key) > lim.max_map_key_len:
            return f"{field}: keys must be at most {lim.max_map_key_len} characters, got {len(key)}"
        if isinstance(value, str) and len(value) > lim.max_map_value_len:
            return f"{field}[{key[:40]!r}] must be at most {lim.max_map_value_len} characters, got {len(value)}"
    return None


# google.protobuf.Timestamp's valid range (0001-01-01 .. 9999-12-31): beyond it no conversion works.
MIN_TIMESTAMP_S, MAX_TIMESTAMP_S = -62_135_596_800, 253_402_300_799


def timestamp_problem(ts, field: str) -> str | None:
    if not MIN_TIMESTAMP_S <= ts.seconds <= MAX_TIMESTAMP_S:
        return f"{field}.seconds must be between {MIN_TIMESTAMP_S} and {MAX_TIMESTAMP_S}, got {ts.seconds}"
    if not 0 <= ts.nanos <= 999_999_999:
        return f"{field}.nanos must be between 0 and 999999999, got {ts.nanos}"
    return None


def recommend_problem(request, lim: RequestLimits) -> str | None:
    """Size problems of a recsys.v1.RecommendRequest (its meaning is checked by ranker_svc's validate)."""
    ctx = request.context
    return (text_problem(request.user_id, "user_id", lim.max_id_len)
            or ids_problem(request.exclude_item_ids, "exclude_item_ids", lim.max_exclude, lim.max_id_len)
            or map_problem(request.user_attributes, "user_attributes", lim)
            or map_problem(ctx.extra, "context.extra", lim)
            or map_problem(request.force_arms, "force_arms", lim)
            or text_problem(request.model_version, "model_version", lim.max_id_len)
            or text_problem(ctx.surface, "context.surface", lim.max_map_value_len)
            or text_problem(ctx.device, "context.device", lim.max_map_value_len)
            or (timestamp_problem(ctx.time, "context.time") if ctx.HasField("time") else None))


def retrieve_problem(request, lim: RequestLimits) -> str | None:
    """Size problems of a recsys.v1.RetrieveRequest beyond candidate_svc's counts of history and exclusions."""
    return (text_problem(request.user_id, "user_id", lim.max_id_len)
            or text_problem(request.model_version, "model_version", lim.max_id_len)
            or map_problem(request.user_attributes, "user_attributes", lim)
            or map_problem(request.source_quotas, "source_quotas", lim))


# Size checks by request type, also run in the request deserializer (recsys.rpc.admission): a request over
# a bound is refused right after it is parsed, before any await, so concurrent oversized requests never
# hold their parsed messages at once (24 bodies of 200,000 map entries each took the ranker to 500-600 MB
# when the check ran in the handler).
SIZE_PROBLEMS: dict[str, Callable[[Any, RequestLimits], str | None]] = {
    "recsys.v1.RecommendRequest": recommend_problem,
    "recsys.v1.RetrieveRequest": retrieve_problem,
}


class CallLimit(Exception):
    """A call reached one of its bounds; carries the status its handler answers with."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


class ResponseBudget:
    """Bytes an answer may hold (about its encoded size): an answer that could never be sent is not built."""

    def __init__(self, limit: int, what: str):
        self.limit = limit
        self.what = what
        self.used = 0

    def spend(self, n: int, done: int, total: int) -> None:
        """Charge one more record (`done` of `total` so far); raises CallLimit past the limit."""
        self.used += n
        if self.used > self.limit:
            raise CallLimit(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"{self.what} would exceed max_message_bytes ({self.limit}) after {done} of {total} "
                            "entries; ask for fewer at a time")


    def spend_many(self, sizes: Sequence[int], done: int, total: int) -> None:
        """Charge a chunk of records at once (`done` before it); the same error as spending them one by one."""
        used = self.used + np.cumsum(np.asarray(sizes, dtype=np.int64))
        if len(used) and used[-1] > self.limit:
            first = int(np.searchsorted(used, self.limit, side="right"))
            self.used = int(used[first])
            self.spend(0, done + first + 1, total)
        self.used = int(used[-1]) if len(used) else self.used


def strings_size(values: Iterable[str]) -> int:
    """About the encoded size of repeated strings (a tag and a length byte or two each)."""
    return sum(len(v) + 3 for v in values)


async def chunks(items: Sequence[T], size: int, context) -> AsyncIterator[Sequence[T]]:
    """`items` in slices of `size`; before each later slice, a checkpoint: a pending cancellation is
    delivered, and a passed deadline raises CallLimit(DEADLINE_EXCEEDED), so the work stops with it."""
    for start in range(0, len(items), size):
        if start:
            await asyncio.sleep(0)
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                raise CallLimit(grpc.StatusCode.DEADLINE_EXCEEDED,
                                f"the deadline passed after {start} of {len(items)} entries")
        yield items[start:start + size]
