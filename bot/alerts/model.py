"""The values disk alerts work with: thresholds, one reading of a path, what is remembered per path,
and a message the rules decided to post. Frozen, checked on construction, free of I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from bot import settings
from bot.alerts.text import alert_text

Level = Literal["ok", "warning", "critical", "unreadable"]
StateKey = tuple[str, str]

OK: Level = "ok"
WARNING: Level = "warning"
CRITICAL: Level = "critical"
UNREADABLE: Level = "unreadable"

LEVELS: tuple[str, ...] = (OK, WARNING, CRITICAL, UNREADABLE)
PROBLEM_LEVELS: frozenset[str] = frozenset({WARNING, CRITICAL, UNREADABLE})

FORECAST_WINDOW = timedelta(hours=1)
FORECAST_HORIZON_HOURS = 7 * 24.0
FORECAST_MIN_SAMPLES = 3

# psutil reports percentages with one decimal and thresholds are typed by people, so a tolerance
# far below 0.1 only absorbs the float error of `threshold - hysteresis` (80 - 2.1 != 77.9).
_EPSILON = 1e-9

_LEVEL_RANK: dict[str, int] = {OK: 0, WARNING: 1, CRITICAL: 2}
def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _require_aware(value: datetime, name: str) -> None:
    # Naive datetimes would compare wrongly against stored UTC times after a DST change.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")


@dataclass(frozen=True)
class Thresholds:
    warn_percent: float = 80
    critical_percent: float = 90
    hysteresis_percent: float = 2
    repeat_minutes: float = 240

    def validate(self) -> None:
        """Raise ValueError naming the first bad value; the rules are bot.settings', the same ones
        config loading and `/rec admin set` apply, so a value they accepted never fails here."""
        settings.check_values({f"alerts.{name}": getattr(self, name) for name in
                               ("warn_percent", "critical_percent", "hysteresis_percent", "repeat_minutes")})


@dataclass(frozen=True)
class Sample:
    """One reading of one path. `error` set means the path could not be read (the numbers are then
    meaningless and left at 0); build those with `Sample.unreadable`."""

    path: str
    at: datetime
    used_percent: float = 0.0
    total_bytes: int = 0
    used_bytes: int = 0
    free_bytes: int = 0
    inodes_total: int = 0
    inodes_used: int = 0
    error: str | None = None

    def __post_init__(self) -> None:
        _require_aware(self.at, "Sample.at")
        if self.error is not None:
            return
        if not _is_number(self.used_percent) or not 0 <= self.used_percent <= 100:
            raise ValueError(f"Sample.used_percent must be between 0 and 100, got {self.used_percent!r}")
        for name in ("total_bytes", "used_bytes", "free_bytes", "inodes_total", "inodes_used"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Sample.{name} must be a whole number >= 0, got {value!r}")
        if self.inodes_used > self.inodes_total:
            raise ValueError(f"Sample.inodes_used ({self.inodes_used}) exceeds inodes_total ({self.inodes_total})")

    @classmethod
    def unreadable(cls, path: str, at: datetime, error: str) -> Sample:
        return cls(path=path, at=at, error=error)

    @property
    def readable(self) -> bool:
        return self.error is None

    @property
    def inodes_percent(self) -> float | None:
        """None when the filesystem reports no inodes (nothing to watch). Rounded to one decimal,
        as psutil rounds the space percentage, so the shown number is the one that was compared."""
        if self.inodes_total == 0:
            return None
        return round(self.inodes_used / self.inodes_total * 100, 1)


@dataclass(frozen=True)
class PathState:
    """What is remembered per (path, kind). `PathState()` is "nothing to remember"."""

    level: str = OK
    posted_level: str | None = None
    last_post_at: datetime | None = None
    acknowledged: bool = False
    snoozed_until: datetime | None = None
    episode: int = 0  # counts the posts that changed the level; a button names the episode it belongs to

    def __post_init__(self) -> None:
        # States come back from the database; a corrupt row should fail loudly, not alert oddly.
        if self.level not in LEVELS:
            raise ValueError(f"PathState.level must be one of {', '.join(LEVELS)}, got {self.level!r}")
        if self.posted_level is not None and self.posted_level not in LEVELS:
            raise ValueError(
                f"PathState.posted_level must be one of {', '.join(LEVELS)} or None, got {self.posted_level!r}"
            )
        if self.last_post_at is not None:
            _require_aware(self.last_post_at, "PathState.last_post_at")
        if self.snoozed_until is not None:
            _require_aware(self.snoozed_until, "PathState.snoozed_until")


@dataclass(frozen=True)
class AlertMessage:
    """What the rules decided to post, and why; the words are alerts.text's (`text`)."""

    path: str
    kind: str
    level: str
    previous_level: str
    reason: str
    host: str
    sample: Sample
    forecast_hours: float | None = field(default=None)
    episode: int = 0

    @property
    def text(self) -> str:
        return alert_text(self)
