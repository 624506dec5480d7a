"""ranker_svc: hosts the public Recommend RPC: features + candidates -> LightGBM -> MMR -> top-k."""
