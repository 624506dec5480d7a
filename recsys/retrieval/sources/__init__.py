"""Candidate sources, one module each, registered by name.

`register_source` adds a source class (a test, a plugin); a bundle lists the sources it was trained with in
retrieval.json, and `source_class(name)` finds each at load time. Bundles written before the list existed
get `LEGACY_SOURCES`, in that (merge) order.
"""

from __future__ import annotations

from recsys.retrieval.sources.base import CandidateSource

_REGISTRY: dict[str, type[CandidateSource]] = {}
DEFAULT_SOURCES = ("als", "i2i", "popular", "segment", "content", "seq")
LEGACY_SOURCES = DEFAULT_SOURCES


def register_source(cls: type[CandidateSource]) -> type[CandidateSource]:
    """Make a source class available by its `name` (usable as a class decorator)."""
    _REGISTRY[cls.name] = cls
    return cls


def source_class(name: str) -> type[CandidateSource]:
    _builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown candidate source {name!r} (known: {', '.join(sorted(_REGISTRY))})") from None


def known_sources() -> list[str]:
    _builtins()
    return sorted(_REGISTRY)


def _builtins() -> None:
    # Imported on first use: each module registers itself, and this package stays import-cycle free.
    from recsys.retrieval.sources import als, content, i2i, ncf, popular, segment, sequence  # noqa: F401
