"""Keeping forgotten users out of what is loaded and learned: a bundle's feature tables (feature_svc and
`recsys features load` drop their rows before a store sees them) and a training dataset."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from recsys.feature_tables import FeatureTables
from recsys.forget.tombstones import Forgotten, user_digest


def _forgotten_mask(user_ids: list[str], forgotten: Forgotten) -> np.ndarray:
    """True for the ids whose digest is in `forgotten` (one SHA-256 per id: ~1 s per million)."""
    latest = forgotten.latest
    return np.fromiter((user_digest(u) in latest for u in user_ids), dtype=bool, count=len(user_ids))


def drop_users(tables: FeatureTables, forgotten: Forgotten) -> tuple[FeatureTables, int]:
    """The tables without the forgotten users' rows (values, history, attributes), and how many went."""
    if not len(forgotten) or not tables.n_users:
        return tables, 0
    gone = _forgotten_mask(tables.user_ids.tolist(), forgotten)
    n = int(gone.sum())
    if not n:
        return tables, 0
    keep = np.flatnonzero(~gone)
    return replace(tables, user_ids=tables.user_ids[keep], user_values=tables.user_values[keep],
                   user_history=[tables.user_history[i] for i in keep],
                   user_attributes=[tables.user_attributes[i] for i in keep]), n


def drop_from_frame(frame: pd.DataFrame | None, forgotten: Forgotten) -> tuple[pd.DataFrame | None, int]:
    """A dataset frame (interactions or users, with a user_id column) without the forgotten users' rows."""
    if frame is None or not len(forgotten) or not len(frame):
        return frame, 0
    ids = frame["user_id"].astype(str)
    unique = ids.unique().tolist()
    gone = {u for u, g in zip(unique, _forgotten_mask(unique, forgotten), strict=True) if g}
    if not gone:
        return frame, 0
    mask = ids.isin(gone).to_numpy()
    return frame[~mask].reset_index(drop=True), int(mask.sum())
