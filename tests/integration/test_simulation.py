"""The end-to-end proof of experiments: `recsys simulate` drives the real services with 2,000 synthetic
users whose true tastes are known, for 5 simulated days, in one three-arm experiment: control is a stale
model (trained on the first 8% of the history), `popularity` ranks by popularity, `better` is the model
trained on all of it. The report, read from the stream, must declare popularity worse with p < 0.01 and
the better model better, without a sample-ratio mismatch; the simulation's own truth must agree."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.bundle import read_metadata
from recsys.cluster import start_cluster
from recsys.data.schema import Dataset
from recsys.data.synthetic import generate_world

pytestmark = pytest.mark.integration

SPEC = "synthetic:users=2500,items=1000,interactions=50000,categories=8,seed=11"
USERS, DAYS = 2000, 5
FILE = """\
layers:
  - name: models
    salt: layer-models
    experiments:
      - name: ranker
        salt: exp-ranker
        status: running
        buckets: [0, 10000]
        coverage: 1
        arms:
          - {{name: control, weight: 1, control: true, model_version: {stale}}}
          - {{name: popularity, weight: 1, model_version: {popularity}}}
          - {{name: better, weight: 1, model_version: {better}}}
"""


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    from recsys.training.trainer import train
    from tests.conftest import small_train_config

    ds = generate_world(n_users=2500, n_items=1000, n_interactions=50_000, n_categories=8, seed=11).dataset
    it = ds.interactions
    stale = Dataset(it[it["timestamp"] < it["timestamp"].quantile(0.08)], ds.items, ds.users, name="stale")
    popularity = small_train_config()
    popularity.ranker = dataclasses.replace(popularity.ranker, objective="popularity")
    root = tmp_path_factory.mktemp("simulation-bundles")
    out = {"better": root / "better", "popularity": root / "popularity", "stale": root / "stale"}
    train(ds, out["better"], small_train_config(), dataset_spec=SPEC, show_progress=False)
    train(ds, out["popularity"], popularity, dataset_spec=SPEC, show_progress=False)
    train(stale, out["stale"], small_train_config(), dataset_spec=SPEC, show_progress=False)
    return out


@pytest.fixture(scope="module")
def simulated(bundles, tmp_path_factory):
    work = tmp_path_factory.mktemp("simulation")
    experiments = work / "experiments.yaml"
    experiments.write_text(FILE.format(**{k: read_metadata(b).version for k, b in bundles.items()}))
    stream = f"file://{work / 'events'}"
    with start_cluster(list(bundles.values()), port=0, log_dir=work / "logs", stream=stream,
                       extra={"ranker_svc": ["--experiments", str(experiments)]}) as cluster:
        proc = subprocess.run(
            [sys.executable, "-m", "recsys.cli", "simulate", "--target", cluster.target, "--dataset", SPEC,
             "--users", str(USERS), "--days", str(DAYS), "--experiment", "ranker", "--stream", stream,
             "--file", str(experiments), "--json", str(work / "simulation.json"), "--report", str(work / "report"),
             "--report-json", str(work / "report.json")],
            capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return (json.loads((work / "report.json").read_text()), json.loads((work / "simulation.json").read_text()),
            work / "report", proc.stdout)


def test_the_popularity_arm_is_declared_worse_with_p_below_0_01(simulated) -> None:
    report, _, _, out = simulated
    c = report["comparisons"]["popularity"]["clicks_per_unit"]
    assert report["decisions"]["popularity"] is True and c["diff"] < 0 and c["p_value"] < 0.01, c
    assert "popularity is worse than control" in " ".join(out.split())


def test_the_better_model_is_declared_better(simulated) -> None:
    report, _, _, out = simulated
    c = report["comparisons"]["better"]["clicks_per_unit"]
    assert report["decisions"]["better"] is True and c["diff"] > 0, c
    assert "better is better than control" in " ".join(out.split())


def test_the_assignment_held_and_the_truth_agrees(simulated) -> None:
    report, sim, _, _ = simulated
    assert not report["srm"]["mismatch"]
    assert sim["errors"] == 0 and sim["requests"] > 2 * USERS
    units = {a["arm"]: a["units"] for a in report["arms"]}
    assert sum(units.values()) == USERS  # every simulated user entered the experiment, each in one arm
    truth = {k.split("=")[1]: v["expected_clicks_per_request"] for k, v in sim["arms"].items()}
    assert truth["popularity"] < truth["control"] < truth["better"]
    assert {k.split("=")[1]: v["units"] for k, v in sim["arms"].items()} == units


def test_the_report_has_its_plots(simulated) -> None:
    _, _, report_dir, _ = simulated
    assert (report_dir / "lift.png").stat().st_size > 0 and (report_dir / "sizes.png").stat().st_size > 0
    assert "ranker" in (report_dir / "report.md").read_text()
