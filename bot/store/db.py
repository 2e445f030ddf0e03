"""The engine per backend and the base every part of the store builds on."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from bot import search
from bot.errors import Forbidden
from bot.i18n import _
from bot.store.models import (
    User,
    utcnow,
)
from bot.store.retry import NOT_SENT, mysql_code, open_transactions, retried
from bot.tables import audit, setting, user

try:
    import fcntl
except ImportError:  # Windows has no flock: there only the threads of one process queue
    fcntl = None  # type: ignore[assignment]  # the module, or None where it does not exist

# Statements are built once per shape (see Db._prepared); a bound keeps odd requests (a find with
# hundreds of words) from growing the table without end.
MAX_SHAPES = 512
MAX_KNOWN_USERS = 10_000
# Seconds a caller's row read by this process may answer a member command (dispatch.identify), and the
# owners their grants name, read with it, may steer their searches (Db.known_grants). A role or grant
# changed in another server.workers process shows within this; one changed here shows at once.
IDENTITY_MAX_AGE = 2.0
PROBE_SETTING = "healthz.probe"


def make_engine(url: str, timeout: float | None = None) -> Engine:
    """An engine tuned per backend: WAL and a busy timeout on SQLite, pre-ping on MariaDB; on MariaDB
    `timeout` seconds bound connecting, each read and each write (None: no bound, for migrations)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Parameters never go into error messages: they hold users' text, and errors are logged.
        engine = create_engine(parsed.set(drivername=f"sqlite+{SQLITE_DRIVER}"), connect_args={"timeout": 30},
                               hide_parameters=True)

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

        return engine
    # Every call has a limit: a server or proxy that stops answering fails the call instead of hanging
    # a serving thread (and /healthz) for good.
    limits = {"connect_timeout": max(1, round(timeout)), "read_timeout": timeout, "write_timeout": timeout} \
        if timeout else {}
    engine = create_engine(url, pool_pre_ping=True, pool_recycle=3600, pool_size=10, max_overflow=20,
                           pool_timeout=timeout or 30, connect_args=limits, hide_parameters=True)

    @event.listens_for(engine, "connect")
    def _on_mysql_connect(dbapi_conn: Any, _record: Any) -> None:
        # On Galera, a node applies other nodes' commits a moment after they return there: without
        # this, host B could answer "no such record" right after host A saved it. With it, each read
        # first waits until this node has applied every commit the cluster had when the read began.
        cur = dbapi_conn.cursor()
        cur.execute("SHOW VARIABLES LIKE 'wsrep_on'")
        row = cur.fetchone()
        if row and str(row[1]).upper() == "ON":
            cur.execute("SET SESSION wsrep_sync_wait = 1")
        cur.close()

    return engine


class RecbotSQLiteDialect(SQLiteDialect_pysqlite):
    """pysqlite, beginning its own transactions: the connect hook turns the sqlite3 module's implicit
    BEGIN off, so writers can BEGIN IMMEDIATE (two deferred writers would deadlock on upgrade).

    This is SQLAlchemy's documented recipe with do_begin in place of a "begin" event listener: any
    connection-level listener makes SQLAlchemy dispatch events around every statement, which cost
    recbot about a tenth of an `add`.
    """

    supports_statement_cache = True

    def do_begin(self, dbapi_connection: Any) -> None:
        # Straight to the driver: SQLAlchemy's execute path costs more than SQLite's BEGIN itself.
        immediate = dbapi_connection.info.pop(BEGIN_IMMEDIATE, False)
        dbapi_connection.driver_connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")


SQLITE_DRIVER = "recbot"
BEGIN_IMMEDIATE = "recbot.begin_immediate"  # set on a pooled connection's info by Db.transaction
registry.register(f"sqlite.{SQLITE_DRIVER}", __name__, "RecbotSQLiteDialect")


def _drop_if_unusable(conn: Connection, exc: DBAPIError) -> None:
    """A connection to a node that left the cluster's primary component answers every statement with
    1047, and a ping does not notice: drop it, so the next checkout connects (through HAProxy) to a
    node that serves."""
    if mysql_code(exc) in NOT_SENT and not conn.invalidated:
        conn.invalidate()


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
        self._fd: tuple[int, int] | None = None  # (pid, descriptor): opened once per process, not per write

    def _descriptor(self) -> int | None:
        if self._path is None:
            return None
        # A descriptor inherited through fork shares its lock with the parent: open our own.
        if self._fd is None or self._fd[0] != os.getpid():
            self._fd = (os.getpid(), os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600))
        return self._fd[1]

    @contextmanager
    def __call__(self) -> Any:
        with self._threads:
            self._depth += 1
            fd = self._descriptor() if self._depth == 1 else None
            try:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                self._depth -= 1


class Db:
    """The engine and what every part of the store shares: transactions, the write turn, statements
    built once per shape, the caches. The engine stays inside the store."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = utcnow) -> None:
        self._engine = engine
        self.clock = clock
        self.dialect = engine.dialect.name
        self._backend: str | None = None
        self._settings_cache: tuple[float, dict[str, str]] | None = None
        self._write_turn: Any = _WriteTurn(engine.url.database) if self.dialect == "sqlite" else contextlib.nullcontext
        self._statements: dict[tuple, Any] = {}
        self._known_users: dict[str, tuple[float, User]] = {}  # mm_user_id -> (read at, row); see ensure_user
        self._known_grants: dict[int, tuple[float, tuple[int, ...]]] = {}  # user id -> (read at, owner ids)

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

    def remember_grants(self, user_id: int, owners: tuple[int, ...]) -> None:
        if len(self._known_grants) >= MAX_KNOWN_USERS:
            self._known_grants.clear()
        self._known_grants[user_id] = (time.monotonic(), owners)

    def known_grants(self, user_id: int) -> tuple[int, ...] | None:
        """The owners the user's grants named when read at most IDENTITY_MAX_AGE ago, else None."""
        known = self._known_grants.get(user_id)
        return known[1] if known and time.monotonic() - known[0] < IDENTITY_MAX_AGE else None

    @property
    def search_backend(self) -> str:
        """sqlite-fts5, mroonga or like; read once, after migrations have run."""
        if self._backend is None:
            self._backend = search.detect_backend(self._engine)
        return self._backend

    @contextmanager
    def transaction(self) -> Any:
        """A write transaction (BEGIN IMMEDIATE on SQLite, so two writers never deadlock on upgrade).

        On SQLite, writers first wait their turn in _WriteTurn rather than in SQLite's busy handler.
        """
        committing = False
        open_transactions.depth += 1
        try:
            with self._write_turn(), self._engine.connect() as conn:
                if self.dialect == "sqlite":
                    conn.connection.info[BEGIN_IMMEDIATE] = True  # read by RecbotSQLiteDialect.do_begin
                with conn.begin():
                    try:
                        yield conn
                    except DBAPIError as exc:
                        _drop_if_unusable(conn, exc)
                        raise
                    committing = True
        except DBAPIError as exc:
            # After COMMIT was sent, a lost answer may hide a write that happened: not one to retry.
            exc.recbot_at_commit = committing  # type: ignore[attr-defined]  # read by bot.store.retry
            raise
        finally:
            open_transactions.depth -= 1

    @contextmanager
    def connection(self) -> Any:
        """A connection for reads."""
        with self._engine.connect() as conn:
            try:
                yield conn
            except DBAPIError as exc:
                _drop_if_unusable(conn, exc)
                raise

    def _insert_ignore(self, table: Any) -> Any:
        return insert(table).prefix_with("OR IGNORE", dialect="sqlite").prefix_with(
            "IGNORE", dialect="mysql").prefix_with("IGNORE", dialect="mariadb")

    def ping(self) -> None:
        with self.connection() as conn:
            conn.execute(text("SELECT 1"))

    @retried
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

    def dispose(self) -> None:
        """Close every pooled connection (at a stop, or before a fork)."""
        self._engine.dispose()

    def _require_admin(self, conn: Connection, actor: User) -> None:
        role = conn.execute(select(user.c.role).where(user.c.id == actor.id)).scalar()
        if role != "admin":
            raise Forbidden(_("only an admin can do that; ask one of your recbot admins"))

    def _audit(self, conn: Connection, actor: User | None, action: str, detail: str) -> None:
        conn.execute(insert(audit).values(actor_id=actor.id if actor else None, action=action,
                                          detail=detail, created_at=self.clock()))
