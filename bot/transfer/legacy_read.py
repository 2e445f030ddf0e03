"""Reading the old Tornado + MySQL page's tables (T_USER, T_CONTENT, T_SETTING) through a mapping.

Column names vary between installs: the mapping (deploy/legacy-mapping.yaml) names them. A list means
"the first of these the table has"; a single name given in a --mapping file must exist; null: none. Table and column
names are identifiers checked against what the database reports, never values, so they are quoted by
SQLAlchemy's own `table()`/`column()`; every value is read, none is written into SQL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from sqlalchemy import Connection, Engine, column, inspect, select, table

from bot.store.legacy import MAX_USERNAME, LegacyPerson, LegacyRecord

DEFAULTS: dict[str, Any] = {
    "timezone": "UTC",
    "admin_types": [1, "admin"],
    "user": {"table": "T_USER", "id": ["id"], "username": ["username", "name"], "password": ["password", "passwd"],
             "type": ["type", "account_type"], "permission": ["permission", "permissions"]},
    "content": {"table": "T_CONTENT", "id": ["id"], "author": ["user_id", "author_id", "uid"],
                "text": ["content", "text"], "time": ["created_at", "time"]},
    "setting": {"table": "T_SETTING", "name": ["name", "key"], "value": ["value"]},
    "settings": {},
}
KINDS = ("user", "content", "setting")
REQUIRED = {"user": ("id", "username"), "content": ("id", "author", "text", "time"), "setting": ("name", "value")}
ID_LIST = re.compile(r"[0-9]+(?:,[0-9]+)*,?")


class MappingError(ValueError):
    """A mapping file or an old database the import cannot use; the message says what to change."""


@dataclass(frozen=True)
class Source:
    """One old table as the mapping resolved it against the database."""

    kind: str
    table: str
    columns: dict[str, str]  # field -> column name as the database spells it
    unmapped: tuple[str, ...]

    def select(self, *order: str) -> Any:
        """SELECT of the mapped fields (labelled by field; never the password), ordered by fields."""
        wanted = {f: c for f, c in self.columns.items() if f != "password"}
        t = table(self.table, *(column(c) for c in dict.fromkeys(wanted.values())))
        return (select(*(t.c[c].label(f) for f, c in wanted.items())).select_from(t)
                .order_by(*(t.c[wanted[f]] for f in order)))


@dataclass
class Legacy:
    """The resolved mapping: which tables and columns hold what."""

    sources: dict[str, Source]
    zone: ZoneInfo
    admin_types: frozenset[str]
    renames: dict[str, str]  # old setting key -> recbot key
    notes: list[str] = field(default_factory=list)


def load_mapping(path: str | None) -> dict[str, Any]:
    """The defaults, with what a --mapping file names on top (one level deep, per table)."""
    merged: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    if path is None:
        return merged
    try:
        given = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise MappingError(f"cannot read the mapping {path}: {exc.strerror}; check --mapping") from None
    except yaml.YAMLError as exc:
        raise MappingError(f"the mapping {path} is not YAML ({str(exc).splitlines()[0]}); "
                           "see deploy/legacy-mapping.yaml") from None
    if not isinstance(given, dict):
        raise MappingError(f"the mapping {path} must be a YAML mapping like deploy/legacy-mapping.yaml")
    for key, value in given.items():
        if key not in merged:
            raise MappingError(f"the mapping {path} has an unknown key '{key}'; it takes: {', '.join(merged)}")
        if isinstance(merged[key], dict) and key in KINDS:
            if not isinstance(value, dict):
                raise MappingError(f"'{key}' in {path} must map fields to column names")
            unknown = set(value) - set(merged[key])
            if unknown:
                raise MappingError(f"'{key}' in {path} has unknown fields {sorted(unknown)}; "
                                   f"it takes: {', '.join(merged[key])}")
            merged[key].update({f: ("=", v) for f, v in value.items()})  # "=": named by the user, must exist
        else:
            merged[key] = value
    return merged


def resolve(engine: Engine, mapping: dict[str, Any]) -> Legacy:
    """The mapping checked against the old database; MappingError names what is missing."""
    inspector = inspect(engine)
    tables = {t.lower(): t for t in inspector.get_table_names()}
    sources: dict[str, Source] = {}
    notes: list[str] = []
    for kind in KINDS:
        spec = dict(mapping[kind])
        explicit, name = _named(spec.pop("table"))
        real = tables.get(str(name).lower())
        if real is None:
            if kind == "setting" and not explicit:
                notes.append(f"no {name} table: no settings to import")
                continue
            raise MappingError(f"the old database has no table {name}; name the {kind} table in --mapping "
                               f"({kind}: table: ...); it has: {', '.join(sorted(tables.values())) or 'no tables'}")
        have = {c["name"].lower(): c["name"] for c in inspector.get_columns(real)}
        columns = {f: c for f, v in spec.items() if (c := _column(kind, real, f, v, have)) is not None}
        unmapped = tuple(c for c in have.values() if c not in columns.values())
        sources[kind] = Source(kind, real, columns, unmapped)
    try:
        zone = ZoneInfo(str(mapping["timezone"]))
    except (ZoneInfoNotFoundError, ValueError):
        raise MappingError(f"timezone '{mapping['timezone']}' is not an IANA zone such as UTC or Asia/Shanghai; "
                           "it is the zone of the old page's times") from None
    admins = mapping["admin_types"]
    if not isinstance(admins, list):
        raise MappingError("admin_types must be a list of the account types that are admins, e.g. [1, \"admin\"]")
    renames = mapping["settings"] or {}
    if not isinstance(renames, dict):
        raise MappingError("settings must map old setting names to recbot's, e.g. {pagesize: page_size}")
    return Legacy(sources, zone, frozenset(str(a).strip().lower() for a in admins),
                  {str(k): str(v) for k, v in renames.items()}, notes)


def _named(value: Any) -> tuple[bool, Any]:
    if isinstance(value, tuple) and value[:1] == ("=",):
        return True, value[1]
    return False, value


def _column(kind: str, table_name: str, name: str, value: Any, have: dict[str, str]) -> str | None:
    explicit, wanted = _named(value)
    candidates = wanted if isinstance(wanted, list) else [wanted]
    for candidate in candidates:
        if candidate is not None and str(candidate).lower() in have:
            return have[str(candidate).lower()]
    if explicit and wanted is not None and not isinstance(wanted, list):
        raise MappingError(f"the mapping names {table_name}.{wanted} for {kind} {name}, but {table_name} has no "
                           f"such column; it has: {', '.join(have.values())}")
    if name in REQUIRED[kind]:
        raise MappingError(f"{table_name} has no column for {kind} {name} (looked for: "
                           f"{', '.join(map(str, candidates))}); name it in --mapping ({kind}: {name}: ...)")
    return None


def read_users(conn: Connection, legacy: Legacy) -> tuple[dict[int, LegacyPerson], list[str], set[int]]:
    """Every old user that can be imported, by old id; one line per row that cannot, and their ids."""
    source = legacy.sources["user"]
    people: dict[int, LegacyPerson] = {}
    bad: list[str] = []
    names: dict[str, int] = {}
    skipped: set[int] = set()
    for row in conn.execute(source.select("id")).mappings():
        where = f"{source.table} {source.columns['id']}={row['id']!r}"
        uid, name = as_id(row["id"]), text_of(row["username"])
        if uid is None:
            bad.append(f"{where}: the id is not a number")
            continue
        name = (name or "").strip()
        where += f" ({name})"
        sees = parse_ids(row.get("permission"))
        if not name or len(name) > MAX_USERNAME or "\x00" in name:
            bad.append(f"{where}: the username is empty, has a NUL or is over {MAX_USERNAME} characters")
        elif name.lower() in names:
            bad.append(f"{where}: the username is also {source.table} {names[name.lower()]}'s")
        elif sees is None:
            bad.append(f"{where}: the permission list {row['permission']!r} is not a comma-separated list of ids")
        else:
            names[name.lower()] = uid
            skipped.discard(uid)
            admin = str(row.get("type")).strip().lower() in legacy.admin_types if "type" in row else False
            people[uid] = LegacyPerson(uid, name, admin, sees)
            continue
        skipped.add(uid)
    return people, bad, skipped


def stream_records(conn: Connection, legacy: Legacy) -> Iterator[tuple[Any, LegacyRecord]]:
    """(owner as stored, record) for every old record, by owner then id, streamed."""
    source = legacy.sources["content"]
    stmt = source.select("author", "id")
    for row in conn.execution_options(stream_results=True, yield_per=1000).execute(stmt).mappings():
        rid = as_id(row["id"])
        body = text_of(row["text"])
        when = read_time(row["time"], legacy.zone)
        problem = ("the id is not a number" if rid is None else
                   "the text is not UTF-8 text" if body is None else
                   f"the time {row['time']!r} cannot be read" if when is None else None)
        yield row["author"], LegacyRecord(rid if rid is not None else -1, body or "", when, problem)


def read_settings(conn: Connection, legacy: Legacy) -> dict[str, str]:
    source = legacy.sources.get("setting")
    if source is None:
        return {}
    return {str(text_of(r["name"])): str(text_of(r["value"]) or "") for r in conn.execute(source.select()).mappings()}


def as_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = text_of(value)
    return int(text.strip()) if text is not None and re.fullmatch(r"\s*[0-9]+\s*", text) else None


def text_of(value: Any) -> str | None:
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None if value is None else str(value)


def parse_ids(value: Any) -> tuple[int, ...] | None:
    """An old permission field: ids joined by commas, spaces and a trailing comma tolerated; None
    when it is anything else. Empty (or NULL) is an empty list."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    text = text_of(value)
    if text is None:
        return () if value is None else None
    compact = re.sub(r"[ \t]+", "", text)
    if compact in ("", ","):  # an empty list, as a page that appended "id," may leave it
        return ()
    if not ID_LIST.fullmatch(compact):
        return None
    return tuple(dict.fromkeys(int(i) for i in compact.split(",") if i))


def read_time(value: Any, zone: ZoneInfo) -> datetime | None:
    """An old time as naive UTC: a DATETIME (in the mapping's zone), a Unix time, or ISO text."""
    try:
        if isinstance(value, datetime):
            local = value
        elif (isinstance(value, int | float) and not isinstance(value, bool)) or (
                isinstance(value, str) and re.fullmatch(r"[0-9]+(\.[0-9]+)?", value.strip())):
            return datetime.fromtimestamp(float(value), UTC).replace(tzinfo=None)
        elif isinstance(value, str):
            local = datetime.fromisoformat(value.strip())
        else:
            return None
        if local.tzinfo is None:
            local = local.replace(tzinfo=zone)
        return local.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError, OSError):
        return None


def unmapped_columns(legacy: Legacy) -> list[str]:
    return [f"{s.table}.{c}" for s in legacy.sources.values() for c in s.unmapped]


def settings_renamed(values: Mapping[str, str], renames: Mapping[str, str]) -> dict[str, str]:
    return {renames.get(k, k): v for k, v in values.items()}
