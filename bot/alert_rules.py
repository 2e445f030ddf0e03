"""The disk-alert evaluation step (SPEC section 5), as pure functions over frozen values.

Nothing here reads the clock, the disk, the database or Mattermost: the sampler hands in `Sample`s,
the scheduler hands in the stored `PathState`s and the time, and gets back the states to store and
the messages to enqueue. Keeping it pure is what lets every rule be tested with an injected clock.

Contract with the caller: `evaluate` marks a state as posted when it returns a message for it, so
the caller must store the new states and enqueue the messages in one transaction (the outbox then
retries until Mattermost accepts the post). That is how "a restart re-posts nothing already posted"
and "no alert is dropped" hold together.

State is kept per (path, kind):
- kind "space" and kind "inodes" have levels "ok", "warning", "critical";
- kind "read" tracks whether the path could be read at all, with levels "ok" and "unreadable".
  An unreadable path posts its own message once when it becomes unreadable and a "resolved"
  message when it can be read again; it never repeats (there are no fresh numbers to repeat).
  While it is unreadable its space and inode states are frozen: an error is neither ok nor a
  problem, so it neither resolves nor escalates anything, and no space/inode repeats are sent
  from stale numbers.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from bot import settings

Level = Literal["ok", "warning", "critical", "unreadable"]
Kind = Literal["space", "inodes", "read"]
Reason = Literal["change", "repeat", "resolved"]
StateKey = tuple[str, str]

OK: Level = "ok"
WARNING: Level = "warning"
CRITICAL: Level = "critical"
UNREADABLE: Level = "unreadable"

LEVELS: tuple[str, ...] = (OK, WARNING, CRITICAL, UNREADABLE)
KINDS: tuple[str, ...] = ("space", "inodes", "read")
PROBLEM_LEVELS: frozenset[str] = frozenset({WARNING, CRITICAL, UNREADABLE})

FORECAST_WINDOW = timedelta(hours=1)
FORECAST_HORIZON_HOURS = 7 * 24.0
FORECAST_MIN_SAMPLES = 3

# psutil reports percentages with one decimal and thresholds are typed by people, so a tolerance
# far below 0.1 only absorbs the float error of `threshold - hysteresis` (80 - 2.1 != 77.9).
_EPSILON = 1e-9

_LEVEL_RANK = {OK: 0, WARNING: 1, CRITICAL: 2}
_KIND_WORDS = {"space": "disk space", "inodes": "inodes"}


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
    path: str
    kind: str
    level: str
    previous_level: str
    reason: str
    text: str
    forecast_hours: float | None = field(default=None)
    episode: int = 0


# ---------------------------------------------------------------------------------------------------
# formatting


_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(n: int) -> str:
    """Binary units with one decimal: 512 B, 1.5 KiB, 41.7 GiB."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"human_bytes needs a whole number of bytes >= 0, got {n!r}")
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for index, unit in enumerate(_UNITS):
        value /= 1024
        # Step up when rounding would print "1024.0 MiB" instead of "1.0 GiB".
        if round(value, 1) < 1024 or index == len(_UNITS) - 1:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def _round_half_up(value: float) -> int:
    # round() rounds half to even, which would print "about 4 hours" for 4.5 but 6 for 5.5.
    return math.floor(value + 0.5)


def format_forecast(hours: float) -> str:
    """The forecast phrase: "full in about 6 hours", or minutes below one hour."""
    minutes = _round_half_up(hours * 60)
    if minutes < 1:
        return "full in less than a minute"
    if minutes < 60:
        return f"full in about {minutes} minute{'s' if minutes != 1 else ''}"
    whole_hours = max(1, _round_half_up(hours))
    text = f"full in about {whole_hours} hour{'s' if whole_hours != 1 else ''}"
    if whole_hours >= 48:
        # Past two days a count of hours is hard to read at a glance; days help, hours stay.
        text += f" (about {_round_half_up(hours / 24)} days)"
    return text


def plain(text: str) -> str:
    """Paths, host names and error strings come from outside; make them inert in a post.

    A fullwidth at sign reads the same to people but Mattermost never takes it for a mention.
    Control and format characters (newlines, bidi overrides) and lone surrogates (undecodable
    bytes in a path) would break the line, reorder it or fail to encode, so they become "?".
    """
    out = []
    for char in text:
        if char == "@":
            out.append("\uff20")
        elif unicodedata.category(char) in ("Cc", "Cf", "Cs"):
            out.append("?")
        else:
            out.append(char)
    return "".join(out)


def _space_figures(sample: Sample) -> str:
    return (
        f"{human_bytes(sample.used_bytes)} of {human_bytes(sample.total_bytes)}, {human_bytes(sample.free_bytes)} free"
    )


def _inode_figures(sample: Sample) -> str:
    free = sample.inodes_total - sample.inodes_used
    return f"{sample.inodes_used:,} of {sample.inodes_total:,} inodes, {free:,} free; disk {_space_figures(sample)}"


def _alert_text(
    *,
    host: str,
    sample: Sample,
    kind: str,
    level: str,
    previous_level: str,
    reason: str,
    forecast: float | None,
) -> str:
    where = f"{plain(host)}:{plain(sample.path)}"
    if kind == "read":
        if reason == "resolved":
            text = f"RESOLVED {where} can be read again: {sample.used_percent:.1f}% used ({_space_figures(sample)})"
        else:
            error = plain(sample.error or "") or "unknown error"
            text = f"UNREADABLE cannot read {where}: {error}; its disk alerts are paused until it can be read again"
    else:
        what = _KIND_WORDS[kind]
        verb = "are" if kind == "inodes" else "is"
        if kind == "inodes":
            percent = sample.inodes_percent
            figures = _inode_figures(sample)
        else:
            percent = sample.used_percent
            figures = _space_figures(sample)
        if reason == "resolved":
            text = f"RESOLVED {what} on {where} {verb} back to {percent:.1f}% used ({figures})"
        else:
            still = "still " if reason == "repeat" else ""
            text = f"{level.upper()} {what} on {where} {verb} {still}{percent:.1f}% used ({figures})"
            if reason == "change" and previous_level in (WARNING, CRITICAL):
                direction = "up" if _LEVEL_RANK[level] > _LEVEL_RANK[previous_level] else "down"
                text += f", {direction} from {previous_level}"
    if forecast is not None:
        text += f"; {format_forecast(forecast)}"
    return text


# ---------------------------------------------------------------------------------------------------
# rules


def classify(value: float, current: str, thresholds: Thresholds) -> str:
    """The level for `value` given the level in force: rising needs only >= threshold, while a
    level in force holds until the value is more than `hysteresis_percent` below its threshold."""
    rank = _LEVEL_RANK.get(current, 0)
    hysteresis = thresholds.hysteresis_percent
    if value >= thresholds.critical_percent:
        return CRITICAL
    if rank >= 2 and value >= thresholds.critical_percent - hysteresis - _EPSILON:
        return CRITICAL
    if value >= thresholds.warn_percent:
        return WARNING
    # Leaving critical passes through the warning band, so its hysteresis applies as well.
    if rank >= 1 and value >= thresholds.warn_percent - hysteresis - _EPSILON:
        return WARNING
    return OK


def forecast_hours(history: Iterable[tuple[datetime, float]], now: datetime) -> float | None:
    """Hours from `now` until a least-squares line through the last hour's samples reaches 100 %.

    None when there are fewer than 3 samples in the hour, the line is flat or falling, or 100 % is
    more than 7 days away. 0.0 when the line is already at or past 100 %.
    """
    _require_aware(now, "now")
    start = now - FORECAST_WINDOW
    points: list[tuple[float, float]] = []
    for at, percent in history:
        _require_aware(at, "history time")
        if start <= at <= now and _is_number(percent):
            # x in hours before now keeps the numbers small, so the fit stays precise.
            points.append(((at - now).total_seconds() / 3600, float(percent)))
    if len(points) < FORECAST_MIN_SAMPLES:
        return None
    mean_x = math.fsum(x for x, _ in points) / len(points)
    mean_y = math.fsum(y for _, y in points) / len(points)
    sxx = math.fsum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return None  # every sample at the same instant: no slope to speak of
    sxy = math.fsum((x - mean_x) * (y - mean_y) for x, y in points)
    slope = sxy / sxx  # percent per hour
    if slope <= 0:
        return None
    fitted_now = mean_y - slope * mean_x
    hours = (100.0 - fitted_now) / slope
    if hours > FORECAST_HORIZON_HOURS:
        return None
    return max(0.0, hours)


def acknowledge(state: PathState, now: datetime, *, level: str | None = None) -> PathState:
    """No more repeats until the level changes.

    Returns `state` itself when there is nothing to acknowledge: the path is ok, or `level` (the
    level the clicked post showed) is no longer the one in force, so an old button cannot silence
    a newer, worse level. The caller can tell by comparing.
    """
    _require_aware(now, "now")
    if state.level == OK or (level is not None and level != state.level):
        return state
    return replace(state, acknowledged=True)


def snooze(state: PathState, now: datetime, hours: float = 1, *, level: str | None = None) -> PathState:
    """No repeat before now + hours; the regular repeat schedule resumes afterwards.

    Returns `state` itself when there is nothing to snooze (see `acknowledge`).
    """
    _require_aware(now, "now")
    if not _is_number(hours) or hours <= 0:
        raise ValueError(f"snooze hours must be above 0, got {hours!r}")
    if state.level == OK or (level is not None and level != state.level):
        return state
    return replace(state, snoozed_until=now + timedelta(hours=hours))


def _repeat_due(state: PathState, now: datetime, thresholds: Thresholds) -> bool:
    if state.level not in (WARNING, CRITICAL) or state.posted_level != state.level:
        return False
    if state.acknowledged or state.last_post_at is None:
        return False
    if state.snoozed_until is not None and now < state.snoozed_until:
        return False
    return now - state.last_post_at >= timedelta(minutes=thresholds.repeat_minutes)


def _posted(previous: PathState, level: str, now: datetime) -> PathState:
    # A post at a new level starts a new episode: acknowledgement and snooze were about the old one.
    return PathState(level=level, posted_level=level, last_post_at=now, episode=previous.episode + 1)


def _step(
    previous: PathState,
    new_level: str,
    now: datetime,
    thresholds: Thresholds,
) -> tuple[PathState, str | None, str]:
    """Apply one reading to one state: (new state, reason to post or None, previous level)."""
    if new_level != previous.level:
        if new_level != OK:
            return _posted(previous, new_level, now), "change", previous.level
        if previous.posted_level in PROBLEM_LEVELS:
            return _posted(previous, OK, now), "resolved", previous.level
        # The problem came and went unposted: nobody was told, so there is nothing to resolve.
        return PathState(posted_level=previous.posted_level, last_post_at=previous.last_post_at,
                         episode=previous.episode), None, OK
    if new_level != OK and previous.posted_level != new_level:
        # A level in force that was never posted (e.g. a state written by hand) is still owed.
        return _posted(previous, new_level, now), "change", previous.posted_level or OK
    if _repeat_due(previous, now, thresholds):
        return replace(previous, last_post_at=now, snoozed_until=None), "repeat", previous.level
    return previous, None, previous.level


def evaluate(
    samples: Iterable[Sample],
    states: Mapping[StateKey, PathState],
    thresholds: Thresholds,
    now: datetime,
    history: Mapping[str, Sequence[tuple[datetime, float]]],
    host: str,
) -> tuple[dict[StateKey, PathState], list[AlertMessage]]:
    """Apply one round of samples; return every state (changed or not) and the messages to post.

    `history` maps a path to its (time, used_percent) samples of the last hour; the current
    sample is added when it is not there yet, so the caller may pass history before or after
    storing it. Messages come in sample order, and per path: read, space, inodes.
    States of paths without a sample this round are passed through unchanged.
    """
    thresholds.validate()
    _require_aware(now, "now")
    new_states: dict[StateKey, PathState] = dict(states)
    messages: list[AlertMessage] = []
    seen: set[str] = set()

    for sample in samples:
        if sample.path in seen:
            raise ValueError(f"two samples for {sample.path!r} in one round; pass one per path")
        seen.add(sample.path)

        read_key = (sample.path, "read")
        read_state, reason, previous = _step(
            new_states.get(read_key, PathState()), OK if sample.readable else UNREADABLE, now, thresholds
        )
        new_states[read_key] = read_state
        if reason is not None:
            messages.append(_message(host, sample, "read", read_state, previous, reason, None))
        if not sample.readable:
            continue

        points = list(history.get(sample.path, ()))
        if all(at != sample.at for at, _ in points):
            points.append((sample.at, sample.used_percent))
        space_forecast = forecast_hours(points, now)

        readings: list[tuple[str, float, float | None]] = [("space", sample.used_percent, space_forecast)]
        inodes_percent = sample.inodes_percent
        if inodes_percent is not None:
            # history holds space percentages only, so inode alerts carry no forecast.
            readings.append(("inodes", inodes_percent, None))

        for kind, percent, forecast in readings:
            key = (sample.path, kind)
            previous_state = new_states.get(key, PathState())
            new_level = classify(percent, previous_state.level, thresholds)
            state, reason, previous = _step(previous_state, new_level, now, thresholds)
            new_states[key] = state
            if reason is not None:
                messages.append(_message(host, sample, kind, state, previous, reason, forecast))

    return new_states, messages


def _message(
    host: str,
    sample: Sample,
    kind: str,
    state: PathState,
    previous_level: str,
    reason: str,
    forecast: float | None,
) -> AlertMessage:
    text = _alert_text(
        host=host,
        sample=sample,
        kind=kind,
        level=state.level,
        previous_level=previous_level,
        reason=reason,
        forecast=forecast,
    )
    return AlertMessage(
        path=sample.path,
        kind=kind,
        level=state.level,
        previous_level=previous_level,
        reason=reason,
        text=text,
        forecast_hours=forecast,
        episode=state.episode,
    )
