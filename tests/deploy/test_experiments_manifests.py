"""The experiments file as deployed: the kustomize ConfigMap and the Helm default are valid files, and
the ranker is configured to read the path the ConfigMap is mounted at."""

from __future__ import annotations

from pathlib import Path

import yaml

from recsys.experiments.config import load_config, parse_config

K8S = Path(__file__).resolve().parents[2] / "k8s"
MOUNTED = "/etc/recsys/experiments/experiments.yaml"


def test_the_base_configmap_file_is_valid_and_read_by_the_ranker() -> None:
    assert load_config(K8S / "base/config/experiments.yaml").layers == ()
    ranker = yaml.safe_load((K8S / "base/config/recsys.yaml").read_text())["ranker_svc"]
    assert ranker["experiments"] == MOUNTED
    deployment = (K8S / "base/ranker/deployment.yaml").read_text()
    assert "mountPath: /etc/recsys/experiments" in deployment


def test_the_helm_default_is_a_valid_file_and_read_by_the_ranker() -> None:
    values = yaml.safe_load((K8S / "helm/recsys/values.yaml").read_text())
    assert parse_config(yaml.safe_dump(values["experiments"])).layers == ()
    assert values["config"]["ranker_svc"]["experiments"] == MOUNTED
