"""The ranking side of a bundle as ranker_svc holds it: the LightGBM ranker plus unit item embeddings
(for the embedding-similarity feature and MMR diversity)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recsys.bundle import BundleError, read_metadata, verify_bundle
from recsys.ranking.model import RankerModel


@dataclass
class ItemEmbeddings:
    """Unit-normalised item embeddings addressed by item id."""

    item_row: dict[str, int]
    unit: np.ndarray                  # float32 [I, d]

    @classmethod
    def from_factors(cls, item_ids: np.ndarray, factors: np.ndarray) -> ItemEmbeddings:
        emb = factors.astype(np.float32)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        unit = np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)
        return cls(item_row={x: i for i, x in enumerate(item_ids.tolist())}, unit=unit)

    def lookup(self, item_ids: list[str]) -> np.ndarray:
        """Unit embeddings of the items (zero rows for items the model does not know)."""
        out = np.zeros((len(item_ids), self.unit.shape[1]), dtype=np.float32)
        get = self.item_row.get
        for i, x in enumerate(item_ids):
            r = get(x)
            if r is not None:
                out[i] = self.unit[r]
        return out


@dataclass
class ServingModel:
    version: str
    created: float
    ranker: RankerModel
    embeddings: ItemEmbeddings
    metrics: dict[str, float] = field(default_factory=dict)  # validation metrics from training

    @classmethod
    def load(cls, bundle_dir: Path, verify: bool = True) -> ServingModel:
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
        return cls(version=meta.version, created=meta.created, ranker=ranker,
                   embeddings=ItemEmbeddings.from_factors(ids, emb),
                   metrics={k: float(v) for k, v in meta.metrics.items() if isinstance(v, int | float)})
