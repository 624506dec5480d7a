"""The consumer loop every stream consumer runs: at-least-once delivery, poison entries to dead letters.

One step (`poll_once`): the consumer's own pending entries first (what it read before a restart), then
idle entries of dead consumers of the group (`claim`), then new ones; handle them in slices of
`slice_size` (the whole batch by default), calling `pace()` before each: a consumer inside a serving
process passes recsys.rpc.priority's yield, so it works in the gaps between requests; ack. With
`interval_s` the loop waits that long after each step, so what arrives meanwhile is read at once: fewer
wake-ups of the process it runs in, each event visible up to that much later.
Delivery is at-least-once, so the handler must be idempotent (keyed by event id, or order-insensitive).

When the handler raises for a batch the entries are retried one at a time, so one poison entry does not
block the others: an entry that keeps failing stays pending and is redelivered on the next poll, and
once it has been delivered `max_deliveries` times it goes to the dead-letter stream with the error
text. An exception of a `transient_errors` type (a downstream store being down, say) is not the entry's
fault: the same entries are retried in memory with backoff, without counting deliveries, so an outage
does not dead-letter every event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from recsys.metrics import CONSUMER_APPLIED, CONSUMER_LAG, DEAD_LETTERS
from recsys.stream.base import Entry, EventStream, GroupNotFound, StreamError, StreamUnavailable

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 1.0
_LOG_EVERY_S = 10.0
_LAG_EVERY_S = 0.1


class ConsumerLoop:
    """Runs `handler` over a consumer group's entries; see the module docstring for the semantics."""

    def __init__(self, stream: EventStream, group: str, consumer: str, handler: Callable[[list[Entry]], None], *,
                 start: str = "begin", batch: int = 500, block_s: float = 0.05, claim_idle_s: float = 30.0,
                 max_deliveries: int = 5,
                 transient_errors: tuple[type[BaseException], ...] = (StreamUnavailable,),
                 slice_size: int = 0, pace: Callable[[], object] | None = None, interval_s: float = 0.0) -> None:
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.handler = handler
        self.start = start
        self.batch = max(1, int(batch))
        self.block_s = max(0.0, float(block_s))
        self.claim_idle_s = float(claim_idle_s)
        self.max_deliveries = max(1, int(max_deliveries))
        self.transient_errors = transient_errors
        self.slice_size = max(1, int(slice_size)) if slice_size else self.batch
        self.pace = pace
        self.interval_s = max(0.0, float(interval_s))
        self._ready = False
        self._retry: list[Entry] = []  # entries whose handling hit a transient error: retried first
        self._failed = False  # the last poll left failing entries pending: back off before the next
        self._next_claim = 0.0
        self._next_lag = 0.0
        self._lag_stale = False  # entries were acknowledged since the lag metric was last set
        # Whether this consumer may own pending entries: at start (a restart's leftovers) and after any
        # failure. Otherwise everything it read was acknowledged, and asking costs a call per poll.
        self._check_pending = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _fetch(self) -> list[Entry]:
        if self._retry:
            entries, self._retry = self._retry, []
            return entries
        entries = self.stream.pending(self.group, self.consumer, self.batch) if self._check_pending else []
        self._check_pending = len(entries) >= self.batch  # a full batch: there may be more
        now = time.monotonic()
        if not entries and now >= self._next_claim:
            self._next_claim = now + max(0.05, min(self.claim_idle_s / 4, 5.0))  # claims are rare
            entries = self.stream.claim(self.group, self.consumer, self.claim_idle_s, self.batch)
        if not entries:
            entries = self.stream.read(self.group, self.consumer, self.batch, self.block_s)
        return entries

    def poll_once(self) -> int:
        """One step; returns the entries handled and acknowledged (dead-lettered ones excluded)."""
        if not self._ready:
            self.stream.ensure_group(self.group, self.start)
            self._ready = True
        if self.pace is not None:
            self.pace()
        self._check_pending = self._check_pending or self._failed
        try:
            entries = self._fetch()
        except BaseException:
            # A read that failed may still have delivered entries to us (Redis ran XREADGROUP and died
            # before its reply arrived): they are ours, pending, and nobody else reads them for 30 s.
            self._check_pending = True
            raise
        done: list[Entry] = []
        failed: list[tuple[Entry, BaseException]] = []
        try:
            for start in range(0, len(entries), self.slice_size):
                if self.pace is not None:
                    self.pace()
                self._handle(entries, start, done, failed)
        except self.transient_errors:
            if not self._retry:
                self._retry = entries
            raise
        except BaseException:
            self._check_pending = True
            raise
        finally:
            if done:
                check, self._check_pending = self._check_pending, True  # until the ack has succeeded
                self.stream.ack(self.group, [e.id for e in done])
                self._check_pending = check
                self._lag_stale = True
                CONSUMER_APPLIED.labels(self.group).inc(len(done))
        self._failed = False
        for entry, error in failed:
            if entry.deliveries >= self.max_deliveries:
                log.error("stream group %s: entry %s failed %d times, moved to dead letters: %r",
                          self.group, entry.id, entry.deliveries, error)
                self.stream.dead_letter(self.group, entry, f"{type(error).__name__}: {error}"[:2000])
                DEAD_LETTERS.labels(self.group).inc()
            else:
                self._failed = True  # stays pending: redelivered by the next poll
        self._update_lag(force=self._lag_stale and not entries)
        return len(done)

    def _handle(self, entries: list[Entry], start: int, done: list[Entry],
                failed: list[tuple[Entry, BaseException]]) -> None:
        """One slice as one handler call; on a non-transient error its entries one at a time."""
        part = entries[start:start + self.slice_size]
        try:
            self.handler(part)
            done.extend(part)
            return
        except self.transient_errors:
            self._retry = entries[start:]
            raise
        except Exception:
            pass
        for k, entry in enumerate(part):
            try:
                self.handler([entry])
                done.append(entry)
            except self.transient_errors:
                self._retry = entries[start + k:]
                raise
            except Exception as e:
                failed.append((entry, e))

    def _update_lag(self, force: bool) -> None:
        """At most every _LAG_EVERY_S while entries flow (it costs a call), and once on catching up."""
        now = time.monotonic()
        if force or now >= self._next_lag:
            self._next_lag = now + _LAG_EVERY_S
            self._lag_stale = False
            CONSUMER_LAG.labels(self.group).set(self.stream.lag(self.group))

    def run(self, stop: threading.Event) -> None:
        """Poll until `stop` is set; an unavailable stream (or transient handler error) is retried with backoff."""
        backoff, last_log = 0.0, float("-inf")
        while not stop.is_set():
            try:
                handled = self.poll_once()
                backoff = 0.0
                if self._failed:
                    backoff = 0.05
                elif handled == 0 and self.block_s == 0:
                    backoff = 0.01  # no blocking read to pace the loop
            except GroupNotFound:
                log.warning("stream group %s vanished (a non-persistent Redis restarted?): recreating it "
                            "from %r", self.group, self.start)
                self._ready = False
                backoff = 0.05
            except (StreamError, *self.transient_errors) as e:
                backoff = min(_MAX_BACKOFF_S, max(0.05, backoff * 2))
                if time.monotonic() - last_log >= _LOG_EVERY_S:
                    last_log = time.monotonic()
                    log.warning("stream group %s consumer %s: %s; retrying every %.2f s or less",
                                self.group, self.consumer, e, backoff)
            except Exception:
                backoff = _MAX_BACKOFF_S
                if time.monotonic() - last_log >= _LOG_EVERY_S:
                    last_log = time.monotonic()
                    log.exception("stream group %s consumer %s: unexpected error", self.group, self.consumer)
            if backoff or self.interval_s:
                stop.wait(max(backoff, self.interval_s))

    def start_thread(self) -> threading.Thread:
        """Run in a daemon thread until stop()."""
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, args=(self._stop,), daemon=True,
                                        name=f"stream-{self.group}-{self.consumer}")
        self._thread.start()
        return self._thread

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
