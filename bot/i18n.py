"""The language a reply is written in, and the words and numbers of that language.

Messages are gettext catalogs (`bot/locales/<lang>/LC_MESSAGES/messages.po`, extracted with
`make messages`), read from the `.po` at first use so a fresh clone needs no build step. The English
text in the source is the message id, so English needs no catalog.

Which language is in force travels with the event being handled (a ContextVar, as Django's and
Babel's request locales do): the dispatcher sets the caller's, the alert loop sets `alerts.language`.
That way an error raised deep in the store is written in the caller's language without every layer
carrying a translator.
"""

from __future__ import annotations

import gettext
import string
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import cache, lru_cache
from io import BytesIO
from pathlib import Path
from typing import Any

from babel import Locale
from babel.dates import DateTimePattern
from babel.dates import parse_pattern as parse_date_pattern
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import NumberPattern
from babel.numbers import parse_pattern as parse_number_pattern
from babel.support import Translations

LOCALES = Path(__file__).with_name("locales")
ENGLISH, CHINESE = "en", "zh_CN"
LANGUAGES = (ENGLISH, CHINESE)  # what recbot speaks; every other locale is answered in English

_current: ContextVar[str] = ContextVar("recbot_language", default=ENGLISH)


def language_or_none(tag: str) -> str | None:
    """A configured language (`en`, `zh-CN`, `zh_CN`, `zh`) as one recbot speaks, else None."""
    key = tag.strip().replace("-", "_").lower()
    if key == "en" or key.startswith("en_"):
        return ENGLISH
    if key == "zh" or key.startswith("zh_"):
        return CHINESE
    return None


def language_of(locale: str | None, fallback: str) -> str:
    """The language to answer a Mattermost `locale` in: every Chinese variant gets zh_CN, any other
    locale English; a user with no locale known gets the configured `fallback`."""
    if not locale:
        return language_or_none(fallback) or ENGLISH
    return CHINESE if language_or_none(locale) == CHINESE else ENGLISH


def current() -> str:
    return _current.get()


@contextmanager
def speaking(language: str) -> Iterator[None]:
    """Everything inside is written in `language` (a LANGUAGES entry); switch() may change it within."""
    token = _current.set(language_or_none(language) or ENGLISH)
    try:
        yield
    finally:
        _current.reset(token)


def switch(language: str) -> None:
    """Change the language for the rest of the enclosing speaking() block (once the caller is known)."""
    _current.set(language_or_none(language) or ENGLISH)


@cache
def _catalog(language: str) -> gettext.NullTranslations:
    if language == ENGLISH:
        return gettext.NullTranslations()
    with (LOCALES / language / "LC_MESSAGES" / "messages.po").open("rb") as fh:
        catalog = read_po(fh, locale=language)
    compiled = BytesIO()
    write_mo(compiled, catalog)  # fuzzy (unchecked) entries are left out, so they read as English
    compiled.seek(0)
    return Translations(compiled)


def _(message: str, /, **values: Any) -> str:
    """`message` in the current language, with {name} placeholders filled from values."""
    text = _catalog(current()).gettext(message)
    return text.format(**values) if values else text


def ngettext(singular: str, plural: str, count: int, /, **values: Any) -> str:
    """The form for `count` in the current language (the catalog's plural rule); {n} is the count
    written in the language's number format unless given."""
    text = _catalog(current()).ngettext(singular, plural, count)
    values.setdefault("n", number(count))
    return text.format(**values)


def N_(message: str) -> str:
    """Marks a message for extraction whose translation happens later, when the language is known
    (command summaries are declared at import, translated when help is written)."""
    return message


# Babel parses the locale and matches the skeleton on every call; a reply lists up to 100 times, so
# each language's patterns are resolved once (the same patterns format_decimal/format_skeleton use).
@cache
def _number_format(language: str, digits: int) -> tuple[Locale, NumberPattern]:
    return Locale.parse(language), parse_number_pattern("#,##0" + ("." + "0" * digits if digits else ""))


@cache
def _time_format(language: str) -> tuple[Locale, DateTimePattern, DateTimePattern]:
    locale = Locale.parse(language)
    return locale, parse_date_pattern(locale.datetime_skeletons["yMMMd"]), \
        parse_date_pattern(locale.datetime_skeletons["Hm"])


def number(value: float, digits: int = 0) -> str:
    """A number as the language writes it (grouping, decimal sign), with `digits` decimals."""
    if isinstance(value, int):
        return _whole(current(), value, digits)
    locale, pattern = _number_format(current(), digits)
    return pattern.apply(value, locale)


# Replies count pages, matches and ids: the same few numbers over and over, at about 40 us each.
@lru_cache(maxsize=4096)
def _whole(language: str, value: int, digits: int) -> str:
    locale, pattern = _number_format(language, digits)
    return pattern.apply(value, locale)


def when(moment: datetime, zone: tzinfo = UTC) -> str:
    """A stored time (naive UTC, or aware) in the reader's zone and language, with the zone's offset:
    "Dec 2, 2026 07:30 UTC+8", "2026年12月2日 07:30 UTC+8"."""
    local = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(zone)
    language = current()
    return f"{_day(language, local.date())} {_minute(language, local.time().replace(second=0, microsecond=0))} " \
           f"{utc_offset(local)}"


# A list shows many records of few days and minutes; Babel takes about 20 us for each part it writes.
@lru_cache(maxsize=4096)
def _day(language: str, day: date) -> str:
    locale, pattern, _minute_pattern = _time_format(language)
    return pattern.apply(day, locale)


@lru_cache(maxsize=4096)
def _minute(language: str, minute: time) -> str:
    locale, _day_pattern, pattern = _time_format(language)
    return pattern.apply(minute, locale)


def utc_offset(local: datetime) -> str:
    """"UTC", "UTC+8", "UTC-4", "UTC+5:30": the offset in force at that moment."""
    offset = local.utcoffset() or timedelta(0)
    if not offset:
        return "UTC"
    sign, minutes = ("-", -offset) if offset < timedelta(0) else ("+", offset)
    hours, rest = divmod(int(minutes.total_seconds()) // 60, 60)
    return f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "")


def placeholders(text: str) -> set[str]:
    """The {name} fields a message fills (for the catalog test: a translation keeps exactly these)."""
    return {field for _lit, field, _spec, _conv in string.Formatter().parse(text) if field is not None}
