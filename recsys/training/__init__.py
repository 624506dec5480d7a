"""Training: stage-1 retrieval artifacts and feature tables, the LightGBM ranker, and bundle assembly."""
