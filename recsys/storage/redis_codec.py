"""Binary record packing and small helpers of the Redis feature storage."""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

HEADER = struct.Struct("<I")  # number of float32 values that follow


def pack_rows(values: np.ndarray, payloads: Sequence[Any]) -> list[bytes]:
    """Packed records: uint32 count, the float32 row, then the compact JSON payload."""
    n_rows, width = values.shape
    header = HEADER.pack(width)
    raw = np.ascontiguousarray(values, dtype="<f4").tobytes()
    step = 4 * width
    return [header + raw[r * step:(r + 1) * step] + dump_json(p)
            for r, p in zip(range(n_rows), payloads, strict=True)]


def unpack_many(blobs: list[bytes | None], width: int) -> list[tuple[np.ndarray, Any] | None]:
    """Decode a batch with one frombuffer and one json.loads: per-record calls cost ~3 us each."""
    present = [b for b in blobs if b is not None]
    header, end = HEADER.pack(width), HEADER.size + 4 * width
    if not all(len(b) >= end and b.startswith(header) for b in present):  # not written by this version
        return [unpack(b) if b is not None else None for b in blobs]
    raw = b"".join([b[HEADER.size:end] for b in present])
    # astype copies, so callers get writable arrays that do not pin the reply buffers
    values = np.frombuffer(raw, dtype="<f4", count=len(present) * width).reshape(len(present), width)
    payloads = json.loads(b"[" + b",".join([b[end:] for b in present]) + b"]")
    records = iter(zip(values.astype(np.float32), payloads, strict=True))
    return [next(records) if b is not None else None for b in blobs]


def unpack(blob: bytes) -> tuple[np.ndarray, Any]:
    (width,) = HEADER.unpack_from(blob)
    end = HEADER.size + 4 * width
    # astype copies, so callers get a writable array that does not pin the reply buffer
    values = np.frombuffer(blob, dtype="<f4", count=width, offset=HEADER.size).astype(np.float32)
    return values, json.loads(blob[end:])


def dump_json(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def is_gen(raw: bytes | None, gen: str) -> bool:
    return raw is not None and raw.decode() == gen


def glob_escape(s: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in s)

