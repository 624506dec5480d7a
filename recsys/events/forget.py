"""Stream records of Users/Forget: the forget record every consumer applies, and the redaction of the
entries that identify a forgotten user (docs/operations.md, "Forget a user").

An erased entry of the disk log must keep its length (positions are byte offsets), so it becomes a
`Redacted` record padded to exactly the original size; Redis Streams simply delete it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from recsys.v1 import stream_pb2 as spb


def encode_forget(user_id: str, receipt_id: str, caller: str, at_ms: int, producer: str = "") -> bytes:
    return spb.StreamRecord(accepted_at_ms=at_ms, timestamp_ms=at_ms, producer=producer,
                            forget=spb.Forget(user_id=user_id, receipt_id=receipt_id, caller=caller)
                            ).SerializeToString()


def redacted_record(size: int, accepted_at_ms: int = 0) -> bytes:
    """A valid StreamRecord of the `redacted` kind, exactly `size` bytes long (2 or >= 4; a real record
    is always longer).

    The padding's length prefix grows a byte at 128, 16384, ... so some sizes cannot be reached by padding
    alone; a timestamp field of 2, 3 or 4 bytes fills them."""
    if size < 2 or size == 3:
        raise ValueError(f"no redacted record is {size} bytes long")
    for at in (accepted_at_ms, 0):
        for ts in (None, 1, 128, 16384):
            rec = spb.StreamRecord(accepted_at_ms=at, redacted=spb.Redacted())
            if ts is not None:
                rec.timestamp_ms = ts
            base = rec.ByteSize()
            for pad in range(max(0, size - base - 12), size - base + 1):
                rec.redacted.padding = bytes(pad)
                if rec.ByteSize() == size:
                    return rec.SerializeToString()
    raise AssertionError(f"no redacted record of {size} bytes")  # unreachable: every other size is covered


def names_user(rec: spb.StreamRecord, user_id: str) -> bool:
    """Whether the record identifies the user: their interaction, user upsert or exposure."""
    kind = rec.WhichOneof("kind")
    if kind == "exposure":
        return rec.exposure.user_id == user_id
    if kind != "event":
        return False
    ev = rec.event
    which = ev.WhichOneof("kind")
    return (which == "interaction" and ev.interaction.user_id == user_id) or \
        (which == "user" and ev.user.user_id == user_id)


@dataclass
class Redactor:
    """The `select` of EventStream.redact for one user: entries naming them accepted until `until_ms`
    (the forget's time; what they do afterwards is new data) become redacted records. Forget records stay:
    the other replicas still have to apply them."""

    user_id: str
    until_ms: int
    seen: int = 0
    needle: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.needle = self.user_id.encode()

    def __call__(self, data: bytes) -> bytes | None:
        if self.needle not in data:  # a substring test first: most entries never reach the decoder
            return None
        rec = spb.StreamRecord()
        try:
            rec.ParseFromString(data)
        except DecodeError:
            return None
        if not names_user(rec, self.user_id) or rec.accepted_at_ms > self.until_ms:
            return None
        self.seen += 1
        return redacted_record(len(data), rec.accepted_at_ms)


def redactor(user_id: str, until_ms: int) -> Callable[[bytes], bytes | None]:
    return Redactor(user_id, until_ms)
