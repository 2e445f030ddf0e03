"""APScheduler 3 in the bot's event loop: the disk check every interval and the outbox every few seconds."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.alerts.service import Alerts

log = logging.getLogger(__name__)
# Two INFO lines per job run say nothing an operator needs; the bot logs each alert and each failure.
logging.getLogger("apscheduler").setLevel(logging.WARNING)

OUTBOX_SECONDS = 5


class AlertScheduler:
    def __init__(self, alerts: Alerts) -> None:
        self.alerts = alerts
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.interval = 0.0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            # A restart is a moment the cause of a refusal may have gone (the bot re-added to the channel).
            again = await loop.run_in_executor(None, self.alerts.retry_set_aside)
            if again:
                log.info("alerts: %d set-aside post(s) will be tried again", again)
        except Exception as exc:
            log.warning("alerts: could not re-queue set-aside posts: %s", exc)
        values = await loop.run_in_executor(None, self.alerts.current)
        self.interval = values["alerts.interval_seconds"]
        # One run at a time; a run missed while the loop was busy is run once, late, not many times.
        common = {"coalesce": True, "max_instances": 1}
        self.scheduler.add_job(self._check, "interval", seconds=self.interval, id="alerts",
                               next_run_time=datetime.now(UTC), misfire_grace_time=int(self.interval), **common)
        self.scheduler.add_job(self._drain, "interval", seconds=OUTBOX_SECONDS, id="outbox",
                               misfire_grace_time=OUTBOX_SECONDS, **common)
        self.scheduler.start()

    async def _check(self) -> None:
        try:
            await self.alerts.check()
        except Exception:
            log.exception("alerts: the check failed; it runs again next interval")
        # A new interval set with /rec admin set takes effect from the next run.
        values = await asyncio.get_running_loop().run_in_executor(None, self.alerts.current)
        interval = values["alerts.interval_seconds"]
        if interval != self.interval:
            self.interval = interval
            self.scheduler.reschedule_job("alerts", trigger="interval", seconds=interval)
            log.info("alerts: interval is now %g s", interval)

    async def _drain(self) -> None:
        try:
            await self.alerts.drain()
        except Exception:
            log.exception("alerts: draining the outbox failed; it is tried again shortly")

    async def stop(self) -> None:
        self.scheduler.shutdown(wait=False)
        if self.alerts.fencing is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.alerts.store.release, self.alerts.holder)
        self.alerts.sampler.close()
