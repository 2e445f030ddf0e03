"""The words of disk alerts: the one byte formatter, the forecast phrase, and each post's text.

Paths, host names and errors come from outside, so everything shown passes through `plain`. Every
text is written in the language in force (the service sets `alerts.language` around it).
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import TYPE_CHECKING

from bot.i18n import N_, _, ngettext, number

if TYPE_CHECKING:
    from bot.alerts.model import AlertMessage, Sample

_RANK = {"ok": 0, "warning": 1, "critical": 2}
LEVEL_WORDS = {"warning": N_("warning"), "critical": N_("critical")}

# One whole sentence per (kind, level, repeat?): the level word leads, and word order differs by language.
_PROBLEM = {
    ("space", "warning", False): N_("WARNING disk space on {where} is {percent} used ({figures})"),
    ("space", "warning", True): N_("WARNING disk space on {where} is still {percent} used ({figures})"),
    ("space", "critical", False): N_("CRITICAL disk space on {where} is {percent} used ({figures})"),
    ("space", "critical", True): N_("CRITICAL disk space on {where} is still {percent} used ({figures})"),
    ("inodes", "warning", False): N_("WARNING inodes on {where} are {percent} used ({figures})"),
    ("inodes", "warning", True): N_("WARNING inodes on {where} are still {percent} used ({figures})"),
    ("inodes", "critical", False): N_("CRITICAL inodes on {where} are {percent} used ({figures})"),
    ("inodes", "critical", True): N_("CRITICAL inodes on {where} are still {percent} used ({figures})"),
}
_RESOLVED = {
    "space": N_("RESOLVED disk space on {where} is back to {percent} used ({figures})"),
    "inodes": N_("RESOLVED inodes on {where} are back to {percent} used ({figures})"),
}


_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(n: int) -> str:
    """Binary units with one decimal: 512 B, 1.5 KiB, 41.7 GiB (the number in the current language)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"human_bytes needs a whole number of bytes >= 0, got {n!r}")
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for index, unit in enumerate(_UNITS):
        value /= 1024
        shown = round(value, 1)
        # Step up when rounding would print "1024.0 MiB" instead of "1.0 GiB".
        if shown < 1024 or index == len(_UNITS) - 1:
            return f"{number(shown, 1)} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def percent(value: float) -> str:
    """A used percentage with one decimal, as the current language writes it: 85.0%."""
    return number(value, 1) + "%"


def _round_half_up(value: float) -> int:
    # round() rounds half to even, which would print "about 4 hours" for 4.5 but 6 for 5.5.
    return math.floor(value + 0.5)


def format_forecast(hours: float) -> str:
    """The forecast phrase: "full in about 6 hours", or minutes below one hour."""
    minutes = _round_half_up(hours * 60)
    if minutes < 1:
        return _("full in less than a minute")
    if minutes < 60:
        return ngettext("full in about {n} minute", "full in about {n} minutes", minutes)
    whole_hours = max(1, _round_half_up(hours))
    if whole_hours >= 48:
        # Past two days a count of hours is hard to read at a glance; days help, hours stay.
        return ngettext("full in about {n} hour (about {days} days)", "full in about {n} hours (about {days} days)",
                        whole_hours, days=number(_round_half_up(hours / 24)))
    return ngettext("full in about {n} hour", "full in about {n} hours", whole_hours)


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
    return _("{used} of {total}, {free} free", used=human_bytes(sample.used_bytes),
             total=human_bytes(sample.total_bytes), free=human_bytes(sample.free_bytes))


def _inode_figures(sample: Sample) -> str:
    free = sample.inodes_total - sample.inodes_used
    return _("{used} of {total} inodes, {free} free; disk {disk}", used=number(sample.inodes_used),
             total=number(sample.inodes_total), free=number(free), disk=_space_figures(sample))


def _read_text(where: str, sample: Sample, reason: str) -> str:
    if reason == "resolved":
        return _("RESOLVED {where} can be read again: {percent} used ({figures})", where=where,
                 percent=percent(sample.used_percent), figures=_space_figures(sample))
    error = plain(sample.error or "") or _("unknown error")
    return _("UNREADABLE cannot read {where}: {error}; its disk alerts are paused until it can be read again",
             where=where, error=error)


def _direction(text: str, level: str, previous: str) -> str:
    """The sentence with which way the level moved: ", up from warning"."""
    word = _(LEVEL_WORDS[previous])
    if _RANK[level] > _RANK[previous]:
        return _("{alert}, up from {previous}", alert=text, previous=word)
    return _("{alert}, down from {previous}", alert=text, previous=word)


def alert_text(message: AlertMessage) -> str:
    """The post for a message: what, where, how full, which way it moved, when it will be full."""
    sample, kind, level, reason = message.sample, message.kind, message.level, message.reason
    where = f"{plain(message.host)}:{plain(sample.path)}"
    if kind == "read":
        return _read_text(where, sample, reason)
    if kind == "inodes":
        value = sample.inodes_percent
        figures = _inode_figures(sample)
    else:
        value = sample.used_percent
        figures = _space_figures(sample)
    shown = percent(value or 0.0)
    if reason == "resolved":
        text = _(_RESOLVED[kind], where=where, percent=shown, figures=figures)
    else:
        text = _(_PROBLEM[(kind, level, reason == "repeat")], where=where, percent=shown, figures=figures)
        if reason == "change" and message.previous_level in ("warning", "critical"):
            text = _direction(text, level, message.previous_level)
    if message.forecast_hours is not None:
        text = _("{alert}; {forecast}", alert=text, forecast=format_forecast(message.forecast_hours))
    return text


def chart_title(text: str) -> str:
    """An alert's text up to its figures, for the chart's title: "WARNING disk space on web-01:/var is 85.0% used"."""
    return re.split(r" \(|（", text, maxsplit=1)[0].strip()
