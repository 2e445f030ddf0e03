"""Markdown for replies and posts; mention neutralising; cutting below Mattermost's post limit."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime

from bot.storage import Record

POST_LIMIT = 16_383  # Mattermost's maximum message length (model.PostMessageMaxRunesV2)
_BUDGET = POST_LIMIT - 400  # room for the paging line and the note of what was left out
_MENTION = re.compile(r"@(?=[\w.-])")
ZWSP = "\u200b"


def neutralise(text: str) -> str:
    """Make @channel, @all, @here and @user inert: a zero-width space after '@' breaks the mention."""
    return _MENTION.sub("@" + ZWSP, text)


def when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") + " UTC"


def first_line(body: str, width: int = 160) -> str:
    line = next((part.strip() for part in body.splitlines() if part.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "…"


def record_line(record: Record) -> str:
    """One record in a list: id, owner, time, first line, tags. Readable on a phone too."""
    tags = " " + " ".join(f"`#{t}`" for t in record.tags) if record.tags else ""
    return (f"**#{record.id}** · {neutralise(record.owner)} · {when(record.created_at)}\n"
            f"> {neutralise(first_line(record.body))}{tags}")


def record_list(records: Sequence[Record], header: str, footer: str) -> str:
    """Records with a header and a paging footer, cut cleanly below the post limit."""
    parts: list[str] = [header]
    used = len(header) + len(footer) + 2
    shown = 0
    for record in records:
        line = record_line(record)
        if used + len(line) + 2 > _BUDGET:
            break
        parts.append(line)
        used += len(line) + 2
        shown += 1
    if shown < len(records):
        parts.append(f"_{len(records) - shown} more on this page not shown (message too long); "
                     "narrow the search or open one with /rec show <id>._")
    parts.append(footer)
    return "\n\n".join(p for p in parts if p)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def record_full(record: Record, file_link: Callable[[str], str] | None = None) -> str:
    """One record in full: owner, times, tags, revisions, files, the whole text (cut if huge)."""
    edited = f" · edited {when(record.updated_at)}" if record.updated_at != record.created_at else ""
    tags = " ".join(f"`#{t}`" for t in record.tags) or "none"
    revs = f"{record.revisions} earlier version" + ("" if record.revisions == 1 else "s")
    files = ""
    if record.files:
        names = [(f"[{f.name}]({file_link(f.mm_file_id)})" if file_link else f.name) + f" ({_size(f.size)})"
                 for f in record.files]
        files = "Files: " + ", ".join(neutralise(n) for n in names) + "\n"
    head = (f"**Record #{record.id}** by {neutralise(record.owner)} · {when(record.created_at)}{edited}\n"
            f"Tags: {tags} · {revs}\n{files}\n")
    body = neutralise(record.body)
    room = _BUDGET - len(head)
    if len(body) > room:
        body = body[:room] + f"\n\n_…cut: {len(record.body) - room:,} more characters not shown._"
    return head + body


def cap(text: str) -> str:
    """Any reply, cut below the post limit with a note, never mid-surrogate or over the limit."""
    if len(text) <= POST_LIMIT:
        return text
    return text[:_BUDGET] + f"\n\n_…cut: {len(text) - _BUDGET:,} more characters not shown._"
