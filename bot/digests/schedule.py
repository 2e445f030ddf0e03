"""When a digest is due: a fixed hour of the subscriber's own day, every day or on Mondays."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo


def last_due(now: datetime, zone: tzinfo, hour: int, period: str) -> tuple[datetime, date]:
    """The latest moment at or before `now` (aware) a digest of `period` was due in `zone`, as aware
    UTC, and the local day it belongs to (a Monday for weekly digests)."""
    step = timedelta(days=7 if period == "weekly" else 1)
    day = now.astimezone(zone).date()
    if period == "weekly":
        day -= timedelta(days=day.weekday())
    due = datetime.combine(day, time(hour), tzinfo=zone)
    if due > now:
        day -= step
        due = datetime.combine(day, time(hour), tzinfo=zone)
    return due.astimezone(UTC), day
