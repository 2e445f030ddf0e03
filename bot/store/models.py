"""What the store hands out: users, records, pages, filters, audit entries, and the limits on text."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot.errors import UserError

log = logging.getLogger("bot.storage")

ROLES = ("admin", "member", "disabled")
MAX_BODY = 60_000
# A member who may see at most this many owners' records is searched owner by owner (bounded by what
# they can see); with more, a newest-first walk of the table fills a page sooner.
PER_OWNER_MAX = 6
RETRY_WINDOW = timedelta(minutes=2)  # a second add of the same text by the same owner within it is a retry


class MaybeSaved(UserError):
    """A write whose outcome is unknown (the answer to COMMIT was lost)."""
TAG_RE = re.compile(r"(?<![\w#&/])#(\w[\w-]*)")
MAX_TAG = 64  # characters of a tag once lower-cased (the column's width)
MAX_TAGS = 50  # tags in one record


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def extract_tags(body: str) -> tuple[str, ...]:
    """`#word` in a text, folded, in order of first appearance."""
    return tuple(dict.fromkeys(m.lower() for m in TAG_RE.findall(body)))


@dataclass(frozen=True)
class User:
    id: int
    mm_user_id: str
    username: str
    role: str
    created_at: datetime
    updated_at: datetime
    locale: str | None = None  # Mattermost's, as last read
    timezone: str | None = None  # an IANA name, as Mattermost last said
    profile_at: datetime | None = None  # when those were read (naive UTC)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class Attachment:
    mm_file_id: str
    name: str
    size: int
    mime_type: str


@dataclass(frozen=True)
class Record:
    id: int
    owner_id: int
    owner: str
    body: str
    tags: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    revisions: int = 0
    files: tuple[Attachment, ...] = ()


@dataclass(frozen=True)
class Revision:
    id: int
    body: str
    edited_by: str
    edited_at: datetime


@dataclass(frozen=True)
class Filter:
    """What a find or list asks for; words are matched as substrings after folding."""

    words: tuple[str, ...] = ()
    owner_id: int | None = None
    tags: tuple[str, ...] = ()
    since: date | None = None
    until: date | None = None
    zone: str = "UTC"  # the IANA zone since: and until: dates are days of (the caller's)


@dataclass(frozen=True)
class Page:
    records: tuple[Record, ...]
    next_before: int | None  # pass as `before` for the next page; None on the last page
    # True when the search stopped at next_before because its time ran out: the page may be short,
    # and continuing from next_before searches the older records.
    partial: bool = False
    matched: int = 0  # matches found from the cursor on, this page included (see find's count_up_to)
    matched_all: bool = True  # False when there are more than `matched`


@dataclass(frozen=True)
class AuditEntry:
    id: int
    actor: str | None
    action: str
    detail: str
    created_at: datetime


def user_from_row(row: Any) -> User:
    return User(row.id, row.mm_user_id, row.username, row.role, row.created_at, row.updated_at, row.locale,
                row.timezone, row.profile_at)


def day_start(day: date, zone: str = "UTC") -> datetime:
    """Midnight at the start of `day` in `zone`, as the naive UTC time records are stored in."""
    local = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone))
    return local.astimezone(UTC).replace(tzinfo=None)
