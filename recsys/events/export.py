"""`recsys events export`: what the stream recorded, as a canonical dataset directory, so the next
model learns from the events it served. Exposures are not interactions and are left out.

The directory also holds `position.json` (the last entry exported): a bundle trained with these events
records it, and its serving consumers apply only what came after it (nothing counted twice).

Forgotten users (Users/Forget): their events accepted before their forget are left out, and the registry
goes along as `forgotten.json` (digests and times, no ids): `merge_events` drops those users' rows from
the base dataset too, and the bundle records that it was trained without them (`forgotten_through_ms`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from recsys.data.canonical import load_canonical, save_canonical
from recsys.data.cleaning import clean
from recsys.data.schema import INTERACTION_COLUMNS, Dataset
from recsys.events.codec import decode, now_ms
from recsys.forget import Forgotten
from recsys.forget.tables import drop_from_frame
from recsys.stream import EventStream

POSITION_FILE = "position.json"
FORGOTTEN_FILE = "forgotten.json"


@dataclass
class ExportSummary:
    interactions: int
    items: int
    users: int
    entries: int
    position: str | None


def export_events(stream: EventStream, out: Path, after: str | None = None, page: int = 5000,
                  progress: Callable[[int], None] | None = None,
                  forgotten: Forgotten | None = None) -> ExportSummary:
    """Scan the stream from `after` (None = the beginning) to its end; write the canonical directory.
    `forgotten` (the registry beside the stream) leaves out what forgotten users did before their forget."""
    forgotten = Forgotten(forgotten.latest if forgotten is not None else {})
    through_ms = now_ms()
    rows: list[tuple] = []  # with the time each was accepted, last: a forget further on may hide it
    items: dict[str, tuple[str, str]] = {}
    upserts: list[tuple[str, dict[str, str], int]] = []
    seen: set[str] = set()  # the stream deduplicates within its window; the export, across all of it
    position, n = after, 0
    while True:
        entries = stream.scan(position, page)
        if not entries:
            break
        for e in entries:
            rec = decode(e.data)
            n += 1
            if rec.WhichOneof("kind") == "forget":  # one forgotten since the registry was read
                forgotten.add(rec.forget.user_id, rec.accepted_at_ms)
            if rec.WhichOneof("kind") != "event" or rec.event.event_id in seen:
                continue
            ev = rec.event
            seen.add(ev.event_id)
            kind = ev.WhichOneof("kind")
            if kind == "interaction":
                it = ev.interaction
                rows.append((it.user_id, it.item_id, rec.timestamp_ms // 1000, it.type,
                             it.value if it.HasField("value") else 1.0, rec.accepted_at_ms))
            elif kind == "item":
                items[ev.item.item_id] = (ev.item.title, "|".join(ev.item.categories))
            elif kind == "user":
                upserts.append((ev.user.user_id, dict(ev.user.attributes), rec.accepted_at_ms))
        position = entries[-1].id
        if progress is not None:
            progress(len(entries))
    # what forgotten users did before their forget stays out (the registry's, and forgets seen on the way)
    inter = pd.DataFrame([r[:-1] for r in rows if not forgotten.hides(r[0], r[-1])], columns=INTERACTION_COLUMNS)
    users: dict[str, dict[str, str]] = {}
    for user, attributes, at in upserts:
        if not forgotten.hides(user, at):
            users.setdefault(user, {}).update(attributes)
    items_df = pd.DataFrame([(k, t, c) for k, (t, c) in items.items()], columns=["item_id", "title", "categories"])
    users_df = pd.DataFrame([{"user_id": k, **v} for k, v in users.items()]) if users else None
    out = Path(out)
    save_canonical(Dataset(interactions=inter, items=items_df if len(items_df) else None, users=users_df), out)
    (out / POSITION_FILE).write_text(json.dumps({"position": position, "entries": n}))
    (out / FORGOTTEN_FILE).write_text(json.dumps({"through_ms": through_ms, "users": forgotten.latest}))
    return ExportSummary(len(inter), len(items_df), len(users), n, position)


def merge_events(ds: Dataset, events_dir: Path) -> tuple[Dataset, str | None]:
    """The dataset plus the exported events (items and users upserted over the dataset's own), and the
    stream position the merged data reaches."""
    events = load_canonical(events_dir) if (Path(events_dir) / "interactions.csv").is_file() else None
    position = json.loads((Path(events_dir) / POSITION_FILE).read_text()).get("position")
    ds = drop_forgotten(ds, exported_forgotten(events_dir)[0])
    if events is None:
        return ds, position
    inter = pd.concat([ds.interactions, events.interactions[ds.interactions.columns]], ignore_index=True)
    items = _upsert(ds.items, events.items, "item_id")
    users = _upsert(ds.users, events.users, "user_id")
    notes = [*ds.notes, f"merged {len(events.interactions):,} stream events up to {position}"]
    merged = Dataset(interactions=inter, items=items, users=users, name=ds.name, notes=notes)
    return clean(merged), position  # a streamed repeat of a trained interaction is deduplicated like any other


def exported_forgotten(events_dir: Path) -> tuple[Forgotten, int]:
    """The registry an export carried, and until when it was complete (0: an export without it)."""
    path = Path(events_dir) / FORGOTTEN_FILE
    if not path.is_file():
        return Forgotten(), 0
    raw = json.loads(path.read_text())
    return Forgotten({str(k): int(v) for k, v in raw.get("users", {}).items()}), int(raw.get("through_ms", 0))


def drop_forgotten(ds: Dataset, forgotten: Forgotten) -> Dataset:
    """The dataset without forgotten users' interactions and attributes (a base dataset predates the
    stream: whatever it holds of them is what they asked to erase)."""
    inter, n_inter = drop_from_frame(ds.interactions, forgotten)
    users, n_users = drop_from_frame(ds.users, forgotten)
    if not n_inter and not n_users:
        return ds
    assert inter is not None
    note = f"left out {n_inter:,} interactions and {n_users:,} user rows of forgotten users"
    return Dataset(interactions=inter, items=ds.items, users=users, name=ds.name, notes=[*ds.notes, note])


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
