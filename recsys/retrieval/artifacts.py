"""The retrieval half of a model bundle: the shared catalog (item ids, ALS embeddings, categories) and the
tables of each configured candidate source.

    retrieval/retrieval.json          the source list, their quotas, the category names, and each source's
                                      own entries (for example "als" parameters, "segment_names")
    retrieval/item_ids.npy            the catalog
    retrieval/item_factors.npy        ALS item embeddings (the als source, the ranker, MMR)
    retrieval/item_categories.npz     one-hot categories
    retrieval/faiss-{exact,hnsw}.index  prebuilt ANN indexes over the embeddings
    retrieval/content_map.{npz,json}  content -> factor map for items added at run time (content_map.py);
                                      absent in older bundles, which fall back to category centroids
    retrieval/...                     each source's files (neighbors.npz, popularity.npy, ...)

Bundles written before sources were components have no "sources" key: they load with the six sources
they were trained with, from the same files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys.retrieval.content_map import CategoryMeans, ContentMap, ItemVectorizer
from recsys.retrieval.sources import LEGACY_SOURCES, source_class
from recsys.retrieval.sources.base import CandidateSource, Catalog


@dataclass
class RetrievalArtifacts:
    catalog: Catalog
    sources: list[CandidateSource]                  # in merge order
    quotas: dict[str, float] | None = None          # the bundle's quotas (None = each source's default)
    content_map: ContentMap | None = None           # None: a bundle written before the map existed

    @property
    def item_ids(self) -> np.ndarray:
        return self.catalog.item_ids

    @property
    def item_factors(self) -> np.ndarray:
        return self.catalog.item_factors

    @property
    def source_dir(self) -> Path | None:
        return self.catalog.source_dir

    def source(self, name: str) -> CandidateSource | None:
        return next((s for s in self.sources if s.name == name), None)

    def default_quotas(self) -> dict[str, float]:
        return dict(self.quotas) if self.quotas is not None else {s.name: s.quota for s in self.sources}

    def vectorizer(self) -> ItemVectorizer:
        """What places items added at run time among the factors: the content map, or for bundles without one
        the mean of their categories' centroids (CategoryMeans)."""
        return self.content_map if self.content_map is not None else CategoryMeans.of(self.catalog)

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
        c = self.catalog
        np.save(directory / "item_ids.npy", c.item_ids.astype(str))
        np.save(directory / "item_factors.npy", c.item_factors)
        sp.save_npz(directory / "item_categories.npz", c.item_categories)
        meta: dict = {"category_names": c.category_names, "sources": [s.name for s in self.sources]}
        if self.quotas is not None:
            meta["quotas"] = self.quotas
        for s in self.sources:
            meta.update(s.save(directory))
        if self.content_map is not None:
            meta["content_map"] = self.content_map.save(directory)["info"]
        (directory / "retrieval.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, directory: Path) -> RetrievalArtifacts:
        directory = Path(directory)
        meta = json.loads((directory / "retrieval.json").read_text())
        catalog = Catalog(item_ids=np.load(directory / "item_ids.npy"),
                          item_factors=np.load(directory / "item_factors.npy"),
                          item_categories=sp.load_npz(directory / "item_categories.npz").tocsr(),
                          category_names=list(meta["category_names"]), source_dir=directory)
        sources = []
        for name in meta.get("sources", LEGACY_SOURCES):
            src = source_class(name).load(directory, meta, catalog)
            if src is not None:
                sources.append(src)
        return cls(catalog=catalog, sources=sources, quotas=meta.get("quotas"), content_map=ContentMap.load(directory))
