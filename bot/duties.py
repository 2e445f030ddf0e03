"""Which of the bot's hosts does the once-per-bot work: registering the slash command, listening on
the WebSocket for direct messages and mentions, and posting digests.

Every host's first serving process runs `Duties.keep`; one lease row decides. The holder renews it
every RENEW_SECONDS; when a holder dies, its lease runs out within LEASE and another host takes the
duties over. A holder that cannot reach the database stops its duties before its lease can have run
out anywhere, so two hosts never answer the same direct message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from bot.alerts.store import AlertStore
from bot.storage import Storage

log = logging.getLogger("bot.duties")

LEASE_NAME = "duties"
DUTY_HOST = "*duties"  # no outbox rows go here; the lease store wants a partition name
LEASE = timedelta(seconds=30)
RENEW_SECONDS = 10.0
MARGIN_SECONDS = 2.0  # stop this much before the lease could have run out in the database


def new_holder() -> str:
    """This process's name in lease rows: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def now_utc() -> datetime:
    return datetime.now(UTC)


class Duties:
    def __init__(self, storage: Storage, holder: str, *, lease: timedelta = LEASE,
                 renew_seconds: float = RENEW_SECONDS, clock: Callable[[], datetime] = now_utc) -> None:
        self.store = AlertStore(storage, DUTY_HOST, lease_name=LEASE_NAME)
        self.holder = holder
        self.lease = lease
        self.renew_seconds = renew_seconds
        self.clock = clock
        self.held = False
        self._until = 0.0  # time.monotonic() by which this process must have stopped its duties

    async def keep(self, gained: Callable[[], Awaitable[None]], lost: Callable[[], Awaitable[None]]) -> None:
        """Take or renew the lease forever; call `gained` when it becomes ours and `lost` when it stops
        being ours (another took it, or it could not be renewed in time). Cancel to stop: the duties
        stop and the lease is given up, so another host takes over at once."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._round(loop, gained, lost)
                # While held, the next round comes no later than the moment the duties must stop.
                left = self._until - time.monotonic() if self.held else self.renew_seconds
                await asyncio.sleep(max(0.0, min(self.renew_seconds, left)))
        finally:
            if self.held:
                self.held = False
                await lost()
                try:
                    await loop.run_in_executor(None, self.store.release, self.holder)
                except Exception as exc:
                    log.warning("duties: could not give the lease up (another host takes over when it runs out): %s",
                                exc)

    async def _round(self, loop: asyncio.AbstractEventLoop, gained: Callable[[], Awaitable[None]],
                     lost: Callable[[], Awaitable[None]]) -> None:
        started = time.monotonic()
        try:
            fencing = await loop.run_in_executor(None, self.store.acquire, self.holder, self.clock(), self.lease)
        except Exception as exc:
            log.warning("duties: the lease could not be renewed: %s", exc)
            if self.held and time.monotonic() >= self._until:
                self.held = False
                log.warning("duties: stopping the once-per-bot work until the database answers again")
                await lost()
            return
        if fencing is not None:
            self._until = started + self.lease.total_seconds() - MARGIN_SECONDS
            if not self.held:
                self.held = True
                log.info("duties: this process does the once-per-bot work (lease %d)", fencing)
                await gained()
        elif self.held:
            self.held = False
            log.warning("duties: another process holds the once-per-bot lease now; stopping here")
            await lost()
