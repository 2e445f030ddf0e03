"""The serving processes: `server.workers` copies of the server share one port.

The kernel spreads connections over them (SO_REUSEPORT), so a busy bot uses every core instead of
one GIL. Worker 0, the process that was started, also does what must happen once per bot: it
registers /rec, listens for direct messages and runs the alert poller. The others only answer HTTP.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import time

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def fork(count: int) -> tuple[int, list[int]]:
    """Start count - 1 copies of this process. Returns (this process's worker index, the pids of the
    copies, known only to worker 0). Call it before any thread, event loop or database connection
    exists: a fork copies none of those safely."""
    sys.stdout.flush()
    sys.stderr.flush()
    children: list[int] = []
    for index in range(1, count):
        pid = os.fork()
        if pid == 0:
            _exit_with_parent()
            return index, []
        children.append(pid)
    return 0, children


def _exit_with_parent() -> None:
    # A copy whose first process was killed outright (SIGKILL, OOM) must not keep the port.
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the first process was gone before prctl took effect
        os._exit(0)


def exited(children: list[int]) -> list[tuple[int, int]]:
    """(pid, exit status) of the copies that have ended since the last call; they are reaped."""
    gone: list[tuple[int, int]] = []
    for pid in list(children):
        with contextlib.suppress(ChildProcessError):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == 0:
                continue
            gone.append((pid, os.waitstatus_to_exitcode(status)))
        children.remove(pid)
    return gone


def stop(children: list[int], grace: float = 30.0) -> None:
    """SIGTERM every copy (each finishes its requests in flight), then SIGKILL what is left after `grace`."""
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while children and time.monotonic() < deadline:
        for pid, code in exited(children):
            if code != 0:
                log.warning("worker process %d stopped with status %d", pid, code)
        time.sleep(0.05)
    for pid in children:
        log.error("worker process %d did not stop within %.0f s; killing it", pid, grace)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    children.clear()
