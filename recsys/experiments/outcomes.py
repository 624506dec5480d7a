"""The online join of experiment outcomes: exposures, with their assignments, joined to the interactions
naming their `request_id`, counted per experiment and arm as the records stream by. The rules are the
offline report's (analysis.py): forced and shadow exposures are left out; an interaction counts only if it
is the same user's and names an item the exposure showed; a click counts a click, a purchase a conversion.
The ranker's stream-follower child runs it (docs/experiments.md, "Online outcomes").

The same join also counts per model version (the Recommend response's `model_version`), for every shown
exposure, in an experiment or not (forced ones left out: QA traffic): the online click-through of served
lists by version that the promotion alert compares (`drain_versions`).

Bounded: at most `capacity` exposures in experiments (oldest first, counted `evicted`) and as many outside
every experiment (held for their version's counts, and so that a click on one is known for what it is;
their losses are not counted: that counter is about arms), none older than `ttl_s`. An interaction naming
a request id not seen yet (a click can reach the events topic before the exposure writer, which lingers
100 ms, appends its exposure) is parked, at most `park_capacity` of them for at most
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

    __slots__ = ("at", "user", "arms", "version", "items", "counted")

    def __init__(self, at: int, user: str, arms: Arms, version: str | None, items: array,
                 counted: set[str] | None):
        """`version`: the model version the exposure counts for, None for none (a forced one)."""
        self.at, self.user, self.arms, self.version, self.items = at, user, arms, version, items
        self.counted = counted


def arms_of(exposure: spb.Exposure) -> Arms:
    """The (experiment, arm) pairs an exposure counts for: none for a shadow, never a forced one."""
    if exposure.shadow:
        return ()
    return tuple((a.experiment, a.arm) for a in exposure.assignments if not a.forced)


def version_of(exposure: spb.Exposure) -> str | None:
    """The model version an exposure's items and clicks count for: none for a shadow or a forced one."""
    if exposure.shadow or not exposure.model_version or any(a.forced for a in exposure.assignments):
        return None
    return exposure.model_version


class OutcomeJoin:
    def __init__(self, capacity: int = 200_000, ttl_s: float = 3600.0, park_capacity: int = 10_000,
                 park_s: float = 30.0) -> None:
        self.capacity = max(1, int(capacity))
        self.ttl_ms = int(ttl_s * 1000)
        self.park_capacity = max(0, int(park_capacity))
        self.park_ms = int(park_s * 1000)
        self._shown: OrderedDict[str, _Shown] = OrderedDict()
        self._outside: OrderedDict[str, _Shown] = OrderedDict()  # exposures in no experiment
        self._parked: OrderedDict[str, list[tuple[int, str, str, str, str]]] = OrderedDict()
        self._n_parked = 0
        self._clock = 0
        self._arms: dict[Arms, Arms] = {}  # one tuple per distinct assignment, shared by the exposures
        self._versions: dict[str, str] = {}  # one str per version, shared by the exposures
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._by_version: Counter[tuple[str, str]] = Counter()
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
        version = version_of(exp)
        if version is not None:
            version = self._versions.setdefault(version, version)
        if count:
            self.impressions(rec)
        old = self._shown.pop(rid, None) or self._outside.pop(rid, None)
        held = self._shown if arms else self._outside
        items = array("q", [hash(it.item_id) for it in exp.items]) if arms or version else array("q")
        held[rid] = _Shown(at, exp.user_id, self._arms.setdefault(arms, arms), version, items,
                           old.counted if old is not None else None)
        for _, event_id, user, item, kind in self._parked.pop(rid, ()):
            self._n_parked -= 1
            self._join(rid, event_id, user, item, kind)
        self._expire()

    def impressions(self, rec: spb.StreamRecord) -> None:
        """Count an exposure's items as impressions of each of its arms and of its model version."""
        for experiment, arm in arms_of(rec.exposure):
            self._counts[(experiment, arm, "impressions")] += len(rec.exposure.items)
        version = version_of(rec.exposure)
        if version is not None:
            self._by_version[(version, "impressions")] += len(rec.exposure.items)

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
        they are per arm and version, not per user); returns how many exposures went."""
        shown = [(held, rid) for held in (self._shown, self._outside) for rid, s in held.items() if s.user == user_id]
        for held, rid in shown:
            del held[rid]
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

    def drain_versions(self) -> dict[tuple[str, str], int]:
        """The counts per model version since the last drain, {(version, kind): n} with kind in KINDS;
        they start over."""
        counts = dict(self._by_version)
        self._by_version.clear()
        return counts

    def _join(self, rid: str, event_id: str, user: str, item: str, kind: str) -> bool:
        """Count the interaction if it joins; False when its request id is unknown (yet)."""
        shown = self._shown.get(rid)
        if shown is None:
            outside = self._outside.get(rid)
            if outside is None:
                return False
            if outside.version is not None and outside.user == user and hash(item) in outside.items \
                    and self._first(outside, event_id):
                self._by_version[(outside.version, kind)] += 1
            return True
        if shown.user != user or hash(item) not in shown.items:
            self._dropped["mismatched"] += 1
            return True
        if not self._first(shown, event_id):
            return True  # redelivered
        for experiment, arm in shown.arms:
            self._counts[(experiment, arm, kind)] += 1
        if shown.version is not None:
            self._by_version[(shown.version, kind)] += 1
        return True

    @staticmethod
    def _first(shown: _Shown, event_id: str) -> bool:
        """False for an interaction already counted on this exposure (at-least-once delivery)."""
        if event_id:
            if shown.counted is None:
                shown.counted = set()
            elif event_id in shown.counted:
                return False
            shown.counted.add(event_id)
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
        while self._outside and (next(iter(self._outside.values())).at < cutoff or len(self._outside) > self.capacity):
            self._outside.popitem(last=False)
        cutoff = self._clock - self.park_ms
        while self._parked:
            rid, waiting = next(iter(self._parked.items()))
            if waiting[0][0] >= cutoff:
                break
            del self._parked[rid]
            self._n_parked -= len(waiting)
            self._dropped["unmatched"] += len(waiting)
