"""What a digest and a subscription say, in the reader's language (the caller speaks it already)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, tzinfo

from bot.i18n import _, ngettext, number, when
from bot.render import neutralise, record_list
from bot.storage import Record

SHOWN = 20  # records listed in one digest; the rest are one command away


def filter_words(tag: str | None, owner: str | None) -> str:
    """`#tag @user` as typed in a command ("" when the subscription has neither)."""
    return " ".join(part for part in (f"#{tag}" if tag else "", f"@{owner}" if owner else "") if part)


def rest_command(trigger: str, tag: str | None, owner: str | None, since: date) -> str:
    words = filter_words(tag, owner)
    return f"/{trigger} list {words + ' ' if words else ''}since:{since.isoformat()}"


def digest_text(period: str, records: Sequence[Record], total: int, complete: bool, since: datetime,
                rest: str, filters: str, trigger: str, zone: tzinfo) -> str:
    """The digest's direct message: a header, the newest SHOWN records, and how to see the rest.

    Records are echoed into a channel, so the whole text is made unable to ping anyone."""
    shown = number(total)
    if period == "weekly":
        header = ngettext("**Your weekly recbot digest**: {n} new record since {since}",
                          "**Your weekly recbot digest**: {n} new records since {since}",
                          total, since=when(since, zone))
    else:
        header = ngettext("**Your daily recbot digest**: {n} new record since {since}",
                          "**Your daily recbot digest**: {n} new records since {since}",
                          total, since=when(since, zone))
    if not complete:
        header = _("**Your recbot digest**: more than {n} new records since {since}", n=shown,
                   since=when(since, zone))
    if filters:
        header += " · " + _("matching `{filters}`", filters=filters)
    left = total - len(records)
    if left > 0 or not complete:
        footer = _("The rest, and older ones of that day: `{command}`", command=rest)
    else:
        footer = _("_That is all._")
    footer += "\n" + _("Change or stop this digest: `/{trigger} digest daily|weekly|off`.", trigger=trigger)
    return neutralise(record_list(records, header, footer, trigger, zone))


def subscription_text(period: str, filters: str, zone: str, hour: int, last: datetime, trigger: str,
                      zone_info: tzinfo) -> str:
    """What `/rec digest` says of a subscription."""
    at = f"{hour:02d}:00"
    if period == "weekly":
        what = _("You get a weekly digest on Mondays at {at} ({zone}) of the new records you can see",
                 at=at, zone=zone)
    else:
        what = _("You get a daily digest at {at} ({zone}) of the new records you can see", at=at, zone=zone)
    if filters:
        what += " " + _("matching `{filters}`", filters=filters)
    return (what + _(".") + " " + _("The next one lists what is new since {time}.", time=when(last, zone_info))
            + "\n" + _("Change it with `/{trigger} digest daily|weekly [#tag] [@user]`, stop it with "
                       "`/{trigger} digest off`.", trigger=trigger))
