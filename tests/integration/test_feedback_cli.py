"""`recsys send` and `recsys cache warm` against the real services."""

from __future__ import annotations

import json

import pytest

from recsys.cli import main
from recsys.client import RecommenderClient

from .feedback_helpers import user_state, wait_for

pytestmark = pytest.mark.integration


def test_send_jsonl_and_csv(cluster, tmp_path, capsys):
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text("\n".join(json.dumps(e) for e in [
        {"event_id": "cli-1", "timestamp": 1_764_700_000, "interaction": {"user_id": "cli-user", "item_id": "i1",
                                                                           "type": "click"}},
        {"event_id": "cli-2", "item": {"item_id": "cli-item", "title": "From the CLI", "categories": ["Drama"]}},
        {"event_id": "cli-3", "user": {"user_id": "cli-user", "attributes": {"country": "DE"}}},
    ]) + "\n")
    assert main(["send", str(jsonl), "--target", cluster.target, "--quiet"]) == 0
    assert "3 accepted, 0 duplicates, 0 rejected" in capsys.readouterr().out
    csv = tmp_path / "events.csv"
    csv.write_text("event_id,timestamp,user_id,item_id,type,value,request_id\n"
                   "cli-4,1764700100,cli-user,i2,rating,4,\n"
                   "cli-1,1764700000,cli-user,i1,click,,\n"
                   "cli-5,,cli-user,i3,teleport,,\n")
    assert main(["send", str(csv), "--target", cluster.target, "--quiet"]) == 1  # one rejected line
    out = capsys.readouterr().out
    assert "1 accepted, 1 duplicates, 1 rejected" in out and f"{csv}:4:" in out.replace("\n", "")
    wait_for(lambda: user_state(cluster, "cli-user")[0].history[-2:] == ["i1", "i2"], 5, "the events applied")
    assert user_state(cluster, "cli-user")[0].attributes == {"country": "DE"}


def test_send_names_the_file_and_line_of_bad_input(cluster, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"event_id": "x", "interaction": {"user_id": "u", "item_id": "i", "type": "click"}}\n'
                   '{"event_id": "y", "interaction": {"user_id": "u", "nope": 1}}\n')
    assert main(["send", str(bad), "--target", cluster.target, "--quiet"]) == 2
    assert f"{bad}:2:" in capsys.readouterr().out.replace("\n", "")


def test_cache_warm_precomputes_lists(cluster, small_dataset, tmp_path):
    users = [str(u) for u in small_dataset.interactions["user_id"].value_counts().index[30:36]]
    path = tmp_path / "users.txt"
    path.write_text("\n".join(users) + "\n")
    assert main(["cache", "warm", "--users", str(path), "--target", cluster.target]) == 0
    with RecommenderClient(cluster.target) as client:
        assert all(client.recommend(u, 10).cached for u in users)
