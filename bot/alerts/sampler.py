"""Reading watched paths: space as psutil computes it, inodes from statvfs, each read with a timeout.

The alert loop and `/rec admin status` read through the same Sampler, so a dead network mount costs
either of them at most the timeout, and never more than one stuck thread per path.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime

import psutil

from bot.alerts.model import Sample

SAMPLE_TIMEOUT = 10.0


def read_disk(path: str, at: datetime) -> Sample:
    """Space as psutil computes it, inodes from statvfs (0 inodes: nothing to watch)."""
    usage = psutil.disk_usage(path)
    st = os.statvfs(path)
    return Sample(path=path, at=at, used_percent=usage.percent, total_bytes=usage.total, used_bytes=usage.used,
                  free_bytes=usage.free, inodes_total=st.f_files, inodes_used=st.f_files - st.f_ffree)


class Sampler:
    """Reads paths in worker threads; a hung path times out without holding up the others.

    A path whose last read is still stuck (a dead network mount) is not read again until that read
    returns, so hung threads cannot pile up.
    """

    def __init__(self, read: Callable[[str, datetime], Sample] = read_disk, timeout: float = SAMPLE_TIMEOUT) -> None:
        self.read = read
        self.timeout = timeout
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="disk")
        self._stuck: dict[str, Future[Sample]] = {}
        self._lock = threading.Lock()

    def sample_blocking(self, paths: tuple[str, ...], at: datetime) -> list[Sample]:
        """Every path's reading, or why it could not be read, within one timeout for them all."""
        started: list[tuple[str, Future[Sample] | Sample]] = []
        with self._lock:
            for path in paths:
                previous = self._stuck.get(path)
                if previous is not None and not previous.done():
                    started.append((path, Sample.unreadable(
                        path, at, "still not answering since an earlier read (hung mount?)")))
                    continue
                self._stuck.pop(path, None)
                started.append((path, self.pool.submit(self.read, path, at)))
        deadline = time.monotonic() + self.timeout
        out: list[Sample] = []
        for path, pending in started:
            if isinstance(pending, Sample):
                out.append(pending)
                continue
            try:
                out.append(pending.result(timeout=max(0.0, deadline - time.monotonic())))
            except FutureTimeout:
                with self._lock:
                    self._stuck[path] = pending
                out.append(Sample.unreadable(path, at, f"timed out after {self.timeout:g} s"))
            except OSError as exc:
                out.append(Sample.unreadable(path, at, exc.strerror or str(exc)))
            except Exception as exc:  # whatever a read raises, the path is unreadable, the others are not
                out.append(Sample.unreadable(path, at, f"{type(exc).__name__}: {exc}"))
        return out

    async def sample(self, paths: tuple[str, ...], at: datetime) -> list[Sample]:
        return await asyncio.get_running_loop().run_in_executor(None, self.sample_blocking, paths, at)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
