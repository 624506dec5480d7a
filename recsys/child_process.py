"""Child processes that die with their parent, started with nothing but C code between fork and exec.

A `preexec_fn` runs Python in the forked child of a process whose gRPC threads may be inside their
event engine: when a rolling restart respawned a service from a process with live channels, the child
crashed in gRPC's epoll code (SIGSEGV, SIGBUS) before it could exec. So the parent only marks the
environment (`child_env`) and the child asks Linux for the signal itself, first thing (`die_with_parent`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

PARENT_ENV = "RECSYS_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child that must not outlive this process."""
    return dict(os.environ if env is None else env) | {PARENT_ENV: str(os.getpid())}


def die_with_parent() -> None:
    """In a child started with child_env: SIGTERM when the parent's starting thread exits; exit now if the
    parent is already gone (it died between the fork and this call). The mark is removed, so the child's
    own children do not inherit it."""
    parent = os.environ.pop(PARENT_ENV, "")
    if not parent or sys.platform != "linux":
        return
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):
        raise SystemExit(f"parent process {parent} is gone")


def background_priority() -> str:
    """Run this process only on CPU the others leave: SCHED_IDLE, else nice 19; returns which it got.

    Nice 19 is not enough on Linux's EEVDF scheduler: a waking request handler does not preempt a niced
    task at once, and on 2 cores a niced background process 5% busy raised Recommend's p99 by ~18%
    (a SCHED_IDLE one by ~10%: the rest is the VM's). A SCHED_IDLE task is preempted by any other on
    wakeup. A container may forbid either; the process works the same."""
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return "idle"
    with contextlib.suppress(OSError):
        os.nice(19)
        return "nice"
    return "normal"
