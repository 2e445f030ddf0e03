"""Posting queued alerts exactly once, in order, through a notifier that says what a failure means.

Exactly once: every queued post has a key. An attempt is counted in the database before it is made;
the post carries the key as Mattermost's `pending_post_id` (the server answers a repeat within 30 s
with the post it already made) and as a prop. An attempt after one whose outcome was not seen (an
error, a lost answer, a kill) first looks for the key in the channel. Only the lease holder posts,
one drain at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from bot.alerts.model import PROBLEM_LEVELS
from bot.alerts.store import AlertStore, LeaseLost, Outgoing

log = logging.getLogger("bot.alerts")

MAX_BACKOFF = timedelta(minutes=10)
LOOK_BACK = timedelta(minutes=10)  # how far before an item's queueing its post is looked for (clock skew)


class Notifier(Protocol):
    """Where alerts go (the Mattermost gateway)."""

    async def alert_channel_id(self) -> str: ...
    async def direct_channel(self, user_id: str) -> str: ...
    async def upload(self, channel_id: str, filename: str, data: bytes) -> str: ...
    async def post_once(self, channel_id: str, message: str, *, key: str, props: dict | None = None,
                        file_ids: list[str] | None = None) -> dict: ...
    async def find_post(self, channel_id: str, key: str, since: datetime) -> dict | None: ...
    def refused_for_good(self, exc: BaseException) -> bool: ...


def one_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def backoff(attempts: int) -> timedelta:
    return min(timedelta(seconds=5 * 2 ** min(attempts, 10)), MAX_BACKOFF)


class Delivery:
    def __init__(self, store: AlertStore, notifier: Notifier | None, holder: str, clock: Callable[[], datetime],
                 buttons: Callable[[Outgoing, datetime], dict[str, Any]], count: Callable[[str], None],
                 channel_id: str = "") -> None:
        self.store = store
        self.notifier = notifier
        self.holder = holder
        self.clock = clock
        self.buttons = buttons
        self.count = count
        self.channel_id = channel_id
        self._lock = asyncio.Lock()

    async def channel(self) -> str:
        if not self.channel_id and self.notifier is not None:
            # The channel may be created, or the bot connected, after start-up: look again.
            self.channel_id = await self.notifier.alert_channel_id()
        return self.channel_id

    async def drain(self, fencing: int) -> tuple[int, bool]:
        """Post due messages oldest first: (how many went out, whether the lease is still ours).

        A failure that may pass stops the round (order is kept); a permanent refusal sets that post
        aside and the round goes on."""
        if self.notifier is None:
            return 0, True
        async with self._lock:
            return await self._drain(fencing)

    async def _drain(self, fencing: int) -> tuple[int, bool]:
        loop = asyncio.get_running_loop()
        sent = 0
        while True:
            now = self.clock()
            item = await loop.run_in_executor(None, self.store.next_due, now)
            if item is None or (item.target_user is None and not await self.channel()):
                return sent, True
            try:
                if not await loop.run_in_executor(None, self.store.begin_attempt, item.id, self.holder, fencing,
                                                  now + backoff(item.attempts)):
                    continue
            except LeaseLost as exc:
                log.warning("alerts: %s; this process stops posting", exc)
                return sent, False
            try:
                post = await self.deliver(item, now)
            except Exception as exc:
                if not await self._failed(item, exc, now):
                    return sent, True
                continue
            await loop.run_in_executor(None, self.store.mark_sent, item.id, post["id"], now)
            log.info("alerts: posted %s %s %s (post %s)", item.level, item.path or "-", item.kind, post["id"])
            self.count("alert_posts_sent")
            sent += 1

    async def _failed(self, item: Outgoing, exc: BaseException, now: datetime) -> bool:
        """Record a failed attempt; True when the round may go on (the post was set aside)."""
        loop = asyncio.get_running_loop()
        reason = one_line(exc)
        assert self.notifier is not None
        if self.notifier.refused_for_good(exc):
            log.error("alerts: Mattermost refused the %s post for %s for good, set aside: %s",
                      item.level, item.path or item.kind, reason)
            self.count("alert_posts_set_aside")
            await loop.run_in_executor(None, self.store.set_aside, item.id, reason, now)
            return True
        log.warning("alerts: posting failed (attempt %d, next in %s): %s", item.attempts + 1,
                    backoff(item.attempts), reason)
        self.count("alert_posts_failed")
        await loop.run_in_executor(None, self.store.mark_failed, item.id, reason, now + backoff(item.attempts))
        return False

    async def deliver(self, item: Outgoing, now: datetime) -> dict:
        """One attempt at one post; returns Mattermost's post, found or made."""
        notifier = self.notifier
        assert notifier is not None
        # A post for one user (a digest) goes to their direct channel; Mattermost makes it on first use.
        channel_id = await notifier.direct_channel(item.target_user) if item.target_user else self.channel_id
        if item.attempts > 0:  # an earlier attempt may have made the post without our seeing it
            found = await notifier.find_post(channel_id, item.key, item.created_at - LOOK_BACK)
            if found is not None:
                return found
        file_ids: list[str] = []
        if item.chart:
            file_id = item.file_id
            if not file_id:
                try:
                    file_id = await notifier.upload(channel_id, "disk.png", item.chart)
                    await asyncio.get_running_loop().run_in_executor(None, self.store.remember_file, item.id, file_id)
                except Exception as exc:
                    if not notifier.refused_for_good(exc):
                        raise
                    log.warning("alerts: the chart was refused, posting without it: %s", one_line(exc))
            file_ids = [file_id] if file_id else []
        props = self.buttons(item, now) if item.level in PROBLEM_LEVELS and item.kind != "health" else {}
        return await notifier.post_once(channel_id, item.message, key=item.key, props=props, file_ids=file_ids)
