"""Alert state, samples, the outbox and the per-host lease, in the database.

A check's results (samples, new states, messages to post) are written in one transaction that also
proves the lease is still ours (its fencing counter unchanged), so a poster that lost the lease while
it was sampling cannot post twice.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from bot.alerts.model import AlertMessage, PathState, Sample
from bot.storage import Storage
from bot.store.retry import retried
from bot.tables import alert_health, alert_state, lease, outbox, sample

SAMPLE_KEEP = timedelta(hours=25)


def _naive(moment: datetime | None) -> datetime | None:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment is not None else None


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None else None


def _utc(moment: datetime) -> datetime:
    """A stored (naive UTC) time that is never NULL, as an aware one."""
    return moment.replace(tzinfo=UTC)


def new_post_key() -> str:
    """26 characters, like a Mattermost id: the post's `pending_post_id` and its `recbot_key` prop."""
    return secrets.token_hex(13)


@dataclass(frozen=True)
class Outgoing:
    """One queued alert post. `key` stays the same across every attempt, so an attempt whose outcome
    was not seen can be recognised in the channel instead of being posted again."""

    id: int
    path: str
    kind: str
    level: str
    message: str
    chart: bytes | None
    attempts: int
    episode: int
    key: str
    file_id: str | None
    created_at: datetime
    last_error: str | None = None
    target_user: str | None = None  # a Mattermost user id: posted in their direct channel, not the alert channel


@dataclass(frozen=True)
class Health:
    """The last check of one host's alert loop."""

    last_check_at: datetime
    last_ok_at: datetime | None
    last_error: str | None
    failures: int  # failed checks in a row
    failing_posted: bool  # the "alerts are failing" message went out for this run of failures


def _state(r: Any) -> PathState:
    return PathState(r.level, r.posted_level, _aware(r.last_post_at), bool(r.acknowledged),
                     _aware(r.snoozed_until), int(r.episode))


def _outgoing(r: Any) -> Outgoing:
    # Rows queued before keys existed get one made of their id, the same on every attempt.
    return Outgoing(r.id, r.path, r.kind, r.level, r.message, r.chart, r.attempts, int(r.episode),
                    r.post_key or f"recbot-{r.id}", r.file_id, r.created_at.replace(tzinfo=UTC), r.last_error,
                    r.target_user)


class LeaseLost(Exception):
    """Another process holds the lease now; this one must not post."""


class AlertStore:
    def __init__(self, storage: Storage, host: str, lease_name: str = "") -> None:
        self.storage = storage
        self.host = host  # the outbox rows this store drains are this host's
        self.lease_name = lease_name or f"alerts:{host}"

    # ---- the lease ----------------------------------------------------------------------------

    @retried
    def acquire(self, holder: str, now: datetime, duration: timedelta) -> int | None:
        """Take or renew the lease; returns its fencing counter, or None while another holds it."""
        now_n, until = _naive(now), _naive(now + duration)
        with self.storage.transaction() as conn:
            row = conn.execute(select(lease).where(lease.c.name == self.lease_name).with_for_update()).first()
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(insert(lease).values(name=self.lease_name, holder=holder, expires_at=until,
                                                          fencing=1))
                    return 1
                except IntegrityError:
                    return None  # another process created it a moment ago
            if row.holder != holder and row.expires_at > now_n:
                return None
            fencing = row.fencing if row.holder == holder else row.fencing + 1
            conn.execute(update(lease).where(lease.c.name == self.lease_name, lease.c.fencing == row.fencing)
                         .values(holder=holder, expires_at=until, fencing=fencing))
            return fencing

    def _prove_lease(self, conn: Any, holder: str, fencing: int) -> None:
        """Lock the lease row and check it is still `holder`'s at `fencing`; else LeaseLost."""
        held = conn.execute(select(lease.c.fencing).where(
            lease.c.name == self.lease_name, lease.c.holder == holder, lease.c.fencing == fencing)
            .with_for_update()).first()
        if held is None:
            raise LeaseLost(f"the alert lease for {self.host} moved to another process")

    @retried
    def release(self, holder: str) -> None:
        """Give the lease up at a clean stop, so a survivor takes over at once."""
        with self.storage.transaction() as conn:
            conn.execute(update(lease).where(lease.c.name == self.lease_name, lease.c.holder == holder)
                         .values(expires_at=datetime(1970, 1, 1)))

    def holder(self) -> tuple[str, datetime] | None:
        with self.storage.connection() as conn:
            row = conn.execute(select(lease.c.holder, lease.c.expires_at)
                               .where(lease.c.name == self.lease_name)).first()
        return (row.holder, _utc(row.expires_at)) if row else None

    # ---- state and samples ---------------------------------------------------------------------

    def states(self) -> dict[tuple[str, str], PathState]:
        with self.storage.connection() as conn:
            rows = conn.execute(select(alert_state).where(alert_state.c.host == self.host)).all()
        return {(r.path, r.kind): _state(r) for r in rows}

    def history(self, paths: Iterable[str], since: datetime) -> dict[str, list[tuple[datetime, float]]]:
        out: dict[str, list[tuple[datetime, float]]] = {p: [] for p in paths}
        if not out:
            return out
        with self.storage.connection() as conn:
            rows = conn.execute(
                select(sample.c.path, sample.c.at, sample.c.used_percent)
                .where(sample.c.host == self.host, sample.c.path.in_(list(out)), sample.c.at >= _naive(since))
                .order_by(sample.c.path, sample.c.at)).all()
        for r in rows:
            out[r.path].append((_utc(r.at), r.used_percent))
        return out

    @retried
    def commit_check(self, holder: str, fencing: int, samples: Sequence[Sample],
                     states: dict[tuple[str, str], PathState],
                     messages: Sequence[tuple[AlertMessage, str, bytes | None]], now: datetime) -> None:
        """Store one check's samples, states and queued posts (each message with its text, written in the
        channel's language, and chart), only if the lease is still ours."""
        now_n = _naive(now)
        with self.storage.transaction() as conn:
            self._prove_lease(conn, holder, fencing)
            readable = [s for s in samples if s.readable]
            if readable:
                conn.execute(insert(sample), [
                    {"host": self.host, "path": s.path, "at": _naive(s.at), "used_percent": s.used_percent,
                     "total_bytes": s.total_bytes, "used_bytes": s.used_bytes, "free_bytes": s.free_bytes,
                     "inodes_total": s.inodes_total, "inodes_used": s.inodes_used} for s in readable])
            for (path, kind), st in states.items():
                values = {"level": st.level, "posted_level": st.posted_level, "last_post_at": _naive(st.last_post_at),
                          "acknowledged": st.acknowledged, "snoozed_until": _naive(st.snoozed_until),
                          "episode": st.episode, "updated_at": now_n}
                done = conn.execute(update(alert_state).where(
                    alert_state.c.host == self.host, alert_state.c.path == path, alert_state.c.kind == kind)
                    .values(**values))
                if done.rowcount == 0:
                    conn.execute(insert(alert_state).values(host=self.host, path=path, kind=kind, **values))
            for message, text, chart in messages:
                conn.execute(insert(outbox).values(
                    host=self.host, path=message.path, kind=message.kind, level=message.level, message=text,
                    chart=chart, created_at=now_n, attempts=0, next_attempt_at=now_n, episode=message.episode,
                    post_key=new_post_key()))
            conn.execute(delete(sample).where(sample.c.host == self.host, sample.c.at < _naive(now - SAMPLE_KEEP)))

    @retried
    def update_state(self, path: str, kind: str, change: Callable[[PathState], PathState],
                     now: datetime) -> PathState | None:
        """Apply `change(state) -> state` (acknowledge, snooze) to one stored state; None if unknown."""
        with self.storage.transaction() as conn:
            row = conn.execute(select(alert_state).where(
                alert_state.c.host == self.host, alert_state.c.path == path, alert_state.c.kind == kind)
                .with_for_update()).first()
            if row is None:
                return None
            old = _state(row)
            new = change(old)
            conn.execute(update(alert_state).where(
                alert_state.c.host == self.host, alert_state.c.path == path, alert_state.c.kind == kind)
                .values(acknowledged=new.acknowledged, snoozed_until=_naive(new.snoozed_until), updated_at=_naive(now)))
            return new

    # ---- the outbox ----------------------------------------------------------------------------

    def _unsent(self) -> Any:
        return (outbox.c.host == self.host) & outbox.c.sent_at.is_(None) & outbox.c.set_aside_at.is_(None)

    def next_due(self, now: datetime) -> Outgoing | None:
        """The oldest post neither sent nor set aside, if it is due: posts go out in order."""
        with self.storage.connection() as conn:
            row = conn.execute(select(outbox).where(self._unsent()).order_by(outbox.c.id).limit(1)).first()
        if row is None or row.next_attempt_at > _naive(now):
            return None
        return _outgoing(row)

    @retried
    def begin_attempt(self, item_id: int, holder: str, fencing: int, retry_at: datetime) -> bool:
        """Count an attempt before it is made, while the lease is provably ours.

        Should the process die during the attempt, the next one finds attempts > 0 and looks for the
        post in the channel first. False when the item was sent or set aside meanwhile.
        """
        with self.storage.transaction() as conn:
            self._prove_lease(conn, holder, fencing)
            done = conn.execute(update(outbox).where(outbox.c.id == item_id, self._unsent())
                                .values(attempts=outbox.c.attempts + 1, next_attempt_at=_naive(retry_at)))
            return done.rowcount == 1

    @retried
    def remember_file(self, item_id: int, file_id: str) -> None:
        """The chart uploaded for this post, so a retry attaches it instead of uploading it again."""
        with self.storage.transaction() as conn:
            conn.execute(update(outbox).where(outbox.c.id == item_id).values(file_id=file_id))

    @retried
    def mark_sent(self, item_id: int, post_id: str, now: datetime) -> None:
        with self.storage.transaction() as conn:
            conn.execute(update(outbox).where(outbox.c.id == item_id)
                         .values(sent_at=_naive(now), post_id=post_id, chart=None, last_error=None))

    @retried
    def mark_failed(self, item_id: int, error: str, retry_at: datetime) -> None:
        with self.storage.transaction() as conn:
            conn.execute(update(outbox).where(outbox.c.id == item_id)
                         .values(next_attempt_at=_naive(retry_at), last_error=error[:2000]))

    @retried
    def set_aside(self, item_id: int, error: str, now: datetime) -> None:
        """Mattermost refused this post for good: keep it, with why, out of the way of later posts."""
        with self.storage.transaction() as conn:
            conn.execute(update(outbox).where(outbox.c.id == item_id)
                         .values(set_aside_at=_naive(now), last_error=error[:2000]))

    def set_aside_items(self) -> list[Outgoing]:
        with self.storage.connection() as conn:
            rows = conn.execute(select(outbox).where(
                outbox.c.host == self.host, outbox.c.sent_at.is_(None), outbox.c.set_aside_at.is_not(None))
                .order_by(outbox.c.id)).all()
        return [_outgoing(r) for r in rows]

    @retried
    def requeue_set_aside(self, now: datetime) -> int:
        """Give every set-aside post another try (at start-up, and by `admin alerts retry`)."""
        with self.storage.transaction() as conn:
            done = conn.execute(update(outbox).where(
                outbox.c.host == self.host, outbox.c.sent_at.is_(None), outbox.c.set_aside_at.is_not(None))
                .values(set_aside_at=None, next_attempt_at=_naive(now)))
            return done.rowcount

    def pending_count(self) -> int:
        with self.storage.connection() as conn:
            return int(conn.execute(select(func.count()).select_from(outbox).where(self._unsent())).scalar() or 0)

    # ---- the loop's own health -----------------------------------------------------------------

    def health(self) -> Health | None:
        with self.storage.connection() as conn:
            r = conn.execute(select(alert_health).where(alert_health.c.host == self.host)).first()
        if r is None:
            return None
        return Health(_utc(r.last_check_at), _aware(r.last_ok_at), r.last_error,
                      r.failures, bool(r.failing_posted))

    @retried
    def save_health(self, health: Health) -> None:
        with self.storage.transaction() as conn:
            self._save_health(conn, health)

    @retried
    def record_ok(self, health: Health, notice: str | None) -> None:
        """A good check; with `notice`, queue it ("alerts work again") in the same transaction, so it
        is queued exactly once however often this is retried."""
        with self.storage.transaction() as conn:
            if notice is not None:
                at = _naive(health.last_check_at)
                conn.execute(insert(outbox).values(
                    host=self.host, path="", kind="health", level="ok", message=notice, chart=None, created_at=at,
                    attempts=0, next_attempt_at=at, episode=0, post_key=new_post_key()))
            self._save_health(conn, health)

    def _save_health(self, conn: Any, health: Health) -> None:
        values = {"last_check_at": _naive(health.last_check_at), "last_ok_at": _naive(health.last_ok_at),
                  "last_error": (health.last_error or "")[:2000] or None, "failures": health.failures,
                  "failing_posted": health.failing_posted}
        done = conn.execute(update(alert_health).where(alert_health.c.host == self.host).values(**values))
        if done.rowcount == 0:
            try:
                with conn.begin_nested():
                    conn.execute(insert(alert_health).values(host=self.host, **values))
            except IntegrityError:
                conn.execute(update(alert_health).where(alert_health.c.host == self.host).values(**values))
