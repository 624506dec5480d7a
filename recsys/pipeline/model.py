"""The ranking side of a bundle as ranker_svc holds it: the LightGBM ranker plus unit item embeddings
(for the embedding-similarity feature and MMR diversity).

Nothing here is indexed by catalog position: embeddings are looked up by item id, and an id the model does
not know (an item added to candidate_svc at run time) gets a zero row, i.e. embedding similarity 0 and no
embedding similarity to other items in MMR: neutral values. `ItemEmbeddings.with_items` lets the ranker use
the new items' vectors too (the ones CandidateGenerator.add_items placed them at)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from recsys.bundle import BundleError, read_metadata, verify_bundle
from recsys.id_index import IdIndex
from recsys.pipeline.config import PipelineConfig
from recsys.ranking.model import RankerModel

POPULAR_KEPT = 1000  # enough for any k after exclusions


@dataclass
class ItemEmbeddings:
    """Unit-normalised item embeddings addressed by item id."""

    item_row: dict[str, int]
    unit: np.ndarray                  # float32 [I, d]

    @classmethod
    def from_factors(cls, item_ids: np.ndarray, factors: np.ndarray,
                     item_row: dict[str, int] | None = None) -> ItemEmbeddings:
        """`item_row`, when given, must map exactly `item_ids` to their rows: embeddings over one catalog
        share it (never mutated: with_items copies), instead of a million-entry dict each."""
        emb = factors.astype(np.float32)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        unit = np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)
        if item_row is None:
            item_row = {x: i for i, x in enumerate(item_ids.tolist())}
        return cls(item_row=item_row, unit=unit)

    def with_items(self, item_ids: list[str], factors: np.ndarray) -> ItemEmbeddings:
        """A copy that also knows `item_ids` (new rows; known ids get their row replaced). Assign it to
        `ServingModel.embeddings` in one step: requests holding the old object are unaffected."""
        add = ItemEmbeddings.from_factors(np.asarray(item_ids, dtype=str), np.asarray(factors, dtype=np.float32))
        row = dict(self.item_row)
        unit = self.unit
        fresh = [x for x in dict.fromkeys(item_ids) if x not in row]
        old = [(row[x], add.item_row[x]) for x in dict.fromkeys(item_ids) if x in row]
        if old:
            unit = unit.copy()
            unit[[r for r, _ in old]] = add.unit[[a for _, a in old]]
        if fresh:
            unit = np.concatenate([unit, add.unit[[add.item_row[x] for x in fresh]]])
            row.update({x: len(self.unit) + j for j, x in enumerate(fresh)})
        return ItemEmbeddings(item_row=row, unit=unit)

    @cached_property
    def index(self) -> IdIndex:
        """`item_row` for batches (recsys/id_index.py); built on first use, ServingModel.load builds it."""
        rows = np.fromiter(self.item_row.values(), dtype=np.int64, count=len(self.item_row))
        positions = bool((rows == np.arange(len(rows))).all())  # as built from a bundle: no row array to keep
        return IdIndex(list(self.item_row), None if positions else rows)

    def lookup(self, item_ids: list[str]) -> np.ndarray:
        """Unit embeddings of the items (zero rows for items the model does not know)."""
        if not len(item_ids) or not len(self.unit):
            return np.zeros((len(item_ids), self.unit.shape[1]), dtype=np.float32)
        rows = self.index.rows(item_ids)
        out = self.unit[np.maximum(rows, 0)]  # one gather instead of a row copy per id (hundreds per request)
        out[rows < 0] = 0.0
        return out


@dataclass
class ServingModel:
    version: str
    created: float
    ranker: RankerModel
    embeddings: ItemEmbeddings
    metrics: dict[str, float] = field(default_factory=dict)  # validation metrics from training
    # The most popular item ids, most popular first: what the ranker can serve on its own when its
    # dependencies are down (ranker_svc/degraded.py).
    popular: list[str] = field(default_factory=list)
    # The re-ranker settings `recsys train` chose on validation (params.serving_defaults; empty for bundles
    # without a selection): ranker_svc serves with them unless its `bundle_reranker` setting is off.
    defaults: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, bundle_dir: Path, verify: bool = True, compile_trees: bool = True) -> ServingModel:
        """`compile_trees`: score with the trees compiled to machine code when that form can be built and
        agrees with LightGBM (recsys/ranking/compiled.py); off, or where it cannot, LightGBM scores."""
        bundle_dir = Path(bundle_dir)
        meta = verify_bundle(bundle_dir) if verify else read_metadata(bundle_dir)
        try:
            ranker = RankerModel.load(bundle_dir / "ranker")
            ids = np.load(bundle_dir / "retrieval" / "item_ids.npy")
            emb = np.load(bundle_dir / "retrieval" / "item_factors.npy").astype(np.float32)
        except Exception as exc:  # OSError, ValueError, or LightGBMError (an Exception subclass)
            raise BundleError(f"{bundle_dir}: cannot load ranker: {exc}") from exc
        if len(ids) != len(emb):
            raise BundleError(f"{bundle_dir}: {len(ids)} item ids but {len(emb)} embeddings")
        popularity_file = bundle_dir / "retrieval" / "popularity.npy"
        popular: list[str] = []
        if popularity_file.is_file():
            popularity = np.load(popularity_file)
            if len(popularity) == len(ids):
                popular = [str(x) for x in ids[np.argsort(-popularity, kind="stable")[:POPULAR_KEPT]]]
        defaults = meta.params.get("serving_defaults") or {}
        if not isinstance(defaults, dict):
            raise BundleError(f"{bundle_dir}: params.serving_defaults must be a mapping, got {defaults!r:.80}")
        try:
            PipelineConfig().with_defaults(defaults)
        except (TypeError, ValueError) as exc:
            raise BundleError(f"{bundle_dir}: params.serving_defaults: {exc}") from exc
        if compile_trees:
            ranker.compile()
        embeddings = ItemEmbeddings.from_factors(ids, emb)
        _ = embeddings.index  # built with the bundle, not on its first request
        return cls(version=meta.version, created=meta.created, ranker=ranker, popular=popular, defaults=dict(defaults),
                   embeddings=embeddings,
                   metrics={k: float(v) for k, v in meta.metrics.items() if isinstance(v, int | float)})
