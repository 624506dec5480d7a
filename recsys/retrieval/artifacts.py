"""The retrieval half of a model bundle: item embeddings, neighbour tables, popularity and segment tables."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys.retrieval.als import ALSParams


@dataclass
class RetrievalArtifacts:
    item_ids: np.ndarray            # str [I]; row i of every table below is item_ids[i]
    item_factors: np.ndarray        # float32 [I, f] ALS item embeddings
    als: ALSParams
    neighbors: sp.csr_matrix        # float32 [I, I] top-M item-to-item weights
    neighbor_method: str            # "ease" or "cosine"
    popularity: np.ndarray          # float32 [I] in [0, 1], log-scaled interaction counts
    item_categories: sp.csr_matrix  # float32 [I, C] one-hot categories
    category_names: list[str]
    cold: np.ndarray                # bool [I], items with too few interactions for collaborative sources
    segment_names: list[str]        # "attribute=value"
    segments: sp.csr_matrix         # float32 [S, I] top items per user segment, scores in [0, 1]
    sequence: sp.csr_matrix | None = None  # float32 [I, I] time-adjacency neighbours (None in older bundles)
    source_dir: Path | None = None  # where it was loaded from (prebuilt FAISS indexes live there)

    def index_path(self, kind: str) -> Path | None:
        """The prebuilt FAISS index of this kind shipped in the bundle, if any."""
        if self.source_dir is None:
            return None
        path = self.source_dir / f"faiss-{kind}.index"
        return path if path.is_file() else None

    def write_index(self, directory: Path, kind: str) -> None:
        """Prebuild a FAISS index into the bundle, so services start without building it."""
        import faiss

        from recsys.retrieval.ann import build_index

        faiss.write_index(build_index(self.item_factors, kind), str(directory / f"faiss-{kind}.index"))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "item_ids.npy", self.item_ids.astype(str))
        np.save(directory / "item_factors.npy", self.item_factors)
        np.save(directory / "popularity.npy", self.popularity)
        np.save(directory / "cold.npy", self.cold)
        sp.save_npz(directory / "neighbors.npz", self.neighbors)
        sp.save_npz(directory / "item_categories.npz", self.item_categories)
        sp.save_npz(directory / "segments.npz", self.segments)
        if self.sequence is not None:
            sp.save_npz(directory / "sequence.npz", self.sequence)
        meta = {"als": asdict(self.als), "neighbor_method": self.neighbor_method,
                "category_names": self.category_names, "segment_names": self.segment_names}
        (directory / "retrieval.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, directory: Path) -> RetrievalArtifacts:
        meta = json.loads((directory / "retrieval.json").read_text())
        seq = directory / "sequence.npz"
        return cls(
            item_ids=np.load(directory / "item_ids.npy"),
            item_factors=np.load(directory / "item_factors.npy"),
            als=ALSParams(**meta["als"]),
            neighbors=sp.load_npz(directory / "neighbors.npz").tocsr(),
            neighbor_method=meta["neighbor_method"],
            popularity=np.load(directory / "popularity.npy"),
            item_categories=sp.load_npz(directory / "item_categories.npz").tocsr(),
            category_names=list(meta["category_names"]),
            cold=np.load(directory / "cold.npy"),
            segment_names=list(meta["segment_names"]),
            segments=sp.load_npz(directory / "segments.npz").tocsr(),
            sequence=sp.load_npz(seq).tocsr() if seq.is_file() else None,
            source_dir=directory,
        )
