"""Records, users, grants, shares, settings and the audit log, over SQLAlchemy Core.

Every function that reads records takes the viewer, and the visibility rule of SPEC section 2 is part
of the SQL: a record is returned only when the query itself proves the viewer may see it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    exists,
    false,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

from bot import search
from bot.errors import Conflict, Forbidden, NotFound, UserError
from bot.tables import audit, content, grant, revision, setting, share, tag, user
from bot.tables import file as file_table

log = logging.getLogger(__name__)

try:
    import fcntl
except ImportError:  # Windows has no flock: there only the threads of one process queue
    fcntl = None  # type: ignore[assignment]

ROLES = ("admin", "member", "disabled")
MAX_BODY = 60_000
# A member who may see at most this many owners' records is searched owner by owner (bounded by what
# they can see); with more, a newest-first walk of the table fills a page sooner.
PER_OWNER_MAX = 6
# Statements are built once per shape (see Storage._prepared); a bound keeps odd requests (a find with
# hundreds of words) from growing the table without end.
MAX_SHAPES = 512
MAX_KNOWN_USERS = 10_000
PROBE_SETTING = "healthz.probe"
RETRY_WINDOW = timedelta(minutes=2)  # a second add of the same text by the same owner within it is a retry


class MaybeSaved(UserError):
    """A write whose outcome is unknown (the answer to COMMIT was lost)."""
TAG_RE = re.compile(r"(?<![\w#&/])#(\w[\w-]*)")
MAX_TAG = 64  # characters of a tag once lower-cased (the column's width)
MAX_TAGS = 50  # tags in one record


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def extract_tags(body: str) -> tuple[str, ...]:
    """`#word` in a text, folded, in order of first appearance."""
    return tuple(dict.fromkeys(m.lower() for m in TAG_RE.findall(body)))


@dataclass(frozen=True)
class User:
    id: int
    mm_user_id: str
    username: str
    role: str
    created_at: datetime
    updated_at: datetime

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class Attachment:
    mm_file_id: str
    name: str
    size: int
    mime_type: str


@dataclass(frozen=True)
class Record:
    id: int
    owner_id: int
    owner: str
    body: str
    tags: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    revisions: int = 0
    files: tuple[Attachment, ...] = ()


@dataclass(frozen=True)
class Revision:
    id: int
    body: str
    edited_by: str
    edited_at: datetime


@dataclass(frozen=True)
class Filter:
    """What a find or list asks for; words are matched as substrings after folding."""

    words: tuple[str, ...] = ()
    owner_id: int | None = None
    tags: tuple[str, ...] = ()
    since: date | None = None
    until: date | None = None


@dataclass(frozen=True)
class Page:
    records: tuple[Record, ...]
    next_before: int | None  # pass as `before` for the next page; None on the last page
    # True when the search stopped at next_before because its time ran out: the page may be short,
    # and continuing from next_before searches the older records.
    partial: bool = False
    matched: int = 0  # matches found from the cursor on, this page included (see find's count_up_to)
    matched_all: bool = True  # False when there are more than `matched`


@dataclass(frozen=True)
class _Shape:
    """What the text of a search statement depends on; the values themselves are bound by name."""

    words: int = 0
    tags: int = 0
    owner: bool = False
    since: bool = False
    until: bool = False
    below: bool = False
    floor: bool = False

    @staticmethod
    def bind(flt: Filter, words: Sequence[str], below: int | None, floor: int | None) -> tuple[_Shape, dict[str, Any]]:
        params: dict[str, Any] = {f"w{i}": w for i, w in enumerate(words)}
        params.update({f"t{i}": t.lower().lstrip("#") for i, t in enumerate(flt.tags)})
        for name, value in (("owner", flt.owner_id), ("below", below), ("floor", floor),
                            ("since", _day_start(flt.since) if flt.since else None),
                            ("until", _day_start(flt.until) + timedelta(days=1) if flt.until else None)):
            if value is not None:
                params[name] = value
        shape = _Shape(len(words), len(flt.tags), flt.owner_id is not None, flt.since is not None,
                       flt.until is not None, below is not None, floor is not None)
        return shape, params


@dataclass(frozen=True)
class AuditEntry:
    id: int
    actor: str | None
    action: str
    detail: str
    created_at: datetime


def make_engine(url: str, timeout: float | None = None) -> Engine:
    """An engine tuned per backend: WAL and a busy timeout on SQLite, pre-ping on MariaDB; on MariaDB
    `timeout` seconds bound connecting, each read and each write (None: no bound, for migrations)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Parameters never go into error messages: they hold users' text, and errors are logged.
        engine = create_engine(url, connect_args={"timeout": 30}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take transactions in our own hands so writers can BEGIN IMMEDIATE (no upgrade deadlock).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            immediate = conn.get_execution_options().get("sqlite_immediate")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    # Every call has a limit: a server or proxy that stops answering fails the call instead of hanging
    # a serving thread (and /healthz) for good.
    limits = {"connect_timeout": max(1, round(timeout)), "read_timeout": timeout, "write_timeout": timeout} \
        if timeout else {}
    return create_engine(url, pool_pre_ping=True, pool_recycle=3600, pool_size=10, max_overflow=20,
                         pool_timeout=timeout or 30, connect_args=limits, hide_parameters=True)


class _WriteTurn:
    """SQLite writers wait here, woken as soon as the writer before them is done.

    SQLite's busy handler sleeps with a growing back-off (1, 2, 5 ... 100 ms) instead of waking when
    the write lock frees, which gave concurrent adds a tail of 100 ms and more. Threads of a process
    queue on a lock; processes (server.workers) on an flock of a file beside the database.
    """

    def __init__(self, database: str | None) -> None:
        self._threads = threading.RLock()
        self._depth = 0
        self._path = f"{database}.writer-lock" if fcntl and database and database != ":memory:" else None

    @contextmanager
    def __call__(self) -> Any:
        with self._threads:
            self._depth += 1
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600) if self._path and self._depth == 1 else None
            try:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                if fd is not None:
                    os.close(fd)  # closing the file releases its lock
                self._depth -= 1


def _user(row: Any) -> User:
    return User(row.id, row.mm_user_id, row.username, row.role, row.created_at, row.updated_at)


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


class Storage:
    """All database work. Build one per process with `Storage(make_engine(url))`."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.clock = clock
        self.dialect = engine.dialect.name
        self._writer = engine.execution_options(sqlite_immediate=True)
        self._backend: str | None = None
        self._settings_cache: tuple[float, dict[str, str]] | None = None
        self._write_turn: Any = _WriteTurn(engine.url.database) if self.dialect == "sqlite" else contextlib.nullcontext
        self._statements: dict[tuple, Any] = {}
        self._known_users: dict[str, tuple[float, User]] = {}  # mm_user_id -> (read at, row); see ensure_user

    def _prepared(self, key: tuple, build: Callable[[], Any]) -> Any:
        """The statement of this shape, built on first use; its values are bound at execution.

        Building a statement of this module (the visibility rule, the filters) costs several times
        more CPU than SQLite takes to run it, so each shape is built once per process and reused.
        """
        stmt = self._statements.get(key)
        if stmt is None:
            if len(self._statements) >= MAX_SHAPES:
                self._statements.clear()
            stmt = self._statements[key] = build()
        return stmt

    @property
    def search_backend(self) -> str:
        """sqlite-fts5, mroonga or like; read once, after migrations have run."""
        if self._backend is None:
            self._backend = search.detect_backend(self.engine)
        return self._backend

    @contextmanager
    def transaction(self) -> Any:
        """A write transaction (BEGIN IMMEDIATE on SQLite, so two writers never deadlock on upgrade).

        On SQLite, writers first wait their turn in _WriteTurn rather than in SQLite's busy handler.
        """
        with self._write_turn(), self._writer.begin() as conn:
            yield conn

    @contextmanager
    def connection(self) -> Any:
        """A connection for reads."""
        with self.engine.connect() as conn:
            yield conn

    def _insert_ignore(self, table: Any) -> Any:
        return insert(table).prefix_with("OR IGNORE", dialect="sqlite").prefix_with(
            "IGNORE", dialect="mysql").prefix_with("IGNORE", dialect="mariadb")

    def ping(self) -> None:
        with self.connection() as conn:
            conn.execute(text("SELECT 1"))

    def probe(self) -> None:
        """A read and a small write: a database that answers reads but refuses writes (a full disk,
        a read-only replica) cannot keep what users add, so /healthz must not call it healthy."""
        now = self.clock()
        with self.transaction() as conn:
            done = conn.execute(update(setting).where(setting.c.name == PROBE_SETTING)
                                .values(value=now.isoformat(), updated_at=now))
            if done.rowcount == 0:
                conn.execute(self._insert_ignore(setting).values(name=PROBE_SETTING, value=now.isoformat(),
                                                                updated_by=None, updated_at=now))

    # ---- users -------------------------------------------------------------------------------

    def user_by_mm_id(self, mm_user_id: str) -> User | None:
        stmt = self._prepared(("user_by_mm",), lambda: select(user).where(user.c.mm_user_id == bindparam("mm")))
        with self.connection() as conn:
            row = conn.execute(stmt, {"mm": mm_user_id}).first()
        return _user(row) if row else None

    def user_by_id(self, user_id: int) -> User | None:
        with self.connection() as conn:
            row = conn.execute(select(user).where(user.c.id == user_id)).first()
        return _user(row) if row else None

    def users_by_username(self, names: Iterable[str]) -> dict[str, User]:
        """Known users by (case-folded) username; a renamed-away name maps to its newest holder."""
        wanted = {n.lower().lstrip("@") for n in names}
        if not wanted:
            return {}
        with self.connection() as conn:
            rows = conn.execute(
                select(user).where(func.lower(user.c.username).in_(wanted)).order_by(user.c.updated_at)
            ).all()
        return {row.username.lower(): _user(row) for row in rows}

    def ensure_user(self, mm_user_id: str, username: str, role_if_new: str = "member",
                    max_age: float = 0.0) -> tuple[User, bool]:
        """The user with this Mattermost id, created if new; the username is refreshed. Returns (user, created).

        With max_age, a row this process read at most that many seconds ago may answer (a changed
        username always reads again). A stale role cannot widen access: every statement that reads or
        writes records, and every admin action, re-reads the role in SQL. This process's own role
        changes drop the copies at once.
        """
        if role_if_new not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        known = self._known_users.get(mm_user_id)
        if max_age and known and time.monotonic() - known[0] < max_age and known[1].username == username:
            return known[1], False
        found, created = self._ensure_user(mm_user_id, username, role_if_new)
        if len(self._known_users) >= MAX_KNOWN_USERS:
            self._known_users.clear()
        self._known_users[mm_user_id] = (time.monotonic(), found)
        return found, created

    def _ensure_user(self, mm_user_id: str, username: str, role_if_new: str) -> tuple[User, bool]:
        now = self.clock()
        existing = self.user_by_mm_id(mm_user_id)
        if existing:
            if existing.username != username:
                with self.transaction() as conn:
                    conn.execute(update(user).where(user.c.id == existing.id)
                                 .values(username=username, updated_at=now))
                return self.user_by_mm_id(mm_user_id) or existing, False
            return existing, False
        created = True
        try:
            with self.transaction() as conn:
                conn.execute(insert(user).values(
                    mm_user_id=mm_user_id, username=username, role=role_if_new, created_at=now, updated_at=now))
        except IntegrityError:
            created = False  # another request registered the same user first; theirs is as good as ours
        found = self.user_by_mm_id(mm_user_id)
        assert found is not None
        return found, created

    def set_role(self, actor: User, target_id: int, role: str) -> User:
        if role not in ROLES:
            raise UserError(f"'{role}' is not a role; use admin, member or disabled")
        with self.transaction() as conn:
            self._require_admin(conn, actor)
            target = conn.execute(select(user).where(user.c.id == target_id)).first()
            if target is None:
                raise NotFound("that user is not known to recbot yet; they must use /rec once first")
            if target.role == "admin" and role != "admin":
                admins = conn.execute(select(func.count()).select_from(user).where(user.c.role == "admin")).scalar_one()
                if admins <= 1:
                    raise Conflict("that is the last admin; make someone else admin first")
            conn.execute(update(user).where(user.c.id == target_id).values(role=role, updated_at=self.clock()))
            self._audit(conn, actor, "role", f"@{target.username}: {target.role} -> {role}")
        self._known_users.clear()
        found = self.user_by_id(target_id)
        assert found is not None
        return found

    def promote_listed_admin(self, target: User, name: str) -> User:
        """Make a newly registered account named in config `admins` an admin, once per listed name.

        The first account to claim a listed name keeps it (kept in T_SETTING); an account that takes
        the name later stays what registration made it.
        """
        claim = f"admins.claimed.{name.lower()}"
        with self.transaction() as conn:
            holder = conn.execute(select(setting.c.value).where(setting.c.name == claim).with_for_update()).scalar()
            if holder is not None and holder != target.mm_user_id:
                self._audit(conn, None, "role", f"@{target.username} ({target.mm_user_id}) not made admin: "
                                                f"config admins' {name} was claimed by {holder}")
                return target
            if holder is None:
                conn.execute(insert(setting).values(name=claim, value=target.mm_user_id, updated_by=None,
                                                    updated_at=self.clock()))
            changed = conn.execute(update(user).where(user.c.id == target.id, user.c.role != "admin")
                                   .values(role="admin", updated_at=self.clock())).rowcount
            if changed:
                self._audit(conn, None, "role", f"@{target.username}: {target.role} -> admin (config admins, "
                                                "at registration)")
        self._known_users.pop(target.mm_user_id, None)
        self._settings_cache = None
        return self.user_by_id(target.id) or target

    def users_with_counts(self, actor: User) -> list[tuple[User, int]]:
        """Every known user and the number of their records not deleted (admins only)."""
        counts = (select(content.c.owner_id, func.count().label("n"))
                  .where(content.c.deleted_at.is_(None)).group_by(content.c.owner_id).subquery())
        with self.connection() as conn:
            self._require_admin(conn, actor)
            rows = conn.execute(
                select(user, func.coalesce(counts.c.n, 0).label("n"))
                .outerjoin(counts, counts.c.owner_id == user.c.id).order_by(func.lower(user.c.username))
            ).all()
        return [(_user(r), int(r.n)) for r in rows]

    def _require_admin(self, conn: Connection, actor: User) -> None:
        role = conn.execute(select(user.c.role).where(user.c.id == actor.id)).scalar()
        if role != "admin":
            raise Forbidden("only an admin can do that; ask one of your recbot admins")

    # ---- visibility --------------------------------------------------------------------------

    @staticmethod
    def _visible(role: str) -> Any:
        """SPEC section 2's rule as a WHERE clause over `content`, for a viewer of this role whose id
        is bound as `viewer_id` when the statement runs (statements are reused across viewers).

        The viewer's role is re-read inside the same statement, so a User object that went stale
        (demoted, disabled) can never see more than the database says it may.
        """
        me = user.alias("viewer")
        viewer_id = bindparam("viewer_id")
        not_deleted = content.c.deleted_at.is_(None)
        if role == "admin":
            return and_(not_deleted, exists().where(me.c.id == viewer_id, me.c.role == "admin"))
        if role != "member":
            return false()
        active = exists().where(me.c.id == viewer_id, me.c.role.in_(("admin", "member")))
        # "+ 0" keeps the planners from driving the query by this OR (SQLite would gather and sort
        # every visible row); the search decides the order of work, this clause only filters.
        owner, record = content.c.owner_id + 0, content.c.id + 0
        return and_(
            not_deleted,
            active,
            or_(
                owner == viewer_id,
                owner.in_(select(grant.c.owner_id).where(grant.c.viewer_id == viewer_id)),
                record.in_(select(share.c.record_id).where(share.c.user_id == viewer_id)),
            ),
        )

    def _contains(self, table: Any, word: Any) -> Any:
        if self.dialect == "sqlite":
            return func.instr(table.c.search_text, word) > 0
        return func.locate(word, table.c.search_text) > 0

    # ---- records -----------------------------------------------------------------------------

    def add_record(self, owner: User, body: str, files: Sequence[Attachment] = ()) -> int:
        """Save a record owned by `owner` (who must not be disabled); returns its id."""
        if files and not body.strip():
            body = "Files: " + ", ".join(f.name for f in files)
        self._check_body(body)
        now = self.clock()
        folded = search.fold(body)
        stmt = self._prepared(("add",), self._build_add)
        with self.transaction() as conn:
            result = conn.execute(stmt, {"owner_id": owner.id, "body": body, "folded": folded, "now": now})
            if result.rowcount != 1:
                raise Forbidden("your recbot account is disabled; ask an admin to enable it")
            record_id = int(result.lastrowid)
            self._set_tags(conn, record_id, extract_tags(body), replace=False)
            if files:
                conn.execute(insert(file_table), [
                    {"record_id": record_id, "mm_file_id": f.mm_file_id, "name": f.name[:255], "size": f.size,
                     "mime_type": f.mime_type[:128], "created_at": now} for f in files])
            search.index_text(conn, self.search_backend, record_id, folded)
        return record_id

    def add_record_once(self, owner: User, body: str, files: Sequence[Attachment] = ()) -> tuple[int, bool]:
        """add_record for a request that may be a retry: (id, True) when saved now, (id, False) when the
        same owner saved the same text within RETRY_WINDOW (a save whose answer was lost). A failure
        whose outcome is unknown raises MaybeSaved, which says so and how to find out."""
        since = self.clock() - RETRY_WINDOW
        with self.connection() as conn:
            recent = conn.execute(select(content.c.id, content.c.body).where(
                content.c.owner_id == owner.id, content.c.created_at >= since, content.c.deleted_at.is_(None))
                .order_by(content.c.id.desc()).limit(20)).all()
        same = next((r.id for r in recent if r.body == body), None)  # compared exactly, not by collation
        if same is not None:
            return int(same), False
        try:
            return self.add_record(owner, body, files), True
        except DBAPIError:
            log.exception("saving a record failed; it may have been saved")
            raise MaybeSaved(f"the database did not confirm the save, so it may have been saved; send the same "
                             f"text again within {RETRY_WINDOW.seconds // 60} minutes: if it was saved you get "
                             "its number, not a second copy") from None

    @staticmethod
    def _build_add() -> Any:
        """INSERT ... SELECT that inserts only while the owner is not disabled (checked in the statement)."""
        owner_id = bindparam("owner_id", type_=content.c.owner_id.type)
        now = bindparam("now", type_=content.c.created_at.type)
        allowed = select(owner_id, bindparam("body", type_=content.c.body.type),
                         bindparam("folded", type_=content.c.search_text.type), now, now
                         ).where(exists().where(user.c.id == owner_id, user.c.role.in_(("admin", "member"))))
        return insert(content).from_select(["owner_id", "body", "search_text", "created_at", "updated_at"], allowed)

    def _check_body(self, body: str) -> None:
        if not body.strip():
            raise UserError("the record text is empty; type what you did after the command")
        if "\x00" in body:
            # SQLite's string functions and Groonga's tokenizer stop at NUL: such text could not be found.
            raise UserError("the text contains a NUL character (\\0); remove it and send it again")
        if len(body) > MAX_BODY:
            raise UserError(f"the record is {len(body):,} characters long; keep it under {MAX_BODY:,}")
        tags = extract_tags(body)
        if len(tags) > MAX_TAGS:
            raise UserError(f"the text has {len(tags)} different #tags; keep it to {MAX_TAGS}")
        long = next((t for t in tags if len(t) > MAX_TAG), None)
        if long is not None:
            raise UserError(f"the tag #{long[:20]}… is {len(long)} characters long once lower-cased; "
                            f"keep tags to {MAX_TAG}")

    def _set_tags(self, conn: Connection, record_id: int, tags: Sequence[str], *, replace: bool) -> None:
        if replace:
            conn.execute(delete(tag).where(tag.c.record_id == record_id))
        if tags:
            conn.execute(self._prepared(("tag_insert",), lambda: insert(tag)),
                         [{"record_id": record_id, "tag": t} for t in tags])

    def _record_select(self) -> Any:
        owner = user.alias("owner")
        return (
            select(content.c.id, content.c.owner_id, owner.c.username.label("owner"), content.c.body,
                   content.c.created_at, content.c.updated_at)
            .join(owner, owner.c.id == content.c.owner_id)
        )

    def _hydrate(self, conn: Connection, rows: Sequence[Any], *, with_revisions: bool = False) -> list[Record]:
        ids = [r.id for r in rows]
        tags: dict[int, list[str]] = {i: [] for i in ids}
        revs: dict[int, int] = {}
        files: dict[int, list[Attachment]] = {}
        if ids:
            tags_of = self._prepared(("tags_of",), lambda: select(tag.c.record_id, tag.c.tag)
                                     .where(tag.c.record_id.in_(bindparam("ids", expanding=True))))
            for rid, t in conn.execute(tags_of, {"ids": ids}):
                tags[rid].append(t)
            if with_revisions:
                revs = dict(conn.execute(  # type: ignore[arg-type]
                    select(revision.c.record_id, func.count()).where(revision.c.record_id.in_(ids))
                    .group_by(revision.c.record_id)).all())
                for f in conn.execute(select(file_table).where(file_table.c.record_id.in_(ids))
                                      .order_by(file_table.c.id)):
                    files.setdefault(f.record_id, []).append(Attachment(f.mm_file_id, f.name, f.size, f.mime_type))
        return [
            Record(r.id, r.owner_id, r.owner, r.body, tuple(sorted(tags[r.id])), r.created_at, r.updated_at,
                   revs.get(r.id, 0), tuple(files.get(r.id, ())))
            for r in rows
        ]

    def _conditions(self, table: Any, shape: _Shape) -> list[Any]:
        """Every filter but visibility, over `table` (T_CONTENT or an alias of it), for a filter of
        this shape; the values are bound by name at execution (see _Shape.params)."""
        conds = [table.c.deleted_at.is_(None)]
        conds += [self._contains(table, bindparam(f"w{i}")) for i in range(shape.words)]
        if shape.owner:
            conds.append(table.c.owner_id == bindparam("owner"))
        for i in range(shape.tags):
            conds.append(exists().where(tag.c.record_id == table.c.id, tag.c.tag == bindparam(f"t{i}")))
        if shape.since:
            conds.append(table.c.created_at >= bindparam("since"))
        if shape.until:
            conds.append(table.c.created_at < bindparam("until"))
        return conds

    @staticmethod
    def _bounds(key: Any, shape: _Shape) -> list[Any]:
        """floor < key < below, as far as the shape has them."""
        return ([key < bindparam("below")] if shape.below else []) + ([key > bindparam("floor")] if shape.floor else [])

    def _owner_candidates(self, conn: Connection, owners: Sequence[int], shape: _Shape,
                          params: dict[str, Any]) -> list[int]:
        """For a member: the newest `lim` matching ids of each owner they may see, and of their shares.

        Each branch walks the (owner_id, id) index newest first and stops after `lim`, so the work is
        bounded by what the viewer can see, never by the size of the table. These are candidates only:
        the caller re-applies the visibility rule in SQL.
        """
        def build_per_owner() -> Any:
            c = content.alias("cand")
            return (select(c.c.id).where(c.c.owner_id == bindparam("each_owner"), *self._conditions(c, shape),
                                         *self._bounds(c.c.id, shape))
                    .order_by(c.c.id.desc()).limit(bindparam("lim")))

        def build_shared() -> Any:
            c = content.alias("cand")
            return (select(c.c.id).join(share, share.c.record_id == c.c.id)
                    .where(share.c.user_id == bindparam("viewer_id"), *self._conditions(c, shape),
                           *self._bounds(c.c.id, shape))
                    .order_by(c.c.id.desc()).limit(bindparam("lim")))

        per_owner = self._prepared(("per_owner", shape), build_per_owner)
        found: set[int] = set()
        for owner in owners:
            found.update(conn.execute(per_owner, {**params, "each_owner": owner}).scalars())
        found.update(conn.execute(self._prepared(("shared", shape), build_shared), params).scalars())
        return sorted(found, reverse=True)

    def _build_ids(self, role: str, shape: _Shape, how: str) -> Any:
        """Visible matching ids newest first, at most `lim`; `how` the accelerator drives it:
        fts (SQLite's trigram index), in (given candidates), walk (the primary key, newest first), plain."""
        stmt = select(content.c.id).where(self._visible(role), *self._conditions(content, shape))
        key: Any = content.c.id
        if how == "fts":
            # Ordered and bounded by FTS5's own rowid, it streams newest first and stops after one page.
            key = literal_column(f"{search.FTS_TABLE}.rowid")
            stmt = stmt.join(text(search.FTS_TABLE), text(f"{search.FTS_TABLE}.rowid = T_CONTENT.id")).where(
                text(f"{search.FTS_TABLE} MATCH :fts_q"))
        elif how == "in":
            stmt = stmt.where(content.c.id.in_(bindparam("cands", expanding=True)))
        elif how == "walk":
            stmt = (stmt.with_hint(content, "FORCE INDEX (PRIMARY)", dialect_name="mysql")
                    .with_hint(content, "FORCE INDEX (PRIMARY)", dialect_name="mariadb"))
        return stmt.where(*self._bounds(key, shape)).order_by(key.desc()).limit(bindparam("lim"))

    def _ids(self, conn: Connection, viewer: User, flt: Filter, words: Sequence[str], plan: search.Plan, *,
             limit: int, below: int | None = None, floor: int | None = None) -> list[int]:
        """Newest first, at most `limit` ids of visible matching records with floor < id < below."""
        shape, params = _Shape.bind(flt, words, below, floor)
        params.update(viewer_id=viewer.id, lim=limit)
        if viewer.role == "member" and flt.owner_id is None and plan.kind in ("fts", "ids"):
            # An index walks every match, hidden ones too, so its time would tell a member how common a
            # word is in records they cannot see. A member who sees few owners is searched owner by owner.
            owners = self._visible_owners(conn, viewer)
            if len(owners) <= PER_OWNER_MAX:
                plan = search.SCAN
        if plan.kind == "fts":
            how = "fts"
            params["fts_q"] = plan.match
        elif plan.kind == "ids":
            how = "in"
            params["cands"] = list(plan.ids)
        elif viewer.role == "member" and flt.owner_id is None:
            owners = self._visible_owners(conn, viewer)
            if len(owners) <= PER_OWNER_MAX:
                candidates = self._owner_candidates(conn, owners, shape, params)
                if not candidates:
                    return []
                how = "in"
                params["cands"] = candidates
            else:
                # Many owners: their records are a fair share of all, so the newest-first walk of the
                # table fills a page soonest.
                how = "walk"
        else:
            how = "walk" if plan.kind == "scan" and flt.owner_id is None else "plain"
        stmt = self._prepared(("ids", viewer.role, how, shape), lambda: self._build_ids(viewer.role, shape, how))
        return list(conn.execute(stmt, params).scalars())

    def _visible_owners(self, conn: Connection, viewer: User) -> list[int]:
        grants_of = self._prepared(("grants_of",), lambda: select(grant.c.owner_id)
                                   .where(grant.c.viewer_id == bindparam("viewer_id")))
        return [viewer.id, *conn.execute(grants_of, {"viewer_id": viewer.id}).scalars()]

    def _top_id(self, conn: Connection) -> int:
        return conn.execute(self._prepared(("top_id",), lambda: select(func.max(content.c.id)))).scalar() or 0

    def _search(self, conn: Connection, viewer: User, flt: Filter, *, limit: int,
                below: int | None) -> tuple[list[int], int | None]:
        """(newest-first matching ids, at most `limit`; the id to resume below if time ran out)."""
        words = [search.fold(w) for w in flt.words if w]
        if any("\x00" in w for w in words):
            return [], None  # no record holds a NUL (add and edit refuse it)
        plan = search.plan_search(conn, self.search_backend, words)
        if plan.kind == "none":
            return [], None
        if plan.kind in ("fts", "ids"):
            return self._ids(conn, viewer, flt, words, plan, limit=limit, below=below), None
        if plan.kind == "scan":
            return self._scan(conn, viewer, flt, words, limit=limit, below=below)
        # "window": an index is there but costs more than it saves for common words, which the newest
        # records usually hold a page of. Only when they do not is the index asked, for older records.
        top = self._top_id(conn)
        floor = (below - 1 if below is not None else top) - search.WINDOW
        ids = self._ids(conn, viewer, flt, words, search.SCAN, limit=limit, below=below, floor=floor)
        if len(ids) >= limit or floor <= 0:
            return ids, None
        older = search.older_plan(conn, self.search_backend, words, floor)
        if older.kind == "none":
            return ids, None
        if older.kind == "scan":
            more, resume = self._scan(conn, viewer, flt, words, limit=limit - len(ids), below=floor + 1)
            return ids + more, resume
        return ids + self._ids(conn, viewer, flt, words, older, limit=limit - len(ids), below=floor + 1), None

    def _scan(self, conn: Connection, viewer: User, flt: Filter, words: Sequence[str], *, limit: int,
              below: int | None) -> tuple[list[int], int | None]:
        """Newest first through id ranges of SCAN_CHUNK, until the page is full or SCAN_SECONDS pass.

        A scan without an index reads every row; bounding it by time keeps the worst case of one
        request bounded, and the returned resume point lets the next request go on from there.
        """
        deadline = time.monotonic() + search.SCAN_SECONDS
        high = below if below is not None else self._top_id(conn) + 1
        ids: list[int] = []
        while high > 1 and len(ids) < limit:
            low = max(1, high - search.SCAN_CHUNK)  # this chunk is low <= id < high
            ids += self._ids(conn, viewer, flt, words, search.SCAN, limit=limit - len(ids), below=high,
                             floor=low - 1)
            high = low
            if len(ids) < limit and high > 1 and time.monotonic() > deadline:
                return ids, high
        return ids, None

    def find(self, viewer: User, flt: Filter, *, limit: int, before: int | None = None, count_up_to: int = 0) -> Page:
        """Newest first, the viewer's visible records matching every filter; keyset paged by id.

        With count_up_to, the same search also counts the matches from `before` on, up to that many
        (Page.matched), so a reply can say "page 2 of 7" without a second search.
        """
        with self.connection() as conn:
            if before is not None:
                # A cursor past the newest record would scan empty id ranges until the time runs out.
                before = min(before, self._top_id(conn) + 1)
            ids, resume = self._search(conn, viewer, flt, limit=max(limit, count_up_to) + 1, below=before)
            page = ids[:limit]
            page_of = self._prepared(("page", viewer.role), lambda: self._build_page(viewer.role))
            rows = conn.execute(page_of, {"page": page, "viewer_id": viewer.id}).all() if page else []
            # Tags are \w[\w-]*, so the default "," of group_concat never occurs inside one.
            records = [Record(r.id, r.owner_id, r.owner, r.body, tuple(sorted(r.tags.split(",") if r.tags else ())),
                              r.created_at, r.updated_at) for r in rows]
        complete = resume is None and len(ids) <= max(limit, count_up_to)
        if len(ids) > limit and records:
            return Page(tuple(records), records[-1].id, matched=len(ids), matched_all=complete)
        return Page(tuple(records), resume, partial=resume is not None, matched=len(ids), matched_all=complete)

    def _build_page(self, role: str) -> Any:
        """The records of a page of ids, still only if visible, with their tags in the same statement:
        on MariaDB every statement is a round trip."""
        tags_of = select(func.group_concat(tag.c.tag)).where(tag.c.record_id == content.c.id).scalar_subquery()
        return (self._record_select().add_columns(tags_of.label("tags"))
                .where(content.c.id.in_(bindparam("page", expanding=True)), self._visible(role))
                .order_by(content.c.id.desc()))

    def get_record(self, viewer: User, record_id: int) -> Record:
        """One visible record with its revision count; NotFound when missing or not visible."""
        with self.connection() as conn:
            one = self._prepared(("record", viewer.role), lambda: self._record_select().where(
                content.c.id == bindparam("record_id"), self._visible(viewer.role)))
            row = conn.execute(one, {"record_id": record_id, "viewer_id": viewer.id}).first()
            if row is None:
                raise NotFound(f"record {record_id} does not exist or you cannot see it; "
                               "try /rec find or /rec list")
            return self._hydrate(conn, [row], with_revisions=True)[0]

    def revisions(self, viewer: User, record_id: int) -> list[Revision]:
        """Earlier texts of a visible record, oldest first."""
        editor = user.alias("editor")
        with self.connection() as conn:
            visible = conn.execute(select(content.c.id).where(content.c.id == record_id, self._visible(viewer.role)),
                                   {"viewer_id": viewer.id}).first()
            if visible is None:
                raise NotFound(f"record {record_id} does not exist or you cannot see it")
            rows = conn.execute(
                select(revision.c.id, revision.c.body, editor.c.username, revision.c.edited_at)
                .join(editor, editor.c.id == revision.c.edited_by)
                .where(revision.c.record_id == record_id).order_by(revision.c.id)
            ).all()
        return [Revision(r.id, r.body, r.username, r.edited_at) for r in rows]

    def _editable(self, actor: User) -> Any:
        """Owner or admin, re-read in the statement: who may edit, delete or restore."""
        me = user.alias("actor")
        return or_(
            and_(content.c.owner_id == actor.id,
                 exists().where(me.c.id == actor.id, me.c.role.in_(("admin", "member")))),
            exists().where(me.c.id == actor.id, me.c.role == "admin"),
        )

    def _load_for_change(self, conn: Connection, actor: User, record_id: int) -> Any:
        row = conn.execute(
            select(content.c.id, content.c.owner_id, content.c.body)
            .where(content.c.id == record_id, self._visible(actor.role)), {"viewer_id": actor.id}
        ).first()
        if row is None:
            raise NotFound(f"record {record_id} does not exist or you cannot see it; try /rec find or /rec list")
        return row

    def edit_record(self, actor: User, record_id: int, body: str) -> Record:
        """Replace the text (owner or admin); the old text is kept as a revision."""
        self._check_body(body)
        folded = search.fold(body)
        now = self.clock()
        with self.transaction() as conn:
            row = self._load_for_change(conn, actor, record_id)
            if row.body == body:
                raise Conflict(f"record {record_id} already has exactly that text; nothing changed")
            result = conn.execute(
                update(content)
                .where(content.c.id == record_id, content.c.deleted_at.is_(None), self._editable(actor))
                .values(body=body, search_text=folded, updated_at=now)
            )
            if result.rowcount != 1:
                raise Forbidden(f"only the owner of record {record_id} or an admin can edit it")
            conn.execute(insert(revision).values(record_id=record_id, body=row.body, edited_by=actor.id, edited_at=now))
            self._set_tags(conn, record_id, extract_tags(body), replace=True)
            search.index_text(conn, self.search_backend, record_id, folded)
            if row.owner_id != actor.id:
                self._audit(conn, actor, "edit", f"record {record_id}")
        return self.get_record(actor, record_id)

    def delete_record(self, actor: User, record_id: int) -> None:
        """Soft delete (owner or admin); an admin can restore it."""
        now = self.clock()
        with self.transaction() as conn:
            row = self._load_for_change(conn, actor, record_id)
            result = conn.execute(
                update(content)
                .where(content.c.id == record_id, content.c.deleted_at.is_(None), self._editable(actor))
                .values(deleted_at=now, deleted_by=actor.id, updated_at=now)
            )
            if result.rowcount != 1:
                raise Forbidden(f"only the owner of record {record_id} or an admin can delete it")
            if row.owner_id != actor.id:
                self._audit(conn, actor, "delete", f"record {record_id}")

    def restore_record(self, actor: User, record_id: int) -> None:
        with self.transaction() as conn:
            self._require_admin(conn, actor)
            result = conn.execute(
                update(content).where(content.c.id == record_id, content.c.deleted_at.is_not(None))
                .values(deleted_at=None, deleted_by=None, updated_at=self.clock())
            )
            if result.rowcount != 1:
                exists_at_all = conn.execute(select(content.c.id).where(content.c.id == record_id)).first()
                if exists_at_all:
                    raise Conflict(f"record {record_id} is not deleted; nothing to restore")
                raise NotFound(f"record {record_id} does not exist")
            self._audit(conn, actor, "restore", f"record {record_id}")

    # ---- grants and shares -------------------------------------------------------------------

    def grant(self, actor: User, viewer_id: int, owner_ids: Sequence[int]) -> int:
        """Let the viewer see every record of each owner; returns how many grants were new."""
        now = self.clock()
        with self.transaction() as conn:
            self._require_admin(conn, actor)
            new = 0
            for owner_id in dict.fromkeys(owner_ids):
                if owner_id == viewer_id:
                    continue
                new += conn.execute(self._insert_ignore(grant).values(
                    viewer_id=viewer_id, owner_id=owner_id, granted_by=actor.id, created_at=now)).rowcount
            names = self._names(conn, [viewer_id, *owner_ids])
            self._audit(conn, actor, "grant",
                        f"@{names[viewer_id]} may see " + ", ".join(f"@{names[o]}" for o in owner_ids))
        return new

    def revoke(self, actor: User, viewer_id: int, owner_ids: Sequence[int]) -> int:
        """Take grants back; returns how many existed."""
        with self.transaction() as conn:
            self._require_admin(conn, actor)
            gone = conn.execute(delete(grant).where(grant.c.viewer_id == viewer_id,
                                                    grant.c.owner_id.in_(list(owner_ids)))).rowcount
            names = self._names(conn, [viewer_id, *owner_ids])
            self._audit(conn, actor, "revoke",
                        f"@{names[viewer_id]} no longer sees " + ", ".join(f"@{names[o]}" for o in owner_ids))
        return gone

    def _names(self, conn: Connection, ids: Sequence[int]) -> dict[int, str]:
        rows = conn.execute(select(user.c.id, user.c.username).where(user.c.id.in_(list(ids)))).all()
        return {r.id: r.username for r in rows}

    def perms(self, actor: User, user_id: int) -> tuple[list[User], list[User]]:
        """(whose records the user may see by grant, who may see the user's records by grant)."""
        with self.connection() as conn:
            self._require_admin(conn, actor)
            sees = conn.execute(select(user).join(grant, grant.c.owner_id == user.c.id)
                                .where(grant.c.viewer_id == user_id).order_by(user.c.username)).all()
            seen = conn.execute(select(user).join(grant, grant.c.viewer_id == user.c.id)
                                .where(grant.c.owner_id == user_id).order_by(user.c.username)).all()
        return [_user(r) for r in sees], [_user(r) for r in seen]

    def share(self, actor: User, record_id: int, user_ids: Sequence[int]) -> list[int]:
        """Let each user see this one record (the actor must see it); returns the newly added ids."""
        now = self.clock()
        added: list[int] = []
        with self.transaction() as conn:
            self._load_for_change(conn, actor, record_id)
            for uid in dict.fromkeys(user_ids):
                visible_to_actor = select(literal(uid), literal(record_id), literal(actor.id), literal(now)).where(
                    exists().where(content.c.id == record_id, self._visible(actor.role)))
                n = conn.execute(self._insert_ignore(share).from_select(
                    ["user_id", "record_id", "shared_by", "created_at"], visible_to_actor),
                    {"viewer_id": actor.id}).rowcount
                if n:
                    added.append(uid)
        return added

    # ---- settings and audit ------------------------------------------------------------------

    def settings(self, max_age: float = 0.0) -> dict[str, str]:
        """Stored settings; with max_age, a copy read at most that many seconds ago may answer.

        Commands read them on every request; another process's change shows within max_age, this
        process's own at once (a write drops the copy).
        """
        cached = self._settings_cache
        if max_age and cached and time.monotonic() - cached[0] < max_age:
            return dict(cached[1])
        with self.connection() as conn:
            values = {r.name: r.value for r in conn.execute(select(setting.c.name, setting.c.value))}
        self._settings_cache = (time.monotonic(), values)
        return dict(values)

    def set_setting(self, actor: User, name: str, value: str | Callable[[dict[str, str]], str]) -> str:
        """Store a setting as `actor`; `value` may be a function of every stored row, read under a lock
        in this transaction, that returns the text to store or raises to store nothing."""
        now = self.clock()
        with self.transaction() as conn:
            self._require_admin(conn, actor)
            rows = {r.name: r.value for r in conn.execute(select(setting.c.name, setting.c.value).with_for_update())}
            if callable(value):
                value = value(rows)
            old = rows.get(name)
            if old is None:
                conn.execute(insert(setting).values(name=name, value=value, updated_by=actor.id, updated_at=now))
            else:
                conn.execute(update(setting).where(setting.c.name == name)
                             .values(value=value, updated_by=actor.id, updated_at=now))
            self._audit(conn, actor, "set", f"{name}: {old if old is not None else '(default)'} -> {value}")
        self._settings_cache = None
        return value

    def store_internal(self, name: str, value: str) -> None:
        """A value the bot itself keeps (the registered command's token), with no actor and no audit."""
        now = self.clock()
        with self.transaction() as conn:
            done = conn.execute(update(setting).where(setting.c.name == name).values(value=value, updated_at=now))
            if done.rowcount == 0:
                conn.execute(insert(setting).values(name=name, value=value, updated_by=None, updated_at=now))
        self._settings_cache = None

    def audit_system(self, action: str, detail: str, actor: User | None = None) -> None:
        """An audit entry for something done outside a command (an alert button, start-up); `actor`
        when the one who did it is a known user."""
        with self.transaction() as conn:
            self._audit(conn, actor, action, detail)

    def _audit(self, conn: Connection, actor: User | None, action: str, detail: str) -> None:
        conn.execute(insert(audit).values(actor_id=actor.id if actor else None, action=action,
                                          detail=detail, created_at=self.clock()))

    def recent_audit(self, actor: User, limit: int = 20) -> list[AuditEntry]:
        who = user.alias("who")
        with self.connection() as conn:
            self._require_admin(conn, actor)
            rows = conn.execute(
                select(audit.c.id, who.c.username, audit.c.action, audit.c.detail, audit.c.created_at)
                .outerjoin(who, who.c.id == audit.c.actor_id).order_by(audit.c.id.desc()).limit(limit)
            ).all()
        return [AuditEntry(r.id, r.username, r.action, r.detail, r.created_at) for r in rows]
