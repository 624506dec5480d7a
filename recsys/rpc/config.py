"""Service settings from defaults < config file < environment < command-line flags.

A settings class is a dataclass; every field becomes a flag `--field-name` and an environment variable
`RECSYS_<FIELD_NAME>` (for example `RECSYS_FEATURE_ADDR`). `--config FILE` (or `RECSYS_CONFIG`) names a
YAML file whose top-level keys are field names; a file may also hold one section per service
(`feature_svc:`, `candidate_svc:`, `ranker_svc:`) so one file configures the whole cluster.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from recsys.settings import RANGES

T = TypeVar("T")


def _parse(kind: Any, raw: Any, name: str) -> Any:
    origin = typing.get_origin(kind)
    if origin is not list and isinstance(raw, list | dict):
        raise ValueError(f"{name}: expected {getattr(kind, '__name__', kind)}, got a {type(raw).__name__}")
    if origin is list:
        (inner,) = typing.get_args(kind)
        items = raw if isinstance(raw, list) else [x for x in str(raw).split(",") if x]
        return [_parse(inner, x, name) for x in items]
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("1", "true", "yes", "on"):
            return True
        if str(raw).lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name}: expected a boolean, got {raw!r}")
    try:
        return kind(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected {kind.__name__}, got {raw!r}") from exc


def load_settings(cls: type[T], argv: list[str] | None, section: str, description: str = "") -> T:
    """Build `cls` from its defaults, then a config file, then RECSYS_* env vars, then flags."""
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls)]
    parser = argparse.ArgumentParser(prog=f"python -m {section}", description=description)
    parser.add_argument("--config", default=os.environ.get("RECSYS_CONFIG"), help="YAML config file")
    for f in fields:
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if hints[f.name] is bool:
            parser.add_argument(flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction,
                                help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, default=None, action="append" if
                                typing.get_origin(hints[f.name]) is list else "store", help=help_text)
    args = parser.parse_args(argv)

    values: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
            parser.error(f"cannot read config file {path}: {exc or type(exc).__name__}")
        if not isinstance(raw, dict):
            parser.error(f"{path}: the top level must be a mapping")
        sections = {"feature_svc", "candidate_svc", "ranker_svc"}
        bad_sections = sorted(str(k) for k, v in raw.items() if isinstance(v, dict) and k not in sections)
        if bad_sections:
            parser.error(f"{path}: unknown section(s) {', '.join(bad_sections)} (valid: {', '.join(sorted(sections))})")
        merged = {k: v for k, v in raw.items() if not isinstance(v, dict)}
        own = raw.get(section)
        if isinstance(own, dict):  # anything else under a section's name is refused below as unknown
            merged.update(own)
        known = {f.name for f in fields}
        unknown = sorted(str(k) for k in set(merged) - known)
        if unknown:
            parser.error(f"{path}: unknown setting(s) for {section}: {', '.join(unknown)}")
        values.update(merged)
    for f in fields:
        env = os.environ.get("RECSYS_" + f.name.upper())
        if env is not None:
            values[f.name] = env
        flag_value = getattr(args, f.name)
        if flag_value is not None:
            values[f.name] = flag_value
    try:
        parsed = {k: _parse(hints[k], v, k) for k, v in values.items()}
        settings = cls(**parsed)
        check_ranges(settings)
    except ValueError as exc:
        parser.error(str(exc))
    return settings


def check_ranges(settings: object) -> None:
    """Reject values outside the ranges above with a message naming the setting."""
    for name, (lo, hi) in RANGES.items():
        value = getattr(settings, name, None)
        if value is not None and not lo <= value <= hi:
            raise ValueError(f"{name} must be between {lo} and {hi}, got {value}")
