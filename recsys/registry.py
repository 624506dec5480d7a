"""The model registry: a directory of bundles and a pointer to the champion.

    MODELS_DIR/<version>/     bundles written by `recsys train --registry MODELS_DIR`
    MODELS_DIR/CHAMPION       the version the services serve by default (replaced atomically)
    MODELS_DIR/LIVE           further versions every service holds too, one per line (A/B arms, shadows)
    MODELS_DIR/history.jsonl  append-only: every trained bundle with its validation metrics ("trained"), every
                              promotion, rollback and live-set change, with the numbers behind it

The services poll CHAMPION and LIVE and load or drop versions without restart (recsys/rpc/host.py).
A candidate becomes champion only through the promotion gate: it must load, and its validation metric
must not be worse than the champion's by more than a stated tolerance.

The "trained" entries outlive the bundles they describe (a pruned bundle keeps its line), so
`recsys models history` can show every version's validation metrics over time, promotions marked.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from recsys.bundle import BundleError, BundleMetadata, read_metadata, verify_bundle

CHAMPION = "CHAMPION"
LIVE = "LIVE"
HISTORY = "history.jsonl"
GATE_METRIC = "valid_ndcg@10"
DEFAULT_TOLERANCE = 0.005


@dataclass
class TrainedModel:
    """One version's validation metrics in the history (or, for a bundle without a "trained" line, its
    metadata: `recorded` False), and when it became champion."""

    version: str
    created: float
    dataset: str
    parent: str | None
    metrics: dict[str, float]
    recorded: bool = True
    champion_at: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class ChampionChange:
    """The champion pointer moved: `how` is promote (the gate passed), forced or rollback."""

    at: float
    version: str
    before: str | None
    how: str


@dataclass
class Decision:
    promoted: bool
    candidate: str
    champion_before: str | None
    metric: str
    candidate_value: float | None
    champion_value: float | None
    tolerance: float
    reason: str
    at: float = field(default_factory=time.time)

    def summary(self) -> str:
        verdict = "PROMOTED" if self.promoted else "REJECTED"
        cv = "n/a" if self.candidate_value is None else f"{self.candidate_value:.4f}"
        hv = "n/a" if self.champion_value is None else f"{self.champion_value:.4f}"
        return (f"{verdict} {self.candidate}: {self.metric} candidate {cv} vs champion "
                f"{self.champion_before or '(none)'} {hv}, tolerance {self.tolerance:.4f} — {self.reason}")


class Registry:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def path(self, version: str) -> Path:
        return self.root / version

    def bundles(self) -> list[BundleMetadata]:
        """Readable bundles, oldest first (unreadable directories are skipped; `check` reports them)."""
        out = []
        if self.root.is_dir():
            for d in self.root.iterdir():
                if d.is_dir() and not d.name.startswith("."):
                    try:
                        out.append(read_metadata(d))
                    except BundleError:
                        continue
        return sorted(out, key=lambda m: m.created)

    def champion(self) -> str | None:
        try:
            version = (self.root / CHAMPION).read_text().strip()
        except FileNotFoundError:
            return None
        return version or None

    def live(self) -> list[str]:
        """Versions held live beside the champion (the serving configuration names them)."""
        try:
            lines = (self.root / LIVE).read_text().splitlines()
        except FileNotFoundError:
            return []
        return list(dict.fromkeys(x.strip() for x in lines if x.strip()))

    def serving(self) -> tuple[str | None, list[str]]:
        """(champion, every version the services must hold: the champion first, then the live set)."""
        champion = self.champion()
        return champion, list(dict.fromkeys(([champion] if champion else []) + self.live()))

    def add_live(self, version: str) -> list[str]:
        """Hold `version` live in every service (it must load completely, like a promotion candidate)."""
        self.check(version)
        live = self.live()
        if version not in live:
            self._write_live(live + [version])
            self._log("live_add", version=version)
        return self.live()

    def remove_live(self, version: str) -> list[str]:
        live = self.live()
        if version not in live:
            raise BundleError(f"{self.root}: {version} is not in the live set ({', '.join(live) or 'empty'})")
        self._write_live([v for v in live if v != version])
        self._log("live_remove", version=version)
        return self.live()

    def _write_live(self, versions: list[str]) -> None:
        tmp = self.root / f".{LIVE}.tmp-{os.getpid()}"
        tmp.write_text("".join(v + "\n" for v in versions))
        os.replace(tmp, self.root / LIVE)

    def history(self) -> list[dict]:
        return [e for _, e in self._history_lines()]

    def _history_lines(self) -> list[tuple[int, dict]]:
        """(line number, entry) for each non-blank line; a corrupt line raises BundleError naming file:line."""
        path = self.root / HISTORY
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BundleError(f"{path}:{n}: not a JSON history entry ({exc.msg})") from exc
            if not isinstance(entry, dict) or not isinstance(entry.get("event"), str):
                raise BundleError(f"{path}:{n}: a history entry must be an object with an \"event\" field")
            out.append((n, entry))
        return out

    def record_trained(self, meta: BundleMetadata) -> bool:
        """Append the bundle's validation metrics as a "trained" entry, once per version (`recsys train
        --registry` does it; a promotion does it for a bundle that arrived without). True if appended."""
        if any(e["event"] == "trained" and e.get("version") == meta.version for e in self.history()):
            return False
        self._log("trained", version=meta.version, created=meta.created, dataset=meta.dataset,
                  parent=meta.parent, metrics=_numbers(meta.metrics))
        return True

    def timeline(self) -> tuple[list[TrainedModel], list[ChampionChange]]:
        """Every version's metrics, oldest first by training time (bundles present without a "trained"
        line from their metadata), and every change of champion, oldest first."""
        models: dict[str, TrainedModel] = {}
        changes: list[ChampionChange] = []
        path = self.root / HISTORY
        for n, e in self._history_lines():
            try:
                if e["event"] == "trained":
                    models[e["version"]] = TrainedModel(e["version"], float(e["created"]), str(e.get("dataset", "")),
                                                        e.get("parent"), _numbers(e.get("metrics") or {}))
                elif e["event"] == "promote" and e["promoted"]:
                    changes.append(ChampionChange(float(e["at"]), e["candidate"], e.get("champion_before"),
                                                  "forced" if e.get("reason") == "forced" else "promote"))
                elif e["event"] == "rollback":
                    changes.append(ChampionChange(float(e["at"]), e["to_version"], e.get("from_version"),
                                                  "rollback"))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise BundleError(f"{path}:{n}: {e['event']} entry with a missing or bad field ({exc!r})") from exc
        for m in self.bundles():
            if m.version not in models:
                models[m.version] = TrainedModel(m.version, m.created, m.dataset, m.parent, _numbers(m.metrics),
                                                 recorded=False)
        for c in changes:
            if c.version in models:
                models[c.version].champion_at.append(c.at)
        return sorted(models.values(), key=lambda t: t.created), changes

    def _set_champion(self, version: str) -> None:
        tmp = self.root / f".{CHAMPION}.tmp-{os.getpid()}"
        tmp.write_text(version + "\n")
        os.replace(tmp, self.root / CHAMPION)

    def _log(self, event: str, **fields) -> None:
        with open(self.root / HISTORY, "a") as f:
            f.write(json.dumps({"event": event, "at": time.time(), **fields}) + "\n")

    def check(self, version: str) -> BundleMetadata:
        """Load every part of a bundle the services load; raise BundleError if any fails."""
        from recsys.feature_tables import FeatureTables
        from recsys.pipeline.model import ServingModel
        from recsys.retrieval.artifacts import RetrievalArtifacts
        from recsys.retrieval.generator import CandidateGenerator, GeneratorConfig

        path = self.path(version)
        meta = verify_bundle(path)
        try:
            ServingModel.load(path, verify=False)  # verified just above
            art = RetrievalArtifacts.load(path / "retrieval")
            for kind in ("exact", "hnsw", "ivf"):
                if art.index_path(kind) is not None:
                    CandidateGenerator(art, GeneratorConfig(index=kind))  # the prebuilt index must fit
            FeatureTables.load(path / "features")
        except BundleError:
            raise
        except Exception as exc:
            raise BundleError(f"{path}: {exc}") from exc
        return meta

    def promote(self, version: str | None = None, tolerance: float = DEFAULT_TOLERANCE,
                metric: str = GATE_METRIC, force: bool = False) -> Decision:
        """Make `version` (default: the newest bundle) champion if it passes the gate."""
        bundles = self.bundles()
        if version is None:
            if not bundles:
                raise BundleError(f"{self.root}: no bundles to promote")
            version = bundles[-1].version
        current = self.champion()
        cand_meta = self.check(version)  # a corrupt candidate never becomes champion, even with force
        self.record_trained(cand_meta)  # its metrics stay in the history even if the bundle came by copy
        cand_value = cand_meta.metrics.get(metric)
        champ_value = None
        if current and current != version:
            try:
                champ_value = read_metadata(self.path(current)).metrics.get(metric)
            except BundleError:
                champ_value = None  # the champion itself is unreadable: anything loadable is better
        if current == version:
            ok, reason = False, "already the champion"
        elif force:
            ok, reason = True, "forced"
        elif cand_value is None:
            ok, reason = False, f"candidate has no {metric} metric"
        elif champ_value is None:
            ok, reason = True, "no comparable champion"
        elif cand_value >= champ_value - tolerance:
            ok, reason = True, f"within tolerance (delta {cand_value - champ_value:+.4f})"
        else:
            ok, reason = False, f"worse by {champ_value - cand_value:.4f} > tolerance"
        decision = Decision(ok, version, current, metric, cand_value, champ_value, tolerance, reason)
        if ok:
            self._set_champion(version)
        self._log("promote", **asdict(decision))
        return decision

    def rollback(self) -> str:
        """Return to the champion before the current one (from the history)."""
        current = self.champion()
        previous = [e["champion_before"] for e in self.history()
                    if e["event"] == "promote" and e["promoted"] and e["candidate"] == current]
        target = previous[-1] if previous else None
        if not target:
            raise BundleError(f"{self.root}: no earlier champion to roll back to")
        self.check(target)
        self._set_champion(target)
        self._log("rollback", from_version=current, to_version=target)
        return target


def _numbers(metrics: dict) -> dict[str, float]:
    """The numeric metrics (bools and strings left out), as floats for JSON and plotting."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
