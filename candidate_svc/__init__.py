"""candidate_svc: multi-source candidate retrieval (FAISS over ALS embeddings, item-to-item, popular,
user segments, content for cold items) over gRPC."""
