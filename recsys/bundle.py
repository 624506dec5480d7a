"""Versioned model bundles: everything the three services need to serve one trained model.

Layout of a bundle directory:
    metadata.json   version id, created, data fingerprint, parameters, validation metrics, parent
    features/       FeatureTables loaded into feature_svc
    retrieval/      RetrievalArtifacts loaded by candidate_svc (embeddings, neighbours, popularity, ...)
    ranker/         the LightGBM ranker loaded by ranker_svc
A bundle is written to a temporary directory and renamed into place, so a reader never sees half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

FORMAT_VERSION = 1


class BundleError(ValueError):
    """A bundle is missing, corrupt or of an incompatible format."""


@dataclass
class BundleMetadata:
    version: str
    created: float
    data_fingerprint: str
    dataset: str
    params: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    parent: str | None = None
    notes: list[str] = field(default_factory=list)
    format_version: int = FORMAT_VERSION
    # The last event-stream entry the training data included (`recsys events export`); the serving
    # consumers of this version apply only what came after it. None: trained without the stream.
    stream_position: str | None = None
    # Users forgotten (Users/Forget) up to this time (unix ms) were left out of the training data (`recsys
    # train --events` with an export's registry); feature_svc drops the rows of users forgotten later.
    forgotten_through_ms: int = 0

    @staticmethod
    def new_version(created: float) -> str:
        return time.strftime("%Y%m%d-%H%M%S", time.gmtime(created)) + "-" + uuid.uuid4().hex[:6]


def write_metadata(directory: Path, meta: BundleMetadata) -> None:
    (directory / "metadata.json").write_text(json.dumps(asdict(meta), indent=1, sort_keys=True))


def read_metadata(directory: Path) -> BundleMetadata:
    path = Path(directory) / "metadata.json"
    if not path.is_file():
        raise BundleError(f"{directory}: not a model bundle (no metadata.json)")
    try:
        raw = json.loads(path.read_text())
        meta = BundleMetadata(**raw)
    except (json.JSONDecodeError, TypeError) as exc:
        raise BundleError(f"{path}: unreadable bundle metadata: {exc}") from exc
    if meta.format_version != FORMAT_VERSION:
        raise BundleError(f"{directory}: bundle format {meta.format_version}, this build reads {FORMAT_VERSION}")
    for part in ("features", "retrieval", "ranker"):
        if not (Path(directory) / part).is_dir():
            raise BundleError(f"{directory}: incomplete bundle, {part}/ is missing")
    return meta


def bundle_stream_position(directory: Path) -> str:
    """Where a version's stream consumers start: after the events its training saw, else the beginning."""
    return read_metadata(directory).stream_position or "begin"


CHECKSUMS = "checksums.json"


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checksums(directory: Path) -> None:
    """Record the sha256 of every model file, so a service can refuse a truncated or altered bundle."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name not in (CHECKSUMS, "metadata.json"))
    sums = {str(p.relative_to(directory)): _digest(p) for p in files}
    (directory / CHECKSUMS).write_text(json.dumps(sums, indent=1, sort_keys=True))


def verify_bundle(directory: Path) -> BundleMetadata:
    """Metadata of a bundle whose files all match their recorded checksums; BundleError otherwise."""
    directory = Path(directory)
    meta = read_metadata(directory)
    try:
        sums = json.loads((directory / CHECKSUMS).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{directory}: missing or unreadable {CHECKSUMS}: {exc}") from exc
    for rel, expected in sums.items():
        path = directory / rel
        if not path.is_file():
            raise BundleError(f"{directory}: {rel} is missing")
        if _digest(path) != expected:
            raise BundleError(f"{directory}: {rel} does not match its checksum (corrupt or altered)")
    return meta


def staging_dir(final: Path) -> Path:
    """A sibling temporary directory to build a bundle in before `publish` renames it into place."""
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, final: Path) -> None:
    """Move a finished bundle into place; an existing one is moved aside first and deleted after."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old)
