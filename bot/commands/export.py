"""export: the caller's visible records, filtered as find and list are, in a file.

The file goes into the caller's direct channel with the bot; without Mattermost (the shell) it is
written to the current directory. Records are read a page at a time and appended to a file on disk,
so an export of any size holds one page in memory.
"""

from __future__ import annotations

import contextvars
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC
from pathlib import Path
from typing import BinaryIO

from bot.commands.records import filter_of
from bot.context import Context, Reply
from bot.dispatch import Router
from bot.errors import UserError
from bot.export_format import ALIASES, EXTENSIONS, FORMATS, writer_for
from bot.i18n import N_, _, ngettext, number, when
from bot.mattermost.gateway import FileTooLarge, Gateway
from bot.parse import ParseError, parse_filters, split
from bot.storage import Filter, Record

router = Router()
PAGE = 500  # records per read: what an export holds in memory, whatever its size
MAX_UPLOAD = 100 * 1024 * 1024  # Mattermost's default FileSettings.MaxFileSize
_MB = 1024 * 1024


class TooLarge(UserError):
    """The file passed what Mattermost accepts; the message says how to make it smaller."""


def take_format(rest: str) -> tuple[str, str]:
    """(the format format:X names, csv by default; the rest of the command for parse_filters)."""
    tokens = split(rest)
    chosen = [t for t in tokens if t.lower().startswith("format:")]
    if len(chosen) > 1:
        raise ParseError(_("give format: once, e.g. format:csv"))
    fmt = "csv"
    if chosen:
        raw = chosen[0][len("format:"):].lower()
        fmt = ALIASES.get(raw, raw)
        if fmt not in FORMATS:
            raise ParseError(_("'{token}' is not a format; use format:csv, format:json or format:md",
                               token=chosen[0][:40]))
    return fmt, " ".join(_quoted(t) for t in tokens if not t.lower().startswith("format:"))


def _quoted(token: str) -> str:
    """A token written back so that parse.split reads it as it was (a "quoted phrase" stays one)."""
    if token and not any(ch.isspace() or ch in '"\\' for ch in token):
        return token
    return '"' + token.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_all(ctx: Context, flt: Filter, fmt: str, out: BinaryIO, *, limit: int | None) -> int:
    """Every visible matching record, newest first, page by page into `out`; how many were written.

    The next page is read while this one is written (at most two pages in memory): the database's
    work and the file's overlap. Raises TooLarge once the file passes `limit` bytes (no point writing
    what cannot be uploaded).
    """
    writer = writer_for(fmt, out, ctx.zone, _title(ctx))
    count = 0
    language = contextvars.copy_context()  # the caller's language, for any error the reading thread raises

    def read(below: int | None) -> list[Record]:
        return language.run(ctx.storage.export_page, ctx.caller, flt, limit=PAGE, below=below)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="export") as reader:
        coming: Future[list[Record]] | None = reader.submit(read, None)
        while coming is not None:
            records = coming.result()
            # A full page may have more below it; a short one is the end.
            coming = reader.submit(read, records[-1].id) if len(records) == PAGE else None
            writer.write(records)
            count += len(records)
            if limit is not None and out.tell() > limit:
                if coming is not None:
                    coming.cancel()
                raise TooLarge(_("the export passed {size} MB after {n} records, more than Mattermost accepts "
                                 "in one file; narrow it with @user, #tag, words, since: or until:",
                                 size=number(limit // _MB), n=number(count)))
    return count


def _title(ctx: Context) -> str:
    return _("recbot export for {name}, {time}", name=ctx.caller.username, time=when(ctx.storage.clock(), ctx.zone))


def file_name(ctx: Context, fmt: str) -> str:
    """recbot-export-2026-12-01-0930.csv, in the caller's own time."""
    local = ctx.storage.clock().replace(tzinfo=UTC).astimezone(ctx.zone)
    return f"recbot-export-{local:%Y-%m-%d-%H%M}.{EXTENSIONS[fmt]}"


@router.command("export", N_("[words] [@user] [#tag] [since:YYYY-MM-DD] [until:YYYY-MM-DD] [format:csv|json|md]"),
                N_("your visible records in a file in your direct messages"),
                details=N_("Filters work as in find and list; without words it takes every record list shows. "
                           "format:csv (the default) opens in Excel, format:json gives JSON Lines for scripts, "
                           "format:md Markdown for reading. Example: `/rec export #deploy since:2026-01-01 format:md`"))
def export(ctx: Context, rest: str) -> Reply:
    fmt, filters = take_format(rest)
    args = parse_filters(filters, words_allowed=True)
    if args.page is not None or args.before is not None:
        raise ParseError(_("an export takes every matching record; leave out page: and before:"))
    flt = filter_of(ctx, args)
    gateway = ctx.services.gateway
    if gateway is None:
        return _into_directory(ctx, flt, fmt)
    return _into_direct(ctx, gateway, flt, fmt, rest)


def _nothing(ctx: Context) -> Reply:
    return Reply(_("No records you can see match, so no file was made. Try fewer filters, or `/{trigger} list` "
                   "for the newest records.", trigger=ctx.config.mattermost.trigger))


def _into_directory(ctx: Context, flt: Filter, fmt: str) -> Reply:
    """The shell: the file in the current directory, never over an existing one."""
    name = file_name(ctx, fmt)
    path = Path.cwd() / name
    stem, suffix, n = path.stem, path.suffix, 1
    while path.exists():
        n += 1
        path = path.with_name(f"{stem}-{n}{suffix}")
    try:
        with path.open("xb") as out:
            count = write_all(ctx, flt, fmt, out, limit=None)
    except BaseException:
        path.unlink(missing_ok=True)  # no half-written file left behind
        raise
    if not count:
        path.unlink()
        return _nothing(ctx)
    return Reply(ngettext("Exported {n} record to {path}.", "Exported {n} records to {path}.", count, path=str(path)))


def _into_direct(ctx: Context, gateway: Gateway, flt: Filter, fmt: str, rest: str) -> Reply:
    name = file_name(ctx, fmt)
    with tempfile.TemporaryDirectory(prefix="recbot-export-") as folder:
        path = Path(folder) / name
        with path.open("xb") as out:
            count = write_all(ctx, flt, fmt, out, limit=MAX_UPLOAD)
        if not count:
            return _nothing(ctx)
        # In a code span: the filters' @names must not ping anyone in the direct channel.
        typed = f"/{ctx.config.mattermost.trigger} export {rest.strip()}".strip().replace("`", "'")[:300]
        message = ngettext("Your export: {n} record, from `{command}`.", "Your export: {n} records, from `{command}`.",
                           count, command=typed)
        try:
            gateway.send_direct_file_from(ctx.caller.mm_user_id, message, name, str(path))
        except FileTooLarge:
            raise TooLarge(_("Mattermost refused the file ({size} MB) as too large; narrow the export with "
                             "@user, #tag, words, since: or until:",
                             size=number(path.stat().st_size / _MB, 1))) from None
    return Reply(ngettext("Exported {n} record: **{file}** is in your direct messages with @{bot}.",
                          "Exported {n} records: **{file}** is in your direct messages with @{bot}.",
                          count, file=name, bot=ctx.bot_name))
