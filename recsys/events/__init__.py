"""The event model of the feedback loop: validation of what callers send, the records written to the
event stream, and how each consumer applies them (online features, training export).

Interactions, item upserts and user upserts come from Feedback/Send; exposures from Recommend. Every
stream record is a `recsys.v1.StreamRecord` (protos/recsys/v1/stream.proto).

Nothing is imported here: a process that only decodes records (the ranker's cache follower) stays
free of the validation's and the dataset code's dependencies (pandas).
"""
