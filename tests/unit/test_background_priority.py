"""Background processes take only the CPU the serving processes leave."""

from __future__ import annotations

import multiprocessing
import os

from recsys.child_process import background_priority


def _report(conn) -> None:
    got = background_priority()
    conn.send((got, os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)))


def test_a_background_process_runs_at_idle_priority_or_nice_19() -> None:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_report, args=(child,))
    proc.start()
    assert parent.poll(30)
    got, policy, nice = parent.recv()
    proc.join(10)
    assert got in ("idle", "nice", "normal")
    if got == "idle":
        assert policy == os.SCHED_IDLE
    elif got == "nice":
        assert nice == 19
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the caller itself is untouched
