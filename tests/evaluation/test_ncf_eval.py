"""`recsys eval`'s ncf baseline through the runner, on a small synthetic set. Skips without PyTorch (CI)."""

import math

import pytest

pytest.importorskip("torch")

from recsys.data.synthetic import generate  # noqa: E402
from recsys.evaluation.ncf_baseline import MSR_NCF_NDCG10, versus_article  # noqa: E402
from recsys.evaluation.runner import run  # noqa: E402
from recsys.ranking.model import RankerParams  # noqa: E402
from recsys.retrieval.als import ALSParams  # noqa: E402
from recsys.retrieval.ncf import NCFParams  # noqa: E402
from recsys.training.config import TrainConfig  # noqa: E402


def test_the_eval_reports_ncf_beside_the_other_systems():
    ds = generate(n_users=150, n_items=200, n_interactions=5000, seed=2)
    cfg = TrainConfig(als=ALSParams(factors=8, iterations=4), ranker=RankerParams(num_boost_round=20),
                      n_candidates=60, ranker_folds=1, max_ranker_users=150, ann_indexes=["exact"],
                      ncf=NCFParams(gmf_dim=4, mlp_dim=8, layers=[16, 8], lr=0.01, max_epochs=4, patience=2))
    summary = run(ds, "msr", 10, 42, cfg, als_baseline=False, ncf_baseline=True).summary
    m = summary["systems"]["ncf"]
    for key in ("ndcg@10", "recall@10", "auc", "catalog_coverage", "novelty"):
        assert m[key] is not None and math.isfinite(m[key]), key
    assert m["ndcg@10"] > summary["systems"]["popularity"]["ndcg@10"] * 0.5  # learned something, not noise
    assert summary["ncf"]["article_ndcg@10"] == MSR_NCF_NDCG10 and summary["ncf"]["epochs"] >= 1
    assert any(n.startswith("ncf: NeuMF trained") for n in summary["notes"])
    assert "Microsoft Recommenders" in versus_article(summary)
