"""`recsys events export`: what the stream recorded, as a canonical dataset directory, so the next
model learns from the events it served. Exposures are not interactions and are left out.

The directory also holds `position.json` (the last entry exported): a bundle trained with these events
records it, and its serving consumers apply only what came after it (nothing counted twice)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from recsys.data.canonical import load_canonical, save_canonical
from recsys.data.cleaning import clean
from recsys.data.schema import INTERACTION_COLUMNS, Dataset
from recsys.events.codec import decode
from recsys.stream import EventStream

POSITION_FILE = "position.json"


@dataclass
class ExportSummary:
    interactions: int
    items: int
    users: int
    entries: int
    position: str | None


def export_events(stream: EventStream, out: Path, after: str | None = None, page: int = 5000,
                  progress: Callable[[int], None] | None = None) -> ExportSummary:
    """Scan the stream from `after` (None = the beginning) to its end; write the canonical directory."""
    rows: list[tuple] = []
    items: dict[str, tuple[str, str]] = {}
    users: dict[str, dict[str, str]] = {}
    seen: set[str] = set()  # the stream deduplicates within its window; the export, across all of it
    position, n = after, 0
    while True:
        entries = stream.scan(position, page)
        if not entries:
            break
        for e in entries:
            rec = decode(e.data)
            n += 1
            if rec.WhichOneof("kind") != "event" or rec.event.event_id in seen:
                continue
            ev = rec.event
            seen.add(ev.event_id)
            kind = ev.WhichOneof("kind")
            if kind == "interaction":
                it = ev.interaction
                rows.append((it.user_id, it.item_id, rec.timestamp_ms // 1000, it.type,
                             it.value if it.HasField("value") else 1.0))
            elif kind == "item":
                items[ev.item.item_id] = (ev.item.title, "|".join(ev.item.categories))
            elif kind == "user":
                users.setdefault(ev.user.user_id, {}).update(ev.user.attributes)
        position = entries[-1].id
        if progress is not None:
            progress(len(entries))
    inter = pd.DataFrame(rows, columns=INTERACTION_COLUMNS)
    items_df = pd.DataFrame([(k, t, c) for k, (t, c) in items.items()], columns=["item_id", "title", "categories"])
    users_df = pd.DataFrame([{"user_id": k, **v} for k, v in users.items()]) if users else None
    out = Path(out)
    save_canonical(Dataset(interactions=inter, items=items_df if len(items_df) else None, users=users_df), out)
    (out / POSITION_FILE).write_text(json.dumps({"position": position, "entries": n}))
    return ExportSummary(len(inter), len(items_df), len(users), n, position)


def merge_events(ds: Dataset, events_dir: Path) -> tuple[Dataset, str | None]:
    """The dataset plus the exported events (items and users upserted over the dataset's own), and the
    stream position the merged data reaches."""
    events = load_canonical(events_dir) if (Path(events_dir) / "interactions.csv").is_file() else None
    position = json.loads((Path(events_dir) / POSITION_FILE).read_text()).get("position")
    if events is None:
        return ds, position
    inter = pd.concat([ds.interactions, events.interactions[ds.interactions.columns]], ignore_index=True)
    items = _upsert(ds.items, events.items, "item_id")
    users = _upsert(ds.users, events.users, "user_id")
    notes = [*ds.notes, f"merged {len(events.interactions):,} stream events up to {position}"]
    merged = Dataset(interactions=inter, items=items, users=users, name=ds.name, notes=notes)
    return clean(merged), position  # a streamed repeat of a trained interaction is deduplicated like any other


def _upsert(base: pd.DataFrame | None, new: pd.DataFrame | None, key: str) -> pd.DataFrame | None:
    if new is None or not len(new):
        return base
    if base is None:
        return new
    # Known rows get the new values of the columns the event carries (title, categories, attributes);
    # the rest of their columns stay. New rows get 0 for numeric columns they do not carry.
    base = base.copy()
    new = new.drop_duplicates(key, keep="last")
    index = {k: i for i, k in enumerate(base[key].tolist())}
    known = new[new[key].isin(index)]
    for col in new.columns:
        if col == key:
            continue
        if col not in base.columns:
            base[col] = "" if new[col].dtype == object else 0
        values = base[col].tolist()
        for k, v in zip(known[key], known[col], strict=True):
            values[index[k]] = v
        base[col] = pd.Series(values, index=base.index, dtype=base[col].dtype if col != "categories" else object)
    fresh = new[~new[key].isin(index)]
    merged = pd.concat([base, fresh], ignore_index=True)
    for col in base.columns:
        if pd.api.types.is_numeric_dtype(base[col]):
            merged[col] = merged[col].fillna(0)
        elif col != "categories":
            merged[col] = merged[col].fillna("")
    return merged
