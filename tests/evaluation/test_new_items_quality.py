"""The new-item evaluation end to end on a small synthetic set: hold items out, train, add them, measure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from recsys.evaluation.new_items import category_popularity, hold_out_items, main, random_vectors, with_new_items
from recsys.training.stage1 import Vocab, build_feature_tables

SPEC = "synthetic:users=400,items=600,interactions=20000,categories=8,seed=3"


def test_held_out_items_are_gone_from_training_and_come_back_as_upserts(small_dataset):
    train_ds, items, truth = hold_out_items(small_dataset, 0.1, seed=42)
    held = {it.item_id for it in items}
    n_items = small_dataset.interactions["item_id"].nunique()
    assert len(held) == round(0.1 * n_items)
    assert not held & set(train_ds.interactions["item_id"]) and not held & set(train_ds.items["item_id"])
    assert all(it.title and it.categories for it in items)  # real titles and categories
    assert {x for rel in truth.values() for x in rel} == held
    assert hold_out_items(small_dataset, 0.1, seed=42)[1] == items  # seeded

    tables = build_feature_tables(train_ds, Vocab.of(train_ds), train_ds.weights())
    grown = with_new_items(tables, items)
    assert grown.n_items == tables.n_items + len(items) and grown.item_titles[-1] == items[-1].title
    row = grown.item_values[-1]
    assert row[grown.item_feature_names.index("item_n_users")] == 0
    assert np.isnan(row[grown.item_feature_names.index("item_first_ts")])


def test_random_placement_keeps_the_trained_norm_distribution():
    factors = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    vec = random_vectors(factors, 1000, seed=1)
    norms = np.linalg.norm(factors, axis=1)
    assert vec.shape == (1000, 4) and np.isin(np.linalg.norm(vec, axis=1).round(4), norms.round(4)).all()


def test_category_popularity_prefers_the_users_popular_categories(small_dataset):
    train_ds, items, _ = hold_out_items(small_dataset, 0.1, seed=42)
    cats = {str(r.item_id): list(r.categories) for r in train_ds.items.itertuples()}
    cat = items[0].categories[0]
    history = [x for x, c in cats.items() if c == [cat]][:5]
    top = category_popularity(train_ds, {"u": history}, cats, items, k=5)["u"]
    assert all(cat in next(it.categories for it in items if it.item_id == x) for x in top)


def test_the_entry_point_prints_the_table(tmp_path: Path, capsys):
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump({"als": {"factors": 16, "iterations": 8}, "ranker": {"num_boost_round": 60},
                                      "n_candidates": 100, "max_ranker_users": 400}))
    out = tmp_path / "summary.json"
    assert main(["--data", SPEC, "--config", str(config), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "content_map" in printed and "category_popularity" in printed and "timings" in printed
    s = json.loads(out.read_text())
    rows = s["placements"]
    assert set(rows) == {"content_map", "category_centroids", "random", "category_popularity"}
    assert 55 <= s["held_out_items"] <= 60 and s["test_users"] > 100 and 0 < s["content_map"]["heldout_r2"] <= 1
    for name in ("content_map", "category_centroids", "random"):
        r = rows[name]
        assert all(0.0 <= r[c] <= 1.0 for c in r if c.startswith("recall") or c.startswith("candidate"))
        assert r["fallback_users"] == 0
    # The learned placement reaches more of the right users' candidate lists than random vectors.
    assert rows["content_map"]["candidate_recall@100"] > rows["random"]["candidate_recall@100"] + 0.05
    assert rows["category_popularity"]["recall@50_served"] is None
