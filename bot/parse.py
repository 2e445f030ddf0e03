"""The argument parser: words, "quoted phrases", @user, ~channel, #tag, since:/until:, ids, page:N."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from bot.errors import UserError
from bot.i18n import _, number

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Bounds on what one command may ask for, checked before any SQL is built: the cost of a search
# grows with its words and tags, and every @name may cost a lookup in Mattermost.
MAX_TEXT = 4000  # characters of a command other than add/edit
MAX_WORDS = 20
MAX_WORD = 200  # characters of one word
MAX_TAG_FILTERS = 10
MAX_USERS = 25


class ParseError(UserError):
    """A part of the command could not be read; the message names that part."""


@dataclass
class Args:
    words: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    since: date | None = None
    until: date | None = None
    page: int | None = None
    before: int | None = None


def split(text: str) -> list[str]:
    """Split on whitespace; "double quotes" keep a phrase together, and \\" is a literal quote."""
    tokens: list[str] = []
    current: list[str] = []
    quoted = False
    in_token = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
            current.append(text[i + 1])
            in_token = True
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
            in_token = True
        elif ch.isspace() and not quoted:
            if in_token:
                tokens.append("".join(current))
            current, in_token = [], False
        else:
            current.append(ch)
            in_token = True
        i += 1
    if quoted:
        raise ParseError(_('a quote " is not closed; close it, or write \\" for a literal quote'))
    if in_token:
        tokens.append("".join(current))
    return tokens


def is_number(raw: str) -> bool:
    """ASCII digits only: str.isdigit() is also true for '²' or '٣', which int() then refuses or misreads."""
    return raw.isascii() and raw.isdigit()


def parse_id(token: str, *, cursor: bool = False) -> int:
    """A record id (or, with cursor, the id a `before:` page cursor names)."""
    raw = token.lstrip("#")
    if not is_number(raw) or len(raw) > 18 or int(raw) == 0:
        if cursor:
            raise ParseError(_("'{token}' is not a page cursor; use the number shown as #123 in a list",
                               token=token[:40]))
        raise ParseError(_("'{token}' is not a record id; use the number shown as #123 in a list", token=token[:40]))
    return int(raw)


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$", re.ASCII)
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9998, 12, 31)


def _date(token: str, prefix: str) -> date:
    raw = token[len(prefix):]
    try:
        if not _ISO_DATE.match(raw):
            raise ValueError(raw)
        day = date.fromisoformat(raw)
    except ValueError:
        raise ParseError(_("'{token}' is not a date; write {prefix}YYYY-MM-DD, e.g. {prefix}2026-01-31",
                           token=token[:40], prefix=prefix)) from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ParseError(_("'{token}' is outside the dates recbot searches ({first} to {last}); "
                           "leave {prefix} out to search without that bound",
                           token=token[:40], first=FIRST_DAY, last=LAST_DAY, prefix=prefix))
    return day


def parse_filters(text: str, *, words_allowed: bool = True) -> Args:
    if len(text) > MAX_TEXT:
        raise ParseError(_("the command is {length} characters long; keep it under {limit}",
                           length=number(len(text)), limit=number(MAX_TEXT)))
    args = Args()
    for token in split(text):
        low = token.lower()
        if token.startswith("@") and len(token) > 1:
            name = token[1:]
            if not _NAME.match(name):
                raise ParseError(_("'{token}' is not a username; write @name", token=token[:40]))
            args.users.append(name.lower())
        elif token.startswith("~") and len(token) > 1:
            args.channels.append(token[1:].lower())
        elif token.startswith("#") and len(token) > 1 and not is_number(token[1:]):
            args.tags.append(token[1:].lower())
        elif low.startswith("since:"):
            args.since = _date(token, "since:")
        elif low.startswith("until:"):
            args.until = _date(token, "until:")
        elif low.startswith("page:"):
            raw = token[5:]
            if not is_number(raw) or not 1 <= int(raw) <= 1000:
                raise ParseError(_("'{token}' is not a page; write page:N with N from 1 to 1000", token=token[:40]))
            args.page = int(raw)
        elif low.startswith("before:"):
            args.before = parse_id(token[7:], cursor=True)
        elif words_allowed:
            if token:
                args.words.append(token)
        else:
            raise ParseError(_("'{token}' is not understood here; use @user, #tag, since: or until:",
                               token=token[:40]))
    if args.since and args.until and args.since > args.until:
        raise ParseError(_("since:{since} is after until:{until}; swap them", since=args.since, until=args.until))
    return _bounded(args)


def _bounded(args: Args) -> Args:
    """Repeats dropped (search ignores case, so words differing only in case are one), then the caps."""
    first: dict[str, str] = {}
    for word in args.words:
        first.setdefault(word.lower(), word)
    args.words = list(first.values())
    args.tags = list(dict.fromkeys(args.tags))
    args.users = list(dict.fromkeys(args.users))
    long = next((w for w in args.words if len(w) > MAX_WORD), None)
    if long is not None:
        raise ParseError(_("the word '{word}…' is {length} characters long; keep words under {limit}",
                           word=long[:20], length=number(len(long)), limit=number(MAX_WORD)))
    if len(args.words) > MAX_WORDS:
        raise ParseError(_("that is {count} different words; use at most {limit} in one command",
                           count=number(len(args.words)), limit=number(MAX_WORDS)))
    if len(args.tags) > MAX_TAG_FILTERS:
        raise ParseError(_("that is {count} #tags; use at most {limit} in one command",
                           count=number(len(args.tags)), limit=number(MAX_TAG_FILTERS)))
    if len(args.users) > MAX_USERS:
        raise ParseError(_("that is {count} @users; use at most {limit} in one command",
                           count=number(len(args.users)), limit=number(MAX_USERS)))
    return args


_FIRST = re.compile(r"(\S+)\s?(.*)", re.DOTALL)


def split_first(text: str) -> tuple[str, str]:
    """The first word and the rest after one separator, kept verbatim (record text must round-trip)."""
    match = _FIRST.match(text.lstrip())
    if not match:
        return "", ""
    return match.group(1), match.group(2)
