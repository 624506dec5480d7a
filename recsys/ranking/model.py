"""The LightGBM learning-to-rank model: training, scoring, per-feature explanations, persistence."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np


@dataclass
class RankerParams:
    objective: str = "lambdarank"     # or "rank_xendcg"
    num_leaves: int = 31
    learning_rate: float = 0.05
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    num_boost_round: int = 600
    early_stopping_rounds: int = 50
    seed: int = 42
    threads: int = 2
    # Boost from a strong retrieval score instead of from zero: the trees learn corrections to it, so a
    # ranker that finds nothing to add ranks like that score rather than worse ("" = start from zero).
    base_feature: str = "i2i_score_z"
    base_weight: float = 1.0

    def lgb_params(self) -> dict:
        return {
            "objective": self.objective,
            "metric": "ndcg",
            "eval_at": [10],
            "lambdarank_truncation_level": 20,
            "num_leaves": self.num_leaves,
            "learning_rate": self.learning_rate,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": 1,
            "lambda_l2": self.lambda_l2,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.threads,
            "verbose": -1,
        }


def base_scores(x: np.ndarray, feature_names: list[str], base_feature: str, base_weight: float) -> np.ndarray:
    """The starting score of each row: base_weight × the base feature (0 where missing)."""
    if not base_feature or base_feature not in feature_names:
        return np.zeros(len(x))
    col = x[:, feature_names.index(base_feature)].astype(np.float64)
    return base_weight * np.nan_to_num(col, nan=0.0)


@dataclass
class RankerModel:
    booster: lgb.Booster
    feature_names: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    base_feature: str = ""
    base_weight: float = 0.0

    def score(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0, dtype=np.float64)
        base = base_scores(x, self.feature_names, self.base_feature, self.base_weight)
        return base + self.booster.predict(x, num_threads=1)

    def explain(self, x: np.ndarray) -> np.ndarray:
        """Per-feature contributions [n, F] (TreeSHAP); the bias column is dropped."""
        contrib = self.booster.predict(x, pred_contrib=True, num_threads=1)[:, :-1]
        if self.base_feature in self.feature_names:  # the score the trees started from is part of the score
            j = self.feature_names.index(self.base_feature)
            contrib[:, j] += base_scores(x, self.feature_names, self.base_feature, self.base_weight)
        return contrib

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(directory / "model.txt"))
        (directory / "ranker.json").write_text(json.dumps(
            {"feature_names": self.feature_names, "metrics": self.metrics, "base_feature": self.base_feature,
             "base_weight": self.base_weight}, indent=1))

    @classmethod
    def load(cls, directory: Path) -> RankerModel:
        meta = json.loads((directory / "ranker.json").read_text())
        booster = lgb.Booster(model_file=str(directory / "model.txt"))
        if booster.num_feature() != len(meta["feature_names"]):
            raise ValueError(f"{directory}: model has {booster.num_feature()} features, "
                             f"ranker.json lists {len(meta['feature_names'])}")
        return cls(booster=booster, feature_names=list(meta["feature_names"]), metrics=meta.get("metrics", {}),
                   base_feature=meta.get("base_feature", ""), base_weight=float(meta.get("base_weight", 0.0)))


def train_ranker(x_train: np.ndarray, y_train: np.ndarray, groups_train: np.ndarray,
                 x_valid: np.ndarray, y_valid: np.ndarray, groups_valid: np.ndarray,
                 feature_names: list[str], params: RankerParams) -> RankerModel:
    """LambdaRank with early stopping on validation nDCG@10; records the train/validation gap."""
    base = (params.base_feature, params.base_weight)
    dtrain = lgb.Dataset(x_train, y_train, group=groups_train, feature_name=feature_names, free_raw_data=False,
                         init_score=base_scores(x_train, feature_names, *base))
    dvalid = lgb.Dataset(x_valid, y_valid, group=groups_valid, reference=dtrain, free_raw_data=False,
                         init_score=base_scores(x_valid, feature_names, *base))
    evals: dict = {}
    booster = lgb.train(
        params.lgb_params(), dtrain, num_boost_round=params.num_boost_round,
        valid_sets=[dtrain, dvalid], valid_names=["train", "valid"],
        callbacks=[lgb.early_stopping(params.early_stopping_rounds, verbose=False),
                   lgb.record_evaluation(evals)],
    )
    best = booster.best_iteration or params.num_boost_round
    train_ndcg = float(evals["train"]["ndcg@10"][best - 1])
    valid_ndcg = float(evals["valid"]["ndcg@10"][best - 1])
    metrics = {"ranker_train_ndcg@10": train_ndcg, "ranker_valid_ndcg@10": valid_ndcg,
               "ranker_train_valid_gap": train_ndcg - valid_ndcg, "ranker_best_iteration": float(best)}
    return RankerModel(booster=booster, feature_names=feature_names, metrics=metrics,
                       base_feature=params.base_feature if params.base_feature in feature_names else "",
                       base_weight=params.base_weight)
