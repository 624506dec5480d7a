"""Candidate retrieval models and the multi-source candidate generator used by candidate_svc and training."""
