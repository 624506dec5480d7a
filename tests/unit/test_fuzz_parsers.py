"""Every file and string parser against arbitrary input (issue 11, item 6): hypothesis drives the targets of
fuzz/targets.py (the same ones `make fuzz` runs under atheris) with raw bytes and with structured input
built from the tokens each format uses, so the cases reach deep into the parsers. Every case must parse or
fail with the parser's own error naming the file (line, column) or the field.

Example counts: RECSYS_FUZZ_EXAMPLES (default 40 per test, two strategies each).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from fuzz.targets import SEPARATOR, TARGETS  # noqa: E402

EXAMPLES = int(os.environ.get("RECSYS_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("RECSYS_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# -- delimited files: headers and cells from the tokens the loaders know, plus junk ----------------------------
COLUMNS = ["user_id", "item_id", "timestamp", "event", "rating", "value", "title", "categories", "age", "genres",
           "userId", "movieId", "x", "", " user_id", "user_id"]
CELLS = st.one_of(
    st.sampled_from(["u1", "i1", "1", "0", "-1", "5", "4.5", "1e309", "nan", "inf", "-inf", "", " ", "view", "rating",
                     "click", "2024-01-01T00:00:00Z", "2024-13-45", "1700000000", "99999999999999", "a|b|", "|",
                     '"', '""', '"a,b"', "\t", "\r", "é", "\x00", "0x10", "1_000", "01/01/2024", "(no genres listed)"]),
    st.text(max_size=8))
SEPARATORS = st.sampled_from([",", "\t", "|", ";"])


@st.composite
def delimited(draw, headers: tuple[str, ...] = (), sep: str = ",") -> bytes:
    """A header (mostly one the format expects) and rows of cells (mostly of the header's width), mostly
    separated by `sep`."""
    sep = sep if draw(st.integers(0, 4)) else draw(st.sampled_from([",", "\t", "|", ";"]))
    if headers and draw(st.integers(0, 4)):
        header = draw(st.sampled_from(headers)).split(",")
    else:
        header = [draw(st.sampled_from(COLUMNS)) for _ in range(draw(st.integers(1, 6)))]
    rows = [sep.join(header)] if draw(st.integers(0, 6)) else []
    for _ in range(draw(st.integers(0, 8))):
        n = len(header) if draw(st.integers(0, 6)) else draw(st.integers(0, len(header) + 2))
        rows.append(sep.join(draw(CELLS) for _ in range(n)))
    newline = draw(st.sampled_from(["\n", "\n", "\r\n", "\n\n"]))
    text = newline.join(rows) + draw(st.sampled_from(["", "\n"]))
    return text.encode(draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "latin-1"])), "replace")


def dataset_files(*headers: tuple[str, ...], seps: tuple[str, ...] = ()):
    """One file per header set (the later ones sometimes missing), joined by the targets' separator."""
    files = [delimited(h, seps[i] if seps else ",") for i, h in enumerate(headers)]
    return st.integers(1, len(files)).flatmap(lambda n: st.tuples(*files[:n])).map(SEPARATOR.join)


INTERACTIONS = ("user_id,item_id,timestamp", "user_id,item_id,timestamp,event", "user_id,item_id,timestamp,rating",
                "user_id,item_id,timestamp,event,value", "item_id,user_id,timestamp,event,rating,value")
ITEMS = ("item_id,title,categories", "item_id,title,categories,year,price", "item_id")
USERS = ("user_id,age,gender", "user_id")
ML_RATINGS = ("userId,movieId,rating,timestamp",)
ML_MOVIES = ("movieId,title,genres",)
SEND_CSV = ("event_id,timestamp,user_id,item_id,type,value,request_id", "event_id,user_id,item_id,type")


# -- YAML / JSON documents: the option names of each format, values of every type -------------------------------
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=10), st.sampled_from(["v1", "v2", "control", "running", "draft", "home",
                                                           "2026-01-01T00:00:00Z", "1e400", "user_id", "known"]))


def documents(keys: list[str]):
    key = st.one_of(st.sampled_from(keys), st.text(max_size=6))
    return st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(key, inner, max_size=5)), max_leaves=25)


EXPERIMENT_KEYS = ["holdout", "salt", "share", "shadow", "name", "model_version", "layers", "experiments", "status",
                   "start", "end", "buckets", "coverage", "unit", "targeting", "surface", "device", "users",
                   "attributes", "arms", "weight", "control", "diversity_lambda", "n_candidates", "cache",
                   "source_quotas", "reranker", "calibration_lambda", "category_cap", "longtail_beta"]
SETTING_KEYS = ["ranker_svc", "feature_svc", "candidate_svc", "port", "host", "max_k", "bundle", "cache",
                "max_in_flight", "max_message_bytes", "diversity_lambda", "exposures", "plaintext", "tls_peers"]
TRAIN_KEYS = ["als", "ranker", "factors", "iterations", "regularization", "ease_reg", "sources", "source_quotas",
              "neighbors", "blend_grid", "blend_features", "objective", "num_leaves", "label_fraction", "seed"]


@st.composite
def mutated(draw, base: dict) -> object:
    """A valid document with a few of its values replaced by arbitrary ones, or keys removed or added."""
    doc = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(0, 3))):
        node = doc
        while isinstance(node, dict | list) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
            if not isinstance(node[key], dict | list):
                break
            node = node[key]
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node)))
            choice = draw(st.integers(0, 2))
            if choice == 0:
                del node[key]
            else:
                node[key if choice == 1 else draw(st.text(max_size=6))] = draw(SCALARS)
        elif isinstance(node, list) and node:
            node[draw(st.integers(0, len(node) - 1))] = draw(SCALARS)
    return doc


EXPERIMENTS_BASE = {
    "holdout": {"salt": "h", "share": 0.05},
    "shadow": [{"name": "dark", "model_version": "v2", "share": 0.1}],
    "layers": [{"name": "home", "salt": "l", "experiments": [{
        "name": "e", "salt": "s", "status": "running", "buckets": [0, 5000],
        "coverage": 0.5, "unit": "user_id", "targeting": {"surface": ["home"], "users": "known"},
        "arms": [{"name": "control", "weight": 1, "control": True, "model_version": "v1"},
                 {"name": "t", "weight": 1, "model_version": "v2", "diversity_lambda": 0.7, "cache": False}]}]}]}
SETTINGS_BASE = {"max_k": 100, "host": "127.0.0.1", "ranker_svc": {"port": 50051, "cache": "none",
                                                                   "max_in_flight": 8, "exposures": False},
                 "feature_svc": {"max_batch": 100}}
TRAIN_BASE = {"als": {"factors": 16, "iterations": 4}, "ranker": {"num_boost_round": 10, "blend_grid": [0.0, 0.5]},
              "sources": ["als", "i2i", "popular"], "source_quotas": {"als": 0.5}, "ease_reg": 100.0, "seed": 1}


def yaml_text(keys: list[str], base: dict):
    def dump(doc) -> bytes:
        try:
            return yaml.safe_dump(doc, allow_unicode=True).encode()
        except (yaml.YAMLError, ValueError):
            return b"{"
    docs = st.one_of(documents(keys), mutated(base), mutated(base))
    return st.one_of(docs.map(dump), docs.map(lambda d: json.dumps(d).encode()))


RAW = st.binary(max_size=300)
JSONL_EVENTS = st.lists(st.one_of(
    st.fixed_dictionaries({"eventId": st.text(max_size=5), "interaction": st.fixed_dictionaries(
        {"userId": st.text(max_size=5), "itemId": st.text(max_size=5), "type": st.sampled_from(["click", "x"])})},
        optional={"timestamp": st.one_of(st.floats(allow_nan=True), st.integers(-10**30, 10**30),
                                         st.sampled_from(["2024-01-01T00:00:00Z", "soon", True]))}),
    documents(["eventId", "interaction", "item", "user", "timestamp", "userId", "itemId", "type", "value"])),
    max_size=5).map(lambda objs: "\n".join(json.dumps(o) for o in objs).encode())
STRUCTURED = {
    "canonical": dataset_files(INTERACTIONS, ITEMS, USERS),
    "movielens_100k": dataset_files(("user_id,item_id,rating,timestamp",), ("genre,index",), (",".join(
        ["item_id", "title", "release_date", "video", "url"] + ["0"] * 3),), ("user_id,age,gender,occupation,zip",),
        seps=("\t", "|", "|", "|")),
    "movielens_latest": dataset_files(ML_RATINGS, ML_MOVIES),
    "dataset_spec": st.one_of(st.sampled_from(["synthetic", "synthetic:", "movielens:", "movielens-100k:x", "nope"]),
                              st.builds(lambda k, v: f"synthetic:{k}={v}", st.sampled_from(
                                  ["users", "items", "seed", "x", ""]), CELLS)).map(str.encode),
    "experiments": yaml_text(EXPERIMENT_KEYS, EXPERIMENTS_BASE),
    "service_settings": yaml_text(SETTING_KEYS, SETTINGS_BASE),
    "training_config": yaml_text(TRAIN_KEYS, TRAIN_BASE),
    "send_input": st.one_of(JSONL_EVENTS, delimited(SEND_CSV)),
}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_any_bytes(name):
    FUZZ(given(RAW)(TARGETS[name]))()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_structured_input(name):
    FUZZ(given(STRUCTURED[name])(TARGETS[name]))()


# What fuzzing found (each was a traceback of an internal exception before its fix).
FINDINGS = [
    ("experiments", b"\x80"),                                      # UnicodeDecodeError from read_text
    ("experiments", b"holdout: {salt: h, share: 2026-01-81}"),     # ValueError: day is out of range for month
    ("service_settings", b"\x80"),                                 # UnicodeDecodeError
    ("service_settings", b"ranker_svc: [1]"),                      # ValueError: dictionary update sequence
    ("service_settings", b"1: 2\nx: 3"),                           # TypeError sorting int and str keys
    ("send_input", b"\x80"),                                       # UnicodeDecodeError while iterating the file
    ("send_input", b"event_id,user_id,item_id,type\ne1,u1"),       # TypeError: None cells of a short row
    ("send_input", b'{"eventId": "e", "timestamp": 1e400}'),       # OverflowError: int(inf)
    ("dataset_spec", b"\xff" * 300),                               # OSError: file name too long
    ("dataset_spec", b"movielens:" + b"x" * 300),                  # OSError from is_dir()
    ("training_config", b"als: 5"),                                # TypeError: ALSParams(**5)
]


@pytest.mark.parametrize(("name", "data"), FINDINGS)
def test_what_fuzzing_found(name, data):
    TARGETS[name](data)


def test_wrong_types_are_refused_where_they_are_written(tmp_path):
    """Accepted before, they failed much later (inside training) or were silently stringified."""
    from ranker_svc.settings import RankerSettings
    from recsys.rpc.config import load_settings
    from recsys.training.config import TrainConfig, TrainConfigError

    path = tmp_path / "train.yaml"
    path.write_text("ease_reg: abc\n")
    with pytest.raises(TrainConfigError, match=r"train.yaml: ease_reg must be a finite number, got 'abc'"):
        TrainConfig.from_file(path)
    conf = tmp_path / "recsys.yaml"
    conf.write_text("host: [a, b]\n")
    with pytest.raises(SystemExit):
        load_settings(RankerSettings, ["--config", str(conf)], "ranker_svc")
