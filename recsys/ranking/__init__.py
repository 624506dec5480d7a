"""Ranking: feature assembly, the LightGBM ranker and MMR diversity re-ranking, shared by serving and eval."""
