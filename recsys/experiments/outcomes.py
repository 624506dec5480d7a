"""The online join of experiment outcomes: exposures, with their assignments, joined to the interactions
naming their `request_id`, counted per experiment and arm as the records stream by. The rules are the
offline report's (analysis.py): forced and shadow exposures are left out; an interaction counts only if it
is the same user's and names an item the exposure showed; a click counts a click, a purchase a conversion.
The ranker's stream-follower child runs it (docs/experiments.md, "Online outcomes").

Bounded: at most `capacity` exposures (oldest first, counted `evicted`), none older than `ttl_s`. Exposures
outside every experiment are kept as bare request ids (same bounds), so a click on one is known for what it
is. An interaction naming a request id not seen yet (a click can reach the events topic before the exposure
writer, which lingers 100 ms, appends its exposure) is parked, at most `park_capacity` of them for at most
`park_s` each, and joined when its exposure comes, else counted `unmatched`. Time is record time, the
newest exposure's accepted_at_ms: catching up on a backlog expires nothing early. Delivery is at-least-once,
so an interaction counts once per event id. Not thread-safe: callers lock.
"""

from __future__ import annotations

from array import array
from collections import Counter, OrderedDict

from recsys.v1 import stream_pb2 as spb

# As in analysis.py (a test keeps them equal); not imported from there, which would load numpy in the child.
CLICK_TYPES = frozenset({"click"})
CONVERSION_TYPES = frozenset({"purchase"})
KINDS = ("impressions", "clicks", "conversions")
# unmatched: no exposure with the request id came in time; mismatched: another user's exposure, or the item
# was not in it; evicted: an exposure pushed out by `capacity` before its TTL.
DROP_REASONS = ("unmatched", "mismatched", "evicted")

Arms = tuple[tuple[str, str], ...]
Counts = dict[tuple[str, str, str], int]


class _Shown:
    """One exposure held. Its items are kept as their str hashes (a 64-bit array: a fifth of the memory of
    the strings; a false match has odds of 2^-64): about 0.5 KB per exposure of 10 items."""

    __slots__ = ("at", "user", "arms", "items", "counted")

    def __init__(self, at: int, user: str, arms: Arms, items: array, counted: set[str] | None):
        self.at, self.user, self.arms, self.items, self.counted = at, user, arms, items, counted


def arms_of(exposure: spb.Exposure) -> Arms:
    """The (experiment, arm) pairs an exposure counts for: none for a shadow, never a forced one."""
    if exposure.shadow:
        return ()
    return tuple((a.experiment, a.arm) for a in exposure.assignments if not a.forced)


class OutcomeJoin:
    def __init__(self, capacity: int = 200_000, ttl_s: float = 3600.0, park_capacity: int = 10_000,
                 park_s: float = 30.0) -> None:
        self.capacity = max(1, int(capacity))
        self.ttl_ms = int(ttl_s * 1000)
        self.park_capacity = max(0, int(park_capacity))
        self.park_ms = int(park_s * 1000)
        self._shown: OrderedDict[str, _Shown] = OrderedDict()
        self._outside: OrderedDict[str, int] = OrderedDict()  # request id -> accepted_at_ms
        self._parked: OrderedDict[str, list[tuple[int, str, str, str, str]]] = OrderedDict()
        self._n_parked = 0
        self._clock = 0
        self._arms: dict[Arms, Arms] = {}  # one tuple per distinct assignment, shared by the exposures
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._dropped: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._shown)

    @property
    def parked(self) -> int:
        return self._n_parked

    def exposure(self, rec: spb.StreamRecord, *, count: bool = True) -> None:
        """Hold one exposure for the join and, with `count`, count its impressions per arm (the ranker
        counts them apart, in a group shared by the replicas, with `impressions`)."""
        exp = rec.exposure
        if exp.shadow:
            return
        at, rid = rec.accepted_at_ms, exp.request_id
        self._clock = max(self._clock, at)
        arms = arms_of(exp)
        if arms:
            arms = self._arms.setdefault(arms, arms)
            if count:
                self.impressions(rec)
            old = self._shown.pop(rid, None)
            self._shown[rid] = _Shown(at, exp.user_id, arms, array("q", [hash(it.item_id) for it in exp.items]),
                                      old.counted if old is not None else None)
        else:
            self._outside.pop(rid, None)
            self._outside[rid] = at
        for _, event_id, user, item, kind in self._parked.pop(rid, ()):
            self._n_parked -= 1
            self._join(rid, event_id, user, item, kind)
        self._expire()

    def impressions(self, rec: spb.StreamRecord) -> None:
        """Count an exposure's items as impressions of each of its arms."""
        for experiment, arm in arms_of(rec.exposure):
            self._counts[(experiment, arm, "impressions")] += len(rec.exposure.items)

    def interaction(self, rec: spb.StreamRecord) -> None:
        """Join a click or a purchase that names a request id; other records are ignored."""
        if rec.WhichOneof("kind") != "event" or rec.event.WhichOneof("kind") != "interaction":
            return
        it = rec.event.interaction
        kind = "clicks" if it.type in CLICK_TYPES else "conversions" if it.type in CONVERSION_TYPES else None
        if kind is None or not it.request_id:
            return
        if self._join(it.request_id, rec.event.event_id, it.user_id, it.item_id, kind):
            return
        at = rec.accepted_at_ms
        if at < self._clock - self.park_ms or self.park_capacity == 0:  # its exposure would have come by now
            self._dropped["unmatched"] += 1
            return
        self._parked.setdefault(it.request_id, []).append((at, rec.event.event_id, it.user_id, it.item_id, kind))
        self._n_parked += 1
        while self._n_parked > self.park_capacity:
            _, oldest = self._parked.popitem(last=False)
            self._n_parked -= len(oldest)
            self._dropped["unmatched"] += len(oldest)

    def forget(self, user_id: str) -> int:
        """Users/Forget: drop the user's held exposures and parked interactions (counts already made stay:
        they are per arm, not per user); returns how many exposures went."""
        shown = [rid for rid, s in self._shown.items() if s.user == user_id]
        for rid in shown:
            del self._shown[rid]
        for rid in list(self._parked):
            kept = [p for p in self._parked[rid] if p[2] != user_id]
            self._n_parked -= len(self._parked[rid]) - len(kept)
            if kept:
                self._parked[rid] = kept
            else:
                del self._parked[rid]
        return len(shown)

    def drain(self) -> tuple[Counts, dict[str, int]]:
        """The counts since the last drain, {(experiment, arm, kind): n} with kind in KINDS, and the
        losses {reason: n} with reason in DROP_REASONS; both start over."""
        counts, dropped = dict(self._counts), dict(self._dropped)
        self._counts.clear()
        self._dropped.clear()
        return counts, dropped

    def _join(self, rid: str, event_id: str, user: str, item: str, kind: str) -> bool:
        """Count the interaction if it joins; False when its request id is unknown (yet)."""
        shown = self._shown.get(rid)
        if shown is None:
            return rid in self._outside
        if shown.user != user or hash(item) not in shown.items:
            self._dropped["mismatched"] += 1
            return True
        if event_id:
            if shown.counted is None:
                shown.counted = set()
            elif event_id in shown.counted:
                return True  # redelivered
            shown.counted.add(event_id)
        for experiment, arm in shown.arms:
            self._counts[(experiment, arm, kind)] += 1
        return True

    def _expire(self) -> None:
        cutoff = self._clock - self.ttl_ms
        while self._shown:
            oldest = next(iter(self._shown.values()))
            if oldest.at >= cutoff and len(self._shown) <= self.capacity:
                break
            if oldest.at >= cutoff:  # pushed out by the capacity before its TTL
                self._dropped["evicted"] += 1
            self._shown.popitem(last=False)
        while self._outside and (next(iter(self._outside.values())) < cutoff or len(self._outside) > self.capacity):
            self._outside.popitem(last=False)
        cutoff = self._clock - self.park_ms
        while self._parked:
            rid, waiting = next(iter(self._parked.items()))
            if waiting[0][0] >= cutoff:
                break
            del self._parked[rid]
            self._n_parked -= len(waiting)
            self._dropped["unmatched"] += len(waiting)
