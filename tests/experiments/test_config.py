"""The experiments file: a valid file parses into layers, experiments and arms; every invalid one is
refused with the file, the line and the key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from recsys.experiments.config import ConfigError, load_config, parse_config

VALID = """\
holdout: {salt: holdout-1, share: 0.05}
layers:
  - name: home
    salt: layer-home
    experiments:
      - name: ranker-v2
        salt: exp-ranker-v2
        status: running
        start: 2026-12-01T00:00:00Z
        end: 2027-01-01T00:00:00Z
        buckets: [0, 5000]
        coverage: 0.1
        targeting: {surface: [home], device: [ios, android], users: known, attributes: {country: [DE, AT]}}
        arms:
          - {name: control, weight: 1, control: true, model_version: v1}
          - {name: treatment, weight: 1, model_version: v2, diversity_lambda: 0.7, cache: false}
      - name: lambda
        salt: exp-lambda
        status: draft
        buckets: [5000, 10000]
        coverage: 1
        unit: session_id
        arms:
          - {name: a, weight: 1, control: true, model_version: v1}
          - {name: b, weight: 3, model_version: v1, n_candidates: 500, source_quotas: {als: 200}}
  - name: search
    salt: layer-search
"""


def test_a_valid_file_parses() -> None:
    cfg = parse_config(VALID)
    assert cfg.holdout is not None and cfg.holdout.share == 0.05
    assert [layer.name for layer in cfg.layers] == ["home", "search"]
    first, second = cfg.layers[0].experiments
    assert first.buckets == (0, 5000) and first.coverage == 0.1 and first.status == "running"
    assert first.start == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert first.targeting.device == ("ios", "android") and first.targeting.users == "known"
    assert first.targeting.attributes == {"country": ("DE", "AT")}
    assert first.arms[1].overrides == {"diversity_lambda": 0.7, "cache": False}
    assert second.unit == "session_id" and second.coverage == 1.0
    assert second.arms[1].overrides == {"n_candidates": 500, "source_quotas": {"als": 200.0}}
    assert cfg.versions() == {"v1", "v2"}
    assert parse_config("").layers == ()


@pytest.mark.parametrize(("old", "new", "line", "key", "reason"), [
    ("status: running", "status: live", 8, "layers[0].experiments[0].status", "must be one of"),
    ("coverage: 0.1", "coverage: 1.5", 12, "layers[0].experiments[0].coverage", "must be in [0, 1]"),
    ("buckets: [5000, 10000]", "buckets: [4000, 10000]", 6, "layers[0].experiments", "overlap"),
    ("{name: control, weight: 1, control: true, model_version: v1}\n          - {name: treatment",
     "{name: control, weight: 1, model_version: v1}\n          - {name: treatment", 15,
     "layers[0].experiments[0].arms", "exactly one arm must be the control"),
    ("diversity_lambda: 0.7", "diversity_lambda: 7", 16, "layers[0].experiments[0].arms[1].diversity_lambda",
     "must be in [0, 1]"),
    ("users: known", "users: everyone", 13, "layers[0].experiments[0].targeting.users", "must be one of"),
    ("salt: layer-search", "salt: layer-home", 27, "layers[1].salt", "another layer's salt"),
    ("end: 2027-01-01T00:00:00Z", "end: 2026-11-01T00:00:00Z", 10, "layers[0].experiments[0].end", "after start"),
    ("coverage: 0.1", "coverage: 0.1\n        colour: blue", 13, "layers[0].experiments[0].colour", "unknown key"),
    ("weight: 3", "weight: lots", 25, "layers[0].experiments[1].arms[1].weight", "must be a float"),
    ("name: lambda", "name: ranker-v2", 17, "layers[0].experiments[1].name", "declared twice"),
])
def test_an_invalid_file_names_the_file_line_and_key(old: str, new: str, line: int, key: str, reason: str) -> None:
    assert old in VALID
    with pytest.raises(ConfigError) as err:
        parse_config(VALID.replace(old, new, 1), "experiments.yaml")
    assert (err.value.file, err.value.line, err.value.key) == ("experiments.yaml", line, key), str(err.value)
    assert reason in err.value.reason
    assert str(err.value).startswith(f"experiments.yaml:{line}: {key}: ")


def test_broken_yaml_and_a_missing_file_are_errors_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML") as err:
        parse_config("layers: [\n  {name: x", "x.yaml")
    assert err.value.line is not None
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_a_running_arm_must_name_a_live_version(tmp_path: Path) -> None:
    path = tmp_path / "experiments.yaml"
    path.write_text(VALID)
    assert load_config(path, live_versions={"v1", "v2"}).versions() == {"v1", "v2"}
    with pytest.raises(ConfigError, match="'v2' is not live") as err:
        load_config(path, live_versions={"v1"})
    assert err.value.line == 16 and err.value.key == "ranker-v2.treatment.model_version"
