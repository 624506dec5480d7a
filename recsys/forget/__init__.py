"""Forgetting users: the durable registry of who was forgotten when (hashed ids, never raw ones), and
what it takes to keep a forgotten user's data out of what the services load and what training learns.

The registry lives beside the event stream (`open_tombstones(stream_url)`: a JSON-lines file in a disk
log's directory, a Redis hash beside a Redis stream) because every service, `recsys events export` and
the retraining job already share that URL, and unlike the stream it is never trimmed. The erasure itself
is ranker_svc's Users/Forget (ranker_svc/forget.py); docs/operations.md ("Forget a user") says what is
erased where.
"""

from recsys.forget.tombstones import (
    Forgotten,
    Tombstone,
    Tombstones,
    TombstonesUnavailable,
    open_tombstones,
    user_digest,
)

__all__ = ["Forgotten", "Tombstone", "Tombstones", "TombstonesUnavailable", "open_tombstones", "user_digest"]
