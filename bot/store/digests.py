"""Personal digest subscriptions (one per user), and queueing a digest with its mark in one transaction.

A digest covers the records created after the subscription's `sent_until` mark and up to the moment it
was due. Queueing it into the outbox and moving the mark happen in one transaction: the mark moves only
from the value the digest was computed from (so a process that computed the same digest a moment later
changes nothing), and the outbox row's dedup key (user and day) refuses a second copy outright.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from bot.store.db import Db
from bot.store.models import User, user_from_row
from bot.store.retry import retried
from bot.tables import digest, outbox, user

PERIODS = ("daily", "weekly")


@dataclass(frozen=True)
class Subscription:
    user_id: int
    period: str  # daily | weekly
    tag: str | None
    owner_id: int | None
    owner: str | None  # the @user's name as recbot last knew it
    zone: str  # the subscriber's IANA zone as last seen
    sent_until: datetime  # naive UTC: records created up to here were covered
    created_at: datetime


@dataclass(frozen=True)
class QueuedDigest:
    """One digest to put in the outbox: where it goes, its text, what makes it one of a kind."""

    host: str  # the outbox partition the digest poster drains
    target_user: str  # the subscriber's Mattermost id
    message: str
    dedup_key: str


def _subscription(row: Any) -> Subscription:
    return Subscription(row.user_id, row.period, row.tag, row.owner_id, row.owner, row.zone, row.sent_until,
                        row.created_at)


class DigestsMixin(Db):
    def _digest_select(self) -> Any:
        owner = user.alias("digest_owner")
        return (select(digest, owner.c.username.label("owner"))
                .outerjoin(owner, owner.c.id == digest.c.owner_id))

    def digest_subscription(self, subscriber: User) -> Subscription | None:
        with self.connection() as conn:
            row = conn.execute(self._digest_select().where(digest.c.user_id == subscriber.id)).first()
        return _subscription(row) if row else None

    @retried
    def subscribe_digest(self, subscriber: User, period: str, tag: str | None, owner_id: int | None,
                         zone: str) -> Subscription:
        """Subscribe, replacing any earlier subscription. A replaced one keeps its mark, so no record
        falls between the old digest and the new; a new one starts from now."""
        if period not in PERIODS:
            raise ValueError(f"period must be one of {PERIODS}")
        now = self.clock()
        values = {"period": period, "tag": tag, "owner_id": owner_id, "zone": zone[:64], "updated_at": now}
        with self.transaction() as conn:
            done = conn.execute(update(digest).where(digest.c.user_id == subscriber.id).values(**values))
            if done.rowcount == 0:
                try:
                    with conn.begin_nested():
                        conn.execute(insert(digest).values(user_id=subscriber.id, sent_until=now, created_at=now,
                                                           **values))
                except IntegrityError:  # the same user subscribed in another request a moment ago
                    conn.execute(update(digest).where(digest.c.user_id == subscriber.id).values(**values))
        found = self.digest_subscription(subscriber)
        assert found is not None
        return found

    @retried
    def unsubscribe_digest(self, subscriber: User) -> bool:
        """Remove the subscription; False when there was none."""
        with self.transaction() as conn:
            return bool(conn.execute(delete(digest).where(digest.c.user_id == subscriber.id)).rowcount)

    def digest_subscribers(self) -> list[tuple[Subscription, User]]:
        """Every subscription with its subscriber, whose row (role, locale, timezone) is as fresh as
        their last use of recbot."""
        with self.connection() as conn:
            subs = [_subscription(r) for r in conn.execute(self._digest_select().order_by(digest.c.user_id))]
            ids = [s.user_id for s in subs]
            people = {r.id: user_from_row(r) for r in conn.execute(select(user).where(user.c.id.in_(ids)))} \
                if ids else {}
        return [(s, people[s.user_id]) for s in subs if s.user_id in people]

    @retried
    def refresh_digest_zone(self, user_id: int, zone: str) -> None:
        with self.transaction() as conn:
            conn.execute(update(digest).where(digest.c.user_id == user_id).values(zone=zone[:64]))

    @retried
    def queue_digest(self, sub: Subscription, until: datetime, queued: QueuedDigest | None) -> bool:
        """Move the mark from `sub.sent_until` to `until` and, with `queued`, put the digest in the
        outbox, all or nothing. False when another process (or an unsubscribe) got there first."""
        now = self.clock()
        try:
            with self.transaction() as conn:
                moved = conn.execute(update(digest).where(
                    digest.c.user_id == sub.user_id, digest.c.sent_until == sub.sent_until)
                    .values(sent_until=until)).rowcount
                if moved != 1:
                    return False
                if queued is not None:
                    conn.execute(insert(outbox).values(
                        host=queued.host, path="", kind="digest", level="ok", message=queued.message, chart=None,
                        created_at=now, attempts=0, next_attempt_at=now, episode=0, post_key=secrets.token_hex(13),
                        target_user=queued.target_user, dedup_key=queued.dedup_key))
        except IntegrityError:
            # That digest is in the outbox already (queued before the mark could move): move it now.
            with self.transaction() as conn:
                conn.execute(update(digest).where(digest.c.user_id == sub.user_id,
                                                  digest.c.sent_until == sub.sent_until).values(sent_until=until))
            return False
        return True
