"""Multi-source candidate generation: merges what the bundle's configured sources propose.

Every source proposes a ranked list; lists are merged under per-source quotas, deduplicated and filtered
(seen and excluded items). Each merged candidate then gets the score columns of *all* sources, so the
ranker sees the full picture whichever source proposed it. candidate_svc, training and evaluation all
call `retrieve`. What the sources are lives in recsys/retrieval/sources/, one module each.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from recsys.retrieval.artifacts import RetrievalArtifacts
from recsys.retrieval.sources.base import SourceRequest

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


class CandidateGenerator:
    def __init__(self, art: RetrievalArtifacts, config: GeneratorConfig | None = None):
        self.art = art
        self.config = config or GeneratorConfig()
        # Shallow copies: the tables stay shared, the runtime structures (an ANN index of this generator's
        # kind) are each generator's own.
        self.sources = [copy.copy(s) for s in art.sources]
        if len(self.sources) > MAX_SOURCES:
            raise ValueError(f"at most {MAX_SOURCES} candidate sources, the bundle has {len(self.sources)}")
        self.source_names = [s.name for s in self.sources]
        self.n_items = len(art.item_ids)
        self.index_of = {item: i for i, item in enumerate(art.item_ids.tolist())}
        for s in self.sources:
            s.start(self.config.index)
        self.score_names = [c for s in self.sources for c in s.columns] + [N_SOURCES]
        self.relative_score_names = [c for s in self.sources for c in s.relative]
        self.quotas = self.config.quotas if self.config.quotas is not None else art.default_quotas()
        self.cold_quotas = {s.name: s.cold_quota for s in self.sources if s.cold_quota > 0}

    def source(self, name: str):
        return next((s for s in self.sources if s.name == name), None)

    @property
    def primary_scores(self) -> dict[str, str]:
        """The score column that orders each source's own list."""
        return {s.name: s.primary for s in self.sources}

    # -- id mapping ---------------------------------------------------------------------------------
    def indices(self, item_ids: list[str]) -> np.ndarray:
        """Indices of known items, in order; unknown ids are skipped (new items not yet in the model)."""
        get = self.index_of.get
        return np.array([i for i in (get(x) for x in item_ids) if i is not None], dtype=np.int64)

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
                 quotas: dict[str, float] | None = None) -> Candidates:
        """Candidates for a user given their item history (indices, oldest first). `quotas` overrides the
        shares of the budget for a user with history (an experiment arm's setting)."""
        n = n or self.config.n
        banned = np.zeros(self.n_items, dtype=bool)
        if exclude is not None and len(exclude):
            banned[exclude] = True
        if not include_seen and len(history):
            banned[history] = True
        # Deep enough to survive the filtering of seen/excluded items, but bounded: a user with tens of
        # thousands of seen items must not turn every request into a catalog-sized search.
        req = SourceRequest(history=history, recent=history[-self.config.history_window:],
                            attributes=attributes or {}, depth=n + min(int(banned.sum()), 3 * n))
        share = self.cold_quotas if req.cold_user else (self.quotas if not quotas else self.quotas | quotas)
        budget = {s: int(round(q * n)) for s, q in share.items()}
        proposals = [s.propose(req) for s in self.sources]
        items, mask = self._merge([p.ranked for p in proposals], budget, banned, n)
        scores = np.full((len(items), len(self.score_names)), np.nan, dtype=np.float32)
        if len(items):
            j = 0
            for src, p in zip(self.sources, proposals, strict=True):
                cols = p.score(items)
                for name in src.columns:
                    scores[:, j] = cols[name]
                    j += 1
            scores[:, j] = np.bitwise_count(mask)
        return Candidates(items=items, scores=scores, sources=mask, score_names=self.score_names,
                          source_names=self.source_names)

    def retrieve_ids(self, history: list[str], exclude: list[str], n: int, attributes: dict[str, str],
                     include_seen: bool, quotas: dict[str, float] | None = None) -> tuple[list[str], Candidates]:
        """`retrieve` on item ids (unknown ids are skipped): the candidates' ids and the candidates."""
        c = self.retrieve(self.indices(history), attributes, n or None, self.indices(exclude), include_seen, quotas)
        return (self.art.item_ids[c.items].tolist() if len(c.items) else []), c

    def _merge(self, lists: list[np.ndarray | None], budget: dict[str, int], banned: np.ndarray,
               n: int) -> tuple[np.ndarray, np.ndarray]:
        """Quota-then-interleave merge of the source lists (in source order), skipping banned items and
        duplicates."""
        taken = banned.copy()
        bits = np.zeros(self.n_items, dtype=np.uint64)
        clean = [None if lst is None else lst[~banned[lst]] for lst in lists]
        for bit, lst in enumerate(clean):
            if lst is not None:
                bits[lst] |= np.uint64(1 << bit)
        chosen: list[np.ndarray] = []
        for name, lst in zip(self.source_names, clean, strict=True):  # first pass: each source up to its quota
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
