"""`recsys tune`: Ray Tune search over retrieval and ranker hyperparameters, objective validation nDCG@10.

Validation is carved from the given data (a per-user holdout, `VALID_FRACTION` of each user's
interactions), never from a test split: pass `recsys tune` the training part only if a test set must stay
unseen. Each trial trains on the rest and reports twice, so ASHA can stop poor trials early:

1. retrieval only (stage-1 models, candidates ordered by fused ALS/item-to-item rank; under a tenth of a
   trial's cost on MovieLens 100K): judges the ALS and EASE parameters, so ASHA prunes on those alone;
2. the whole serving pipeline (`train` -> bundle -> OfflineStack: candidates -> ranker -> MMR at the
   configured λ), which is what the search maximises and what picks the best trial.

The first trial evaluates the starting configuration, so the table shows what tuning gained over it.
The best configuration is written as YAML for `recsys train --config FILE`.

Ray: local with `--cpus` CPUs (one per trial, so that many trials run at once), or an existing cluster by
`--address` (`auto` inside a KubeRay pod or `ray job submit`, `ray://HEAD:10001` from outside). The driver
loads the dataset and ships it to the trials through the object store, so the dataset path only has to be
readable where `recsys tune` runs; the cluster's image must have this package and its pinned dependencies
installed (the same image as the services). Ray is shut down at the end if this command started it.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from recsys.data.schema import Dataset
from recsys.data.split import holdout_by_user
from recsys.ranking.metrics import ndcg_at_k
from recsys.training.config import TrainConfig

try:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator
except ImportError as _exc:  # Ray is an optional dependency: only tuning needs it
    raise ImportError(f"`recsys tune` needs Ray Tune, which is not installed ({_exc}): "
                      "pip install 'recsys-serving[tune]'") from _exc

VALID_FRACTION = 0.2      # share of each user's interactions held out as the tuning validation set
MAX_VALID_USERS = 2000    # validation users scored per trial (a seeded sample above this)
K = 10
RRF_K = 60.0              # reciprocal-rank-fusion constant for the retrieval-only ordering
METRIC = "ndcg"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def search_space() -> dict[str, Any]:
    """Ray Tune domains, nested like TrainConfig. MMR λ stays fixed: nDCG alone would always pick λ=1
    (no diversity), so diversity is a product choice, not something to fit on accuracy."""
    return {
        "als": {
            "factors": tune.choice([32, 48, 64, 96, 128]),
            "regularization": tune.loguniform(0.005, 0.5),
            "alpha": tune.loguniform(0.5, 20.0),
        },
        "ease_reg": tune.loguniform(50.0, 2000.0),
        "sequence_window": tune.choice([1, 2, 3]),
        "ranker": {
            "num_leaves": tune.choice([7, 15, 31, 63]),
            "learning_rate": tune.loguniform(0.01, 0.2),
            "min_data_in_leaf": tune.choice([20, 50, 100, 200, 500, 1000]),
            "feature_fraction": tune.uniform(0.5, 1.0),
        },
    }


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"als": {"factors": 64}} -> {"als.factors": 64}."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _plain(value: Any) -> Any:
    """Python scalars (YAML cannot write numpy's), floats to 3 significant digits: the value a trial
    evaluates is then exactly the one written to the config file."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(f"{float(value):.3g}")
    return value


def tuned_keys() -> list[str]:
    """Dotted TrainConfig keys the search varies, e.g. "als.factors"."""
    return list(flatten(search_space()))


def trial_config(base: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    """base with the sampled parameters (nested or dotted keys) applied."""
    raw = base.to_dict()
    for key, value in flatten(params).items():
        section, _, name = key.rpartition(".")
        target = raw[section] if section else raw
        if name not in target:
            raise KeyError(f"search space key {key!r} is not a training option")
        target[name] = _plain(value)
    return TrainConfig.from_dict(raw)


def start_point(base: TrainConfig) -> dict[str, Any]:
    """The base configuration's values of the tuned keys, nested like the search space."""
    flat = flatten(base.to_dict())
    out: dict[str, Any] = {}
    for key in tuned_keys():
        section, _, name = key.rpartition(".")
        (out.setdefault(section, {}) if section else out)[name] = flat[key]
    return out


# -- validation split and the two objectives ------------------------------------------------------------
@dataclass
class TuneData:
    """What every trial needs; shipped once through Ray's object store (tune.with_parameters)."""

    train: Dataset                    # tuning training data (validation rows removed)
    valid: dict[str, set[str]]        # validation user -> held-out items not in their training history
    base: TrainConfig
    scratch: str                      # parent of the trials' bundle directories (removed by the driver)


def validation_split(ds: Dataset, fraction: float = VALID_FRACTION, seed: int = 42,
                     max_users: int = MAX_VALID_USERS) -> tuple[Dataset, dict[str, set[str]]]:
    """(training dataset, validation labels): a seeded per-user holdout of the given data.

    Held-out items the user also has in the training part are dropped from the labels: recommendations
    exclude seen items, so they could never be hit and would only add noise to the objective."""
    rest, held = holdout_by_user(ds.interactions, fraction, seed)
    train_ds = Dataset(rest.reset_index(drop=True), ds.items, ds.users, f"{ds.name}:tune-train", list(ds.notes))
    seen = rest.groupby("user_id")["item_id"].agg(set).to_dict()
    labels = {u: set(g) - seen.get(u, set()) for u, g in held.groupby("user_id")["item_id"]}
    labels = {u: items for u, items in labels.items() if items}
    if len(labels) > max_users:
        keep = np.random.default_rng(seed).choice(sorted(labels), max_users, replace=False)
        labels = {u: labels[u] for u in sorted(keep.tolist())}
    return train_ds, labels


def retrieval_ndcg(art, tables, labels: dict[str, set[str]], n_candidates: int, k: int = K) -> float:
    """nDCG@k of the candidate generator alone, candidates ordered by reciprocal-rank fusion of their ALS
    and item-to-item ranks (so both models' parameters move the number)."""
    from recsys.retrieval.generator import CandidateGenerator, GeneratorConfig

    gen = CandidateGenerator(art, GeneratorConfig(n=n_candidates))
    row = {u: i for i, u in enumerate(tables.user_ids.tolist())}
    als_rank, i2i_rank = gen.score_names.index("als_rank"), gen.score_names.index("i2i_rank")
    out = []
    for u, relevant in labels.items():
        r = row.get(u)
        hist = tables.user_history[r] if r is not None else []
        attrs = tables.user_attributes[r] if r is not None else {}
        c = gen.retrieve(gen.indices(hist), attrs, n=n_candidates, user_id=u)
        fused = (np.nan_to_num(1.0 / (RRF_K + c.scores[:, als_rank]), nan=0.0)
                 + np.nan_to_num(1.0 / (RRF_K + c.scores[:, i2i_rank]), nan=0.0))
        top = c.items[np.argsort(-fused, kind="stable")[:k]]
        out.append(ndcg_at_k(art.item_ids[top].tolist(), relevant, k))
    return float(np.mean(out)) if out else 0.0


def pipeline_ndcg(bundle: Path, labels: dict[str, set[str]], cfg: TrainConfig, k: int = K) -> float:
    """nDCG@k of what serving would return from this bundle (ranker and MMR at cfg.diversity_lambda)."""
    from recsys.pipeline.offline import OfflineStack
    from recsys.pipeline.recommend import PipelineConfig

    pipe = PipelineConfig(n_candidates=cfg.n_candidates, diversity_lambda=cfg.diversity_lambda)
    recs = OfflineStack.from_bundle(bundle, pipe).recommend_many(list(labels), k, diversity_lambda=None)
    return float(np.mean([ndcg_at_k([i.item_id for i in recs[u].items], labels[u], k) for u in labels]))


def run_trial(config: dict[str, Any], data: TuneData) -> None:
    """One Ray Tune trial (1 CPU): report retrieval nDCG, then whole-pipeline nDCG."""
    from threadpoolctl import threadpool_limits

    from recsys.training.stage1 import build_stage1
    from recsys.training.trainer import train

    cfg = trial_config(data.base, config)
    cfg.ranker = replace(cfg.ranker, threads=1)  # one CPU per trial; the saved config keeps base's threads
    t0 = time.time()
    with threadpool_limits(1):
        art, tables, _ = build_stage1(data.train, cfg, threads=1, content_map=False)
        r = retrieval_ndcg(art, tables, data.valid, cfg.n_candidates)
        del art, tables
        tune.report({METRIC: r, "retrieval_ndcg": r, "stage": 1, "seconds": time.time() - t0})
        # Stopped trials are killed without unwinding: the driver removes the scratch directory.
        os.makedirs(data.scratch, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="trial-", dir=data.scratch) as tmp:
            bundle = Path(tmp) / "bundle"
            train(data.train, bundle, cfg, show_progress=False)
            p = pipeline_ndcg(bundle, data.valid, cfg)
    tune.report({METRIC: p, "retrieval_ndcg": r, "pipeline_ndcg": p, "stage": 2, "seconds": time.time() - t0})


# -- driver --------------------------------------------------------------------------------------------
def short_id(trial_id: str) -> str:
    """Tune's "2ba1d_00003" -> "3": the experiment prefix is random and the same for every trial."""
    _, _, n = trial_id.rpartition("_")
    return str(int(n)) if n.isdigit() else trial_id


def _is_start(config: dict[str, Any], start: dict[str, Any]) -> bool:
    """Whether a trial's (nested) config holds exactly the starting values (start is flat)."""
    return {k: _plain(v) for k, v in flatten(config).items()} == {k: _plain(v) for k, v in start.items()}


class KeepStartASHA(ASHAScheduler):
    """ASHA that never stops the starting configuration's trial early (its result still sets the cutoffs).

    Retrieval nDCG only roughly predicts the whole pipeline's, so the start could be pruned and then
    beaten by nothing it was compared with: kept, it is the bar, and the config written is never worse than
    the starting one on the objective."""

    def __init__(self, start: dict[str, Any] | None, **kwargs: Any):
        super().__init__(**kwargs)
        self.start = flatten(start) if start else None

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if (action == self.STOP and self.start is not None and result.get(self._time_attr, 0) < self._max_t
                and _is_start(trial.config, self.start)):
            return self.CONTINUE
        return action


class _Progress(tune.Callback):
    """One line per trial event, in the driver (on the cluster's Tune actor with a ray:// address)."""

    def __init__(self, console: Console | None, total: int):
        self.console = console
        self.total = total
        self.done = 0

    def __getstate__(self) -> dict:
        return self.__dict__ | {"console": None}  # a Console holds the terminal: not picklable (ray://)

    def _say(self, text: str) -> None:
        if self.console is None:
            self.console = Console()
        self.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {text}", highlight=False)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        what = "retrieval" if result.get("stage") == 1 else "pipeline "
        self._say(f"trial {short_id(trial.trial_id)} {what} nDCG@{K} {result[METRIC]:.4f}  "
                  f"({result.get('seconds', 0):.0f}s)")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        last = trial.last_result or {}
        note = "stopped early (ASHA)" if last.get("stage") == 1 else "done"
        self._say(f"[{self.done}/{self.total}] trial {short_id(trial.trial_id)} {note}")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        self._say(f"[{self.done}/{self.total}] [red]trial {short_id(trial.trial_id)} failed[/red] (traceback below)")


def _init_ray(address: str | None, cpus: int) -> None:
    """Start local Ray with `cpus` CPUs or connect to `address` (unless the caller already has Ray up)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return
    if address:
        # With ray:// the Tuner itself runs on the cluster: it needs the quiet-reporter switch there too.
        env = {"runtime_env": {"env_vars": {"RAY_AIR_NEW_OUTPUT": "0"}}} if address.startswith("ray://") else {}
        ray.init(address=address, logging_level=logging.WARNING, **env)
    else:
        # A new local cluster gets token auth by default, and Ray warns that it did: nothing to act on here.
        auth_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
        level = auth_log.level
        auth_log.setLevel(logging.ERROR)
        try:
            # "local": a new instance even if RAY_ADDRESS is set or `ray start` left one running (--address is
            # how to use those), so --cpus always holds.
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
        finally:
            auth_log.setLevel(level)


@contextmanager
def _quiet_tune() -> Iterator[None]:
    """Tune's own reporter off (it prints its banner and paths even at verbose=0): _Progress reports."""
    old = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = old


@dataclass
class TrialRow:
    trial_id: str
    params: dict[str, Any]            # flat tuned values
    retrieval: float | None
    pipeline: float | None
    seconds: float | None
    status: str
    is_start: bool


def _rows(results, base: TrainConfig) -> list[TrialRow]:
    start = flatten(start_point(base))
    rows: list[TrialRow] = []
    for res in results:
        m = res.metrics or {}
        params = {k: _plain(v) for k, v in flatten(res.config or {}).items()}
        if res.error is not None:
            status = "error"
        elif m.get("stage") == 2:
            status = "done"
        else:
            status = "stopped"
        rows.append(TrialRow(trial_id=short_id(str(m.get("trial_id") or Path(res.path or "?").name)), params=params,
                             retrieval=m.get("retrieval_ndcg"), pipeline=m.get("pipeline_ndcg"),
                             seconds=m.get("seconds"), status=status,
                             is_start=_is_start(params, start)))
    rows.sort(key=lambda r: (r.pipeline is None, -(r.pipeline or 0.0), -(r.retrieval or 0.0)))
    return rows


SHORT = {"als.factors": "factors", "als.regularization": "als reg", "als.alpha": "alpha", "ease_reg": "ease reg",
         "ranker.num_leaves": "leaves", "ranker.learning_rate": "lr", "ranker.min_data_in_leaf": "min leaf",
         "ranker.feature_fraction": "feat frac"}


def _param(v: Any) -> str:
    return "—" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def _score(v: float | None) -> str:
    return "—" if v is None or math.isnan(v) else f"{v:.4f}"


def results_table(rows: list[TrialRow], title: str) -> Table:
    keys = tuned_keys()
    table = Table(title=title, caption=f"validation nDCG@{K}, sorted by pipeline (the objective) · ★ best · "
                  "start = the starting configuration · stopped = ASHA stopped it after retrieval")
    table.add_column("trial")
    table.add_column("status")
    for key in keys:
        table.add_column(SHORT.get(key, key), justify="right")
    for col in ("retrieval", "pipeline", "s"):
        table.add_column(col, justify="right")
    for i, r in enumerate(rows):
        name = r.trial_id + (" start" if r.is_start else "") + (" ★" if i == 0 and r.pipeline is not None else "")
        table.add_row(name, r.status, *(_param(r.params.get(k)) for k in keys), _score(r.retrieval),
                      _score(r.pipeline), f"{r.seconds:.0f}" if r.seconds is not None else "—")
    return table


def write_config(path: Path, cfg: TrainConfig, header: list[str]) -> None:
    """The full training config (what `recsys train --config` reads), commented with where it came from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)
    path.write_text("".join(f"# {line}\n" for line in header) + body)


def run_tune(args: argparse.Namespace, console: Console, base: TrainConfig | None = None,
             include_start: bool = True) -> int:
    """The `recsys tune` command. `base` (or `args.config`, a TrainConfig file) is the starting point; with
    include_start its tuned values are the first trial (a baseline that tuning has to beat)."""
    from recsys.display import load_dataset_or_exit as _load

    if args.trials < 1 or (not args.address and args.cpus < 1):
        console.print("[red]error:[/red] --trials and --cpus must be at least 1")
        return 2
    t0 = time.time()
    if base is None:
        config_file = getattr(args, "config", None)
        base = TrainConfig.from_file(Path(config_file)) if config_file else TrainConfig()
    base = replace(base, seed=args.seed)
    with console.status(f"loading {args.dataset}"):
        ds = _load(args.dataset)
        train_ds, valid = validation_split(ds, VALID_FRACTION, args.seed)
    console.print(f"dataset {ds.name}: {len(ds.interactions):,} interactions; tuning on "
                  f"{len(train_ds.interactions):,}, validating on {sum(map(len, valid.values())):,} held-out items "
                  f"of {len(valid):,} users ({VALID_FRACTION:.0%} per-user holdout, seed {args.seed})")

    scratch = tempfile.mkdtemp(prefix="recsys-tune-")
    ray_was_up = ray.is_initialized()
    try:
        try:
            _init_ray(args.address, args.cpus)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            # e.g. a wrong address, or a cluster with token auth and no RAY_AUTH_MODE=token/token here
            reason = _ANSI.sub("", str(exc.__cause__ or exc)).strip().splitlines()[-1]
            console.print(f"[red]error:[/red] cannot start or reach Ray ({escape(args.address or 'local')}): "
                          f"{escape(str(exc))}\n  {escape(reason)}", soft_wrap=True)
            return 2
        cluster_cpus = int(ray.cluster_resources().get("CPU", 0))
        where = args.address or f"local Ray, {args.cpus} CPUs"
        console.print(f"Ray {ray.__version__} ({where}; cluster has {cluster_cpus} CPUs): {args.trials} trials, "
                      f"1 CPU each, ASHA on validation nDCG@{K} (retrieval, then whole pipeline)")
        data = TuneData(train=train_ds, valid=valid, base=base, scratch=os.path.join(scratch, "bundles"))
        trainable = tune.with_resources(tune.with_parameters(run_trial, data=data), {"cpu": 1})
        tuner = tune.Tuner(
            trainable,
            param_space=search_space(),
            tune_config=tune.TuneConfig(
                metric=METRIC, mode="max", num_samples=args.trials,
                scheduler=KeepStartASHA(start_point(base) if include_start else None, time_attr="training_iteration",
                                        max_t=2, grace_period=1, reduction_factor=2),
                search_alg=BasicVariantGenerator(points_to_evaluate=[start_point(base)] if include_start else None,
                                                 random_state=args.seed),
                trial_dirname_creator=lambda trial: trial.trial_id,
            ),
            run_config=tune.RunConfig(
                name="recsys-tune", storage_path=os.path.join(scratch, "ray"), verbose=0,
                callbacks=[_Progress(console, args.trials)],
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        with _quiet_tune():
            results = tuner.fit()
    finally:
        if not ray_was_up and ray.is_initialized():  # ours to stop (also when init or the search failed)
            ray.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)

    rows = _rows(results, base)
    console.print(results_table(rows, f"recsys tune · {args.dataset} · {len(rows)} trial{'s' * (len(rows) != 1)}"))
    for res in results:
        if res.error is not None:  # the end of the worker's traceback: where it failed and why
            tail = "\n".join(_ANSI.sub("", str(res.error)).rstrip().splitlines()[-6:])
            console.print(f"[red]trial failed:[/red]\n{escape(tail)}", soft_wrap=True)
    done = [r for r in rows if r.pipeline is not None]
    if not done:
        console.print("[red]error:[/red] no trial completed the whole pipeline")
        return 1
    best, start = done[0], next((r for r in rows if r.is_start), None)
    best_cfg = trial_config(base, best.params)
    gain = (f" (starting configuration: {start.pipeline:.4f})"
            if start is not None and start.pipeline is not None else "")
    header = [
        f"recsys tune: best of {len(rows)} trials ({len(done)} completed, "
        f"{sum(r.status == 'stopped' for r in rows)} stopped early, {sum(r.status == 'error' for r in rows)} failed)",
        f"dataset: {args.dataset}",
        f"objective: validation nDCG@{K} of the whole pipeline (MMR lambda {best_cfg.diversity_lambda}) = "
        f"{best.pipeline:.4f}{gain}",
        f"validation: {VALID_FRACTION:.0%} of each user's interactions held out of the dataset (seed {args.seed}); "
        "no test split used",
        f"tuned: {', '.join(tuned_keys())}",
        f"trial {best.trial_id}, {time.strftime('%Y-%m-%d %H:%M:%S')}; use: recsys train --config THIS_FILE",
    ]
    out = Path(args.out)
    write_config(out, best_cfg, header)
    best_table = Table(title=f"best configuration (trial {best.trial_id})")
    best_table.add_column("parameter")
    best_table.add_column("tuned", justify="right")
    best_table.add_column("start", justify="right")
    start_flat = flatten(start_point(base))
    for key in tuned_keys():
        best_table.add_row(key, _param(best.params.get(key)), _param(start_flat[key]))
    best_table.add_row(f"validation nDCG@{K}", _score(best.pipeline), _score(start.pipeline if start else None))
    console.print(best_table)
    console.print(f"wrote {out} in {time.time() - t0:.0f}s; train with: recsys train --dataset {args.dataset} "
                  f"--config {out} --out BUNDLE", soft_wrap=True)
    return 0
