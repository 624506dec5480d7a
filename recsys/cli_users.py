"""`recsys users forget USER` (Users/Forget on the ranker) and `recsys users receipts` (the forgotten-users
registry beside the stream): erasing a user from the command line, and what was recorded of it."""

from __future__ import annotations

import argparse
import datetime as dt
import os

from rich.markup import escape
from rich.table import Table

from recsys.display import console


def cmd_users_forget(args: argparse.Namespace) -> int:
    import grpc

    from recsys.client import RecommenderClient
    from recsys.v1 import users_pb2, users_pb2_grpc

    with RecommenderClient(args.target) as client:  # TLS and the bearer token as for every public call
        try:
            resp = users_pb2_grpc.UsersStub(client.channel).Forget(
                users_pb2.ForgetRequest(user_id=args.user), timeout=args.timeout, metadata=client.auth or None)
        except grpc.RpcError as exc:
            console.print(f"[red]{exc.code().name}[/red]: {escape(exc.details() or '')}", soft_wrap=True)
            return 1
    at = resp.forgotten_at.ToDatetime(tzinfo=dt.UTC).isoformat(timespec="milliseconds")
    table = Table(title=f"forgot {escape(args.user)} at {at} (receipt {resp.receipt_id})")
    table.add_column("erased")
    table.add_column("count", justify="right")
    for place, n in sorted(resp.erased.items()):
        table.add_row(place, f"{n:,}")
    console.print(table)
    console.print(f"registry key (sha256): {resp.user_sha256}")
    for note in resp.notes:
        console.print(f"  note: {escape(note)}", soft_wrap=True)
    return 0


def cmd_users_receipts(args: argparse.Namespace) -> int:
    from recsys.forget import TombstonesUnavailable, open_tombstones, user_digest

    try:
        with open_tombstones(args.stream) as registry:
            receipts = registry.receipts()
    except (TombstonesUnavailable, ValueError) as exc:
        console.print(f"[red]error[/red]: {escape(str(exc))}", soft_wrap=True)
        return 2
    if args.user:
        receipts = [t for t in receipts if t.digest == user_digest(args.user)]
    table = Table(title=f"{len(receipts):,} forget receipts")
    for col in ("receipt", "forgotten at (UTC)", "user sha256", "caller", "state", "erased"):
        table.add_column(col)
    for t in receipts:
        at = dt.datetime.fromtimestamp(t.at_ms / 1000, dt.UTC).isoformat(timespec="seconds")
        erased = ", ".join(f"{k}={v}" for k, v in sorted(t.erased.items()))
        table.add_row(t.receipt, at, t.digest[:16] + "…", t.caller or "-", "done" if t.done else "interrupted",
                      erased)
    console.print(table)
    return 0


def add_commands(sub) -> None:
    users = sub.add_parser("users", help="what the system keeps about a user")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    f = users_sub.add_parser("forget", help="erase a user everywhere (Users/Forget; the caller must be granted it)")
    f.add_argument("user", help="the user id")
    f.add_argument("--target", default="127.0.0.1:50051")
    f.add_argument("--timeout", type=float, default=300.0, help="seconds (redacting a long stream takes a while)")
    f.set_defaults(func=cmd_users_forget)
    r = users_sub.add_parser("receipts", help="list the forgotten-users registry (digests, times, counts)")
    r.add_argument("--stream", default=os.environ.get("RECSYS_STREAM", "file://recsys-data/events"),
                   help="event stream URL: the registry lives beside it")
    r.add_argument("--user", help="only this user's receipts (matched by digest)")
    r.set_defaults(func=cmd_users_receipts)
