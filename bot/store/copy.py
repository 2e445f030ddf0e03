"""Copy every table from one database to another, resumably, and prove the copy equal.

Rows go in foreign-key order, each table in primary-key order, one transaction per batch. So after an
interruption (even kill -9) each table of the target holds a prefix of the source's rows in that order.
A re-run checks that prefix against the source (count and checksum) and copies only the rows after it;
a target whose rows are not such a prefix holds other data, and the copy refuses to touch it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Table, insert, inspect

from bot import search
from bot.store.dump import BATCH, TABLES, batches, counts, dumps, last_key, row_encoder


class CopyRefused(Exception):
    """The target cannot take this copy; the message says why and what to do."""


@dataclass(frozen=True)
class Digest:
    rows: int
    sha256: str


def digest(conn: Connection, table: Table, *, upto: tuple[Any, ...] | None = None, size: int = BATCH) -> Digest:
    """Row count and sha256 of the canonical JSON of each row (as in an export), in primary-key order;
    computed the same way on either backend, so equal digests mean equal rows."""
    encode = row_encoder(table)
    sha = hashlib.sha256()
    n = 0
    for rows in batches(conn, table, size, upto=upto):
        sha.update("".join(dumps(encode(r)) + "\n" for r in rows).encode("utf-8"))
        n += len(rows)
    return Digest(n, sha.hexdigest())


def foreign_tables(target: Engine) -> list[str]:
    """recbot's tables that exist in a target that has no recbot schema version: not ours to fill."""
    present = set(inspect(target).get_table_names())
    return sorted(t.name for t in TABLES if t.name in present)


def resume_points(source: Engine, target: Engine) -> dict[str, tuple[Any, ...] | None]:
    """Per table, the last key the target already holds (None: start from the beginning).

    Raises CopyRefused when a table of the target is not a prefix of the source's.
    """
    points: dict[str, tuple[Any, ...] | None] = {}
    with source.connect() as src, target.connect() as dst:
        for table in TABLES:
            last = last_key(dst, table)
            points[table.name] = last
            if last is None:
                continue
            theirs, ours = digest(dst, table), digest(src, table, upto=last)
            if theirs != ours:
                raise CopyRefused(
                    f"the target's {table.name} holds {theirs.rows} rows that are not a copy of this database's "
                    f"first {ours.rows}: it holds other data (or the source changed since the interrupted copy). "
                    "Copy into an empty database (create a new one, "
                    "or drop this one's tables)")
    return points


def copy_tables(source: Engine, target: Engine, points: dict[str, tuple[Any, ...] | None], size: int = BATCH,
                progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Copy the rows after each table's resume point, one transaction per batch; rows copied per table."""
    copied = dict.fromkeys(points, 0)
    with source.connect() as src, target.connect() as dst:
        if dst.dialect.name in ("mysql", "mariadb"):
            # Parents always go first and the checksums prove the result, so the per-row checks of a
            # bulk load are skipped (this session only; the connection is dropped, not pooled, after).
            dst.exec_driver_sql("SET SESSION foreign_key_checks = 0, unique_checks = 0")
            dst.commit()
        try:
            for table in TABLES:
                write = _writer(dst, table)
                for rows in _read_ahead(batches(src, table, size, after=points[table.name])):
                    with dst.begin():
                        write(rows)
                    copied[table.name] += len(rows)
                    if progress:
                        progress(table.name, len(rows))
        finally:
            dst.invalidate()
    search.ensure_mroonga(target)  # MariaDB's accelerator is filled by the app, not by triggers
    return copied


def _read_ahead(source: Iterator[Sequence[Any]]) -> Iterator[Sequence[Any]]:
    """The next batch is read while this one is written: the target's server works on one core while
    this process reads the source on the other (one batch ahead, so memory stays two batches)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="copy-read") as reader:
        coming = reader.submit(next, source, None)
        while (rows := coming.result()) is not None:
            coming = reader.submit(next, source, None)
            yield rows


def _writer(dst: Connection, table: Table) -> Callable[[Sequence[Any]], None]:
    """How one batch of rows goes into the target table.

    Into MariaDB the rows go to the driver as they are: PyMySQL turns an executemany INSERT into
    multi-row INSERTs itself, and skipping SQLAlchemy's per-row parameter handling roughly halves a
    copy's time. The values are already Python's (datetimes, bytes, text), which PyMySQL escapes.
    Into SQLite they go through SQLAlchemy, which writes times in the format the rest of recbot reads.
    """
    names = [c.name for c in table.columns]
    if dst.dialect.name not in ("mysql", "mariadb"):
        def through_sqlalchemy(rows: Sequence[Any]) -> None:
            dst.execute(insert(table), [dict(zip(names, r, strict=True)) for r in rows])
        return through_sqlalchemy
    quote = dst.dialect.identifier_preparer.quote
    sql = (f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)}) "
           f"VALUES ({', '.join(['%s'] * len(names))})")

    def to_the_driver(rows: Sequence[Any]) -> None:
        dst.exec_driver_sql(sql, [tuple(r) for r in rows])
    return to_the_driver


def row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return counts(conn)


@dataclass(frozen=True)
class Check:
    table: str
    source: Digest
    target: Digest

    @property
    def ok(self) -> bool:
        return self.source == self.target


def verify(source: Engine, target: Engine) -> list[Check]:
    """Count and checksum of every table, on both sides."""
    with source.connect() as src, target.connect() as dst:
        return [Check(t.name, digest(src, t), digest(dst, t)) for t in TABLES]
