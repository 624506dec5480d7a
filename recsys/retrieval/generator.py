"""Multi-source candidate generation: ALS+FAISS, item-to-item, popular, user segment, content (cold items)
and sequence neighbours.

Every source proposes a ranked list; lists are merged under per-source quotas, deduplicated and filtered
(seen and excluded items). Each merged candidate then gets the scores of *all* sources, so the ranker
sees the full picture whichever source proposed it. candidate_svc and training both call `retrieve`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import faiss
import numpy as np

from recsys.retrieval.als import FoldIn
from recsys.retrieval.ann import build_index, search
from recsys.retrieval.artifacts import RetrievalArtifacts

SOURCES = ("als", "i2i", "popular", "segment", "content", "seq")
SCORE_NAMES = ("als_score", "als_rank", "i2i_score", "i2i_rank", "pop_score", "segment_score",
               "content_score", "n_sources", "seq_score", "seq_rank")

# Share of the candidate budget each source gets; what a source cannot fill goes to the others.
DEFAULT_QUOTAS = {"als": 0.35, "i2i": 0.4, "popular": 0.05, "segment": 0.05, "content": 0.05, "seq": 0.1}
COLD_USER_QUOTAS = {"popular": 0.5, "segment": 0.5}
_MASK_NAMES = [[s for i, s in enumerate(SOURCES) if mask >> i & 1] for mask in range(1 << len(SOURCES))]


@dataclass
class Candidates:
    items: np.ndarray                 # int item indices into RetrievalArtifacts.item_ids
    scores: np.ndarray                # float32 [n, len(SCORE_NAMES)]
    sources: np.ndarray               # uint8 bitmask [n], bit i = SOURCES[i] proposed the item

    def source_names(self, row: int) -> list[str]:
        return _MASK_NAMES[int(self.sources[row])]


@dataclass
class GeneratorConfig:
    n: int = 300
    index: str = "exact"              # exact | hnsw | ivf
    quotas: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_QUOTAS))
    recent_history: int = 500         # history items that drive item-to-item and content scores


class CandidateGenerator:
    def __init__(self, art: RetrievalArtifacts, config: GeneratorConfig | None = None):
        self.art = art
        self.config = config or GeneratorConfig()
        self.n_items = len(art.item_ids)
        self.index_of = {item: i for i, item in enumerate(art.item_ids.tolist())}
        self.fold_in = FoldIn(art.item_factors, art.als.regularization, art.als.alpha)
        prebuilt = art.index_path(self.config.index)
        if prebuilt is not None:
            self.index = faiss.read_index(str(prebuilt))
            if self.index.ntotal != self.n_items or self.index.d != art.item_factors.shape[1]:
                raise ValueError(f"{prebuilt}: index holds {self.index.ntotal}x{self.index.d} vectors, "
                                 f"the bundle has {art.item_factors.shape[0]}x{art.item_factors.shape[1]}")
        else:
            self.index = build_index(art.item_factors, self.config.index)
        self.pop_order = np.argsort(-art.popularity, kind="stable")
        self.segment_of = {name: i for i, name in enumerate(art.segment_names)}
        self.cold_items = np.flatnonzero(art.cold)
        self.cold_categories = art.item_categories[self.cold_items].tocsr()

    # -- id mapping ---------------------------------------------------------------------------------
    def indices(self, item_ids: list[str]) -> np.ndarray:
        """Indices of known items, in order; unknown ids are skipped (new items not yet in the model)."""
        get = self.index_of.get
        return np.array([i for i in (get(x) for x in item_ids) if i is not None], dtype=np.int64)

    # -- the sources --------------------------------------------------------------------------------
    def _segment_scores(self, attributes: dict[str, str]) -> np.ndarray | None:
        rows = [self.segment_of[f"{k}={v}"] for k, v in attributes.items() if f"{k}={v}" in self.segment_of]
        if not rows:
            return None
        return np.asarray(self.art.segments[rows].sum(axis=0)).ravel() / len(rows)

    def retrieve(self, history: np.ndarray, attributes: dict[str, str] | None = None, n: int | None = None,
                 exclude: np.ndarray | None = None, include_seen: bool = False) -> Candidates:
        """Candidates for a user given their item history (indices, oldest first)."""
        n = n or self.config.n
        banned = np.zeros(self.n_items, dtype=bool)
        if exclude is not None and len(exclude):
            banned[exclude] = True
        if not include_seen and len(history):
            banned[history] = True
        recent = history[-self.config.recent_history:]
        cold_user = len(history) == 0
        quotas = COLD_USER_QUOTAS if cold_user else self.config.quotas
        budget = {s: int(round(q * n)) for s, q in quotas.items()}
        # Deep enough to survive the filtering of seen/excluded items, but bounded: a user with tens of
        # thousands of seen items must not turn every request into a catalog-sized search.
        depth = n + min(int(banned.sum()), 3 * n)

        lists: dict[str, np.ndarray] = {}
        user_vec = self.fold_in.user_vector(history)
        i2i_items = np.zeros(0, dtype=np.int64)  # items reached from the history, sorted
        i2i_scores = np.zeros(0, dtype=np.float32)
        seq_items, seq_scores = i2i_items, i2i_scores
        profile = np.zeros(self.art.item_categories.shape[1], dtype=np.float32)
        if not cold_user:
            lists["als"], _ = search(self.index, user_vec, depth)
            i2i_items, i2i_scores = self._accumulate(self.art.neighbors, recent)
            lists["i2i"] = i2i_items[_top(i2i_scores, depth)]
            if self.art.sequence is not None:
                seq_items, seq_scores = self._accumulate(self.art.sequence, recent)
                lists["seq"] = seq_items[_top(seq_scores, depth)]
            profile = np.asarray(self.art.item_categories[recent].sum(axis=0), dtype=np.float32).ravel()
            profile /= max(1.0, float(len(recent)))
            if len(self.cold_items):
                cscore = self.cold_categories @ profile
                lists["content"] = self.cold_items[_top(cscore, depth)]
        lists["popular"] = self.pop_order[:depth]
        seg = self._segment_scores(attributes or {})
        if seg is not None:
            top = np.flatnonzero(seg > 0)
            lists["segment"] = top[np.argsort(-seg[top], kind="stable")][:depth]

        items, mask = self._merge(lists, budget, banned, n)
        scores = np.full((len(items), len(SCORE_NAMES)), np.nan, dtype=np.float32)
        if len(items):
            scores[:, 0] = self.art.item_factors[items] @ user_vec if not cold_user else np.nan
            scores[:, 1] = _rank_in(lists.get("als"), items)
            scores[:, 2] = _lookup(i2i_items, i2i_scores, items)
            scores[:, 3] = _rank_in(lists.get("i2i"), items)
            scores[:, 4] = self.art.popularity[items]
            scores[:, 5] = seg[items] if seg is not None else np.nan
            scores[:, 6] = self.art.item_categories[items] @ profile
            scores[:, 7] = np.unpackbits(mask[:, None], axis=1).sum(axis=1)
            if self.art.sequence is not None:
                scores[:, 8] = _lookup(seq_items, seq_scores, items)
                scores[:, 9] = _rank_in(lists.get("seq"), items)
        return Candidates(items=items, scores=scores, sources=mask)

    def _accumulate(self, table, recent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(items reached, summed weights) over the history's rows of a neighbour table. A dense
        bincount over the catalog is linear in the rows' entries (no sort), and the catalog-sized
        buffer costs far less than sorting a few hundred thousand entries."""
        rows = table[recent]
        acc = np.bincount(rows.indices, weights=rows.data, minlength=self.n_items)
        items = np.flatnonzero(acc)
        return items, acc[items].astype(np.float32)

    def _merge(self, lists: dict[str, np.ndarray], budget: dict[str, int], banned: np.ndarray,
               n: int) -> tuple[np.ndarray, np.ndarray]:
        """Quota-then-interleave merge of the source lists, skipping banned items and duplicates."""
        taken = banned.copy()
        bits = np.zeros(self.n_items, dtype=np.uint8)
        clean = {s: lst[~banned[lst]] for s, lst in lists.items()}
        for s, lst in clean.items():
            bits[lst] |= np.uint8(1 << SOURCES.index(s))
        chosen: list[np.ndarray] = []
        for s in SOURCES:  # first pass: each source up to its quota
            if s in clean:
                lst = clean[s]
                fresh = lst[~taken[lst]][: budget.get(s, 0)]
                taken[fresh] = True
                chosen.append(fresh)
        total = sum(len(c) for c in chosen)
        if total < n:  # second pass: interleave what is left, by rank
            rest = [lst[~taken[lst]] for s in SOURCES if (lst := clean.get(s)) is not None]
            depth = max((len(r) for r in rest), default=0)
            grid = np.full((depth, len(rest)), -1, dtype=np.int64)
            for j, r in enumerate(rest):
                grid[: len(r), j] = r
            flat = grid.ravel()
            flat = flat[flat >= 0]
            _, first = np.unique(flat, return_index=True)
            chosen.append(flat[np.sort(first)][: n - total])
        items = np.concatenate(chosen)[:n].astype(np.int64) if chosen else np.zeros(0, np.int64)
        return items, bits[items]


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n highest positive scores, best first (partial sort: catalogs can be large)."""
    idx = np.argpartition(-scores, n)[:n] if n < len(scores) else np.arange(len(scores))
    idx = idx[scores[idx] > 0]
    return idx[np.argsort(-scores[idx], kind="stable")]


def _lookup(keys: np.ndarray, values: np.ndarray, items: np.ndarray) -> np.ndarray:
    """values[k] for each item found in the sorted `keys`, 0 elsewhere."""
    out = np.zeros(len(items), dtype=np.float32)
    if len(keys) and len(items):
        pos = np.searchsorted(keys, items).clip(0, len(keys) - 1)
        hit = keys[pos] == items
        out[hit] = values[pos[hit]]
    return out


def _rank_in(ranked: np.ndarray | None, items: np.ndarray) -> np.ndarray:
    """1-based rank of each item in a source's ranked list, NaN where the source did not return it."""
    out = np.full(len(items), np.nan, dtype=np.float32)
    if ranked is None or not len(ranked) or not len(items):
        return out
    order = np.argsort(ranked, kind="stable")
    pos = np.searchsorted(ranked[order], items).clip(0, len(ranked) - 1)
    hit = ranked[order][pos] == items
    out[hit] = order[pos[hit]] + 1
    return out
