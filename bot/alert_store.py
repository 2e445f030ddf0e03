"""Alert state, samples, the outbox and the per-host lease, in the database.

A check's results (samples, new states, messages to post) are written in one transaction that also
proves the lease is still ours (its fencing counter unchanged), so a poster that lost the lease while
it was sampling cannot post twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from bot.alert_rules import AlertMessage, PathState, Sample
from bot.storage import Storage
from bot.tables import alert_state, lease, outbox, sample

SAMPLE_KEEP = timedelta(hours=25)


def _naive(moment: datetime | None) -> datetime | None:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment is not None else None


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None else None


@dataclass(frozen=True)
class Outgoing:
    """One queued alert post."""

    id: int
    path: str
    kind: str
    level: str
    message: str
    chart: bytes | None
    attempts: int


class LeaseLost(Exception):
    """Another process holds the lease now; this one must not post."""


class AlertStore:
    def __init__(self, storage: Storage, host: str) -> None:
        self.storage = storage
        self.host = host
        self.lease_name = f"alerts:{host}"

    # ---- the lease ----------------------------------------------------------------------------

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

    def release(self, holder: str) -> None:
        """Give the lease up at a clean stop, so a survivor takes over at once."""
        with self.storage.transaction() as conn:
            conn.execute(update(lease).where(lease.c.name == self.lease_name, lease.c.holder == holder)
                         .values(expires_at=datetime(1970, 1, 1)))

    def holder(self) -> tuple[str, datetime] | None:
        with self.storage.connection() as conn:
            row = conn.execute(select(lease.c.holder, lease.c.expires_at)
                               .where(lease.c.name == self.lease_name)).first()
        return (row.holder, _aware(row.expires_at)) if row else None  # type: ignore[return-value]

    # ---- state and samples ---------------------------------------------------------------------

    def states(self) -> dict[tuple[str, str], PathState]:
        with self.storage.connection() as conn:
            rows = conn.execute(select(alert_state).where(alert_state.c.host == self.host)).all()
        return {(r.path, r.kind): PathState(r.level, r.posted_level, _aware(r.last_post_at), bool(r.acknowledged),
                                            _aware(r.snoozed_until)) for r in rows}

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
            out[r.path].append((_aware(r.at), r.used_percent))  # type: ignore[arg-type]
        return out

    def commit_check(self, holder: str, fencing: int, samples: Sequence[Sample],
                     states: dict[tuple[str, str], PathState], messages: Sequence[tuple[AlertMessage, bytes | None]],
                     now: datetime) -> None:
        """Store one check's samples, states and queued posts, only if the lease is still ours."""
        now_n = _naive(now)
        with self.storage.transaction() as conn:
            held = conn.execute(select(lease.c.fencing).where(
                lease.c.name == self.lease_name, lease.c.holder == holder, lease.c.fencing == fencing)
                .with_for_update()).first()
            if held is None:
                raise LeaseLost(f"the alert lease for {self.host} moved to another process")
            readable = [s for s in samples if s.readable]
            if readable:
                conn.execute(insert(sample), [
                    {"host": self.host, "path": s.path, "at": _naive(s.at), "used_percent": s.used_percent,
                     "total_bytes": s.total_bytes, "used_bytes": s.used_bytes, "free_bytes": s.free_bytes,
                     "inodes_total": s.inodes_total, "inodes_used": s.inodes_used} for s in readable])
            for (path, kind), st in states.items():
                values = {"level": st.level, "posted_level": st.posted_level, "last_post_at": _naive(st.last_post_at),
                          "acknowledged": st.acknowledged, "snoozed_until": _naive(st.snoozed_until),
                          "updated_at": now_n}
                done = conn.execute(update(alert_state).where(
                    alert_state.c.host == self.host, alert_state.c.path == path, alert_state.c.kind == kind)
                    .values(**values))
                if done.rowcount == 0:
                    conn.execute(insert(alert_state).values(host=self.host, path=path, kind=kind, **values))
            for message, chart in messages:
                conn.execute(insert(outbox).values(
                    host=self.host, path=message.path, kind=message.kind, level=message.level, message=message.text,
                    chart=chart, created_at=now_n, attempts=0, next_attempt_at=now_n))
            conn.execute(delete(sample).where(sample.c.host == self.host, sample.c.at < _naive(now - SAMPLE_KEEP)))

    def update_state(self, path: str, kind: str, change: object, now: datetime) -> PathState | None:
        """Apply `change(state) -> state` (acknowledge, snooze) to one stored state; None if unknown."""
        with self.storage.transaction() as conn:
            row = conn.execute(select(alert_state).where(
                alert_state.c.host == self.host, alert_state.c.path == path, alert_state.c.kind == kind)
                .with_for_update()).first()
            if row is None:
                return None
            old = PathState(row.level, row.posted_level, _aware(row.last_post_at), bool(row.acknowledged),
                            _aware(row.snoozed_until))
            new = change(old)  # type: ignore[operator]
            conn.execute(update(alert_state).where(
                alert_state.c.host == self.host, alert_state.c.path == path, alert_state.c.kind == kind)
                .values(acknowledged=new.acknowledged, snoozed_until=_naive(new.snoozed_until), updated_at=_naive(now)))
            return new

    # ---- the outbox ----------------------------------------------------------------------------

    def next_due(self, now: datetime) -> Outgoing | None:
        """The oldest unsent post, if it is due; posts go out strictly in order."""
        with self.storage.connection() as conn:
            row = conn.execute(select(outbox).where(outbox.c.host == self.host, outbox.c.sent_at.is_(None))
                               .order_by(outbox.c.id).limit(1)).first()
        if row is None or row.next_attempt_at > _naive(now):
            return None
        return Outgoing(row.id, row.path, row.kind, row.level, row.message, row.chart, row.attempts)

    def mark_sent(self, item_id: int, post_id: str, now: datetime) -> None:
        with self.storage.transaction() as conn:
            conn.execute(update(outbox).where(outbox.c.id == item_id)
                         .values(sent_at=_naive(now), post_id=post_id, chart=None))

    def mark_failed(self, item_id: int, error: str, retry_at: datetime) -> None:
        with self.storage.transaction() as conn:
            conn.execute(update(outbox).where(outbox.c.id == item_id)
                         .values(attempts=outbox.c.attempts + 1, next_attempt_at=_naive(retry_at),
                                 last_error=error[:2000]))

    def sent(self) -> list[tuple[str, str, str]]:
        """(path, level, message) of every post that went out, in order (for tests and status)."""
        with self.storage.connection() as conn:
            rows = conn.execute(select(outbox.c.path, outbox.c.level, outbox.c.message)
                                .where(and_(outbox.c.host == self.host, outbox.c.sent_at.is_not(None)))
                                .order_by(outbox.c.id)).all()
        return [(r.path, r.level, r.message) for r in rows]

    def pending_count(self) -> int:
        with self.storage.connection() as conn:
            return len(conn.execute(select(outbox.c.id).where(outbox.c.host == self.host,
                                                              outbox.c.sent_at.is_(None))).all())
