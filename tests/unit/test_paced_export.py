"""Span export paced around requests (recsys/rpc/tracing.py PacedExporter): a batch goes out in small
slices, in order and whole, and a slice waits for the call in flight to end (never longer than its cap)."""

from __future__ import annotations

import threading
import time

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from recsys.rpc.priority import InFlight
from recsys.rpc.tracing import PacedExporter


class Slices(InMemorySpanExporter):
    """The in-memory exporter, remembering the size and time of every export call."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[int, float]] = []

    def export(self, spans):
        self.calls.append((len(spans), time.monotonic()))
        return super().export(spans)


def _spans(n: int) -> list:
    provider = TracerProvider()
    sink = InMemorySpanExporter()
    provider.add_span_processor(BatchSpanProcessor(sink, schedule_delay_millis=60_000))
    tracer = provider.get_tracer("test")
    for i in range(n):
        tracer.start_span(f"s{i}").end()
    provider.force_flush()
    return list(sink.get_finished_spans())


def test_a_batch_goes_out_in_slices_in_order():
    spans = _spans(70)
    inner = Slices()
    assert PacedExporter(inner, slice_size=32, gate=InFlight()).export(spans) is SpanExportResult.SUCCESS
    assert [n for n, _ in inner.calls] == [32, 32, 6]
    assert [s.name for s in inner.get_finished_spans()] == [s.name for s in spans]


def test_a_slice_waits_for_the_call_in_flight():
    gate, inner = InFlight(), Slices()
    gate.enter()
    left = threading.Timer(0.05, gate.leave)
    t0 = time.monotonic()
    left.start()
    PacedExporter(inner, slice_size=8, max_wait_s=1.0, gate=gate).export(_spans(8))
    assert inner.calls[0][1] - t0 >= 0.045  # not before the call ended
    assert inner.calls[0][1] - t0 < 0.9  # and as soon as it did, not at the cap


def test_under_a_load_with_no_gap_slices_still_go_at_the_cap():
    gate, inner = InFlight(), Slices()
    gate.enter()  # never leaves
    t0 = time.monotonic()
    PacedExporter(inner, slice_size=4, max_wait_s=0.01, gate=gate).export(_spans(12))
    assert len(inner.get_finished_spans()) == 12 and time.monotonic() - t0 < 1.0


def test_a_failed_slice_fails_the_batch_and_the_rest_still_go():
    class FailsFirst(Slices):
        def export(self, spans):
            result = super().export(spans)
            return SpanExportResult.FAILURE if len(self.calls) == 1 else result

    inner = FailsFirst()
    assert PacedExporter(inner, slice_size=5, gate=InFlight()).export(_spans(10)) is SpanExportResult.FAILURE
    assert len(inner.calls) == 2
