import numpy as np

from recsys.ranking.mmr import mmr, similarity_matrix


def test_lambda_one_is_relevance_order():
    rel = np.array([0.1, 0.9, 0.5, 0.7])
    assert mmr(rel, 3, 1.0, np.eye(4)).tolist() == [1, 3, 2]


def test_mmr_skips_near_duplicate():
    # items 0 and 1 are identical; 2 is different and slightly less relevant
    rel = np.array([1.0, 0.99, 0.9])
    sim = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1.0]])
    assert mmr(rel, 2, 0.5, sim).tolist() == [0, 2]
    assert mmr(rel, 2, 1.0, sim).tolist() == [0, 1]


def test_mmr_hand_computed_gains():
    rel = np.array([1.0, 0.8, 0.0])  # scaled: 1.0, 0.8, 0.0
    sim = np.array([[1, 0.5, 0.0], [0.5, 1, 0.0], [0.0, 0.0, 1]])
    # after picking 0: gains λ=0.7 -> item1: 0.56-0.15=0.41, item2: 0-0=0 -> item1
    assert mmr(rel, 3, 0.7, sim).tolist() == [0, 1, 2]
    # λ=0.3 -> item1: 0.24-0.35=-0.11, item2: 0 -> item2 first
    assert mmr(rel, 3, 0.3, sim).tolist() == [0, 2, 1]


def test_mmr_k_larger_than_n_and_no_duplicates():
    rel = np.random.default_rng(0).random(7)
    out = mmr(rel, 20, 0.5, np.random.default_rng(1).random((7, 7)))
    assert sorted(out.tolist()) == list(range(7))


def test_similarity_blends_embeddings_and_categories():
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    cats = [["a"], ["b"], ["a"]]
    sim = similarity_matrix(emb, cats, embedding_weight=0.5)
    assert np.isclose(sim[0, 1], 0.5)   # same embedding, no shared category
    assert np.isclose(sim[0, 2], 0.5)   # orthogonal, same category
    assert np.isclose(sim[1, 2], 0.0)
    assert similarity_matrix(None, None) is None
    only_cats = similarity_matrix(None, [["a", "b"], ["b"]])
    assert np.isclose(only_cats[0, 1], 0.5)
