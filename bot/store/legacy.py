"""The write side of import-legacy: the old page's users, records and permission lists, once.

Re-running never duplicates: each imported legacy user has a marker row in T_SETTING
(`legacy.user.<old id>`) written in the same transaction as that user's records and grants. It holds
the recbot user id, the highest old record id looked at (old ids only grow), the old record ids that
could not be read (looked at again on a re-run, in case they were fixed), and the old owners already
turned into grants (so a grant an admin revoked after the import stays revoked).

An imported user gets the placeholder Mattermost id `legacy:<lower-cased username>` until that
username first uses recbot; `PeopleMixin._ensure_user` then claims the row (`claim_legacy`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from bot import search
from bot.store.db import Db
from bot.store.models import MAX_BODY, MAX_TAG, MAX_TAGS, User, extract_tags, user_from_row
from bot.store.retry import retried
from bot.tables import content, grant, setting, tag, user

LEGACY_PREFIX = "legacy:"
MARKER_PREFIX = "legacy.user."
MAX_USERNAME = 64 - len(LEGACY_PREFIX)  # the placeholder must fit T_USER.mm_user_id
BATCH = 1000


def placeholder(username: str) -> str:
    """The Mattermost id an imported user holds until that username first uses recbot."""
    return LEGACY_PREFIX + username.lower()


def record_problem(body: str) -> str | None:
    """Why an old text cannot become a record (the same limits as /rec add), or None."""
    if not body.strip():
        return "the text is empty"
    if "\x00" in body:
        return "the text contains a NUL character"
    if len(body) > MAX_BODY:
        return f"the text is {len(body)} characters long, over recbot's {MAX_BODY}"
    tags = extract_tags(body)
    if len(tags) > MAX_TAGS:
        return f"the text has {len(tags)} different #tags, over recbot's {MAX_TAGS}"
    long = next((t for t in tags if len(t) > MAX_TAG), None)
    if long is not None:
        return f"the tag #{long[:20]}... is longer than {MAX_TAG} characters"
    return None


@dataclass(frozen=True)
class LegacyPerson:
    legacy_id: int
    username: str
    admin: bool
    sees: tuple[int, ...]  # the old permission list: whose records this user could see


@dataclass(frozen=True)
class LegacyRecord:
    legacy_id: int
    body: str
    created_at: datetime | None
    problem: str | None = None  # why the reader could not read it (time, encoding)


@dataclass
class Marker:
    user_id: int
    done: int = 0
    skipped: list[int] = field(default_factory=list)
    sees: list[int] = field(default_factory=list)

    def wants(self, legacy_id: int) -> bool:
        """Whether an old record is not imported yet (new since the last run, or unreadable then)."""
        return legacy_id > self.done or legacy_id in self.skipped

    def dump(self) -> str:
        return json.dumps({"user": self.user_id, "done": self.done, "skipped": sorted(set(self.skipped)),
                           "sees": sorted(set(self.sees))}, separators=(",", ":"))

    @classmethod
    def load(cls, text: str) -> Marker:
        raw = json.loads(text)
        return cls(int(raw["user"]), int(raw["done"]), [int(i) for i in raw["skipped"]],
                   [int(i) for i in raw["sees"]])


@dataclass
class LegacyOutcome:
    user_id: int
    how: str  # "new", "existing" (bound to a recbot user of that name) or "again" (imported before)
    records: int = 0
    grants: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)  # (old record id, why it was skipped)


def _batches(rows: Iterable[LegacyRecord]) -> Iterator[list[LegacyRecord]]:
    it = iter(rows)
    while batch := list(islice(it, BATCH)):
        yield batch


class LegacyMixin(Db):
    def legacy_markers(self) -> dict[int, Marker]:
        """What earlier imports did, by old user id."""
        with self.connection() as conn:
            rows = conn.execute(select(setting.c.name, setting.c.value)
                                .where(setting.c.name.startswith(MARKER_PREFIX, autoescape=True))).all()
        return {int(r.name[len(MARKER_PREFIX):]): Marker.load(r.value) for r in rows}

    @retried
    def import_legacy_user(self, person: LegacyPerson, records: Iterable[LegacyRecord],
                           viewers: Sequence[int]) -> LegacyOutcome:
        """One old user with their records and grants, in one transaction.

        `records` are the user's old records in ascending old id; `viewers` the old ids of users whose
        permission list names this one. Grants need both sides imported: each pair is made in the
        transaction of whichever side comes second.
        """
        with self.transaction() as conn:
            marker, outcome = self._legacy_user(conn, person)
            for batch in _batches(records):
                self._legacy_records(conn, marker, outcome, batch)
            self._legacy_grants(conn, person, marker, outcome, viewers)
            self._save_marker(conn, person.legacy_id, marker)
            self._audit(conn, None, "import-legacy",
                        f"@{person.username} (old id {person.legacy_id}, {outcome.how}): "
                        f"{outcome.records} records, {outcome.grants} grants")
        self._settings_cache = None
        self._known_users.clear()
        self._known_grants.clear()
        return outcome

    def _marker(self, conn: Connection, legacy_id: int) -> Marker | None:
        value = conn.execute(select(setting.c.value).where(setting.c.name == f"{MARKER_PREFIX}{legacy_id}")
                             .with_for_update()).scalar()
        return Marker.load(value) if value is not None else None

    def _save_marker(self, conn: Connection, legacy_id: int, marker: Marker) -> None:
        name, now = f"{MARKER_PREFIX}{legacy_id}", self.clock()
        done = conn.execute(update(setting).where(setting.c.name == name).values(value=marker.dump(), updated_at=now))
        if done.rowcount == 0:
            conn.execute(insert(setting).values(name=name, value=marker.dump(), updated_by=None, updated_at=now))

    def _legacy_user(self, conn: Connection, person: LegacyPerson) -> tuple[Marker, LegacyOutcome]:
        marker = self._marker(conn, person.legacy_id)
        if marker is not None:
            return marker, LegacyOutcome(marker.user_id, "again")
        name, now = person.username.lower(), self.clock()
        found = conn.execute(select(user).where(user.c.mm_user_id == placeholder(name))).first() or conn.execute(
            select(user).where(func.lower(user.c.username) == name).order_by(user.c.updated_at.desc())).first()
        if found is None:
            key: Any = conn.execute(insert(user).values(
                mm_user_id=placeholder(name), username=person.username, role="admin" if person.admin else "member",
                created_at=now, updated_at=now)).inserted_primary_key
            return Marker(int(key[0])), LegacyOutcome(int(key[0]), "new")
        if person.admin and found.role == "member":
            conn.execute(update(user).where(user.c.id == found.id).values(role="admin", updated_at=now))
            self._audit(conn, None, "role", f"@{found.username}: member -> admin (an admin in the old page)")
        return Marker(found.id), LegacyOutcome(found.id, "existing")

    def _legacy_records(self, conn: Connection, marker: Marker, outcome: LegacyOutcome,
                        batch: Sequence[LegacyRecord]) -> None:
        good: list[LegacyRecord] = []
        for r in batch:
            if not marker.wants(r.legacy_id):
                continue
            problem = r.problem or record_problem(r.body)
            if problem:
                marker.skipped.append(r.legacy_id)
                outcome.bad.append((r.legacy_id, problem))
            else:
                marker.skipped = [i for i in marker.skipped if i != r.legacy_id]
                good.append(r)
        marker.done = max([marker.done, *(r.legacy_id for r in batch)])
        if not good:
            return
        rows: list[dict[str, Any]] = [{"owner_id": outcome.user_id, "body": r.body, "search_text": search.fold(r.body),
                 "created_at": r.created_at, "updated_at": r.created_at} for r in good]
        ids = self._insert_content(conn, rows)
        tags = [{"record_id": i, "tag": t} for i, r in zip(ids, good, strict=True) for t in extract_tags(r.body)]
        if tags:
            conn.execute(insert(tag), tags)
        for i, row in zip(ids, rows, strict=True):
            search.index_text(conn, self.search_backend, i, row["search_text"])
        outcome.records += len(good)

    def _insert_content(self, conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
        """The new records' ids, in the order of `rows`."""
        # SQLite gets these row by row (SQLAlchemy keeps RETURNING in order so); measured, the FTS5
        # trigram index costs most there, and batching the ids by hand gained nothing measurable.
        ids = conn.execute(insert(content).returning(content.c.id, sort_by_parameter_order=True), rows).scalars()
        found = [int(i) for i in ids]
        assert len(found) == len(rows)
        return found

    def _legacy_grants(self, conn: Connection, person: LegacyPerson, marker: Marker, outcome: LegacyOutcome,
                       viewers: Sequence[int]) -> None:
        now = self.clock()

        def add(viewer_id: int, owner_id: int) -> None:
            if viewer_id != owner_id:
                outcome.grants += conn.execute(self._insert_ignore(grant).values(
                    viewer_id=viewer_id, owner_id=owner_id, granted_by=None, created_at=now)).rowcount

        for owner in dict.fromkeys(person.sees):
            if owner == person.legacy_id:
                continue
            other = self._marker(conn, owner)
            if other is not None and owner not in marker.sees:
                add(outcome.user_id, other.user_id)
                marker.sees.append(owner)
        for viewer in dict.fromkeys(viewers):
            if viewer == person.legacy_id:
                continue
            them = self._marker(conn, viewer)
            if them is not None and person.legacy_id not in them.sees:
                add(them.user_id, outcome.user_id)
                them.sees.append(person.legacy_id)
                self._save_marker(conn, viewer, them)

    @retried
    def import_legacy_settings(self, values: Mapping[str, str],
                               judge: Callable[[dict[str, str], str, str], str]) -> dict[str, str]:
        """Old settings recbot also has, where recbot has no stored value yet; `judge(stored, key, raw)`
        returns the text to store or raises ValueError. Returns {key: why} for those not stored."""
        refused: dict[str, str] = {}
        now = self.clock()
        with self.transaction() as conn:
            stored = {r.name: r.value for r in conn.execute(select(setting.c.name, setting.c.value).with_for_update())}
            for key, raw in values.items():
                if key in stored:
                    refused[key] = f"recbot already has {key} = {stored[key]}"
                    continue
                try:
                    value = judge(stored, key, raw)
                except ValueError as exc:
                    refused[key] = str(exc)
                    continue
                conn.execute(insert(setting).values(name=key, value=value, updated_by=None, updated_at=now))
                stored[key] = value
                self._audit(conn, None, "set", f"{key}: (default) -> {value} (from the old page)")
        self._settings_cache = None
        return refused


def claim_legacy(conn: Connection, mm_user_id: str, username: str, now: datetime,
                 audit: Callable[[Connection, User | None, str, str], None]) -> User | None:
    """Bind the unclaimed imported user of this username to a Mattermost id seen for the first time.

    One UPDATE guarded by the placeholder id: of two accounts racing for the same name only one
    changes a row; the other (and any later account of that name) registers as a new user.
    """
    if mm_user_id.startswith(LEGACY_PREFIX):
        return None
    # A plain read first: on InnoDB an UPDATE that finds no row takes a gap lock, and two first
    # registrations each holding one deadlock on their INSERTs. Only an existing placeholder is updated.
    if conn.execute(select(user.c.id).where(user.c.mm_user_id == placeholder(username))).first() is None:
        return None
    changed = conn.execute(update(user).where(user.c.mm_user_id == placeholder(username))
                           .values(mm_user_id=mm_user_id, username=username, updated_at=now)).rowcount
    if changed != 1:
        return None
    row: Any = conn.execute(select(user).where(user.c.mm_user_id == mm_user_id)).first()
    claimed = user_from_row(row)
    audit(conn, claimed, "claim",
          f"@{username} ({mm_user_id}) took over the imported history of {placeholder(username)}")
    return claimed
