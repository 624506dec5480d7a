"""One meaning per name: every service setting comes from recsys/settings.py, and the README shows it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from candidate_svc.settings import CandidateSettings
from feature_svc.settings import FeatureSettings
from ranker_svc.settings import RankerSettings
from recsys.settings import CATALOG, markdown_table

SERVICES = {"feature_svc": FeatureSettings, "candidate_svc": CandidateSettings, "ranker_svc": RankerSettings}


def test_every_service_setting_is_defined_once_in_the_catalog():
    for service, cls in SERVICES.items():
        for f in dataclasses.fields(cls):
            assert f.name in CATALOG, f"{service}.{f.name} is not in recsys/settings.py"
            s = CATALOG[f.name]
            assert service in s.services, f"{f.name}: the catalog does not list {service}"
            assert f.metadata["help"] == s.help
            if f.name not in ("port", "metrics_port"):  # ports differ per service by design
                default = f.default_factory() if f.default is dataclasses.MISSING else f.default
                assert default == (s.factory() if s.factory else s.default), f"{service}.{f.name}"
    for name, s in CATALOG.items():
        for service in s.services:
            assert name in {f.name for f in dataclasses.fields(SERVICES[service])}, f"{service} lacks {name}"


def test_readme_configuration_table_is_the_catalog():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert markdown_table() in readme
