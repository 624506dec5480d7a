"""NeuMF as a candidate source and ranker feature in a trained bundle (training option `sources: [..., ncf]`),
served by numpy. Skips without PyTorch (the optional `ncf` extra), as in CI."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from recsys.bundle import read_metadata  # noqa: E402
from recsys.data.synthetic import generate  # noqa: E402
from recsys.pipeline.model import ServingModel  # noqa: E402
from recsys.pipeline.offline import OfflineStack  # noqa: E402
from recsys.ranking.model import RankerParams  # noqa: E402
from recsys.retrieval.als import ALSParams  # noqa: E402
from recsys.retrieval.artifacts import RetrievalArtifacts  # noqa: E402
from recsys.retrieval.generator import CandidateGenerator, GeneratorConfig  # noqa: E402
from recsys.retrieval.ncf import NCFParams  # noqa: E402
from recsys.retrieval.sources import DEFAULT_SOURCES  # noqa: E402
from recsys.training.config import TrainConfig  # noqa: E402
from recsys.training.trainer import train  # noqa: E402


@pytest.fixture(scope="module")
def ncf_bundle(tmp_path_factory):
    ds = generate(n_users=150, n_items=200, n_interactions=5000, n_categories=5, seed=4)
    cfg = TrainConfig(als=ALSParams(factors=8, iterations=4), ranker=RankerParams(num_boost_round=20),
                      n_candidates=60, max_ranker_users=150, ranker_folds=1, ann_indexes=["exact"],
                      sources=[*DEFAULT_SOURCES, "ncf"], source_quotas={"als": 0.2, "ncf": 0.15},
                      ncf=NCFParams(gmf_dim=4, mlp_dim=8, layers=[16, 8], lr=0.01, max_epochs=3, patience=1,
                                    refit=False))
    out = tmp_path_factory.mktemp("ncf") / "bundle"
    train(ds, out, cfg, dataset_spec="synthetic:ncf", show_progress=False)
    return ds, out


def test_the_bundle_ships_ncf_as_numpy_arrays_and_the_ranker_reads_its_columns(ncf_bundle):
    ds, out = ncf_bundle
    assert (out / "retrieval" / "ncf.npz").is_file()
    art = RetrievalArtifacts.load(out / "retrieval")
    src = art.source("ncf")
    assert src is not None and src.weights.epochs >= 1 and src.weights.item_gmf.shape[0] == len(art.item_ids)
    assert "ncf" in read_metadata(out).params["sources"]
    assert {"ncf_rank", "ncf_score_z", "ncf_score_of_max"} <= set(ServingModel.load(out).ranker.feature_names)


def test_known_users_get_ncf_candidates_and_others_nan(ncf_bundle):
    ds, out = ncf_bundle
    stack = OfflineStack.from_bundle(out)
    gen = stack.generator
    user = ds.interactions["user_id"].iloc[0]
    history = ds.interactions.loc[ds.interactions["user_id"] == user, "item_id"].tolist()
    ids, c = gen.retrieve_ids(history, [], 60, {}, False, user_id=user)
    col = c.score_names.index("ncf_score")
    bit = c.source_names.index("ncf")
    proposed = (c.sources >> np.uint64(bit)) & np.uint64(1)
    assert proposed.any() and np.isfinite(c.scores[:, col]).all() and not set(ids) & set(history)
    # the same history without a user id (or a user unknown to the model): no proposals, NaN columns
    for who in ("", "someone-new"):
        _, c2 = gen.retrieve_ids(history, [], 60, {}, False, user_id=who)
        assert np.isnan(c2.scores[:, col]).all() and not ((c2.sources >> np.uint64(bit)) & np.uint64(1)).any()
    recs = stack.recommend_many([user], 10)[user]
    assert len(recs.items) == 10 and not recs.fallback


def test_score_columns_only_when_ncf_does_not_propose(ncf_bundle):
    ds, out = ncf_bundle
    art = RetrievalArtifacts.load(out / "retrieval")
    art.source("ncf").propose_items = False
    gen = CandidateGenerator(art, GeneratorConfig(n=40))
    user = ds.interactions["user_id"].iloc[0]
    _, c = gen.retrieve_ids(ds.interactions.loc[ds.interactions["user_id"] == user, "item_id"].tolist(), [], 40,
                            {}, False, user_id=user)
    bit = c.source_names.index("ncf")
    assert not ((c.sources >> np.uint64(bit)) & np.uint64(1)).any()
    assert np.isfinite(c.scores[:, c.score_names.index("ncf_score")]).all()
