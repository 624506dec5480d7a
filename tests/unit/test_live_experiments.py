"""The ranker's experiments file follower: loads a valid file, keeps the old one on an invalid one, and
never loads a file caught mid-write (a change is read once it held still for one check)."""

from __future__ import annotations

import os
from pathlib import Path

from ranker_svc.experiments import LiveExperiments

FILE = """\
layers:
  - name: l
    salt: s
    experiments:
      - name: e
        salt: es
        status: running
        buckets: [0, 10000]
        coverage: {coverage}
        arms:
          - {{name: control, weight: 1, control: true, model_version: v1}}
          - {{name: b, weight: 1, model_version: {v2}}}
"""


def _touch(path: Path, text: str, tick: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(tick * 1_000_000_000, tick * 1_000_000_000))  # distinct stamps however fast we write


def test_a_changed_file_is_loaded_once_it_holds_still_and_an_invalid_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "experiments.yaml"
    _touch(path, FILE.format(coverage=1, v2="v2"), 1)
    live = LiveExperiments(str(path), lambda: {"v1", "v2"})
    assert not live.reload() and not live.config.layers  # the initial versions are not all loaded yet
    assert live.start() and live.config.experiments()[0].coverage == 1.0  # the first load is immediate
    _touch(path, "", 2)  # caught mid-write: an empty file
    assert not live.reload() and live.config.layers  # not read yet
    _touch(path, FILE.format(coverage=0.5, v2="v2"), 3)  # the write completed
    assert not live.reload()  # changed again: wait one more check
    assert live.reload() and live.config.experiments()[0].coverage == 0.5
    _touch(path, FILE.format(coverage=0.5, v2="gone"), 4)
    live.reload()
    assert not live.reload() and live.error and "'gone' is not live" in live.error
    assert live.config.experiments()[0].coverage == 0.5  # the previous file keeps serving


def test_new_live_versions_revalidate_at_once(tmp_path: Path) -> None:
    path = tmp_path / "experiments.yaml"
    _touch(path, FILE.format(coverage=1, v2="v2"), 1)
    versions = {"v1"}
    live = LiveExperiments(str(path), lambda: set(versions))
    assert not live.start() and not live.config.layers  # v2 is not live
    versions.add("v2")
    assert live.reload() and live.config.layers  # same file, new versions: no waiting
