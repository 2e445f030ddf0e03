"""Connecting the bot to Mattermost: log in (retrying while it is down), then, once per bot, register
the slash command and listen on the WebSocket for direct messages and mentions."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor

from bot.context import Services
from bot.dispatch import Dispatcher
from bot.duties import Duties
from bot.mattermost.direct import DirectMessages
from bot.mattermost.gateway import GatewayError
from bot.mattermost.mentions import Mentions
from bot.mattermost.websocket import each
from bot.metrics import Metrics

log = logging.getLogger("bot.app")
COMMAND_TOKEN_SETTING = "mattermost.command_token"  # noqa: S105 (a settings key; the token is stored there)


async def connect_mattermost(services: Services, dispatcher: Dispatcher, pool: Executor, metrics: Metrics, *,
                             worker: int) -> None:
    """Log in (retrying while Mattermost is down; slash commands are served meanwhile), register /rec,
    then listen for direct messages and mentions: the last two once per bot, on the host holding the
duties lease (bot.duties)."""
    gateway = services.gateway
    assert gateway is not None  # started only when one is configured
    delay = 2.0
    while True:
        me = await gateway.start()
        if me.user_id and me.team_id:
            break
        for problem in me.problems:
            log.warning("mattermost: %s (retrying in %.0f s)", problem, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 120.0)
    for problem in me.problems:
        log.warning("mattermost: %s", problem)
    log.info("connected to Mattermost as @%s", me.username)
    if worker != 0:
        return  # the once-per-bot work is for one serving process per host, and then one host
    duties = Duties(services.storage, services.holder, clock=services.clock)

    async def gained() -> None:
        await register(services, pool)
        doors = [door(services, dispatcher, gateway, pool, metrics) for door in (DirectMessages, Mentions)]
        gateway.listen(each(*doors))

    await duties.keep(gained, gateway.stop_listening)


async def register(services: Services, pool: Executor) -> None:
    """Create or update /rec in the team, and store its token so every host accepts it."""
    gateway = services.gateway
    assert gateway is not None
    if not services.config.mattermost.register_command:
        return
    try:
        what, token = await gateway.register_command()
        await asyncio.get_running_loop().run_in_executor(pool, services.storage.store_internal,
                                                         COMMAND_TOKEN_SETTING, token)
        log.info("/%s command %s", services.config.mattermost.trigger, what)
    except GatewayError as exc:
        log.warning("mattermost: %s; serving with mattermost.slash_tokens only", exc)
