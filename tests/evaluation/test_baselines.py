"""Baselines and the retrieval ordering on tiny, hand-checkable data."""

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.evaluation import baselines
from recsys.evaluation.runner import retrieval_order
from recsys.pipeline.types import CandidateList
from recsys.retrieval.item2item import ease_neighbors


def _data() -> baselines.Interactions:
    rows = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "c"), ("u3", "a"), ("u3", "b"), ("u3", "b"), ("u4", "d")]
    df = pd.DataFrame(rows, columns=["user_id", "item_id"])
    return baselines.Interactions(df, ["a", "b", "c", "d", "e"])


def test_interactions_matrix_is_binary_over_the_catalog():
    data = _data()
    assert data.matrix.shape == (4, 5)
    np.testing.assert_array_equal(data.item_popularity(), [3, 2, 1, 1, 0])  # u3's repeated "b" counts once


def test_popularity_excludes_seen_items_and_breaks_ties_by_catalog_order():
    out = baselines.popularity(_data(), ["u1", "u4", "new"], k=2)
    assert out["u1"] == ["c", "d"]  # a, b seen; c and d tie at 1 user
    assert out["u4"] == ["a", "b"]
    assert out["new"] == ["a", "b"]  # an unknown user has seen nothing


def test_ease_weights_match_the_serving_item_to_item_table():
    x = sp.random(60, 12, density=0.3, random_state=0, format="csr")
    x.data[:] = 1.0
    dense = baselines.ease_weights(x, reg=5.0)
    assert np.allclose(np.diag(dense), 0.0)
    served = ease_neighbors(x, reg=5.0, m=11).toarray()  # every neighbour kept
    np.testing.assert_allclose(dense, served, atol=1e-4)


def test_ease_and_als_recommend_unseen_items_only():
    data = _data()
    from recsys.retrieval.als import ALSParams

    for recs in (
        baselines.ease(data, ["u1", "u2"], k=3, reg=1.0),
        baselines.als(data, ["u1", "u2"], k=3, params=ALSParams(factors=2, iterations=3)),
    ):
        assert not {"a", "b"} & set(recs["u1"]) and len(recs["u1"]) == 3
        assert not {"a", "c"} & set(recs["u2"])


def test_top_k_unseen_drops_seen_items_and_short_rows():
    scores = np.array([[0.9, 0.8, 0.1], [0.5, 0.5, 0.5]])
    seen = sp.csr_matrix(np.array([[1, 0, 0], [1, 1, 0]]))
    out = baselines.top_k_unseen(scores, seen, k=3)
    assert out[0].tolist() == [1, 2] and out[1].tolist() == [2]


def test_retrieval_order_fuses_each_sources_own_ranking():
    names = ["als_score", "als_rank", "i2i_score", "i2i_rank", "pop_score", "n_sources"]
    scores = np.full((4, len(names)), np.nan, dtype=np.float32)
    col = names.index
    # ALS proposed 0, 1, 2 (scores 3 > 2 > 1); i2i proposed 2, 3 (2 best); popular proposed 3
    scores[:, col("als_score")] = [3, 2, 1, 0]
    scores[:, col("i2i_score")] = [0, 0, 5, 4]
    scores[:, col("pop_score")] = [0.1, 0.2, 0.3, 0.9]
    vocab = ["als", "i2i", "popular"]
    masks = [sum(1 << vocab.index(x) for x in src) for src in (["als"], ["als"], ["als", "i2i"], ["i2i", "popular"])]
    cands = CandidateList(
        item_ids=["w", "x", "y", "z"],
        score_names=names,
        scores=scores,
        source_masks=np.array(masks, dtype=np.uint64),
        source_vocab=vocab,
    )
    # y: 1/63 + 1/61; z: 1/62 + 1/61; w: 1/61; x: 1/62
    primary = {"als": "als_score", "i2i": "i2i_score", "popular": "pop_score"}
    assert retrieval_order(cands, primary).tolist() == [3, 2, 0, 1]
