"""feature_svc: the online feature store (user and item features, histories, event updates) over gRPC."""
