"""The digest poster: under a lease, queue each subscriber's due digest, then post the queued ones.

Digests share the alert outbox and its exactly-once delivery (bot.alerts.delivery), in an outbox
partition of their own (DIGEST_HOST), so a digest that cannot go out never holds an alert up, and
under the once-per-bot lease (bot.duties): on the host that also listens for direct messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from bot.alerts.delivery import Delivery
from bot.alerts.store import AlertStore
from bot.config import Config, zone_or_none
from bot.digests.schedule import last_due
from bot.digests.text import SHOWN, digest_text, filter_words, rest_command
from bot.duties import LEASE as DUTY_LEASE
from bot.duties import LEASE_NAME as DUTY_LEASE_NAME
from bot.duties import new_holder
from bot.i18n import language_of, speaking
from bot.storage import Filter, Record, Storage, User
from bot.store.digests import QueuedDigest, Subscription

if TYPE_CHECKING:
    from bot.mattermost.gateway import Gateway

log = logging.getLogger("bot.digests")

DIGEST_HOST = "*digests"  # the outbox partition of digests: no host is called that
INTERVAL_SECONDS = 60
COUNT_UP_TO = 500  # new records counted for a digest's header; past it, "more than"
PAGE = 100


def now_utc() -> datetime:
    return datetime.now(UTC)


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


@dataclass
class Digests:
    storage: Storage
    config: Config
    gateway: Gateway | None = None
    holder: str = field(default_factory=new_holder)
    clock: Callable[[], datetime] = now_utc

    def __post_init__(self) -> None:
        self.store = AlertStore(self.storage, DIGEST_HOST, lease_name=DUTY_LEASE_NAME)
        self.fencing: int | None = None
        self.delivery = Delivery(self.store, self.gateway, self.holder, self.clock, _no_buttons, _not_counted)

    async def run(self) -> int:
        """One round: take or renew the lease; while it is ours, queue what is due and post what is
        queued. Returns how many digests this round queued."""
        loop = asyncio.get_running_loop()
        now = self.clock()
        self.fencing = await loop.run_in_executor(None, self.store.acquire, self.holder, now, DUTY_LEASE)
        if self.fencing is None:
            return 0
        queued = await loop.run_in_executor(None, self.queue_due, now)
        if self.gateway is None or not self.gateway.me.user_id:
            return queued  # not logged in to Mattermost yet: the queued digests wait for the next round
        _sent, kept = await self.delivery.drain(self.fencing)
        if not kept:
            self.fencing = None
        return queued

    def queue_due(self, now: datetime) -> int:
        """Queue every digest due by `now` that is not queued yet; one subscriber's failure is logged
        and tried again next round without stopping the others."""
        count = 0
        for sub, subscriber in self.storage.digest_subscribers():
            try:
                count += self._queue_one(sub, subscriber, now)
            except Exception:
                log.exception("digests: the digest of %s could not be made; tried again next round",
                              subscriber.username)
        return count

    def zone_of(self, subscriber: User, sub: Subscription) -> ZoneInfo:
        """As Context.zone: the Mattermost profile's zone as of the subscriber's last use of recbot,
        else the config's; the subscription's stored zone only when neither names one."""
        return (zone_or_none(subscriber.timezone or "") or zone_or_none(self.config.timezone)
                or zone_or_none(sub.zone) or ZoneInfo("UTC"))

    def _queue_one(self, sub: Subscription, subscriber: User, now: datetime) -> int:
        zone = self.zone_of(subscriber, sub)
        if zone.key != sub.zone:
            self.storage.refresh_digest_zone(sub.user_id, zone.key)
        due, day = last_due(now, zone, self.config.digests.hour, sub.period)
        until = _naive(due)
        if until <= sub.sent_until:
            return 0
        message = self._message(sub, subscriber, zone, until) if subscriber.role != "disabled" else None
        queued = None
        if message is not None:
            queued = QueuedDigest(DIGEST_HOST, subscriber.mm_user_id, message,
                                  f"digest:{sub.user_id}:{sub.period}:{day.isoformat()}")
        if not self.storage.queue_digest(sub, until, queued):
            return 0  # another process queued it (or the subscriber left) a moment ago
        if queued is not None:
            log.info("digests: queued the %s digest of %s for %s", sub.period, subscriber.username, day)
        return int(queued is not None)

    def _message(self, sub: Subscription, subscriber: User, zone: ZoneInfo, until: datetime) -> str | None:
        """The digest's text, or None when no new record matches."""
        start = sub.sent_until
        since_day = start.replace(tzinfo=UTC).astimezone(zone).date()
        flt = Filter(owner_id=sub.owner_id, tags=(sub.tag,) if sub.tag else (), since=since_day, zone=zone.key)
        records, total, complete = self._new_records(subscriber, flt, start, until)
        if not total:
            return None
        trigger = self.config.mattermost.trigger
        with speaking(language_of(subscriber.locale, self.config.language)):
            return digest_text(sub.period, records, total, complete, start, rest_command(
                trigger, sub.tag, sub.owner, since_day), filter_words(sub.tag, sub.owner), trigger, zone)

    def _new_records(self, viewer: User, flt: Filter, start: datetime,
                     until: datetime) -> tuple[list[Record], int, bool]:
        """The newest SHOWN of the viewer's visible matching records created in (start, until], how
        many there are, and whether that count is complete (it stops at COUNT_UP_TO)."""
        shown: list[Record] = []
        total = 0
        before = None
        while True:
            page = self.storage.find(viewer, flt, limit=PAGE, before=before)
            for record in page.records:
                if record.created_at <= start:
                    return shown, total, True
                if record.created_at > until:
                    continue  # made after the digest was due: the next digest has it
                total += 1
                if len(shown) < SHOWN:
                    shown.append(record)
                if total >= COUNT_UP_TO:
                    return shown, total, False
            if page.next_before is None:
                return shown, total, True
            before = page.next_before

    async def stop(self) -> None:
        """Give the lease up at a clean stop, so another process takes over at once."""
        if self.fencing is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.store.release, self.holder)
            self.fencing = None


def _no_buttons(item: Any, now: datetime) -> dict[str, Any]:
    return {}


def _not_counted(event: str) -> None:
    """Digest posts are not alert posts: the alert counters do not count them."""
