"""`recsys send`, `recsys events export` and `recsys cache warm`: the feedback loop from the command line."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.markup import escape
from rich.progress import Progress

from recsys.display import console

CSV_COLUMNS = ("event_id", "timestamp", "user_id", "item_id", "type", "value", "request_id")


class InputError(ValueError):
    """A bad line of an events file: the message names the file and line."""


def _unix_seconds(value: float) -> float:
    """A timestamp in unix seconds that a protobuf Timestamp can hold (years 1..9999)."""
    if not math.isfinite(value) or not -62_135_596_800 <= value <= 253_402_300_799:
        raise ValueError(f"timestamp must be unix seconds (years 1 to 9999), got {value!r}")
    return value


def _jsonl_events(path: Path) -> Iterator[tuple[int, object]]:
    from google.protobuf import json_format

    from recsys.v1 import feedback_pb2 as fpb

    with path.open("rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}:{line_no}: not UTF-8 text (byte {exc.start + 1} of the line)") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("each line must be a JSON object")
                ts = obj.get("timestamp")
                seconds = isinstance(ts, int | float) and not isinstance(ts, bool)
                if seconds:  # unix seconds, beside the RFC 3339 strings of the proto mapping
                    obj = {k: v for k, v in obj.items() if k != "timestamp"}
                ev = json_format.ParseDict(obj, fpb.FeedbackEvent())
                if seconds:
                    ev.timestamp.FromNanoseconds(int(_unix_seconds(ts) * 1e9))
            except (ValueError, TypeError, OverflowError, RecursionError, json_format.ParseError) as exc:
                raise InputError(f"{path}:{line_no}: {exc or type(exc).__name__}") from None
            yield line_no, ev


def _csv_events(path: Path) -> Iterator[tuple[int, object]]:
    from recsys.client import interaction

    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{path}:{line}: not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        columns = reader.fieldnames or []
        missing = {"event_id", "user_id", "item_id", "type"} - set(columns)
        if missing:
            raise InputError(f"{path}:1: missing column(s) {', '.join(sorted(missing))} "
                             f"(columns: {', '.join(CSV_COLUMNS)})")
        for row in reader:
            line_no = reader.line_num
            if None in row or None in row.values():
                raise InputError(f"{path}:{line_no}: expected {len(columns)} fields ({','.join(columns)})")
            try:
                value = float(row["value"]) if row.get("value") else None
                ts = _unix_seconds(float(row["timestamp"])) if row.get("timestamp") else None
            except ValueError as exc:
                raise InputError(f"{path}:{line_no}: {exc}") from None
            yield line_no, interaction(row["user_id"], row["item_id"], row["type"], event_id=row["event_id"],
                                       value=value, request_id=row.get("request_id") or "", timestamp=ts)
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}: cannot parse: {exc}") from None


def read_events(path: Path) -> list[tuple[int, object]]:
    """(line, FeedbackEvent) pairs from a JSONL file (the proto JSON mapping, one event per line) or a CSV
    file of interactions (columns event_id,timestamp,user_id,item_id,type,value,request_id)."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    reader = _csv_events if path.suffix.lower() == ".csv" else _jsonl_events
    return list(reader(path))


def cmd_send(args: argparse.Namespace) -> int:
    import grpc

    from recsys.client import RecommenderClient

    try:
        events = read_events(Path(args.file))
    except InputError as exc:
        console.print(f"[red]error[/red]: {escape(str(exc))}", soft_wrap=True)
        return 2
    accepted = duplicates = 0
    rejected: list[str] = []
    with RecommenderClient(args.target) as client, Progress(console=console, disable=args.quiet) as progress:
        task = progress.add_task(f"sending {Path(args.file).name}", total=len(events))
        for start in range(0, len(events), args.batch):
            batch = events[start:start + args.batch]
            try:
                resp = client.send([ev for _, ev in batch], timeout=args.timeout)
            except grpc.RpcError as exc:
                console.print(f"[red]{exc.code().name}[/red] at line {batch[0][0]}: {escape(exc.details() or '')}; "
                              f"{accepted} accepted before it", soft_wrap=True)
                return 1
            accepted += resp.accepted
            duplicates += resp.duplicates
            rejected += [f"{args.file}:{batch[r.index][0]}: {r.reason}" for r in resp.rejected]
            progress.advance(task, len(batch))
    console.print(f"{accepted:,} accepted, {duplicates:,} duplicates, {len(rejected):,} rejected")
    for line in rejected[:20]:
        console.print(f"  [yellow]rejected[/yellow] {escape(line)}", soft_wrap=True)
    return 1 if rejected else 0


def cmd_events_export(args: argparse.Namespace) -> int:
    from recsys.events.export import export_events
    from recsys.forget import open_tombstones
    from recsys.stream import open_stream

    stream = open_stream(args.stream)
    try:
        with open_tombstones(args.stream) as registry:  # forgotten users' events stay out of training data
            forgotten = registry.forgotten()
        with Progress(console=console) as progress:
            task = progress.add_task("exporting", total=stream.length() or None)
            summary = export_events(stream, Path(args.out), after=args.after,
                                    progress=lambda n: progress.advance(task, n), forgotten=forgotten)
    finally:
        stream.close()
    console.print(f"{args.out}: {summary.interactions:,} interactions, {summary.items:,} items, {summary.users:,} "
                  f"users from {summary.entries:,} stream entries (up to {summary.position})")
    return 0


def cmd_cache_warm(args: argparse.Namespace) -> int:
    import grpc

    from recsys.client import RecommenderClient

    path = Path(args.users)
    if not path.is_file():
        console.print(f"[red]error[/red]: {path}: no such file")
        return 2
    users = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    failures: list[str] = []
    with RecommenderClient(args.target) as client, Progress(console=console) as progress:
        task = progress.add_task("warming the cache", total=len(users))

        def warm(user: str) -> None:
            try:
                client.recommend(user, args.k, warmup=True, timeout=args.timeout)
            except grpc.RpcError as exc:
                failures.append(f"{user}: {exc.code().name} {exc.details()}")
            progress.advance(task)

        with ThreadPoolExecutor(args.concurrency) as pool:  # bounded in flight: the off-peak job stays gentle
            list(pool.map(warm, users))
    console.print(f"{len(users) - len(failures):,} lists computed, {len(failures):,} failed")
    for line in failures[:10]:
        console.print(f"  {escape(line)}", soft_wrap=True)
    return 1 if failures else 0


def add_commands(sub) -> None:
    s = sub.add_parser("send", help="send events from a JSONL or CSV file through Feedback/Send")
    s.add_argument("file", help="events: .jsonl (FeedbackEvent JSON per line) or .csv (interactions)")
    s.add_argument("--target", default="127.0.0.1:50051")
    s.add_argument("--batch", type=int, default=500, help="events per Send call")
    s.add_argument("--timeout", type=float, default=30.0)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_send)

    ev = sub.add_parser("events", help="the event stream")
    ev_sub = ev.add_subparsers(dest="events_command", required=True)
    ex = ev_sub.add_parser("export", help="write the recorded events as a canonical dataset directory")
    ex.add_argument("--stream", required=True, help="stream URL (file://DIR or redis://host:port/db)")
    ex.add_argument("--out", required=True, help="directory to write (interactions.csv, items.csv, users.csv)")
    ex.add_argument("--after", help="export only entries after this stream position")
    ex.set_defaults(func=cmd_events_export)

    ca = sub.add_parser("cache", help="the per-user list cache")
    ca_sub = ca.add_subparsers(dest="cache_command", required=True)
    w = ca_sub.add_parser("warm", help="pre-compute cached lists for the users in a file (one id per line)")
    w.add_argument("--users", required=True)
    w.add_argument("--target", default="127.0.0.1:50051")
    w.add_argument("--k", type=int, default=10)
    w.add_argument("--concurrency", type=int, default=4)
    w.add_argument("--timeout", type=float, default=10.0)
    w.set_defaults(func=cmd_cache_warm)


