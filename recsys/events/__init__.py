"""The event model of the feedback loop: validation of what callers send, the records written to the
event stream, and how each consumer applies them (online features, training export).

Interactions, item upserts and user upserts come from Feedback/Send; exposures from Recommend. Every
stream record is a `recsys.v1.StreamRecord` (protos/recsys/v1/stream.proto).
"""

from recsys.events.codec import decode, encode_event, encode_exposure
from recsys.events.validate import INTERACTION_TYPES, Limits, validate_event

__all__ = ["INTERACTION_TYPES", "Limits", "decode", "encode_event", "encode_exposure", "validate_event"]
