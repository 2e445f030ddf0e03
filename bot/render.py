"""Markdown for replies and posts; mention neutralising; cutting below Mattermost's post limit."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, tzinfo

from bot.alerts.text import human_bytes
from bot.i18n import _, ngettext, number, when
from bot.storage import Record

POST_LIMIT = 16_383  # Mattermost's maximum message length (model.PostMessageMaxRunesV2)
_BUDGET = POST_LIMIT - 400  # room for the paging line and the note of what was left out
# The server's own rule (atMentionRegexp, \B@[[:alnum:]]...): an @ right after a letter or digit, as
# in deploy@web-01, is no mention.
_MENTION = re.compile(r"(?<![A-Za-z0-9_])@(?=[A-Za-z0-9])")
# Fenced blocks and inline code: Mattermost finds no mentions in them, and they must copy and paste
# exactly as they were written.
_CODE = re.compile(r"(```.*?(?:```|\Z)|`[^`\n]*`)", re.DOTALL)
# Enough to stop links, images, autolinks, code and table cells; emphasis is left (it harms nothing).
_MARKDOWN = re.compile(r"([\\`\[\]<|])")
ZWSP = "\u200b"
SHOWN_TAGS = 30  # tags listed in full by `show`; the rest are counted


def _outside_code(text: str, change: Callable[[str], str]) -> str:
    parts = _CODE.split(text)
    return "".join(part if i % 2 else change(part) for i, part in enumerate(parts))


def neutralise(text: str) -> str:
    """Make @channel, @all, @here and @user inert where a post could ping: a zero-width space after the
    '@' breaks the mention. Only for text posted into a channel; code is left exactly as it was."""
    return _outside_code(text, lambda part: _MENTION.sub("@" + ZWSP, part))


def escape_md(text: str) -> str:
    """A name from outside (a file name, a path, an error) shown as the characters it is: no link,
    image, emphasis or table cell can be made of it."""
    return _MARKDOWN.sub(r"\\\1", text)


def no_images(text: str) -> str:
    """Record text shows an image as its Markdown, never loads it: viewing a record must not fetch
    from an address someone put in it (a tracking pixel). The URL stays a plain link."""
    return _outside_code(text, lambda part: part.replace("![", "!\\["))


def first_line(body: str, width: int = 160) -> str:
    line = next((part.strip() for part in body.splitlines() if part.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "…"


def record_line(record: Record, zone: tzinfo = UTC) -> str:
    """One record in a list: id, owner, time, first line, tags. Readable on a phone too."""
    tags = " " + " ".join(f"`#{t}`" for t in record.tags) if record.tags else ""
    return (f"**#{record.id}** · {record.owner} · {when(record.created_at, zone)}\n"
            f"> {no_images(first_line(record.body))}{tags}")


def record_list(records: Sequence[Record], header: str, footer: str, trigger: str = "rec",
                zone: tzinfo = UTC) -> str:
    """Records with a header and a paging footer, cut cleanly below the post limit."""
    parts: list[str] = [header]
    used = len(header) + len(footer) + 2
    shown = 0
    for record in records:
        line = record_line(record, zone)
        if used + len(line) + 2 > _BUDGET:
            break
        parts.append(line)
        used += len(line) + 2
        shown += 1
    if shown < len(records):
        parts.append(ngettext("_{n} more on this page not shown (message too long); narrow the search or open "
                              "one with /{trigger} show <id>._",
                              "_{n} more on this page not shown (message too long); narrow the search or open "
                              "one with /{trigger} show <id>._", len(records) - shown, trigger=trigger))
    parts.append(footer)
    return "\n\n".join(p for p in parts if p)


def record_full(record: Record, file_link: Callable[[str], str] | None = None, zone: tzinfo = UTC) -> str:
    """One record in full: owner, times, tags, revisions, files, the whole text (cut if huge)."""
    edited = ""
    if record.updated_at != record.created_at:
        edited = " · " + _("edited {at}", at=when(record.updated_at, zone))
    tags = " ".join(f"`#{t}`" for t in record.tags[:SHOWN_TAGS]) or _("none")
    if len(record.tags) > SHOWN_TAGS:
        tags = _("{tags} and {n} more", tags=tags, n=number(len(record.tags) - SHOWN_TAGS))
    files = ""
    if record.files:
        names = [(f"[{escape_md(f.name)}]({file_link(f.mm_file_id)})" if file_link else escape_md(f.name))
                 + f" ({human_bytes(f.size)})" for f in record.files]
        files = _("Files: {names}", names=", ".join(names)) + "\n"
    head = (_("**Record #{id}** by {owner} · {at}", id=record.id, owner=record.owner,
              at=when(record.created_at, zone)) + edited + "\n"
            + _("Tags: {tags}", tags=tags) + " · "
            + ngettext("{n} earlier version", "{n} earlier versions", record.revisions) + f"\n{files}\n")
    body = no_images(record.body)
    room = _BUDGET - len(head)
    if len(body) > room:
        body = body[:room] + "\n\n" + _cut_note(len(body) - room)
    return head + body


def _cut_note(left_out: int) -> str:
    return ngettext("_…cut: {n} more character not shown._", "_…cut: {n} more characters not shown._", left_out)


def cap(text: str) -> str:
    """Any reply, cut below the post limit with a note, never mid-surrogate or over the limit."""
    if len(text) <= POST_LIMIT:
        return text
    return text[:_BUDGET] + "\n\n" + _cut_note(len(text) - _BUDGET)
