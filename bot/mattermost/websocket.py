"""The WebSocket listener: authenticate (the challenge's OK and `hello` come in either order), hand
each `posted` event on, and reconnect with backoff and jitter when the connection drops."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp

from bot.errors import UserError

if TYPE_CHECKING:
    from bot.mattermost.gateway import Gateway

log = logging.getLogger(__name__)


def websocket_url(base: str) -> str:
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/api/v4/websocket"


async def listen_forever(gateway: Gateway, on_post: Callable[[dict, dict], Awaitable[None]]) -> None:
    token = gateway.mm.bot_token
    delay = 1.0
    while True:
        try:
            async with aiohttp.ClientSession() as session, session.ws_connect(
                    websocket_url(gateway.mm.url), heartbeat=30,
                    headers={"Authorization": f"Bearer {token}"}) as ws:
                await ws.send_str(json.dumps({"seq": 1, "action": "authentication_challenge",
                                              "data": {"token": token}}))
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break
                    event = json.loads(message.data)
                    if event.get("seq_reply") == 1:
                        if event.get("status") != "OK":
                            raise UserError(f"WebSocket authentication refused: {event.get('error')}")
                        gateway.connected.set()
                        delay = 1.0
                    elif event.get("event") == "hello":
                        gateway.connected.set()
                        delay = 1.0
                    elif event.get("event") == "posted":
                        await _posted(gateway.me.user_id, event, on_post)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("Mattermost WebSocket: %s; reconnecting in %.0f s", exc, delay)
        gateway.connected.clear()
        await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))  # noqa: S311 (jitter, not crypto)
        delay = min(delay * 2, 60.0)


def each(*doors: Callable[[dict, dict], Awaitable[None]]) -> Callable[[dict, dict], Awaitable[None]]:
    """One `posted` handler made of several doors (direct messages, mentions): each sees every post and
    ignores what is not its own; one door's failure does not keep the post from the next."""
    async def on_post(post: dict, data: dict) -> None:
        for door in doors:
            try:
                await door(post, data)
            except Exception:
                log.exception("%s failed on a posted event", type(door).__name__)
    return on_post


async def _posted(own_id: str, event: dict, on_post: Callable[[dict, dict], Awaitable[None]]) -> None:
    data = event.get("data") or {}
    try:
        post = json.loads(data.get("post") or "{}")
    except json.JSONDecodeError:
        log.warning("a posted event carried a post that is not JSON; ignored")
        return
    if not post or post.get("user_id") == own_id:
        return  # the bot's own posts come back too
    try:
        await on_post(post, data)
    except Exception:
        log.exception("handling a posted event failed")
