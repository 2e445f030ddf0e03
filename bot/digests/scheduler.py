"""APScheduler 3 in the bot's event loop: the digest round every minute, in the serving process that
does the once-per-bot work (the lease decides which of the bot's hosts posts)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.context import Services
from bot.digests.service import INTERVAL_SECONDS, Digests

log = logging.getLogger("bot.digests")


class DigestScheduler:
    def __init__(self, digests: Digests) -> None:
        self.digests = digests
        self.scheduler = AsyncIOScheduler(timezone=UTC)

    async def start(self) -> None:
        try:
            # A restart is a moment the cause of a refusal may have gone (the user reactivated).
            await asyncio.get_running_loop().run_in_executor(
                None, self.digests.store.requeue_set_aside, self.digests.clock())
        except Exception as exc:
            log.warning("digests: could not re-queue set-aside digests: %s", exc)
        self.scheduler.add_job(self._run, "interval", seconds=INTERVAL_SECONDS, id="digests",
                               next_run_time=datetime.now(UTC), misfire_grace_time=INTERVAL_SECONDS,
                               coalesce=True, max_instances=1)
        self.scheduler.start()

    async def _run(self) -> None:
        try:
            await self.digests.run()
        except Exception:
            log.exception("digests: the round failed; it runs again in a minute")

    async def stop(self) -> None:
        self.scheduler.shutdown(wait=False)
        try:
            await self.digests.stop()
        except Exception as exc:
            log.warning("digests: could not give the lease up: %s", exc)


def run_with(app: web.Application, services: Services, worker: int) -> None:
    """With Mattermost configured, the serving process that does the once-per-bot work (worker 0)
    runs the digest rounds from the app's start to its stop (the stop gives the lease up)."""
    if services.gateway is None or worker != 0:
        return
    scheduler = DigestScheduler(services.digests or Digests(services.storage, services.config, services.gateway,
                                                          holder=services.holder))

    async def start(_app: web.Application) -> None:
        await scheduler.start()

    async def stop(_app: web.Application) -> None:
        await scheduler.stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
