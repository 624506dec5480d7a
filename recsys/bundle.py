"""Versioned model bundles: everything the three services need to serve one trained model.

Layout of a bundle directory:
    metadata.json   version id, created, data fingerprint, parameters, validation metrics, parent
    features/       FeatureTables loaded into feature_svc
    retrieval/      RetrievalArtifacts loaded by candidate_svc (embeddings, neighbours, popularity, ...)
    ranker/         the LightGBM ranker loaded by ranker_svc
A bundle is written to a temporary directory and renamed into place, so a reader never sees half of one.
"""

from __future__ import annotations

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


def staging_dir(final: Path) -> Path:
    """A sibling temporary directory to build a bundle in before `publish` renames it into place."""
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
