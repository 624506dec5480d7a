"""What every input parser must do with any input: parse it, or fail with its own clear error, which names
the file (and line, column or field). Anything else (a traceback of an internal exception, a hang) is a
bug. One function per parser, taking raw bytes; shared by the coverage-guided atheris harnesses
(fuzz/run.py, `make fuzz`) and the hypothesis tests (tests/unit/test_fuzz_parsers.py).

Each target raises `Unclear` when the parser failed the contract; an accepted input returns normally.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

SEPARATOR = b"\x1e"  # splits one input into the files of a dataset directory


class Unclear(AssertionError):
    """The parser failed with something other than its clear error, or its error names nothing."""


_WORKDIR: Path | None = None


def workdir() -> Path:
    """A scratch directory of this process, emptied for every input."""
    global _WORKDIR
    if _WORKDIR is None:
        _WORKDIR = Path(tempfile.mkdtemp(prefix="recsys-fuzz-"))
    for child in _WORKDIR.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    return _WORKDIR


def _files(data: bytes, names: tuple[str, ...]) -> Path:
    """The parts of `data` (split at SEPARATOR) written as the files `names` of a fresh directory; a missing
    part leaves its file out."""
    root = workdir() / "ds"
    root.mkdir()
    for name, part in zip(names, data.split(SEPARATOR), strict=False):
        (root / name).write_bytes(part)
    return root


def _expect(fn: Callable[[], object], errors: tuple[type[BaseException], ...], names: Callable[[str], bool]) -> None:
    try:
        fn()
    except errors as exc:
        if not names(str(exc)):
            raise Unclear(f"{type(exc).__name__} names no file or field: {exc}") from exc
    except Exception as exc:
        raise Unclear(f"{type(exc).__name__}: {exc}") from exc


def canonical(data: bytes) -> None:
    """A canonical dataset directory (interactions.csv, items.csv, users.csv), loaded and cleaned."""
    from recsys.data.canonical import load_canonical
    from recsys.data.cleaning import clean
    from recsys.data.schema import DatasetError

    root = _files(data, ("interactions.csv", "items.csv", "users.csv"))
    _expect(lambda: clean(load_canonical(root)), (DatasetError,), lambda m: str(root) in m)


def movielens_100k(data: bytes) -> None:
    from recsys.data.cleaning import clean
    from recsys.data.movielens import load_movielens_100k
    from recsys.data.schema import DatasetError

    root = _files(data, ("u.data", "u.genre", "u.item", "u.user"))
    _expect(lambda: clean(load_movielens_100k(root), rating_range=(0.5, 5.0)), (DatasetError,),
            lambda m: str(root) in m)


def movielens_latest(data: bytes) -> None:
    from recsys.data.cleaning import clean
    from recsys.data.movielens import load_movielens_latest
    from recsys.data.schema import DatasetError

    root = _files(data, ("ratings.csv", "movies.csv"))
    _expect(lambda: clean(load_movielens_latest(root), rating_range=(0.5, 5.0)), (DatasetError,),
            lambda m: str(root) in m)


def dataset_spec(data: bytes) -> None:
    """A dataset SPEC string. Synthetic options are parsed, not generated (a valid spec may ask for
    billions of rows); paths are resolved in an empty directory."""
    from recsys.data.schema import DatasetError
    from recsys.data.spec import load_dataset, parse_synthetic

    spec = data.decode("utf-8", "replace")
    if "/" in spec or "\x00" in spec or spec.startswith("~"):
        return
    scheme, _, rest = spec.partition(":")

    def run() -> None:
        if scheme == "synthetic":
            parse_synthetic(rest)
        else:
            with _chdir(workdir()):
                load_dataset(spec)

    _expect(run, (DatasetError, ValueError), lambda m: bool(m.strip()))


def experiments(data: bytes) -> None:
    """The experiments file (docs/experiments.md)."""
    from recsys.experiments.config import ConfigError, load_config

    path = workdir() / "experiments.yaml"
    path.write_bytes(data)
    _expect(lambda: load_config(path, {"v1", "v2"}), (ConfigError,), lambda m: m.startswith(str(path)))


def service_settings(data: bytes) -> None:
    """A service config file (`--config`): settings or a usage error naming the file or the setting."""
    from ranker_svc.settings import RankerSettings
    from recsys.rpc.config import load_settings

    path = workdir() / "recsys.yaml"
    path.write_bytes(data)
    err = io.StringIO()

    def run() -> None:
        try:
            with contextlib.redirect_stderr(err):
                load_settings(RankerSettings, ["--config", str(path)], "ranker_svc")
        except SystemExit as exc:
            message = err.getvalue().strip().split("error: ", 1)[-1]  # argparse: usage, then "...: error: MSG"
            if exc.code != 2 or not message:
                raise Unclear(f"exit {exc.code} without a message") from None
            raise _UsageError(message) from None

    _expect(run, (_UsageError,), lambda m: str(path) in m or "must be" in m or "expected" in m)


class _UsageError(Exception):
    pass


def training_config(data: bytes) -> None:
    """`recsys train --config FILE` (YAML, or JSON for .json)."""
    from recsys.training.config import TrainConfig, TrainConfigError

    for suffix in (".yaml", ".json"):
        path = workdir() / f"train{suffix}"
        path.write_bytes(data)
        _expect(lambda path=path: TrainConfig.from_file(path), (TrainConfigError,), lambda m, p=path: str(p) in m)


def send_input(data: bytes) -> None:
    """`recsys send FILE`: JSONL events or a CSV of interactions."""
    from recsys.cli_events import InputError, read_events

    for name in ("events.jsonl", "events.csv"):
        path = workdir() / name
        path.write_bytes(data)
        _expect(lambda path=path: read_events(path), (InputError,), lambda m, p=path: m.startswith(str(p)))


@contextlib.contextmanager
def _chdir(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "canonical": canonical, "movielens_100k": movielens_100k, "movielens_latest": movielens_latest,
    "dataset_spec": dataset_spec, "experiments": experiments, "service_settings": service_settings,
    "training_config": training_config, "send_input": send_input,
}
