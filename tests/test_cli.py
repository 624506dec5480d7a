"""The `recsys` command end to end: errors name the file and line; recommend prints a table; models history
prints every trained version and writes a plot."""

import shutil
import subprocess
import sys


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recsys.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_train_on_malformed_dataset_names_file_and_line(tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    (d / "interactions.csv").write_text("user_id,item_id,timestamp\nu1,i1,1700000000\nu2,i2,yesterday-ish\n")
    r = run("train", "--dataset", str(d), "--out", str(tmp_path / "b"))
    assert r.returncode == 2
    out = r.stdout + r.stderr
    assert "interactions.csv:3" in out and "timestamp" in out
    assert "Traceback" not in out


def test_train_on_unknown_synthetic_option(tmp_path):
    r = run("train", "--dataset", "synthetic:userz=5", "--out", str(tmp_path / "b"))
    assert r.returncode == 2 and "userz" in r.stdout + r.stderr


def test_recommend_prints_table(cluster, small_dataset):
    user = str(small_dataset.interactions["user_id"].iloc[0])
    r = run("recommend", "--user", user, "--k", "5", "--target", cluster.target, "--explain")
    assert r.returncode == 0, r.stderr
    assert "top 5 for user" in r.stdout and "categories" in r.stdout


def test_recommend_bad_k_reports_invalid_argument(cluster):
    r = run("recommend", "--user", "x", "--k", "0", "--target", cluster.target)
    assert r.returncode == 1 and "INVALID_ARGUMENT" in r.stdout and "k must be" in r.stdout


def test_models_history_prints_the_table_and_writes_the_plot(tmp_path):
    """Two versions trained into a registry by `recsys train --registry`, promoted, one pruned: the history
    keeps both, with the champion marked, and the plot is a PNG."""
    registry, config = tmp_path / "models", tmp_path / "small.yaml"
    config.write_text("als: {factors: 16, iterations: 8}\nranker: {num_boost_round: 60}\n"
                      "n_candidates: 100\nmax_ranker_users: 400\n")
    for seed in (1, 2):
        r = run("train", "--dataset", f"synthetic:users=200,items=300,interactions=8000,seed={seed}",
                "--registry", str(registry), "--config", str(config))
        assert r.returncode == 0, r.stdout + r.stderr
    first, second = sorted(p.name for p in registry.iterdir() if p.is_dir())
    for version in (first, second):
        r = run("models", "promote", version, "--registry", str(registry), "--force")
        assert r.returncode == 0 and "PROMOTED" in r.stdout, r.stdout + r.stderr
    shutil.rmtree(registry / first)  # pruned: its metrics stay in the history
    plot = tmp_path / "history.png"
    r = run("models", "history", "--registry", str(registry), "--plot", str(plot))
    assert r.returncode == 0, r.stdout + r.stderr
    assert first in r.stdout and second in r.stdout and "ndcg@10" in r.stdout
    assert "champion" in r.stdout and "bundle gone" in r.stdout
    assert "2 versions, 2 changes of champion" in r.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    r = run("models", "history", "--registry", str(registry), "--metric", "valid_nope", "--plot", "")
    assert r.returncode == 2 and "valid_nope" in r.stdout
    (registry / "history.jsonl").open("a").write("{oops\n")
    r = run("models", "history", "--registry", str(registry))
    assert r.returncode == 2 and "history.jsonl:5" in r.stdout and "Traceback" not in r.stdout + r.stderr
