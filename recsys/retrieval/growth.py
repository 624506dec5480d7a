"""Catalog growth at serving time: the new Catalog an item upsert produces (the old one is never modified).

An upsert of an unknown id appends a row: its categories (names the bundle does not know are ignored: the
content map and the category matching only know the trained names) and a vector from the bundle's content
map. An upsert of a known id updates its categories; an item added at run time also gets its vector
recomputed, while a trained item keeps its learned factors. The sources then grow their own per-item tables
(CandidateSource.add_items); CandidateGenerator.add_items runs the whole thing and swaps the result in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from recsys.retrieval.content_map import ItemVectorizer, category_rows
from recsys.retrieval.sources.base import Catalog


@dataclass(frozen=True)
class NewItem:
    """One item upsert as it arrives on the stream."""

    item_id: str
    title: str = ""
    categories: Sequence[str] = field(default_factory=tuple)


@dataclass
class Growth:
    catalog: Catalog                  # the grown catalog (a new object)
    indices: np.ndarray               # catalog row of each upserted item, in input order
    first: int                        # first appended row (= the old catalog's size)
    n_new: int
    changed: np.ndarray               # older rows whose categories or (run-time items only) vector changed

    @property
    def empty(self) -> bool:
        return self.n_new == 0 and len(self.changed) == 0


def _replace_rows(m: sp.csr_matrix, rows: np.ndarray, values: sp.csr_matrix) -> sp.csr_matrix:
    """`m` with `rows` replaced by the rows of `values` (one sparse pass, O(nnz))."""
    keep = np.ones(m.shape[0], np.float32)
    keep[rows] = 0.0
    place = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, np.arange(len(rows)))),
                          shape=(m.shape[0], len(rows)))
    return (sp.diags(keep) @ m + place @ values).tocsr()


def grow(catalog: Catalog, items: Sequence[NewItem], index_of: dict[str, int], vectorizer: ItemVectorizer,
         vectors: np.ndarray | None = None) -> Growth:
    """The catalog after upserting `items` (the last upsert of an id in the batch wins). `index_of` maps the
    ids of `catalog` (it may hold newer ids too; only rows below catalog.n_items count). `vectors` [len(items), f]
    overrides the content map's vectors of new and run-time items (evaluation baselines, precomputed vectors)."""
    n_old, trained = catalog.n_items, catalog.n_trained
    last = {it.item_id: j for j, it in enumerate(items)}
    order = sorted(last.values())                       # one upsert per id, in batch order
    new_ids: list[str] = []
    rows: list[int] = []
    for j in order:
        row = index_of.get(items[j].item_id)
        if row is None or row >= n_old:
            row = n_old + len(new_ids)
            new_ids.append(items[j].item_id)
        rows.append(row)
    row_of = dict(zip((items[j].item_id for j in order), rows, strict=True))
    indices = np.array([row_of[it.item_id] for it in items], dtype=np.int64)
    if not order:
        return Growth(catalog, indices, n_old, 0, np.zeros(0, np.int64))

    cats = category_rows([list(items[j].categories) for j in order], catalog.category_names)
    rows_a = np.array(rows, dtype=np.int64)
    if vectors is None:
        vecs = vectorizer.vectors(cats, [items[j].title for j in order])
    else:
        vecs = np.asarray(vectors, dtype=np.float32)[order]
    old = rows_a < n_old
    old_rows = rows_a[old]
    # Only real changes count: a feed re-sending an unchanged item must not rewrite the catalog.
    diff = abs(catalog.item_categories[old_rows] - cats[np.flatnonzero(old)])
    cats_changed = np.asarray(diff.sum(axis=1)).ravel() > 0
    runtime = old_rows >= trained
    vec_changed = runtime & (catalog.item_factors[old_rows] != vecs[old]).any(axis=1)
    changed_mask = cats_changed | vec_changed
    changed = old_rows[changed_mask]
    if not new_ids and not len(changed):
        return Growth(catalog, indices, n_old, 0, np.zeros(0, np.int64))

    factors = catalog.item_factors
    if vec_changed.any() or new_ids:
        factors = np.concatenate([factors, vecs[~old]]) if new_ids else factors.copy()
        upd = old_rows[vec_changed]
        factors[upd] = vecs[np.flatnonzero(old)[vec_changed]]
    categories = catalog.item_categories
    if cats_changed.any():
        pick = np.flatnonzero(old)[cats_changed]
        categories = _replace_rows(categories, old_rows[cats_changed], cats[pick])
    if new_ids:
        categories = sp.vstack([categories, cats[np.flatnonzero(~old)]], format="csr")
        item_ids = np.concatenate([catalog.item_ids.astype(str), np.array(new_ids, dtype=str)])
    else:
        item_ids = catalog.item_ids
    grown = Catalog(item_ids=item_ids, item_factors=np.ascontiguousarray(factors, dtype=np.float32),
                    item_categories=sp.csr_matrix(categories, dtype=np.float32),
                    category_names=catalog.category_names, source_dir=catalog.source_dir,
                    added=catalog.added + len(new_ids))
    return Growth(grown, indices, n_old, len(new_ids), np.sort(changed))
