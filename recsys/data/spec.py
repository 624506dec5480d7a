"""One string names any dataset (CLI flags, config files): synthetic, MovieLens, Last.fm, or a canonical directory."""

from __future__ import annotations

from pathlib import Path

from recsys.data.canonical import load_canonical
from recsys.data.cleaning import clean
from recsys.data.lastfm import load_lastfm
from recsys.data.movielens import load_movielens_100k, load_movielens_latest
from recsys.data.schema import Dataset, DatasetError
from recsys.data.synthetic import generate

# spec option -> generate() keyword
SYNTHETIC_OPTIONS = {
    "users": "n_users",
    "items": "n_items",
    "interactions": "n_interactions",
    "categories": "n_categories",
    "seed": "seed",
    "dim": "dim",
    "days": "days",
}
MOVIELENS_RATING_RANGE = (0.5, 5.0)
PATH_SCHEMES = ("movielens-100k", "movielens", "lastfm")  # scheme:PATH importers


def _int(key: str, text: str) -> int:
    """Integers, allowing 100_000 and 1e5 spellings."""
    t = text.strip().replace("_", "")
    try:
        return int(t)
    except ValueError:
        pass
    try:
        f = float(t)
    except ValueError:
        f = float("nan")
    if f == f and f.is_integer():
        return int(f)
    raise ValueError(f"synthetic option {key!r} needs an integer, got {text!r}")


def parse_synthetic(options: str) -> dict[str, int]:
    """'users=2000,items=5000' -> generate() keyword arguments; unknown keys are errors, not ignored."""
    kwargs: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in options.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq:
            raise ValueError(f"synthetic option {part!r} is not key=value")
        if key not in SYNTHETIC_OPTIONS:
            raise ValueError(
                f"unknown synthetic option {key!r} (valid: {', '.join(SYNTHETIC_OPTIONS)})"
            )
        kwargs[SYNTHETIC_OPTIONS[key]] = _int(key, value)
    return kwargs


def load_dataset(spec: str, *, clean_data: bool = True) -> Dataset:
    """Load a dataset from a spec string, then clean it (see recsys.data.cleaning.clean) unless told not to.

    Specs: "synthetic", "synthetic:users=2000,items=5000,interactions=100000,seed=0",
    "movielens-100k:PATH", "movielens:PATH" (ml-latest layout), "lastfm:PATH", or a canonical directory path
    (the --dataset help in recsys/cli.py lists the same forms).
    """
    scheme, sep, rest = spec.partition(":")
    rating_range = None
    if scheme in PATH_SCHEMES and not rest.strip():
        raise ValueError(f"dataset spec {spec!r} needs a path: {scheme}:PATH")
    if scheme == "synthetic":
        ds = generate(**parse_synthetic(rest))
    else:
        path = rest if scheme in PATH_SCHEMES and sep else spec
        try:
            if scheme == "movielens-100k" and sep:
                ds = load_movielens_100k(rest)
                rating_range = MOVIELENS_RATING_RANGE
            elif scheme == "movielens" and sep:
                ds = load_movielens_latest(rest)
                rating_range = MOVIELENS_RATING_RANGE
            elif scheme == "lastfm" and sep:
                ds = load_lastfm(rest)
            else:
                if not Path(spec).exists():
                    raise DatasetError(spec, "no such dataset directory; a spec is synthetic[:key=value,...], "
                                       "movielens-100k:PATH, movielens:PATH, lastfm:PATH, or a canonical directory")
                ds = load_canonical(Path(spec))
        except (OSError, ValueError) as exc:  # a name too long for the filesystem, a NUL byte, ...
            if isinstance(exc, DatasetError):
                raise
            raise DatasetError(path, f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    return clean(ds, rating_range=rating_range) if clean_data else ds
