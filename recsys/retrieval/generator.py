"""Multi-source candidate generation: merges what the bundle's configured sources propose.

Every source proposes a ranked list; lists are merged under per-source quotas, deduplicated and filtered
(seen and excluded items). Each merged candidate then gets the score columns of *all* sources, so the
ranker sees the full picture whichever source proposed it. candidate_svc, training and evaluation all
call `retrieve`. What the sources are lives in recsys/retrieval/sources/, one module each.

The catalog can grow while serving (`add_items`, new items without retraining). Everything a request reads
(the catalog, the started sources) is one immutable snapshot, `_Live`, replaced by a single reference
assignment; a request takes the snapshot once and never sees a half-grown catalog.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from recsys.arrays import unique_ints
from recsys.retrieval.artifacts import RetrievalArtifacts
from recsys.retrieval.content_map import ItemVectorizer
from recsys.retrieval.growth import NewItem, grow
from recsys.retrieval.sources.base import CandidateSource, Proposal, SourceRequest

N_SOURCES = "n_sources"  # how many sources proposed the candidate: the generator's own column
MAX_SOURCES = 64         # source masks are uint64


@dataclass
class Candidates:
    items: np.ndarray                 # int item indices into the catalog
    scores: np.ndarray                # float32 [n, len(score_names)]
    sources: np.ndarray               # uint64 bitmask [n], bit i = source_names[i] proposed the item
    score_names: list[str]
    source_names: list[str]

    def source_names_of(self, row: int) -> list[str]:
        m = int(self.sources[row])
        return [s for i, s in enumerate(self.source_names) if m >> i & 1]


@dataclass
class GeneratorConfig:
    n: int = 300                      # candidates when a request asks for 0
    index: str = "exact"              # exact | hnsw | ivf
    quotas: dict[str, float] | None = None  # None = the bundle's quotas
    history_window: int = 500         # most recent history items that drive the history-based sources


@dataclass(frozen=True)
class _Live:
    """What one request reads: the artifacts (the catalog as of this snapshot) and the started sources."""

    art: RetrievalArtifacts
    sources: list[CandidateSource]

    @property
    def n_items(self) -> int:
        return self.art.catalog.n_items


class CandidateGenerator:
    def __init__(self, art: RetrievalArtifacts, config: GeneratorConfig | None = None):
        self.config = config or GeneratorConfig()
        # Shallow copies: the tables stay shared, the runtime structures (an ANN index of this generator's
        # kind) are each generator's own.
        sources = [copy.copy(s) for s in art.sources]
        if len(sources) > MAX_SOURCES:
            raise ValueError(f"at most {MAX_SOURCES} candidate sources, the bundle has {len(sources)}")
        self.source_names = [s.name for s in sources]
        # Only ever gains keys (add_items), so readers share it; a row past a request's snapshot is skipped.
        self.index_of = {item: i for i, item in enumerate(art.item_ids.tolist())}
        self.n_trained = len(self.index_of)  # indices from here on were added at run time (add_items)
        for s in sources:
            s.start(self.config.index)
        self._live = _Live(replace(art, sources=sources), sources)
        self._write_lock = threading.Lock()
        self._vectorizer: ItemVectorizer | None = None
        self.score_names = [c for s in self.sources for c in s.columns] + [N_SOURCES]
        self.relative_score_names = [c for s in self.sources for c in s.relative]
        self.quotas = self.config.quotas if self.config.quotas is not None else art.default_quotas()
        self.cold_quotas = {s.name: s.cold_quota for s in self.sources if s.cold_quota > 0}

    @property
    def art(self) -> RetrievalArtifacts:
        """The artifacts as of now (the catalog grows with add_items; its sources are this generator's)."""
        return self._live.art

    @property
    def sources(self) -> list[CandidateSource]:
        return self._live.sources

    @property
    def n_items(self) -> int:
        return self._live.n_items

    def source(self, name: str):
        return next((s for s in self.sources if s.name == name), None)

    @property
    def primary_scores(self) -> dict[str, str]:
        """The score column that orders each source's own list."""
        return {s.name: s.primary for s in self.sources}

    # -- id mapping ---------------------------------------------------------------------------------
    def indices(self, item_ids: list[str], n_items: int | None = None) -> np.ndarray:
        """Indices of known items, in order; unknown ids are skipped (items not added yet). `n_items` is the
        size of the snapshot the indices are for (default: the current one)."""
        get = self.index_of.get
        n = self.n_items if n_items is None else n_items
        return np.array([i for i in (get(x) for x in item_ids) if i is not None and i < n], dtype=np.int64)

    # -- catalog growth -----------------------------------------------------------------------------
    def add_items(self, items: Sequence[NewItem], vectors: np.ndarray | None = None) -> list[int]:
        """Upsert items at run time (no retraining); returns each item's catalog index, in input order.

        A new id gets a row, a vector from the bundle's content map (`RetrievalArtifacts.vectorizer`) and a
        place in every source (in the ANN index; cold for the content source; no popularity, segment or
        neighbours yet). A known id gets its categories updated, and, if it was itself added at run time, its
        vector; trained items keep their learned factors. Category names the bundle does not know are
        ignored. `vectors` [len(items), f] overrides the content map (evaluation baselines).

        Threading: callable from any thread (a stream consumer), while other threads or an event loop call
        `retrieve`. Writers are serialized by a lock of their own. The new catalog and every source's grown
        tables are built on private copies and published by one reference assignment, so a request sees the
        catalog before or after the whole batch, never a mix. A reader only ever waits for the FAISS append
        itself (`ALSSource.index_lock`, which every search holds too), taken per 64 vectors: microseconds
        on an exact index, ~10 ms on HNSW. Each call copies the per-item arrays (O(catalog): ~10 ms at 100k
        items, CPU that competes with requests for the GIL), so pass a batch (e.g. everything one stream poll
        returned) rather than one call per item.
        """
        with self._write_lock:
            live = self._live
            if self._vectorizer is None:
                self._vectorizer = live.art.vectorizer()
            g = grow(live.art.catalog, items, self.index_of, self._vectorizer, vectors)
            if g.empty:
                return g.indices.tolist()
            sources = []
            for s in live.sources:
                grown = copy.copy(s)
                grown.catalog = g.catalog
                grown.add_items(g.first, g.n_new, g.changed)
                sources.append(grown)
            new_ids = g.catalog.item_ids[g.first:].tolist()
            for j, item_id in enumerate(new_ids):   # before the swap: harmless to older snapshots
                self.index_of[item_id] = g.first + j
            self._live = _Live(replace(live.art, catalog=g.catalog, sources=sources), sources)
            return g.indices.tolist()

    def prefetch(self, histories: Sequence[list[str]], n: int) -> None:
        """Warn the sources that requests with these histories (item ids, as `retrieve_ids` will get them) for
        `n` candidates follow, so a source whose search is cheaper in batches (als) runs it once for all of
        them (offline runs). Changes no answer beyond the order of near-equal scores (ALSSource.prefetch)."""
        live = self._live
        batch = [self.indices(h, live.n_items) for h in histories]
        for src in live.sources:
            if hasattr(src, "prefetch"):
                src.prefetch(batch, 4 * (n or self.config.n))  # deepest SourceRequest.depth: n + 3n banned

    def check_quotas(self, quotas: dict[str, float]) -> None:
        """Reject quota overrides that name a source this bundle does not have, or are not in [0, 1]."""
        for name, q in quotas.items():
            if name not in self.source_names:
                raise ValueError(f"source_quotas: unknown source {name!r} (this bundle has "
                                 f"{', '.join(self.source_names)})")
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"source_quotas[{name}] must be in [0, 1], got {q}")

    def retrieve(self, history: np.ndarray, attributes: dict[str, str] | None = None, n: int | None = None,
                 exclude: np.ndarray | None = None, include_seen: bool = False,
                 quotas: dict[str, float] | None = None, user_id: str = "") -> Candidates:
        """Candidates for a user given their item history (indices, oldest first). `quotas` overrides the
        shares of the budget for a user with history (an experiment arm's setting); `user_id` reaches
        sources with per-user parameters."""
        return self._retrieve(self._live, history, attributes, n, exclude, include_seen, quotas, user_id)

    def _retrieve(self, live: _Live, history: np.ndarray, attributes: dict[str, str] | None, n: int | None,
                  exclude: np.ndarray | None, include_seen: bool, quotas: dict[str, float] | None,
                  user_id: str = "") -> Candidates:
        n = n or self.config.n
        parts = [a for a in (exclude, None if include_seen else history) if a is not None and len(a)]
        banned = unique_ints(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)
        # Deep enough to survive the filtering of seen/excluded items, but bounded: a user with tens of
        # thousands of seen items must not turn every request into a catalog-sized search.
        req = SourceRequest(history=history, recent=history[-self.config.history_window:],
                            attributes=attributes or {}, depth=n + min(len(banned), 3 * n), user_id=user_id)
        share = self.cold_quotas if req.cold_user else (self.quotas if not quotas else self.quotas | quotas)
        budget = {s: int(round(q * n)) for s, q in share.items()}
        proposals = [_propose(s, req) for s in live.sources]
        items, mask = self._merge([p.ranked for p in proposals], budget, banned, n, live.n_items)
        scores = np.full((len(items), len(self.score_names)), np.nan, dtype=np.float32)
        if len(items):
            j = 0
            for src, p in zip(live.sources, proposals, strict=True):
                cols = p.score(items)
                for name in src.columns:
                    scores[:, j] = cols[name]
                    j += 1
            scores[:, j] = np.bitwise_count(mask)
        return Candidates(items=items, scores=scores, sources=mask, score_names=self.score_names,
                          source_names=self.source_names)

    def retrieve_ids(self, history: list[str], exclude: list[str], n: int, attributes: dict[str, str],
                     include_seen: bool, quotas: dict[str, float] | None = None,
                     user_id: str = "") -> tuple[list[str], Candidates]:
        """`retrieve` on item ids (unknown ids are skipped): the candidates' ids and the candidates."""
        live = self._live
        c = self._retrieve(live, self.indices(history, live.n_items), attributes, n or None,
                           self.indices(exclude, live.n_items), include_seen, quotas, user_id)
        return (live.art.item_ids[c.items].tolist() if len(c.items) else []), c

    def _merge(self, lists: list[np.ndarray | None], budget: dict[str, int], banned: np.ndarray,
               n: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
        """Quota-then-interleave merge of the source lists (in source order), skipping banned items (sorted
        unique indices) and duplicates; returns the items and their source bitmasks.

        The merge works on masks over a universe of item codes: the catalog when it is small, else only the
        items the lists hold (renumbered in order), so a request on a large catalog never touches a
        catalog-sized array. Both give the same merge."""
        present = [lst for lst in lists if lst is not None]
        total_len = sum(len(lst) for lst in present)
        if n_items <= LOCAL_MERGE_RATIO * (total_len + len(banned)):
            universe = None
            codes, size = lists, n_items
            banned_codes = banned
        else:
            universe = unique_ints(np.concatenate(present)) if present else np.zeros(0, np.int64)
            codes = [None if lst is None else np.searchsorted(universe, lst) for lst in lists]
            size = len(universe)
            at = np.searchsorted(universe, banned).clip(0, max(size - 1, 0))
            banned_codes = at[universe[at] == banned] if size else np.zeros(0, np.int64)
        items, bits = _merge_codes(self.source_names, codes, budget, banned_codes, n, size)
        return (items if universe is None else universe[items].astype(np.int64)), bits


LOCAL_MERGE_RATIO = 64  # catalog items per listed item above which _merge renumbers the listed items


def _merge_codes(names: list[str], lists: list[np.ndarray | None], budget: dict[str, int], banned: np.ndarray,
                 n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """CandidateGenerator._merge over item codes in [0, size)."""
    taken = np.zeros(size, dtype=bool)
    taken[banned] = True
    clean = [None if lst is None else lst[~taken[lst]] for lst in lists]
    bits = np.zeros(size, dtype=np.uint64)
    for bit, lst in enumerate(clean):
        if lst is not None:
            bits[lst] |= np.uint64(1 << bit)
    chosen: list[np.ndarray] = []
    for name, lst in zip(names, clean, strict=True):  # first pass: each source up to its quota
        if lst is not None:
            fresh = lst[~taken[lst]][: budget.get(name, 0)]
            taken[fresh] = True
            chosen.append(fresh)
    total = sum(len(c) for c in chosen)
    if total < n:  # second pass: interleave what is left, by rank
        rest = [lst[~taken[lst]] for lst in clean if lst is not None]
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


def _propose(src: CandidateSource, req: SourceRequest) -> Proposal:
    """The source's proposal; a source that did not grow with the catalog (`n_known`) sees only the items it
    knows, and its columns are NaN for the others."""
    known = src.n_known
    if known is None:
        return src.propose(req)
    inner = src.propose(replace(req, history=req.history[req.history < known], recent=req.recent[req.recent < known]))
    ranked = None if inner.ranked is None else inner.ranked[inner.ranked < known]

    def score(items: np.ndarray) -> dict[str, np.ndarray]:
        ok = items < known
        cols = inner.score(items[ok])
        out = {}
        for name, col in cols.items():
            full = np.full(len(items), np.nan, dtype=np.float32)
            full[ok] = col
            out[name] = full
        return out

    return Proposal(ranked, score)
