"""Candidate retrieval models and the multi-source candidate generator used by candidate_svc and training."""

# Here, not in ann.py, so that the CLI can offer them without importing FAISS.
INDEX_KINDS = ("exact", "hnsw", "ivf", "pruned")
