"""The whole database as rows: read in primary-key order and in batches, written as JSON Lines, read back.

The file: a header line, then `{"t": table, "r": {column: value}}` per row, tables in foreign-key order,
each in primary-key order. Datetimes are ISO 8601 (naive UTC, microseconds), bytes `{"b64": ...}`.
The search tables (SQLite's FTS5, MariaDB's Mroonga) are derived from T_CONTENT: SQLite's triggers
fill them on insert and `search.ensure_mroonga` after, so they are never in the file.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import Connection, Engine, LargeBinary, String, Table, and_, func, insert, not_, or_, select

from bot import search
from bot.tables import metadata

FORMAT = "recbot-export"
VERSION = 1
BATCH = 5_000
# Foreign-key order: every row's parents come before it, on export, import and copy.
TABLES: list[Table] = list(metadata.sorted_tables)
BY_NAME = {t.name: t for t in TABLES}


class DumpError(Exception):
    """A file or database that cannot be used as it is; the message says why and what to do."""


# ---- values --------------------------------------------------------------------------------------

def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="microseconds")


def _bytes(value: bytes | None) -> dict[str, str] | None:
    return None if value is None else {"b64": base64.b64encode(value).decode("ascii")}


def _encoders(table: Table) -> list[Callable[[Any], Any] | None]:
    out: list[Callable[[Any], Any] | None] = []
    for col in table.columns:
        if isinstance(col.type, LargeBinary):
            out.append(_bytes)
        elif col.type.python_type is datetime:
            out.append(_time)
        else:
            out.append(None)
    return out


def row_encoder(table: Table) -> Callable[[Sequence[Any]], list[Any]]:
    """A row (in column order) as JSON-ready values."""
    encoders = _encoders(table)

    def encode(row: Sequence[Any]) -> list[Any]:
        return [v if f is None or v is None else f(v) for f, v in zip(encoders, row, strict=True)]
    return encode


def decode_row(table: Table, values: dict[str, Any]) -> dict[str, Any]:
    """A row read from the file, back in the types the table takes."""
    out = dict(values)
    for col in table.columns:
        value = out.get(col.name)
        if value is None:
            continue
        if isinstance(col.type, LargeBinary):
            out[col.name] = base64.b64decode(value["b64"], validate=True)
        elif col.type.python_type is datetime:
            out[col.name] = datetime.fromisoformat(value)
    return out


# One encoder for every row: json.dumps with options builds a new one per call, which costs more than
# encoding a row.
dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


# ---- reading a table in primary-key order ------------------------------------------------------------

def _sort_key(engine: Engine | Connection, col: Any) -> Any:
    """The column as it sorts: by code point on every backend, so both sides of a copy and an export
    from either backend agree on the order (MariaDB's default collation folds case)."""
    if engine.dialect.name in ("mysql", "mariadb") and isinstance(col.type, String):
        impl = col.type.dialect_impl(engine.dialect)
        if getattr(impl, "collation", None) != "utf8mb4_bin":
            return col.collate("utf8mb4_bin")
    return col


def _after(cols: Sequence[Any], key: Sequence[Any]) -> Any:
    """(cols) > key, lexicographically; the leading `>=` lets both backends range-scan the index."""
    branches = [and_(*(cols[j] == key[j] for j in range(i)), cols[i] > key[i]) for i in range(len(cols))]
    return and_(cols[0] >= key[0], or_(*branches)) if len(cols) > 1 else branches[0]


def pk_names(table: Table) -> list[str]:
    return [c.name for c in table.primary_key.columns]


def batches(conn: Connection, table: Table, size: int = BATCH, *, after: Sequence[Any] | None = None,
            upto: Sequence[Any] | None = None) -> Iterator[Sequence[Any]]:
    """The table's rows in primary-key order, `size` at a time (keyset paging: each batch costs the
    same however deep it is); only keys above `after` and up to `upto` when given."""
    cols = [_sort_key(conn, c) for c in table.primary_key.columns]
    at = [list(table.columns).index(c) for c in table.primary_key.columns]
    while True:
        stmt = select(table).order_by(*cols).limit(size)
        if after is not None:
            stmt = stmt.where(_after(cols, after))
        if upto is not None:
            stmt = stmt.where(not_(_after(cols, upto)))
        rows = conn.execute(stmt).all()
        if rows:
            yield rows
        if len(rows) < size:
            return
        after = tuple(rows[-1][i] for i in at)


def last_key(conn: Connection, table: Table) -> tuple[Any, ...] | None:
    """The greatest primary key, in the order `batches` reads."""
    cols = [_sort_key(conn, c) for c in table.primary_key.columns]
    row = conn.execute(select(*table.primary_key.columns).order_by(*(c.desc() for c in cols)).limit(1)).first()
    return None if row is None else tuple(row)


def counts(conn: Connection) -> dict[str, int]:
    return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in TABLES}


# ---- export ------------------------------------------------------------------------------------------

def export(engine: Engine, out: TextIO, schema: str, now: datetime, size: int = BATCH,
           progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Write the whole database to `out`; returns the rows per table.

    One read transaction covers the counts and every batch, so the file is one consistent moment
    even while the bot keeps writing.
    """
    with engine.connect() as conn:
        numbers = counts(conn)
        header = {"format": FORMAT, "version": VERSION, "schema": schema, "exported_at": _time(now),
                  "tables": numbers}
        out.write(dumps(header) + "\n")
        for table in TABLES:
            names = [c.name for c in table.columns]
            encode = row_encoder(table)
            prefix = '{"t":' + dumps(table.name) + ',"r":'
            for rows in batches(conn, table, size):
                out.write("".join(prefix + dumps(dict(zip(names, encode(r), strict=True))) + "}\n" for r in rows))
                if progress:
                    progress(table.name, len(rows))
    return numbers


# ---- the file, checked before anything is written ------------------------------------------------------

@dataclass(frozen=True)
class Header:
    schema: str
    exported_at: str
    tables: dict[str, int]


def _read_header(line: str, path: Path, head: str) -> Header:
    try:
        header = json.loads(line)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise DumpError(f"{path} is not a recbot export (its first line is not a {FORMAT} header); "
                        "make one with python -m bot export --out FILE")
    version = header.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise DumpError(f"{path} is in {FORMAT} format version {version}, this recbot reads up to {VERSION}: "
                        "import it with a newer recbot")
    tables = header.get("tables")
    if not isinstance(tables, dict) or set(tables) - set(BY_NAME):
        raise DumpError(f"{path}: the header's table list does not match this recbot's tables")
    if header.get("schema") != head:
        raise DumpError(f"{path} was exported at schema {header.get('schema')}, this recbot is at {head}: "
                        f"import it with the recbot release at schema {header.get('schema')}, "
                        "run python -m bot migrate, then export again")
    return Header(str(header["schema"]), str(header.get("exported_at")), {k: int(v) for k, v in tables.items()})


def read_rows(path: Path) -> Iterator[tuple[int, Table, dict[str, Any]]]:
    """(line number, table, raw values) for each row line; DumpError on a line that is not one."""
    with path.open(encoding="utf-8", newline="") as f:
        next(f, None)
        for number, line in enumerate(f, start=2):
            try:
                item = json.loads(line)
                table = BY_NAME[item["t"]]
                values = item["r"]
            except (ValueError, KeyError, TypeError):
                raise DumpError(f"{path} line {number} is not a row of a recbot export (the file is damaged "
                                "or was cut short); export it again") from None
            if not isinstance(values, dict) or list(values) != [c.name for c in table.columns]:
                raise DumpError(f"{path} line {number}: the columns of {table.name} do not match this recbot's")
            yield number, table, values


def check_file(path: Path, head: str) -> Header:
    """Read the whole file once: a header this recbot reads, every line a row, tables in foreign-key
    order, and as many rows as the header says (a file cut short at a line end is caught here)."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            header = _read_header(f.readline(), path, head)
        seen = dict.fromkeys(BY_NAME, 0)
        position = 0
        for number, table, values in read_rows(path):
            index = TABLES.index(table)
            if index < position:
                raise DumpError(f"{path} line {number}: {table.name} after a table that depends on it; "
                                "the file was not written by python -m bot export")
            position = index
            decode_row(table, values)
            seen[table.name] += 1
    except OSError as exc:
        raise DumpError(f"cannot read {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
        raise DumpError(f"{path} holds a value this recbot cannot read ({exc}); export it again") from None
    short = {name: (want, seen.get(name, 0)) for name, want in header.tables.items() if seen.get(name, 0) != want}
    if short:
        detail = ", ".join(f"{n}: {got} of {want} rows" for n, (want, got) in short.items())
        raise DumpError(f"{path} is incomplete ({detail}); it was cut short: export it again")
    return header


# ---- import --------------------------------------------------------------------------------------------

def nonempty_tables(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [name for name, n in counts(conn).items() if n]


def _grouped(path: Path, size: int) -> Iterator[tuple[Table, list[dict[str, Any]]]]:
    """Consecutive rows of one table, at most `size` at a time."""
    table: Table | None = None
    batch: list[dict[str, Any]] = []
    for _number, each, values in read_rows(path):
        if batch and (each is not table or len(batch) >= size):
            assert table is not None
            yield table, batch
            batch = []
        table = each
        batch.append(decode_row(each, values))
    if batch and table is not None:
        yield table, batch


def import_file(engine: Engine, path: Path, size: int = BATCH,
                progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Insert every row as it is (ids included), one transaction per batch; returns rows per table."""
    done = dict.fromkeys(BY_NAME, 0)
    for table, rows in _grouped(path, size):
        with engine.begin() as conn:
            conn.execute(insert(table), rows)
        done[table.name] += len(rows)
        if progress:
            progress(table.name, len(rows))
    search.ensure_mroonga(engine)  # MariaDB's accelerator is filled by the app, not by triggers
    return done


# ---- merge into a database that already holds data -------------------------------------------------------

# Operational state of the other installation's hosts: merging it would re-post or silence alerts.
NOT_MERGED = ("T_ALERT_STATE", "T_ALERT_HEALTH", "T_SAMPLE", "T_OUTBOX", "T_LEASE")
# Rows with their own id get a new one; a row whose natural key is already there is that row.
NATURAL = {
    "T_USER": ("mm_user_id",),
    "T_CONTENT": ("owner_id", "created_at", "body"),
    "T_REVISION": ("record_id", "edited_at", "body"),
    "T_FILE": ("record_id", "mm_file_id"),
    "T_AUDIT": ("actor_id", "action", "created_at", "detail"),
}
# Long text is compared in Python: MariaDB's default collation would call 'Done' and 'done' equal.
_COMPARED_IN_PYTHON = ("body", "detail")


@dataclass
class Merged:
    added: dict[str, int]
    kept: dict[str, int]  # rows already there (same natural key), or left out by design


def _remap(table: Table, row: dict[str, Any], ids: dict[str, dict[int, int]]) -> bool:
    """Point the row's references at the target's ids; False when a parent was left out."""
    for col in table.columns:
        for fk in col.foreign_keys:
            value = row[col.name]
            if value is None:
                continue
            mapping = ids.get(fk.column.table.name)
            if mapping is None or value not in mapping:
                return False
            row[col.name] = mapping[value]
    return True


def _existing(conn: Connection, table: Table, row: dict[str, Any]) -> int | None:
    natural = NATURAL[table.name]
    probe = [table.c[n] == row[n] for n in natural if n not in _COMPARED_IN_PYTHON]
    for found in conn.execute(select(table).where(*probe)).mappings():
        if all(found[n] == row[n] for n in natural):
            return int(found["id"])
    return None


def _merge_row(conn: Connection, table: Table, row: dict[str, Any], ids: dict[str, dict[int, int]]) -> bool:
    """Insert one row unless it is there already; True when it was added."""
    old_id = row.get("id") if table.name in NATURAL else None
    if not _remap(table, row, ids):
        return False
    if old_id is None:
        stmt = insert(table).prefix_with("OR IGNORE", dialect="sqlite").prefix_with(
            "IGNORE", dialect="mysql").prefix_with("IGNORE", dialect="mariadb")
        return bool(conn.execute(stmt, row).rowcount)
    found = _existing(conn, table, row)
    added = found is None
    if found is None:
        row.pop("id")
        key = conn.execute(insert(table), row).inserted_primary_key
        assert key is not None
        found = int(key[0])
    if table.name in ("T_USER", "T_CONTENT"):
        ids.setdefault(table.name, {})[int(old_id)] = found
    return added


def merge_file(engine: Engine, path: Path, size: int = BATCH) -> Merged:
    """Add the file's rows to a database that holds data of its own (see README, "Export and import").

    Users are matched by Mattermost id; records, revisions, files and audit rows get new ids, with
    every reference remapped; a row whose natural key is there already is skipped, so merging the same
    file twice adds nothing the second time. The id map of users and records is held in memory.
    """
    ids: dict[str, dict[int, int]] = {}
    result = Merged(dict.fromkeys(BY_NAME, 0), dict.fromkeys(BY_NAME, 0))
    for table, rows in _grouped(path, size):
        if table.name in NOT_MERGED:
            result.kept[table.name] += len(rows)
            continue
        with engine.begin() as conn:
            for row in rows:
                added = _merge_row(conn, table, row, ids)
                (result.added if added else result.kept)[table.name] += 1
    search.ensure_mroonga(engine)
    return result
