"""The words of disk alerts: the one byte formatter, the forecast phrase, and each post's text.

Paths, host names and errors come from outside, so everything shown passes through `plain`.
"""

from __future__ import annotations

import math
import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.alerts.model import AlertMessage, Sample

_KIND_WORDS = {"space": "disk space", "inodes": "inodes"}
_RANK = {"ok": 0, "warning": 1, "critical": 2}


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


def _read_text(where: str, sample: Sample, reason: str) -> str:
    if reason == "resolved":
        return f"RESOLVED {where} can be read again: {sample.used_percent:.1f}% used ({_space_figures(sample)})"
    error = plain(sample.error or "") or "unknown error"
    return f"UNREADABLE cannot read {where}: {error}; its disk alerts are paused until it can be read again"


def alert_text(message: AlertMessage) -> str:
    """The post for a message: what, where, how full, which way it moved, when it will be full."""
    sample, kind, level, reason = message.sample, message.kind, message.level, message.reason
    where = f"{plain(message.host)}:{plain(sample.path)}"
    if kind == "read":
        return _read_text(where, sample, reason)
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
        if reason == "change" and message.previous_level in ("warning", "critical"):
            direction = "up" if _RANK[level] > _RANK[message.previous_level] else "down"
            text += f", {direction} from {message.previous_level}"
    if message.forecast_hours is not None:
        text += f"; {format_forecast(message.forecast_hours)}"
    return text
