"""`make fuzz`: every parser target under atheris (coverage-guided libFuzzer) for a bounded time each.

    python fuzz/run.py [--seconds 60] [--targets canonical,experiments] [--dir .fuzz]

Each target runs in its own process (fuzz/harness.py) from a corpus in DIR/corpus/NAME, seeded with valid
inputs on the first run and kept between runs. A crash (a parser failing with something other than its
clear error) is saved as DIR/artifacts/NAME-crash-*, and the run exits non-zero after the others ran.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fuzz.targets import SEPARATOR, TARGETS  # noqa: E402

HARNESS = Path(__file__).with_name("harness.py")
_EXPERIMENTS = b"""layers:
  - name: home
    salt: l
    experiments:
      - name: e
        salt: s
        status: running
        start: 2026-01-01T00:00:00Z
        buckets: [0, 5000]
        coverage: 0.5
        targeting: {surface: [home], users: known}
        arms:
          - {name: control, weight: 1, control: true, model_version: v1}
          - {name: t, weight: 1, model_version: v2, diversity_lambda: 0.7, cache: false}
shadow:
  - {name: dark, model_version: v2, share: 0.1}
holdout: {salt: h, share: 0.05}
"""
SEEDS: dict[str, list[bytes]] = {
    "canonical": [SEPARATOR.join([
        b"user_id,item_id,timestamp,event,rating\nu1,i1,1700000000,view,\nu1,i2,2024-01-01T00:00:00Z,rating,4.5\n",
        b"item_id,title,categories,year\ni1,A,Drama|Comedy,1999\ni2,B,,\n",
        b"user_id,age\nu1,25-34\n"])],
    "movielens_100k": [SEPARATOR.join([b"1\t1\t5\t874965758\n2\t1\t3\t876893171\n", b"unknown|0\nAction|1\n",
                                       b"1|Toy Story (1995)|01-Jan-1995||http://x|0|1\n",
                                       b"1|24|M|technician|85711\n2|53|F|other|94043\n"])],
    "movielens_latest": [SEPARATOR.join([b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n",
                                         b'movieId,title,genres\n1,"Toy Story (1995)",Adventure|Animation\n'])],
    "dataset_spec": [b"synthetic:users=10,items=20,seed=1", b"movielens-100k:ml", b"movielens:x", b"data"],
    "experiments": [_EXPERIMENTS],
    "service_settings": [b"max_k: 100\nranker_svc:\n  port: 50051\n  cache: none\nfeature_svc:\n  max_batch: 10\n"],
    "training_config": [b"als: {factors: 16, iterations: 4}\nranker: {num_boost_round: 10}\nsources: [als, i2i]\n",
                        json.dumps({"ease_reg": 100.0, "source_quotas": {"als": 0.5}}).encode()],
    "send_input": [b'{"eventId": "e1", "timestamp": 1700000000, "interaction": {"userId": "u", "itemId": "i", '
                   b'"type": "click"}}\n'
                   b'{"eventId": "e2", "item": {"itemId": "n", "title": "T", "categories": ["a"]}}\n',
                   b"event_id,timestamp,user_id,item_id,type,value,request_id\ne1,1700000000,u1,i1,rating,4,r1\n"],
}


def run_target(name: str, seconds: int, root: Path) -> dict:
    corpus = root / "corpus" / name
    artifacts = root / "artifacts"
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for i, seed in enumerate(SEEDS.get(name, [])):
            (corpus / f"seed-{i}").write_bytes(seed)
    cmd = [sys.executable, str(HARNESS), name, f"-max_total_time={seconds}", "-timeout=20", "-rss_limit_mb=3072",
           "-max_len=4096", f"-artifact_prefix={artifacts / name}-", str(corpus)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=seconds + 120)
    runs = re.findall(r"Done (\d+) runs", proc.stderr) or re.findall(r"#(\d+)\s", proc.stderr)
    return {"target": name, "ok": proc.returncode == 0, "runs": int(runs[-1]) if runs else 0,
            "seconds": round(time.monotonic() - t0, 1), "corpus": sum(1 for _ in corpus.iterdir()),
            "log": proc.stderr[-3000:] if proc.returncode else ""}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=60, help="fuzzing time per target")
    p.add_argument("--targets", default=",".join(TARGETS), help="comma-separated target names")
    p.add_argument("--dir", default=".fuzz", help="corpus and artifacts directory")
    args = p.parse_args(argv)
    names = [n for n in args.targets.split(",") if n]
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        p.error(f"unknown target(s) {', '.join(unknown)} (valid: {', '.join(TARGETS)})")
    if importlib.util.find_spec("atheris") is None:
        print(f"error: atheris is not installed in {sys.executable}; `make fuzz` installs it "
              "(or: pip install -e '.[fuzz]')", file=sys.stderr)
        return 2
    results = []
    for name in names:
        r = run_target(name, args.seconds, Path(args.dir))
        results.append(r)
        print(f"{name:18s} {'ok   ' if r['ok'] else 'CRASH'} {r['runs']:>9,} runs in {r['seconds']:5.1f} s, "
              f"corpus {r['corpus']}", flush=True)
        if not r["ok"]:
            print(r["log"], flush=True)
    total = sum(r["runs"] for r in results)
    print(f"{total:,} inputs over {len(results)} targets; {sum(not r['ok'] for r in results)} crashed")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
