"""The LightGBM learning-to-rank model: training, scoring, per-feature explanations, persistence."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np

from recsys.ranking.compiled import CompiledTrees, compile_booster

log = logging.getLogger(__name__)

# What orders a new user's candidates when no history-driven score exists: the user segment's popularity
# (z-scored per request) first, global popularity (in [0, 1]) as the tie-breaker.
COLD_BASE = {"segment_score_z": 1.0, "pop_score": 0.5}


@dataclass
class RankerParams:
    # "lambdarank" or "rank_xendcg"; or "popularity": no learning, candidates in global popularity order
    # (a baseline arm for experiments, and the floor any learned ranker must beat).
    objective: str = "lambdarank"
    # Small, slow trees: the ranker learns on stage-1 models fit on 80% of the history and serves on
    # refits on all of it; on MovieLens 100K (3 seeds) 31-leaf trees gained on the validation lists but
    # lost up to 0.011 nDCG@10 at test, 7-leaf trees with 500-row leaves did not.
    num_leaves: int = 7
    learning_rate: float = 0.02
    min_data_in_leaf: int = 500
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    num_boost_round: int = 300         # bounds the serving cost: ~300 trees of 7 leaves score 300 rows in ~2 ms
    early_stopping_rounds: int = 50
    seed: int = 42
    threads: int = 2
    # Boost from a strong retrieval score instead of from zero: the trees learn corrections to it, so a
    # ranker that finds nothing to add ranks like that score rather than worse ("" = start from zero).
    base_feature: str = "i2i_score_z"
    base_weight: float = 1.0
    # Further scores added to the base with weights fit on the training lists (coordinate search on list
    # nDCG@10): a linear blend of retrieval scores is hard for trees to express but cheap to fit directly.
    # Features a bundle lacks are skipped (ncf_score_z exists only when the optional ncf source is configured).
    blend_features: list[str] = field(default_factory=lambda: [
        "seq_score_z", "als_score_z", "segment_score_z", "item_popularity_rel", "embedding_similarity",
        "ncf_score_z"])
    blend_grid: list[float] = field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8])
    blend_z: float = 2.0              # significance a weight change needs (standard errors of the list gains)
    # The trees are kept only if they beat the base alone by this much nDCG@10 on the validation lists.
    min_tree_gain: float = 0.001

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


def base_scores(x: np.ndarray, feature_names: list[str], weights: dict[str, float]) -> np.ndarray:
    """The starting score of each row: Σ weight × feature over the base features (0 where missing)."""
    out = np.zeros(len(x))
    for name, w in weights.items():
        if w and name in feature_names:
            out += w * np.nan_to_num(x[:, feature_names.index(name)].astype(np.float64), nan=0.0)
    return out


def per_group_ndcg(scores: np.ndarray, y: np.ndarray, groups: np.ndarray, k: int = 10) -> np.ndarray:
    """nDCG@k of each group of consecutive rows (one group = one user's candidate list); 0 without positives."""
    bounds = np.concatenate([[0], np.cumsum(groups)])
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    out = np.zeros(len(groups))
    for g, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        ideal = discounts[: min(k, int(y[a:b].sum()))].sum()
        if ideal > 0:
            top = np.argsort(-scores[a:b], kind="stable")[:k]
            out[g] = (y[a:b][top] * discounts[: len(top)]).sum() / ideal
    return out


def groups_ndcg(scores: np.ndarray, y: np.ndarray, groups: np.ndarray, k: int = 10) -> float:
    """Mean nDCG@k over the groups."""
    return float(per_group_ndcg(scores, y, groups, k).mean()) if len(groups) else 0.0


def fit_blend(x: np.ndarray, y: np.ndarray, groups: np.ndarray, feature_names: list[str],
              params: RankerParams, rounds: int = 2) -> dict[str, float]:
    """Base weights: the main feature at its weight, each blend feature's weight picked from the grid by
    coordinate ascent on list nDCG@10. A change is taken only when its per-list gain is significant
    (mean > `blend_z` standard errors of the paired differences), so a feature that fits noise stays at 0."""
    weights = {params.base_feature: params.base_weight} if params.base_feature in feature_names else {}
    extra = [f for f in params.blend_features if f in feature_names and f != params.base_feature]
    if not weights or not extra:
        return weights
    current = per_group_ndcg(base_scores(x, feature_names, weights), y, groups)
    for _ in range(rounds):
        for f in extra:
            best_gain, best_w, best_vals = 0.0, None, None
            for w in params.blend_grid:
                if w == weights.get(f, 0.0):
                    continue
                vals = per_group_ndcg(base_scores(x, feature_names, weights | {f: w}), y, groups)
                diff = vals - current
                se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else np.inf
                if diff.mean() > max(best_gain, params.blend_z * se):
                    best_gain, best_w, best_vals = float(diff.mean()), w, vals
            if best_w is not None:
                weights, current = weights | {f: best_w}, best_vals
    return {f: w for f, w in weights.items() if w}


POPULARITY_BASE = {"item_popularity_rel": 1.0}


@dataclass
class RankerModel:
    booster: lgb.Booster | None       # None: a model without trees (the popularity order)
    feature_names: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    base: dict[str, float] = field(default_factory=dict)  # feature -> weight of the score the trees start from
    use_trees: bool = True            # False when validation showed the trees add nothing to the base
    # The trees compiled to machine code (recsys/ranking/compiled.py), checked against LightGBM when built;
    # None: LightGBM scores. Never saved: a bundle holds only LightGBM's model text.
    compiled: CompiledTrees | None = field(default=None, repr=False, compare=False)

    def compile(self, use_cache: bool = True) -> bool:
        """Score with the compiled form of the trees from now on, when it can be built and agrees with
        LightGBM; returns whether it is in use."""
        if self.use_trees and self.booster is not None and self.compiled is None:
            self.compiled = compile_booster(self.booster, use_cache)
        return self.compiled is not None

    def tree_scores(self, x: np.ndarray) -> np.ndarray:
        """The trees' raw scores (without the base)."""
        if self.compiled is not None:
            return self.compiled.predict(x)
        return self.booster.predict(x, num_threads=1)

    def base_weights(self, x: np.ndarray) -> dict[str, float]:
        """The fitted base; for a request where it does not vary (no history-driven score: a new user),
        plus the cold-start base (segment popularity, then global popularity) to order the candidates."""
        if len(x) > 1 and np.ptp(base_scores(x, self.feature_names, self.base)) == 0:
            return self.base | {f: self.base.get(f, 0.0) + w for f, w in COLD_BASE.items()}
        return self.base

    def score(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0, dtype=np.float64)
        base = base_scores(x, self.feature_names, self.base_weights(x))
        return base + self.tree_scores(x) if self.use_trees and self.booster else base

    def explain(self, x: np.ndarray) -> np.ndarray:
        """Per-feature contributions [n, F] (TreeSHAP); the bias column is dropped."""
        if self.use_trees and self.booster is not None:
            contrib = self.booster.predict(x, pred_contrib=True, num_threads=1)[:, :-1]
        else:
            contrib = np.zeros((len(x), len(self.feature_names)))
        for name, w in self.base_weights(x).items():  # the score the trees started from is part of the score
            if name in self.feature_names:
                j = self.feature_names.index(name)
                contrib[:, j] += w * np.nan_to_num(x[:, j].astype(np.float64), nan=0.0)
        return contrib

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if self.booster is not None:
            self.booster.save_model(str(directory / "model.txt"))
        (directory / "ranker.json").write_text(json.dumps(
            {"feature_names": self.feature_names, "metrics": self.metrics, "base": self.base,
             "use_trees": self.use_trees}, indent=1))

    @classmethod
    def load(cls, directory: Path) -> RankerModel:
        meta = json.loads((directory / "ranker.json").read_text())
        model_file = directory / "model.txt"
        booster = lgb.Booster(model_file=str(model_file)) if model_file.exists() or meta.get("use_trees", True) \
            else None
        if booster is not None and booster.num_feature() != len(meta["feature_names"]):
            raise ValueError(f"{directory}: model has {booster.num_feature()} features, "
                             f"ranker.json lists {len(meta['feature_names'])}")
        base = {str(k): float(v) for k, v in meta.get("base", {}).items()}
        if not base and meta.get("base_feature"):  # bundles written before blended bases
            base = {meta["base_feature"]: float(meta.get("base_weight", 1.0))}
        return cls(booster=booster, feature_names=list(meta["feature_names"]), metrics=meta.get("metrics", {}),
                   base=base, use_trees=bool(meta.get("use_trees", True)))


def train_ranker(x_train: np.ndarray, y_train: np.ndarray, groups_train: np.ndarray,
                 x_valid: np.ndarray, y_valid: np.ndarray, groups_valid: np.ndarray,
                 feature_names: list[str], params: RankerParams, base: dict[str, float] | None = None) -> RankerModel:
    """LambdaRank from a fitted linear base, with early stopping on validation nDCG@10; records the
    train/validation gap. The trees are kept only if they beat the base alone on the validation lists by
    `min_tree_gain`: otherwise the model serves the base, rather than a correction validation cannot tell
    from noise. `base`: blend weights already fit on these lists (a tree-settings search fits them once)."""
    if params.objective == "popularity":
        base_only = groups_ndcg(base_scores(x_valid, feature_names, POPULARITY_BASE), y_valid, groups_valid)
        return RankerModel(booster=None, feature_names=feature_names, base=dict(POPULARITY_BASE), use_trees=False,
                           metrics={"ranker_valid_list_ndcg@10": base_only, "ranker_valid_base_only_ndcg@10": base_only,
                                    "ranker_trees_used": 0.0})
    base = dict(base) if base is not None else fit_blend(x_train, y_train, groups_train, feature_names, params)
    base_valid = base_scores(x_valid, feature_names, base)
    dtrain = lgb.Dataset(x_train, y_train, group=groups_train, feature_name=feature_names, free_raw_data=False,
                         init_score=base_scores(x_train, feature_names, base))
    dvalid = lgb.Dataset(x_valid, y_valid, group=groups_valid, reference=dtrain, free_raw_data=False,
                         init_score=base_valid)
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
    metrics.update({f"ranker_base_weight:{f}": w for f, w in base.items()})
    with_trees = groups_ndcg(base_valid + booster.predict(x_valid, num_threads=params.threads), y_valid, groups_valid)
    base_only = groups_ndcg(base_valid, y_valid, groups_valid)
    use_trees = with_trees - base_only >= params.min_tree_gain
    if not use_trees:
        log.info("ranker trees dropped: validation list nDCG@10 gain %.4f < %.4f", with_trees - base_only,
                 params.min_tree_gain)
    metrics.update({"ranker_valid_list_ndcg@10": with_trees, "ranker_valid_base_only_ndcg@10": base_only,
                    "ranker_trees_used": float(use_trees)})
    return RankerModel(booster=booster, feature_names=feature_names, metrics=metrics, base=base, use_trees=use_trees)
