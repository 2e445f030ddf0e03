"""What the WebSocket's doors share: the parts they are built from, and handing an Event to the
dispatcher on the pool (the handlers block on the database) with the outcome counted in /metrics."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor

from bot.context import Services
from bot.dispatch import Dispatcher, Event, Result
from bot.mattermost.gateway import Gateway
from bot.metrics import Metrics


class PostedDoor:
    """A `posted` event handler; subclasses decide which posts are theirs and where the answer goes."""

    def __init__(self, services: Services, dispatcher: Dispatcher, gateway: Gateway, pool: Executor,
                 metrics: Metrics | None = None) -> None:
        self.services = services
        self.dispatcher = dispatcher
        self.gateway = gateway
        self.pool = pool
        self.metrics = metrics

    async def dispatch(self, event: Event, started: float) -> Result:
        result: Result = await asyncio.get_running_loop().run_in_executor(
            self.pool, self.dispatcher.handle, self.services, event)
        if self.metrics is not None:
            self.metrics.observe(result.command, result.outcome, time.perf_counter() - started)
        return result
