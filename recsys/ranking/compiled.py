"""The ranker's trees compiled to machine code (lleaves: LightGBM models through LLVM), for serving.

LightGBM's own `predict` spends most of its ~2 ms on 300 rows × ~300 small trees in per-call overhead and
a generic tree walk; the compiled form scores the same rows in ~0.3 ms. It is used only when it agrees
with LightGBM: every compilation is checked on a probe matrix built from the trees' own thresholds (each
split's value, just above it, and missing values), and a form that differs by more than `TOLERANCE`, or
a machine without lleaves, keeps LightGBM (`RankerModel.score` falls back on its own).

Compiling ~300 trees takes ~2 s, so the shared object is cached by the model text's hash (and the
compiler's versions and the CPU it targets) under `cache_dir()`; an unwritable cache only costs the time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import tempfile
from pathlib import Path

import lightgbm as lgb
import numpy as np

log = logging.getLogger(__name__)

TOLERANCE = 1e-6  # largest |compiled − LightGBM| accepted on the probe matrix

try:  # the optional fast path: without it the ranker scores with LightGBM
    import lleaves
    import llvmlite
    import llvmlite.binding as llvm
except ImportError:  # pragma: no cover - exercised where lleaves is not installed
    lleaves = None


def available() -> bool:
    return lleaves is not None


def cache_dir() -> Path:
    """RECSYS_COMPILED_CACHE, else ~/.cache/recsys/compiled-trees."""
    env = os.environ.get("RECSYS_COMPILED_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "recsys" / "compiled-trees"


class CompiledTrees:
    """LLVM-compiled trees with LightGBM's raw-score semantics (same sum of leaf values)."""

    def __init__(self, model, n_features: int):
        self._model = model
        self.n_features = n_features

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Raw scores of the rows of x (float64, like Booster.predict); one thread, as serving runs."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected a matrix of {self.n_features} features, got shape {x.shape}")
        return self._model.predict(x, n_jobs=1)


def probe_matrix(booster: lgb.Booster, rows: int = 512, seed: int = 0) -> np.ndarray:
    """Rows that take every kind of branch: each feature at one of its split thresholds (LightGBM sends
    `value <= threshold` left), just above one, far out on either side, or missing (NaN)."""
    rng = np.random.default_rng(seed)
    n_features = booster.num_feature()
    dump = booster.dump_model()
    thresholds: list[list[float]] = [[] for _ in range(n_features)]

    def walk(node: dict) -> None:
        if "split_feature" in node:
            thresholds[node["split_feature"]].append(float(node["threshold"]))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in dump["tree_info"]:
        walk(tree["tree_structure"])
    x = rng.normal(0.0, 10.0, size=(rows, n_features))
    for j, values in enumerate(thresholds):
        if not values:
            continue
        t = np.asarray(values)[rng.integers(0, len(values), size=rows)]
        kind = rng.integers(0, 5, size=rows)
        x[:, j] = np.select([kind == 0, kind == 1, kind == 2, kind == 3],
                            [t, np.nextafter(t, np.inf), t - 1e3, t + 1e3], default=np.nan)
    big = float(np.finfo(np.float32).max)  # a split at ±1e300 (all values one side) stays finite in float32
    return np.clip(x, -big, big).astype(np.float32)  # served matrices are float32: probe in that precision


def _cache_key(model_text: str) -> str:
    h = hashlib.sha256(model_text.encode())
    for part in (lleaves.__version__ if hasattr(lleaves, "__version__") else "lleaves",
                 llvmlite.__version__, platform.machine(), llvm.get_host_cpu_name()):
        h.update(b"\0" + str(part).encode())
    return h.hexdigest()[:32]


def _build(model_file: Path, cache: Path | None):
    model = lleaves.Model(model_file=str(model_file))
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            model.compile(cache=str(cache))
            return model
        except OSError as exc:
            log.info("compiled-trees cache %s not usable (%s); compiling in memory", cache, exc)
            model = lleaves.Model(model_file=str(model_file))
    model.compile()
    return model


def compile_booster(booster: lgb.Booster, use_cache: bool = True) -> CompiledTrees | None:
    """The compiled form of `booster`, or None (lleaves absent, compilation failed, or its scores differ
    from LightGBM's on the probe matrix by more than TOLERANCE: the caller then scores with LightGBM)."""
    if lleaves is None:
        return None
    text = booster.model_to_string()
    cache = cache_dir() / f"{_cache_key(text)}.so" if use_cache else None
    try:
        with tempfile.TemporaryDirectory(prefix="recsys-trees-") as tmp:
            model_file = Path(tmp) / "model.txt"
            model_file.write_text(text)
            compiled = CompiledTrees(_build(model_file, cache), booster.num_feature())
        probe = probe_matrix(booster)
        diff = float(np.max(np.abs(compiled.predict(probe) - booster.predict(probe, num_threads=1))))
    except Exception:  # a compiler problem must never stop a model from loading: LightGBM still scores
        log.exception("compiling the ranker's trees failed; scoring with LightGBM")
        return None
    if not diff <= TOLERANCE:
        log.warning("compiled trees differ from LightGBM by %.3g (> %g) on the probe; scoring with LightGBM",
                    diff, TOLERANCE)
        if cache is not None:
            cache.unlink(missing_ok=True)
        return None
    return compiled
