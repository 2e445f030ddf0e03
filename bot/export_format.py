"""The files `/rec export` writes: CSV for spreadsheets, JSON Lines for scripts, Markdown for reading.

Each writer is handed the records a page at a time and appends them to a binary file at once, so an
export of any size holds one page in memory, never the whole result.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, tzinfo
from typing import BinaryIO, Protocol

from babel.dates import format_skeleton

from bot.i18n import _, current, utc_offset
from bot.storage import Record

FORMATS = ("csv", "json", "md")
ALIASES = {"jsonl": "json", "markdown": "md"}
EXTENSIONS = {"csv": "csv", "json": "jsonl", "md": "md"}  # JSON Lines is not one JSON document
COLUMNS = ("id", "owner", "created_at", "updated_at", "tags", "text")
BOM = "\ufeff".encode()  # Excel reads a CSV without it in the machine's legacy code page, not UTF-8
# OWASP's list for CSV injection: a spreadsheet runs a cell starting with one of these as a formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# A line of record text that Markdown would read as a heading or a rule: it would break the per-record
# structure of the file, so it is escaped.
_STRUCTURE = re.compile(r"^( {0,3})(#{1,6}(?=\s|$)|[=\-*_]{3,}\s*$)", re.MULTILINE)


def spreadsheet_safe(cell: str) -> str:
    """A cell a spreadsheet shows as text: a leading apostrophe before a formula's first character."""
    return "'" + cell if cell.startswith(FORMULA_START) else cell


def iso_utc(moment: datetime) -> str:
    """A stored time (naive UTC) as ISO 8601 UTC: 2026-12-01T09:30:00Z."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="seconds") + "Z"


class LocalTimes:
    """bot.i18n.when for many times, at a fraction of its cost: formatting with babel is the slowest
    part of a Markdown export, and its date text depends only on the local day, its time text only on
    the hour and minute, so each is formatted once and kept."""

    def __init__(self, zone: tzinfo) -> None:
        self.zone = zone
        self.language = current()
        self.days: dict[date, str] = {}
        self.minutes: dict[tuple[int, int], str] = {}

    def __call__(self, moment: datetime) -> str:
        local = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(self.zone)
        day = self.days.get(local.date())
        if day is None:
            if len(self.days) > 10_000:
                self.days.clear()  # bounded whatever the span of the export
            day = self.days[local.date()] = format_skeleton("yMMMd", local, locale=self.language)
        clock = self.minutes.get((local.hour, local.minute))
        if clock is None:
            clock = self.minutes[local.hour, local.minute] = format_skeleton("Hm", local, locale=self.language)
        return f"{day} {clock} {utc_offset(local)}"


class Writer(Protocol):
    def write(self, records: Sequence[Record]) -> None: ...


class CsvWriter:
    """RFC 4180 (the csv module's excel dialect: CRLF, quotes doubled) in UTF-8 with a BOM."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.buffer = io.StringIO()
        self.csv = csv.writer(self.buffer)
        self.out.write(BOM)
        self._emit([COLUMNS])

    def _emit(self, rows: Sequence[Sequence[object]]) -> None:
        self.csv.writerows(rows)
        self.out.write(self.buffer.getvalue().encode("utf-8"))
        self.buffer.seek(0)
        self.buffer.truncate()

    def write(self, records: Sequence[Record]) -> None:
        self._emit([(r.id, spreadsheet_safe(r.owner), iso_utc(r.created_at), iso_utc(r.updated_at),
                     spreadsheet_safe(" ".join(r.tags)), spreadsheet_safe(r.body)) for r in records])


class JsonLinesWriter:
    """One JSON object per line, UTF-8, times in ISO 8601 UTC."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def write(self, records: Sequence[Record]) -> None:
        lines = [json.dumps({"id": r.id, "owner": r.owner, "created_at": iso_utc(r.created_at),
                             "updated_at": iso_utc(r.updated_at), "tags": list(r.tags), "text": r.body},
                            ensure_ascii=False) for r in records]
        self.out.write(("\n".join(lines) + "\n").encode("utf-8") if lines else b"")


class MarkdownWriter:
    """A heading per record (id, owner, time in the reader's zone and language), its tags, its text."""

    def __init__(self, out: BinaryIO, zone: tzinfo, title: str) -> None:
        self.out = out
        self.when = LocalTimes(zone)
        # Translated once: the placeholders are filled per record.
        self.edited, self.tagged = _("Edited {time}"), _("Tags: {tags}")
        self.out.write(f"# {title}\n\n".encode())

    def write(self, records: Sequence[Record]) -> None:
        parts: list[str] = []
        for r in records:
            parts.append(f"## #{r.id} · {r.owner} · {self.when(r.created_at)}\n\n")
            if r.updated_at != r.created_at:
                parts.append(self.edited.format(time=self.when(r.updated_at)) + "\n\n")
            if r.tags:
                parts.append(self.tagged.format(tags=" ".join(f"`#{t}`" for t in r.tags)) + "\n\n")
            parts.append(_STRUCTURE.sub(r"\1\\\2", r.body.rstrip("\n")) + "\n\n")
        self.out.write("".join(parts).encode("utf-8"))


def writer_for(fmt: str, out: BinaryIO, zone: tzinfo, title: str) -> Writer:
    if fmt == "csv":
        return CsvWriter(out)
    if fmt == "json":
        return JsonLinesWriter(out)
    return MarkdownWriter(out, zone, title)
