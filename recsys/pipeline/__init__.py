"""The Recommend pipeline: small stages (fetch user, retrieve, fetch items, featurize, score, diversify)
orchestrated once, run by ranker_svc against the remote services and by training/evaluation in-process."""
