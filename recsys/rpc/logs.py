"""The services' log lines: human-readable text (the default: `recsys up`, the demo) or JSON lines, one
object per record with `time` (UTC, ISO 8601), `level`, `logger`, `message`, and when known the
`request_id` of the call being served and the `trace_id`/`span_id` of its span (what a log pipeline
joins to traces). Extra fields passed with `extra=` and exceptions (`exc_info`) are kept."""

from __future__ import annotations

import logging

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

from recsys.rpc.request_id import REQUEST_ID

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class CallContext(logging.Filter):
    """Adds the current request id and span to each record (only the fields that are known)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = REQUEST_ID.get()
        if rid:
            record.request_id = rid
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.trace_id = format(ctx.trace_id, "032x")
            record.span_id = format(ctx.span_id, "016x")
        return True


def json_formatter() -> logging.Formatter:
    return JsonFormatter("{levelname}{name}{message}", style="{", timestamp="time",
                         rename_fields={"levelname": "level", "name": "logger"})


def configure_logging(log_format: str = "text", level: str = "INFO") -> None:
    """Root logging for a service process: one stderr handler in `log_format` (text or json)."""
    if log_format not in FORMATS:
        raise SystemExit(f"log_format must be one of {', '.join(FORMATS)}, got {log_format!r}")
    handler = logging.StreamHandler()
    handler.addFilter(CallContext())
    handler.setFormatter(json_formatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
