"""python -m bot copy --to URL: the configured database into another one (SQLite to MariaDB, say).

Safe to re-run after an interruption: it resumes where the target stopped (see bot.store.copy).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from tqdm import tqdm  # type: ignore[import-untyped]  # tqdm ships no type information

from bot import migrate
from bot.config import Config
from bot.store import copy as store_copy
from bot.store.dump import BATCH
from bot.transfer.dump import Parser, Usage, db_problem, engine_for, safe_url


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def run_copy(config: Config, options: list[str]) -> int:
    parser = Parser(prog="python -m bot copy", description="Copy the configured database into another one, "
                    "then compare counts and checksums of every table. Stop the bot first.")
    parser.add_argument("--to", required=True, metavar="URL", help="the target database")
    parser.add_argument("--batch", type=int, default=BATCH, help="rows per transaction")
    try:
        args = parser.parse_args(options)
        if args.batch < 1:
            parser.error("--batch must be at least 1")
        if args.to == config.database.url:
            raise Usage("copy: --to names the configured database itself; give the URL of another database")
        source, target = engine_for(config.database.url), engine_for(args.to)
    except Usage as exc:
        _stderr(str(exc))
        return 2
    try:
        return _copy(config.database.url, args.to, source, target, args.batch)
    finally:
        source.dispose()
        target.dispose()


def _prepare(source_url: str, target_url: str, source: Engine, target: Engine) -> dict[str, Any] | str:
    """Resume points per table, or the one line saying why the copy cannot start (nothing changed)."""
    head = migrate.head_revision()
    try:
        if migrate.current_revision(source) != head:
            return f"copy: {safe_url(source_url)} is not at schema {head}: run python -m bot migrate first"
    except SQLAlchemyError as exc:
        return f"copy: {db_problem(source_url, exc)}"
    try:
        if migrate.current_revision(target) is None and store_copy.foreign_tables(target):
            return (f"copy: {safe_url(target_url)} has recbot's tables but no schema version: it holds other "
                    "data; copy into an empty database")
        migrate.upgrade(target)
        return store_copy.resume_points(source, target)
    except store_copy.CopyRefused as exc:
        return f"copy: {exc}"
    except SQLAlchemyError as exc:
        return f"copy: {db_problem(target_url, exc)}"


def _copy(source_url: str, target_url: str, source: Engine, target: Engine, size: int) -> int:
    prepared = _prepare(source_url, target_url, source, target)
    if isinstance(prepared, str):
        _stderr(prepared)
        return 2
    try:
        total = sum(store_copy.row_counts(source).values())
        already = sum(store_copy.row_counts(target).values())
        with tqdm(total=total, initial=already, unit="rows", file=sys.stderr, mininterval=0.5,
                  desc="copy", dynamic_ncols=True) as bar:
            def step(table: str, n: int) -> None:
                bar.set_postfix_str(table, refresh=False)
                bar.update(n)
            started = time.perf_counter()
            copied = store_copy.copy_tables(source, target, prepared, size, step)
            took = time.perf_counter() - started
        _stderr(f"copy: {sum(copied.values())} rows copied into {safe_url(target_url)} in {took:.1f} s "
                f"({already} were there already); checking every table")
        started = time.perf_counter()
        checks = store_copy.verify(source, target)
        _stderr(f"copy: checked in {time.perf_counter() - started:.1f} s")
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        _stderr(f"copy: stopped: {reason}; fix the cause and run the same command again: it resumes")
        return 1
    _print_checks(checks)
    if all(c.ok for c in checks):
        print(f"copy: every table matches; point database.url (REC_DATABASE__URL) at {safe_url(target_url)}")
        return 0
    print("copy: MISMATCH: the source changed during the copy, or the target was written to; stop the bot "
          "and run the same command again")
    return 1


def _print_checks(checks: list[store_copy.Check]) -> None:
    width = max(len(c.table) for c in checks)
    print(f"{'table':<{width}}  {'source rows':>11}  {'target rows':>11}  {'sha256 (first 16)':<17}  result")
    for c in checks:
        sums = c.source.sha256[:16] if c.source.sha256 == c.target.sha256 else \
            f"{c.source.sha256[:7]}≠{c.target.sha256[:7]}"
        print(f"{c.table:<{width}}  {c.source.rows:>11}  {c.target.rows:>11}  {sums:<17}  "
              f"{'ok' if c.ok else 'MISMATCH'}")
