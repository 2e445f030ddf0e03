"""python -m bot import-legacy --from URL [--mapping FILE] [--dry-run]: the old page's history, once.

Users become recbot users bound to their Mattermost account when that username first uses /rec
(until then they hold a `legacy:<name>` id), permission lists become grants, admin account types
become admins, records keep their time and text. Passwords are dropped. A re-run imports only what
is new; rows that cannot be read are reported and skipped. With --dry-run nothing is written.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from bot import migrate
from bot import settings as runtime_settings
from bot.config import Config
from bot.storage import Storage, make_engine
from bot.store.legacy import LegacyOutcome, LegacyPerson, LegacyRecord, Marker, record_problem
from bot.transfer.legacy_read import (
    Legacy,
    MappingError,
    as_id,
    load_mapping,
    read_settings,
    read_users,
    resolve,
    settings_renamed,
    stream_records,
    unmapped_columns,
)

Sink = Callable[[LegacyPerson, Iterable[LegacyRecord], Sequence[int]], LegacyOutcome]
MAX_BAD_LINES = 200  # a report of every bad row of a huge table would bury the summary


def _safe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "orig", exc)).strip().splitlines()[0]


@dataclass
class Report:
    users: Counter[str] = field(default_factory=Counter)  # new, existing, again, admin
    records: int = 0
    grants: int = 0
    settings: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, person: LegacyPerson, outcome: LegacyOutcome, table: str) -> None:
        self.users[outcome.how] += 1
        self.users["admin"] += person.admin and outcome.how != "again"
        self.records += outcome.records
        self.grants += outcome.grants
        self.bad += [f"{table} id={i} (owner {person.username}): {why}" for i, why in outcome.bad]

    def lines(self, dry: bool, unmapped: list[str]) -> list[str]:
        verb = "would import" if dry else "imported"
        u = self.users
        out = [f"{verb}: {u['new'] + u['existing']} users ({u['existing']} bound to recbot users of the same name, "
               f"{u['admin']} admins), {self.records} records, {self.grants} grants, {len(self.settings)} settings"
               + (f"; {u['again']} users imported before (only what is new of theirs)" if u["again"] else ""),
               "passwords: dropped, never imported"]
        out.append("columns not mapped: " + (", ".join(unmapped) if unmapped else "none"))
        out += [f"note: {n}" for n in self.notes]
        out.append(f"rows that cannot be read (skipped): {len(self.bad)}")
        out += [f"  {b}" for b in self.bad[:MAX_BAD_LINES]]
        if len(self.bad) > MAX_BAD_LINES:
            out.append(f"  ... and {len(self.bad) - MAX_BAD_LINES} more")
        return out


class DrySink:
    """What Storage.import_legacy_user would do, from the markers of earlier runs, writing nothing."""

    def __init__(self, markers: dict[int, Marker], known_names: set[str]) -> None:
        self.markers = markers
        self.known_names = known_names

    def __call__(self, person: LegacyPerson, records: Iterable[LegacyRecord], viewers: Sequence[int]) -> LegacyOutcome:
        marker = self.markers.get(person.legacy_id)
        how = "again" if marker else "existing" if person.username.lower() in self.known_names else "new"
        if marker is None:
            marker = self.markers[person.legacy_id] = Marker(0)
        outcome = LegacyOutcome(0, how)
        for r in records:
            if marker.wants(r.legacy_id):
                problem = r.problem or record_problem(r.body)
                if problem:
                    outcome.bad.append((r.legacy_id, problem))
                else:
                    outcome.records += 1
        for owner in dict.fromkeys(person.sees):
            if owner != person.legacy_id and owner in self.markers and owner not in marker.sees:
                outcome.grants += 1
                marker.sees.append(owner)
        for viewer in dict.fromkeys(viewers):
            them = self.markers.get(viewer)
            if viewer != person.legacy_id and them is not None and person.legacy_id not in them.sees:
                outcome.grants += 1
                them.sees.append(person.legacy_id)
        return outcome


def transfer(conn: Connection, legacy: Legacy, people: dict[int, LegacyPerson], sink: Sink,
             report: Report, skipped_users: set[int]) -> None:
    """Every old user through the sink with their records, streamed owner by owner."""
    table = legacy.sources["content"].table
    viewers: dict[int, list[int]] = {}
    for p in people.values():
        for seen in p.sees:
            viewers.setdefault(seen, []).append(p.legacy_id)
            if seen not in people and seen not in skipped_users:
                report.notes.append(f"{p.username}'s permission list names user {seen}, who is not in "
                                    f"{legacy.sources['user'].table}; ignored")
    waiting = dict(people)
    for stored, group in groupby(stream_records(conn, legacy), key=lambda pair: pair[0]):
        owner = as_id(stored)
        rows: Iterator[LegacyRecord] = (r for _, r in group)
        person = waiting.pop(owner, None) if owner is not None else None
        if person is None:
            why = ("its owner was skipped (see above)" if owner in skipped_users else
                   "its owner's rows do not sort together (ids kept as text?)" if owner in people else
                   f"owner {stored!r} is not in {legacy.sources['user'].table}")
            report.bad += [f"{table} id={r.legacy_id}: {why}" for r in rows]
            continue
        report.add(person, sink(person, rows, viewers.get(person.legacy_id, [])), table)
    for person in waiting.values():  # users with no records
        report.add(person, sink(person, [], viewers.get(person.legacy_id, [])), table)


def _settings(storage: Storage | None, config: Config, values: dict[str, str], dry: bool, report: Report) -> None:
    wanted = {}
    for key, raw in values.items():
        if key in runtime_settings.BY_KEY:
            wanted[key] = raw
        else:
            report.notes.append(f"setting {key} = {raw[:40]!r}: recbot has no such setting; not imported "
                                "(name recbot's key under settings: in --mapping)")
    judge = functools.partial(runtime_settings.change, config)
    if storage is None or dry:
        stored = storage.settings() if storage is not None else {}
        refused: dict[str, str] = {}
        for key, raw in wanted.items():
            if key in stored:
                refused[key] = f"recbot already has {key} = {stored[key]}"
                continue
            try:
                stored[key] = judge(stored, key, raw)
            except ValueError as exc:
                refused[key] = str(exc)
    else:
        refused = storage.import_legacy_settings(wanted, judge)
    report.settings = [k for k in wanted if k not in refused]
    report.notes += [f"setting {k} not imported: {why}" for k, why in refused.items()]


def _parse(options: list[str]) -> argparse.Namespace | int:
    parser = argparse.ArgumentParser(prog="python -m bot import-legacy",
                                     description="import the old Tornado + MySQL page's users, records and settings")
    parser.add_argument("--from", dest="source", required=True,
                        help="the old database, e.g. mysql+pymysql://user:pw@host:3306/olddb")
    parser.add_argument("--mapping", help="YAML naming the old tables' columns (see deploy/legacy-mapping.yaml)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be imported; change nothing")
    try:
        return parser.parse_args(options)
    except SystemExit as exc:
        return int(exc.code or 0)


def _open_source(url: str, mapping_path: str | None) -> tuple[Engine, Legacy]:
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 10} if url.startswith("mysql") else {})
    except (ArgumentError, ImportError, ValueError) as exc:
        raise MappingError(f"--from {url!r} is not a database URL ({exc}); "
                           "use e.g. mysql+pymysql://user:pw@host:3306/olddb") from None
    mapping = load_mapping(mapping_path)
    try:
        return engine, resolve(engine, mapping)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise MappingError(f"cannot read the old database {_safe(url)}: {_reason(exc)}; "
                           "check --from and that the server runs") from None


def run_import_legacy(config: Config, options: list[str]) -> int:
    args = _parse(options)
    if isinstance(args, int):
        return args
    try:
        source, legacy = _open_source(args.source, args.mapping)
    except MappingError as exc:
        print(f"import-legacy: {exc}", file=sys.stderr)
        return 2
    target = make_engine(config.database.url, config.database.timeout_seconds)
    try:
        return _run(source, legacy, target, config, args.dry_run, args.source)
    except SQLAlchemyError as exc:
        print(f"import-legacy: a database failed: {_reason(exc)}; users imported so far are complete, "
              "run the same command again to import the rest", file=sys.stderr)
        return 1
    finally:
        source.dispose()
        target.dispose()


def _target(target: Engine, config: Config, dry: bool) -> Storage | str | None:
    """The recbot store (migrated unless dry), None when a dry run finds it not migrated, or an error."""
    try:
        if dry:
            return Storage(target) if migrate.current_revision(target) == migrate.head_revision() else None
        migrate.upgrade(target)
        return Storage(target)
    except SQLAlchemyError as exc:
        return (f"cannot use the recbot database {_safe(config.database.url)}: {_reason(exc)}; "
                "check database.url (REC_DATABASE__URL)")


def _run(source: Engine, legacy: Legacy, target: Engine, config: Config, dry: bool, url: str) -> int:
    storage = _target(target, config, dry)
    if isinstance(storage, str):
        print(f"import-legacy: {storage}", file=sys.stderr)
        return 2
    report = Report(notes=list(legacy.notes))
    with source.connect() as users_conn:
        people, bad_users, skipped = read_users(users_conn, legacy)
        values = settings_renamed(read_settings(users_conn, legacy), legacy.renames)
    report.bad += bad_users
    sink: Sink
    if dry:
        if storage is None:
            report.notes.append("the recbot database is not migrated yet: the import would migrate it first")
        markers = storage.legacy_markers() if storage is not None else {}
        names = set(storage.users_by_username([p.username for p in people.values()])) if storage else set()
        sink = DrySink(markers, names)
    else:
        assert storage is not None
        sink = storage.import_legacy_user
    with source.connect() as conn:
        transfer(conn, legacy, people, sink, report, skipped)
    _settings(storage, config, values, dry, report)
    head = "import-legacy (dry run, nothing written)" if dry else "import-legacy"
    print(f"{head}: {_safe(url)} -> {_safe(config.database.url)}")
    for line in report.lines(dry, unmapped_columns(legacy)):
        print(line)
    return 0
