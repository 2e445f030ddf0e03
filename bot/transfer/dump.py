"""python -m bot export --out FILE and python -m bot import FILE [--merge]: the whole database as a file."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn, TextIO

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from bot import migrate
from bot.config import Config
from bot.storage import make_engine, utcnow
from bot.store import dump

MERGE_HELP = ("--merge adds the file's rows to the data already there: users are matched by Mattermost id, "
              "records, revisions, files and audit rows get new ids (references follow), rows already "
              "there are skipped, the target's settings win, and alert state is not merged")


class Usage(Exception):
    """Bad input: one line for the user, exit code 2, nothing changed."""


class Parser(argparse.ArgumentParser):
    """argparse whose complaints are one line, like every other refusal of the CLI."""

    def error(self, message: str) -> NoReturn:
        raise Usage(f"{self.prog}: {message}; see {self.prog} --help")


def safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unreadable URL)"


def db_problem(url: str, exc: Exception) -> str:
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return f"cannot use {safe_url(url)}: {reason}; check that the server runs and the URL is right"


def engine_for(url: str) -> Engine:
    try:
        return make_engine(url)
    except (ArgumentError, ValueError) as exc:
        raise Usage(f"{url!r} is not a database URL ({exc}); use sqlite:///path.db or "
                    "mysql+pymysql://user:pw@host:3306/name?charset=utf8mb4") from None


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def run_export(config: Config, options: list[str]) -> int:
    parser = Parser(prog="python -m bot export", description="Write the whole database as versioned JSON Lines.")
    parser.add_argument("--out", required=True, help="file to write (- for standard output)")
    parser.add_argument("--batch", type=int, default=dump.BATCH, help="rows read per query")
    try:
        args = parser.parse_args(options)
        engine = engine_for(config.database.url)
    except Usage as exc:
        _stderr(str(exc))
        return 2
    try:
        schema = migrate.current_revision(engine)
        if schema != migrate.head_revision():
            _stderr(f"export: the database is at schema {schema or 'none'}, this recbot at "
                    f"{migrate.head_revision()}: run python -m bot migrate first")
            return 2
        numbers = _export_to(engine, args.out, schema, args.batch)
    except SQLAlchemyError as exc:
        _stderr(f"export: {db_problem(config.database.url, exc)}")
        return 2
    except OSError as exc:
        _stderr(f"export: cannot write {args.out}: {exc.strerror}; choose a writable path")
        return 2
    finally:
        engine.dispose()
    detail = ", ".join(f"{name} {n}" for name, n in numbers.items() if n)
    _stderr(f"export: {sum(numbers.values())} rows ({detail or 'empty database'}) to {args.out}")
    return 0


def _export_to(engine: Engine, out: str, schema: str, size: int) -> dict[str, int]:
    if out == "-":
        return dump.export(engine, sys.stdout, schema, utcnow(), size)
    final = Path(out)
    # Written beside and renamed at the end: a failed export never leaves a file that looks whole.
    partial = final.with_name(final.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8", newline="\n") as f:
            numbers = dump.export(engine, f, schema, utcnow(), size)
            _sync(f)
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    return numbers


def _sync(f: TextIO) -> None:
    f.flush()
    os.fsync(f.fileno())


def run_import(config: Config, options: list[str]) -> int:
    parser = Parser(prog="python -m bot import", description="Load a file written by python -m bot export.",
                    epilog=MERGE_HELP)
    parser.add_argument("file", help="the export file")
    parser.add_argument("--merge", action="store_true", help="add to a database that holds data (see below)")
    parser.add_argument("--batch", type=int, default=dump.BATCH, help="rows per transaction")
    try:
        args = parser.parse_args(options)
        path = Path(args.file)
        header = dump.check_file(path, migrate.head_revision())
        engine = engine_for(config.database.url)
    except (Usage, dump.DumpError) as exc:
        _stderr(f"import: {exc}")
        return 2
    try:
        return _import_checked(config, engine, path, header, args.merge, args.batch)
    finally:
        engine.dispose()


def _import_checked(config: Config, engine: Engine, path: Path, header: dump.Header, merge: bool, size: int) -> int:
    url = safe_url(config.database.url)
    try:
        migrate.upgrade(engine)
        holding = dump.nonempty_tables(engine)
    except SQLAlchemyError as exc:
        _stderr(f"import: {db_problem(config.database.url, exc)}")
        return 2
    if holding and not merge:
        _stderr(f"import: {url} already holds data ({', '.join(holding)}); import into an empty database, "
                f"or add --merge: {MERGE_HELP}")
        return 2
    try:
        if holding:
            merged = dump.merge_file(engine, path, size)
            added = ", ".join(f"{n} {c}" for n, c in merged.added.items() if c)
            _stderr(f"import: merged {path} into {url}: added {sum(merged.added.values())} rows ({added or 'none'}), "
                    f"skipped {sum(merged.kept.values())} already there or not merged")
            return 0
        done = dump.import_file(engine, path, size)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        start_over = ("some batches were merged; fix the cause and run the same merge again (rows already "
                      "there are skipped)") if holding else (
            "the database now holds part of the file: empty it (drop and create the MariaDB database, or delete "
            "the SQLite file), run python -m bot migrate, then import again")
        _stderr(f"import: failed at {url}: {reason}; {start_over}")
        return 1
    detail = ", ".join(f"{name} {n}" for name, n in done.items() if n)
    _stderr(f"import: {sum(done.values())} rows ({detail or 'none'}) from {path} "
            f"(exported {header.exported_at}) into {url}")
    return 0
