"""The online join of exposures to clicks and purchases (recsys/experiments/outcomes.py), on records built
here through the real codec: the join rules are the offline report's, the buffers are bounded in size and
in record time, and what cannot be joined is counted. The same join counts per model version, in an
experiment or not (the online CTR by version)."""

from __future__ import annotations

from recsys.events.codec import decode, encode_event, encode_exposure
from recsys.experiments import analysis
from recsys.experiments.outcomes import CLICK_TYPES, CONVERSION_TYPES, OutcomeJoin
from recsys.v1 import feedback_pb2 as fpb
from recsys.v1 import recommender_pb2 as rpb
from recsys.v1 import stream_pb2 as spb

T0 = 1_764_547_200_000
ITEMS = [f"i{p}" for p in range(5)]


def exposure(rid: str, user: str = "u1", at: int = T0, arms: tuple[tuple[str, str, bool], ...] = (("exp", "a", False),),
             shadow: bool = False, items: list[str] = ITEMS, version: str = "v") -> spb.StreamRecord:
    e = spb.Exposure(request_id=rid, user_id=user, model_version=version, shadow=shadow,
                     items=[spb.ExposedItem(item_id=it, position=p) for p, it in enumerate(items)],
                     assignments=[rpb.Assignment(experiment=x, arm=a, forced=f) for x, a, f in arms])
    return decode(encode_exposure(e, at))


def event(rid: str, kind: str = "click", user: str = "u1", item: str = "i0", at: int = T0 + 5000,
          event_id: str = "") -> spb.StreamRecord:
    ev = fpb.FeedbackEvent(event_id=event_id or f"{rid}-{kind}-{user}-{item}-{at}",
                           interaction=fpb.Interaction(user_id=user, item_id=item, type=kind, request_id=rid))
    return decode(encode_event(ev, at))


def test_the_event_types_are_the_reports():
    assert CLICK_TYPES == analysis.CLICK_TYPES and CONVERSION_TYPES == analysis.CONVERSION_TYPES


def test_clicks_and_purchases_join_their_exposure_per_arm():
    j = OutcomeJoin()
    j.exposure(exposure("r1", arms=(("exp", "a", False), ("other", "x", False))))
    j.exposure(exposure("r2", user="u2", arms=(("exp", "b", False),)))
    for rec in (event("r1"), event("r1", item="i3"), event("r1", "purchase", item="i3"),
                event("r2", user="u2", item="i4"), event("r2", "view", user="u2"), event("", user="u2")):
        j.interaction(rec)
    counts, dropped = j.drain()
    assert counts == {("exp", "a", "impressions"): 5, ("other", "x", "impressions"): 5, ("exp", "b", "impressions"): 5,
                      ("exp", "a", "clicks"): 2, ("other", "x", "clicks"): 2, ("exp", "a", "conversions"): 1,
                      ("other", "x", "conversions"): 1, ("exp", "b", "clicks"): 1}
    assert dropped == {}
    assert j.drain() == ({}, {})  # drained counts start over


def test_another_users_click_or_an_item_not_shown_is_not_counted():
    j = OutcomeJoin()
    j.exposure(exposure("r1"))
    j.drain()
    j.interaction(event("r1", user="u2"))
    j.interaction(event("r1", item="not-shown"))
    assert j.drain() == ({}, {"mismatched": 2})


def test_forced_and_shadow_exposures_are_left_out_and_their_clicks_not_parked():
    j = OutcomeJoin()
    j.exposure(exposure("forced", arms=(("exp", "a", True),)))
    j.exposure(exposure("none", arms=()))
    j.exposure(exposure("dark", arms=(("dark", "shadow", False),), shadow=True))
    for rid in ("forced", "none"):
        j.interaction(event(rid))
    assert len(j) == 0 and j.parked == 0 and j.drain() == ({}, {})
    j.interaction(event("dark"))  # a shadow's list was never shown: its request id stays unknown
    assert j.parked == 1
    j.exposure(exposure("dark", arms=(("exp", "b", False),)))  # the real answer of that request
    assert j.drain()[0] == {("exp", "b", "impressions"): 5, ("exp", "b", "clicks"): 1}


def test_a_redelivered_click_counts_once():
    j = OutcomeJoin()
    j.exposure(exposure("r1"))
    for _ in range(2):
        j.interaction(event("r1", event_id="e1"))
    assert j.drain()[0][("exp", "a", "clicks")] == 1


def test_a_click_before_its_exposure_is_parked_then_joined():
    j = OutcomeJoin()
    j.exposure(exposure("r0", at=T0))
    j.interaction(event("r1", at=T0 + 50))
    j.interaction(event("r1", "purchase", item="i2", at=T0 + 60))
    assert j.parked == 2 and j.drain()[1] == {}
    j.exposure(exposure("r1", at=T0 + 20))  # appended by the exposure writer after its linger
    assert j.parked == 0
    counts, dropped = j.drain()
    assert counts[("exp", "a", "clicks")] == 1 and counts[("exp", "a", "conversions")] == 1 and dropped == {}


def test_a_parked_click_whose_exposure_never_comes_expires_unmatched():
    j = OutcomeJoin(park_s=30)
    j.exposure(exposure("r0", at=T0))
    j.interaction(event("lost", at=T0 + 1000))
    j.exposure(exposure("r1", at=T0 + 30_000))  # 29 s of record time later: still waiting
    assert j.parked == 1
    j.exposure(exposure("r2", at=T0 + 31_001))
    assert j.parked == 0 and j.drain()[1] == {"unmatched": 1}
    j.interaction(event("late", at=T0 + 1000))  # older than the exposures by more than park_s: no wait
    assert j.parked == 0 and j.drain()[1] == {"unmatched": 1}


def test_the_park_buffer_is_bounded():
    j = OutcomeJoin(park_capacity=3)
    for k in range(5):
        j.interaction(event(f"unknown-{k}"))
    assert j.parked == 3 and j.drain()[1] == {"unmatched": 2}
    j.exposure(exposure("unknown-0"))  # pushed out first: too late now
    j.exposure(exposure("unknown-4"))
    assert j.drain()[0][("exp", "a", "clicks")] == 1


def test_capacity_evicts_the_oldest_first_and_counts_it():
    j = OutcomeJoin(capacity=2)
    for k in range(3):
        j.exposure(exposure(f"r{k}", at=T0 + k))
    assert len(j) == 2 and j.drain()[1] == {"evicted": 1}
    for k in range(3):
        j.interaction(event(f"r{k}", at=T0 + 10))
    counts, dropped = j.drain()
    assert counts == {("exp", "a", "clicks"): 2} and dropped == {} and j.parked == 1  # r0 is gone: parked


def test_exposures_older_than_the_ttl_are_dropped_uncounted():
    j = OutcomeJoin(ttl_s=60)
    j.exposure(exposure("old", at=T0))
    j.exposure(exposure("outside", at=T0, arms=()))
    j.exposure(exposure("new", at=T0 + 61_000))
    assert len(j) == 1 and j.drain()[1] == {}  # expiry by age is not an eviction
    j.interaction(event("new", at=T0 + 62_000))
    j.interaction(event("old", at=T0 + 62_000))
    j.interaction(event("outside", at=T0 + 62_000))
    counts, _ = j.drain()
    assert counts == {("exp", "a", "clicks"): 1} and j.parked == 2  # the expired ones are unknown again


def test_impressions_can_be_counted_apart_from_holding():
    """The ranker holds exposures in a group per replica (count=False) and counts impressions in a group
    shared by the replicas, so a sum over replicas counts each once."""
    j = OutcomeJoin()
    j.exposure(exposure("r1"), count=False)
    assert j.drain() == ({}, {})
    j.impressions(exposure("r1"))
    j.impressions(exposure("r2", arms=(("exp", "b", True),)))
    j.impressions(exposure("r3", shadow=True))
    assert j.drain()[0] == {("exp", "a", "impressions"): 5}


# -- per model version (recsys_model_*_total): every shown exposure counts, in an experiment or not ----------

def test_counts_per_version_inside_and_outside_experiments():
    j = OutcomeJoin()
    j.exposure(exposure("r1", version="v1"))  # in experiment exp, arm a
    j.exposure(exposure("r2", arms=(), version="v2"))  # in no experiment
    j.exposure(exposure("r3", user="u2", arms=(), version="v2"))
    for rec in (event("r1"), event("r2", item="i1"), event("r2", "purchase", item="i2"),
                event("r3", user="u1"),  # another user's exposure: not counted, and not an arm's loss
                event("r2", item="not-shown"), event("r2", "view")):
        j.interaction(rec)
    assert j.drain_versions() == {("v1", "impressions"): 5, ("v2", "impressions"): 10, ("v1", "clicks"): 1,
                                  ("v2", "clicks"): 1, ("v2", "conversions"): 1}
    assert j.drain() == ({("exp", "a", "impressions"): 5, ("exp", "a", "clicks"): 1}, {})
    assert j.parked == 0 and j.drain_versions() == {}  # drained counts start over


def test_forced_shadow_and_unversioned_exposures_count_for_no_version():
    j = OutcomeJoin()
    j.exposure(exposure("forced", arms=(("exp", "a", True),), version="v1"))  # QA traffic
    j.exposure(exposure("forced-outside", arms=(("exp", "a", True), ("other", "x", False)), version="v1"))
    j.exposure(exposure("dark", arms=(("dark", "shadow", False),), shadow=True, version="v2"))
    j.exposure(exposure("bare", arms=(), version=""))
    for rid in ("forced", "forced-outside", "bare"):
        j.interaction(event(rid))
    assert j.drain_versions() == {}
    assert j.drain()[0] == {("other", "x", "impressions"): 5, ("other", "x", "clicks"): 1}
    j.impressions(exposure("dark", shadow=True, version="v2"))
    j.impressions(exposure("forced", arms=(("exp", "a", True),), version="v1"))
    assert j.drain_versions() == {}


def test_a_redelivered_click_on_an_exposure_outside_experiments_counts_once():
    j = OutcomeJoin()
    j.exposure(exposure("r1", arms=(), version="v1"), count=False)
    j.interaction(event("r1", event_id="e1"))
    j.exposure(exposure("r1", arms=(), version="v1"), count=False)  # the exposure redelivered too
    j.interaction(event("r1", event_id="e1"))
    j.interaction(event("r1", item="i1", event_id="e2"))
    assert j.drain_versions() == {("v1", "clicks"): 2}


def test_a_click_before_its_outside_exposure_is_parked_then_counted_for_its_version():
    j = OutcomeJoin()
    j.exposure(exposure("r0", arms=(), at=T0))
    j.interaction(event("r1", at=T0 + 50))
    assert j.parked == 1
    j.exposure(exposure("r1", arms=(), version="v3", at=T0 + 20))
    assert j.parked == 0 and j.drain_versions() == {("v", "impressions"): 5, ("v3", "impressions"): 5,
                                                     ("v3", "clicks"): 1}


def test_forget_drops_the_users_exposures_outside_experiments():
    j = OutcomeJoin()
    j.exposure(exposure("r1", arms=(), version="v1"), count=False)
    j.exposure(exposure("r2", user="u2", arms=(), version="v1"), count=False)
    j.exposure(exposure("r3", version="v1"), count=False)  # in an experiment
    assert j.forget("u1") == 2
    j.interaction(event("r1"))  # its exposure is gone: unknown, parked until it expires
    j.interaction(event("r2", user="u2"))
    assert j.parked == 1 and j.drain_versions() == {("v1", "clicks"): 1}


def test_exposures_outside_experiments_are_bounded_without_counting_arm_losses():
    j = OutcomeJoin(capacity=2, ttl_s=60)
    for k in range(3):
        j.exposure(exposure(f"r{k}", arms=(), at=T0 + k), count=False)
    j.exposure(exposure("late", arms=(), at=T0 + 61_000), count=False)  # r0..r2 now older than the TTL
    assert j.drain() == ({}, {})
    for rid in ("r0", "late"):
        j.interaction(event(rid, at=T0 + 61_500))
    assert j.drain_versions() == {("v", "clicks"): 1} and j.parked == 1
