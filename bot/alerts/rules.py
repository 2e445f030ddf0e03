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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from bot.alerts.model import (
    _EPSILON,
    _LEVEL_RANK,
    CRITICAL,
    FORECAST_HORIZON_HOURS,
    FORECAST_MIN_SAMPLES,
    FORECAST_WINDOW,
    OK,
    PROBLEM_LEVELS,
    UNREADABLE,
    WARNING,
    AlertMessage,
    PathState,
    Sample,
    StateKey,
    Thresholds,
    _is_number,
    _require_aware,
)


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
    return AlertMessage(
        path=sample.path,
        kind=kind,
        level=state.level,
        previous_level=previous_level,
        reason=reason,
        host=host,
        sample=sample,
        forecast_hours=forecast,
        episode=state.episode,
    )
