"""The `recsys` command end to end: errors name the file and line; recommend prints a table."""

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
