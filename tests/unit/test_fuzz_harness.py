"""`make fuzz` runs: atheris drives a parser target for a few seconds and reports how many inputs it ran.
Skipped where the optional `fuzz` extra (atheris) is not installed, as in CI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")
RUN = Path(__file__).resolve().parents[2] / "fuzz" / "run.py"


def test_a_short_fuzz_run_executes_inputs_and_finds_no_crash(tmp_path):
    proc = subprocess.run([sys.executable, str(RUN), "--seconds", "3", "--targets", "dataset_spec,send_input",
                           "--dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = [int(n.replace(",", "")) for n in re.findall(r"ok\s+([\d,]+) runs", proc.stdout)]
    assert len(runs) == 2 and all(n > 0 for n in runs), proc.stdout


def test_an_unknown_target_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, str(RUN), "--targets", "nope", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown target(s) nope" in proc.stderr
