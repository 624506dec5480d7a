"""The canonical dataset directory: interactions.csv (+ optional items.csv, users.csv), read and written.

Files are parsed with pandas (dtype=str, fast C parser) but validated first by our own record scan, because
pandas silently pads short rows, silently turns a first column into the index when every row is one field
too long, and counts records rather than physical lines in its errors. Every problem surfaces as a
DatasetError naming the file, the 1-based physical line (header = line 1) and the column.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.schema import INTERACTION_COLUMNS, Dataset, DatasetError

INTERACTIONS_FILE = "interactions.csv"
INTERACTIONS_PARQUET = "interactions.parquet"
ITEMS_FILE = "items.csv"
USERS_FILE = "users.csv"

# Plausible unix-second range (about years 1000..5000): bigger magnitudes are milliseconds or garbage.
_MAX_ABS_TS = 1e11
_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


@dataclass
class Table:
    """A delimited file read as strings, with the physical line of every row for error messages."""

    frame: pd.DataFrame
    path: Path
    lines: np.ndarray | None  # 1-based line of each row; None when the source has no lines (parquet)
    header_line: int | None = 1
    needs_strip: bool = True  # False when no cell can have surrounding whitespace (saves ~0.3 s/column/1M)

    def line(self, row: int) -> int | None:
        return None if self.lines is None else int(self.lines[row])

    def error(self, row: int, column: str | None, message: str) -> DatasetError:
        """The error for a bad cell; rows of line-less sources are named in the message instead."""
        if self.lines is None:
            message = f"row {row + 1}: {message}"
        return DatasetError(str(self.path), message, line=self.line(row), column=column)

    def first_bad(self, bad: np.ndarray, column: str | None, message: Callable[[int], str]) -> None:
        """Raise for the first True in `bad`; `message` maps that row index to the text."""
        idx = np.flatnonzero(bad)
        if idx.size:
            r = int(idx[0])
            extra = f" ({idx.size} bad rows in total)" if idx.size > 1 else ""
            raise self.error(r, column, message(r) + extra)

    def require(self, columns: list[str]) -> None:
        """Fail on the header line if a required column is absent, listing what was found."""
        for c in columns:
            if c not in self.frame.columns:
                found = ", ".join(map(str, self.frame.columns)) or "none"
                hint = ""
                if len(self.frame.columns) == 1 and any(ch in found for ch in "\t;|"):
                    hint = "; is the file comma-separated?"
                raise DatasetError(
                    str(self.path), f"missing required column {c!r} (found: {found}){hint}", self.header_line, c
                )

    def strings(self, column: str) -> pd.Series:
        """The column with surrounding whitespace removed."""
        s = self.frame[column].astype(str)
        return s.str.strip() if self.needs_strip else s

    def _typed(self, column: str) -> np.ndarray | None:
        """The column as float64 if it was already read as numbers (read_table's dtype fast path)."""
        s = self.frame[column]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            return s.to_numpy(dtype=np.float64, na_value=np.nan)
        return None

    def ids(self, column: str) -> pd.Series:
        """A non-empty identifier column; an empty id has no meaning, so it is an error, not a default."""
        s = self.strings(column)
        self.first_bad((s == "").to_numpy(), column, lambda r: f"empty {column}")
        return s

    def numbers(self, column: str, *, allow_empty: bool) -> np.ndarray:
        """Finite floats; empty cells become NaN when allowed."""
        typed = self._typed(column)
        if typed is not None and np.isfinite(typed).all():
            return typed
        s = self.strings(column)
        vals = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        empty = (s == "").to_numpy()
        bad = ~np.isfinite(vals) & ~empty
        self.first_bad(bad, column, lambda r: f"not a finite number: {s.iloc[r]!r}")
        if not allow_empty:
            self.first_bad(empty, column, lambda r: f"empty {column}")
        return vals

    def timestamps(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        """Unix seconds (int64) from integers/floats or ISO-8601 strings; returns (values, missing mask).

        Naive ISO times are taken as UTC. Empty cells are missing (cleaning imputes them), not errors.
        """
        typed = self._typed(column)
        if typed is not None and (np.abs(typed) <= _MAX_ABS_TS).all():
            return np.floor(typed).astype(np.int64), np.zeros(len(typed), dtype=bool)
        s = self.strings(column)
        empty = (s == "").to_numpy()
        num = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        out = np.where(np.isfinite(num), num, np.nan)
        need_iso = np.isnan(out) & ~empty
        if need_iso.any():
            sub = s[need_iso]
            dt = pd.to_datetime(sub, format="ISO8601", utc=True, errors="coerce")
            secs = ((dt - _EPOCH) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64, na_value=np.nan)
            out[need_iso] = secs
        bad = np.isnan(out) & ~empty
        expected = "(expected unix seconds or ISO-8601)"
        self.first_bad(bad, column, lambda r: f"unparseable timestamp {s.iloc[r]!r} {expected}")
        huge = np.abs(np.nan_to_num(out)) > _MAX_ABS_TS
        self.first_bad(huge, column, lambda r: f"timestamp {s.iloc[r]!r} out of range {expected}")
        values = np.floor(np.nan_to_num(out)).astype(np.int64)
        return values, empty


def _decode_check(path: Path, data: bytes, encoding: str) -> None:
    try:
        data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DatasetError(
            str(path), f"not valid {encoding} text (byte 0x{data[e.start]:02x} at offset {e.start})", line
        ) from None


def _may_need_strip(data: bytes, sep: str) -> bool:
    """Whether any cell of an unquoted file can start or end with whitespace: cells are bounded by the
    separator, newlines and the file ends, so looking next to those boundaries in the raw bytes is enough."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if not buf.size:
        return False
    if int(buf.max()) > 127:
        return True  # non-ASCII: leave Unicode whitespace to str.strip
    s = ord(sep)
    ws = np.zeros(256, dtype=bool)
    ws[[c for c in (32, 9, 11, 12) if c != s]] = True
    bound = np.zeros(256, dtype=bool)
    bound[[s, 10, 13]] = True
    is_ws, is_bound = ws[buf], bound[buf]
    if is_ws[0] or is_ws[-1]:
        return True
    return bool((is_ws[1:] & is_bound[:-1]).any() or (is_ws[:-1] & is_bound[1:]).any())


def _scan_plain(data: bytes, sep: str) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Record start lines and field counts of an unquoted file, vectorized over bytes.

    Blank and whitespace-only lines are skipped the way pandas skips them.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    nl = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [len(buf)]))
    lengths = ends - starts
    has_cr = np.zeros(len(starts), dtype=bool)
    nz = lengths > 0
    has_cr[nz] = buf[ends[nz] - 1] == 13
    eff_len = lengths - has_cr
    delims = np.flatnonzero(buf == ord(sep))
    counts = np.bincount(np.searchsorted(nl, delims), minlength=len(starts))
    blank = eff_len == 0
    ws = b" \t\r".replace(sep.encode(), b"")
    for i in np.flatnonzero((counts == 0) & (eff_len > 0)):  # few, except in one-column files
        if not data[starts[i]:ends[i]].strip(ws):
            blank[i] = True
    keep = np.flatnonzero(~blank)
    spans = [(int(starts[i]), int(ends[i] - has_cr[i])) for i in keep[:1]]
    return keep + 1, counts[keep] + 1, spans


def _scan_quoted(path: Path, text: str, sep: str, quoting: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Record start lines and field counts via the csv module (quoted fields may span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, quoting=quoting)
    lines: list[int] = []
    counts: list[int] = []
    first: list[list[str]] = []
    prev = 0
    try:
        for row in reader:
            start = prev + 1
            prev = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            lines.append(start)
            counts.append(len(row))
            if not first:
                first.append(row)
    except csv.Error as e:
        raise DatasetError(str(path), f"cannot parse: {e}", reader.line_num) from None
    return np.asarray(lines, dtype=np.int64), np.asarray(counts, dtype=np.int64), first


def read_table(
    path: str | Path,
    *,
    sep: str = ",",
    names: list[str] | None = None,
    encoding: str = "utf-8",
    quoting: int = csv.QUOTE_MINIMAL,
    dtype: dict[str, str] | None = None,
) -> Table:
    """Read a delimited file as string columns, checking that every record has the header's field count.

    names=None means the first non-blank record is the header; otherwise the file has no header.
    dtype optionally types some columns up front (fast path for big numeric files); if any cell fails to
    convert, the file is re-read as strings so the Table validators can name the bad line.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(str(path), "file not found") from None
    except OSError as e:
        raise DatasetError(str(path), f"cannot read: {e.strerror or e}") from None
    if encoding.replace("-", "").lower() in ("utf8", "utf8sig"):
        encoding = "utf-8"
        if data.startswith(codecs.BOM_UTF8):
            data = data[len(codecs.BOM_UTF8):]
    _decode_check(path, data, encoding)

    plain = quoting == csv.QUOTE_NONE or b'"' not in data
    if plain:
        lines, counts, spans = _scan_plain(data, sep)
        first_row = data[spans[0][0]:spans[0][1]].decode(encoding).split(sep) if spans else []
    else:
        lines, counts, rows = _scan_quoted(path, data.decode(encoding), sep, quoting)
        first_row = rows[0] if rows else []

    has_header = names is None
    if has_header:
        if not len(lines):
            raise DatasetError(str(path), "file is empty (expected a header line)", 1)
        names = [c.strip() for c in first_row]
        header_line = int(lines[0])
        for i, c in enumerate(names):
            if not c:
                raise DatasetError(str(path), f"empty column name in the header (field {i + 1})", header_line)
            if c in names[:i]:
                raise DatasetError(str(path), f"duplicate column {c!r} in the header", header_line, c)
        lines, counts = lines[1:], counts[1:]
    else:
        header_line = None
    expected = len(names)
    bad = np.flatnonzero(counts != expected)
    if bad.size:
        i = int(bad[0])
        hint = " (unbalanced quote?)" if not plain and i == len(counts) - 1 and counts[i] < expected else ""
        raise DatasetError(
            str(path), f"expected {expected} fields ({sep.join(names)}), found {int(counts[i])}{hint}",
            int(lines[i]),
        )
    kwargs = dict(
        sep=sep, header=0 if has_header else None, names=names, na_filter=False, keep_default_na=False,
        quoting=quoting, encoding=encoding, engine="c", skip_blank_lines=True, index_col=False,
    )
    frame = None
    if dtype:
        typed = {c: dtype.get(c, "str") for c in names}
        try:
            frame = pd.read_csv(io.BytesIO(data), dtype=typed, **kwargs)
        except (ValueError, TypeError, OverflowError):
            frame = None
    try:
        if frame is None:
            frame = pd.read_csv(io.BytesIO(data), dtype=str, **kwargs)
    except (pd.errors.ParserError, ValueError) as e:
        m = re.search(r"(?:line|row) (\d+)", str(e))
        line = None
        if m:  # pandas counts records, not physical lines; map through our scan when possible
            rec = int(m.group(1)) - (1 if has_header else 0) - 1
            line = int(lines[rec]) if 0 <= rec < len(lines) else None
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise DatasetError(str(path), f"cannot parse: {msg}", line) from None
    if len(frame) != len(lines):
        raise DatasetError(
            str(path), f"inconsistent parse ({len(frame)} rows, {len(lines)} records found); check quoting"
        )
    needs_strip = not plain or _may_need_strip(data, sep)
    return Table(frame=frame, path=path, lines=lines, header_line=header_line, needs_strip=needs_strip)


def _read_parquet_table(path: Path) -> Table:
    """interactions.parquet as a string table; pyarrow is optional, so its absence is a clear error."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise DatasetError(
            str(path), "reading parquet needs pyarrow, which is not installed: install pyarrow or "
            f"convert the file to {INTERACTIONS_FILE}"
        ) from None
    try:
        raw = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises many types for corrupt files
        raise DatasetError(str(path), f"cannot read parquet: {e}") from None
    cols = {}
    for c in raw.columns:
        col = raw[c]
        if pd.api.types.is_datetime64_any_dtype(col):
            utc = col.dt.tz_localize("UTC") if col.dt.tz is None else col
            col = ((utc - _EPOCH) // pd.Timedelta(seconds=1)).astype("Int64")
        cols[str(c)] = col.astype(object).where(col.notna(), "").astype(str)
    return Table(frame=pd.DataFrame(cols), path=path, lines=None, header_line=None)


def interactions_from_table(t: Table) -> tuple[pd.DataFrame, list[str]]:
    """Validate an interactions table into the canonical frame; also returns notes about defaults applied."""
    t.require(["user_id", "item_id", "timestamp"])
    cols = set(t.frame.columns)
    user = t.ids("user_id")
    item = t.ids("item_id")
    ts, ts_missing = t.timestamps("timestamp")
    has_rating, has_value = "rating" in cols, "value" in cols
    default_event = "rating" if has_rating else "view"
    if "event" in cols:
        event = t.strings("event")
        event = event.where(event != "", default_event)
    else:
        event = pd.Series(default_event, index=t.frame.index, dtype="str")
    n = len(t.frame)
    value = t.numbers("value", allow_empty=True) if has_value else np.full(n, np.nan)
    if has_rating:
        rating = t.numbers("rating", allow_empty=True)
        value = np.where(np.isnan(rating), value, rating)
    is_rating = (event == "rating").to_numpy()
    col = "rating" if has_rating or not has_value else "value"
    t.first_bad(is_rating & np.isnan(value), col, lambda r: "rating event without a rating value")
    value = np.where(np.isnan(value), 1.0, value)

    notes = []
    if ts_missing.any():
        ts_col = pd.array(np.where(ts_missing, 0, ts), dtype="Int64")
        ts_col[ts_missing] = pd.NA
        notes.append(f"{t.path.name}: {int(ts_missing.sum())} interactions have no timestamp")
    else:
        ts_col = ts
    df = pd.DataFrame({
        "user_id": user.to_numpy(), "item_id": item.to_numpy(), "timestamp": ts_col,
        "event": event.to_numpy(), "value": value.astype(np.float64),
    })
    for c in ("user_id", "item_id", "event"):
        df[c] = df[c].astype("str")
    return df[INTERACTION_COLUMNS], notes


def split_categories(values) -> list[list[str]]:
    """'a|b|c' -> ['a', 'b', 'c'], dropping empty parts."""
    out = []
    for v in values:
        out.append([p.strip() for p in v.split("|") if p.strip()] if v else [])
    return out


def unique_ids(t: Table, column: str) -> pd.Series:
    """A metadata key column: a duplicate id would make the row it describes ambiguous."""
    ids = t.ids(column)
    dup = ids.duplicated().to_numpy()
    t.first_bad(dup, column, lambda r: f"duplicate {column} {ids.iloc[r]!r}")
    return ids


def items_from_table(t: Table) -> tuple[pd.DataFrame, list[str]]:
    """Item metadata: id, title, categories list, and every other column that is entirely numeric."""
    t.require(["item_id"])
    ids = unique_ids(t, "item_id")
    out = {"item_id": ids.to_numpy()}
    out["title"] = t.strings("title").to_numpy() if "title" in t.frame.columns else np.full(len(ids), "")
    cats = t.strings("categories").to_numpy() if "categories" in t.frame.columns else [""] * len(ids)
    out["categories"] = pd.Series(split_categories(cats), dtype=object).to_numpy()
    notes, dropped = [], []
    for c in t.frame.columns:
        if c in ("item_id", "title", "categories"):
            continue
        s = t.strings(c)
        vals = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        if (np.isnan(vals) & (s != "").to_numpy()).any():
            dropped.append(c)
        else:
            out[c] = vals
    if dropped:
        notes.append(f"{t.path.name}: ignored non-numeric columns {', '.join(dropped)}")
    df = pd.DataFrame(out)
    df["item_id"] = df["item_id"].astype("str")
    df["title"] = df["title"].astype("str")
    return df, notes


def users_from_table(t: Table) -> pd.DataFrame:
    """User metadata: id plus attribute columns kept as strings (empty = unknown)."""
    t.require(["user_id"])
    ids = unique_ids(t, "user_id")
    out = {"user_id": ids}
    for c in t.frame.columns:
        if c != "user_id":
            out[c] = t.strings(c)
    return pd.DataFrame(out).reset_index(drop=True).astype("str")


def load_canonical(path: str | Path) -> Dataset:
    """Load a canonical dataset directory, validating every file (see the module docstring)."""
    root = Path(path)
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise DatasetError(str(root), f"{what}; expected a directory containing {INTERACTIONS_FILE}")
    csv_path, pq_path = root / INTERACTIONS_FILE, root / INTERACTIONS_PARQUET
    if csv_path.exists():
        table = read_table(csv_path)
    elif pq_path.exists():
        table = _read_parquet_table(pq_path)
    else:
        raise DatasetError(str(csv_path), "file not found (required in a canonical dataset directory)")
    interactions, notes = interactions_from_table(table)
    items = users = None
    if (root / ITEMS_FILE).exists():
        items, item_notes = items_from_table(read_table(root / ITEMS_FILE))
        notes += item_notes
    if (root / USERS_FILE).exists():
        users = users_from_table(read_table(root / USERS_FILE))
    return Dataset(interactions=interactions, items=items, users=users, name=root.resolve().name, notes=notes)


def _join_categories(c) -> str:
    if isinstance(c, (list, tuple, np.ndarray)):
        return "|".join(map(str, c))
    return "" if c is None or (isinstance(c, float) and np.isnan(c)) else str(c)


def save_canonical(ds: Dataset, path: str | Path) -> None:
    """Write ds as a canonical directory (creating it); load_canonical reads it back unchanged."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    inter = ds.interactions[INTERACTION_COLUMNS]
    inter.to_csv(root / INTERACTIONS_FILE, index=False, lineterminator="\n")
    if ds.items is not None:
        items = ds.items.copy()
        if "categories" in items.columns:
            items["categories"] = [_join_categories(c) for c in items["categories"]]
        items.to_csv(root / ITEMS_FILE, index=False, lineterminator="\n")
    if ds.users is not None:
        ds.users.to_csv(root / USERS_FILE, index=False, lineterminator="\n")
