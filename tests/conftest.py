"""Shared fixtures: every storage-backed test runs on a real SQLite file and on the real MariaDB.

MariaDB: each test gets a fresh database (created on the server, dropped afterwards). When the
server cannot be reached, tests that need it fail under CI=true and are skipped, loudly, elsewhere.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pymysql
import pytest
from sqlalchemy import text

from bot import migrate
from bot.storage import Storage, make_engine
from tests.alerting import Ops, ops_world
from tests.helpers import engine_of

MARIADB_HOST = os.environ.get("REC_TEST_MARIADB_HOST", "127.0.0.1")
MARIADB_PORT = int(os.environ.get("REC_TEST_MARIADB_PORT", "3306"))
MARIADB_USER = os.environ.get("REC_TEST_MARIADB_USER", "root")
MARIADB_PASSWORD = os.environ.get("REC_TEST_MARIADB_PASSWORD", "")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_reachable: str | None = None  # "" when reachable, else why not; probed once per run


def _mariadb_problem() -> str:
    global _reachable
    if _reachable is None:
        try:
            pymysql.connect(host=MARIADB_HOST, port=MARIADB_PORT, user=MARIADB_USER, password=MARIADB_PASSWORD,
                            connect_timeout=5).close()
            _reachable = ""
        except pymysql.MySQLError as exc:
            _reachable = f"MariaDB at {MARIADB_HOST}:{MARIADB_PORT} is unreachable ({exc})"
    return _reachable


def _admin_connection() -> pymysql.connections.Connection:
    return pymysql.connect(host=MARIADB_HOST, port=MARIADB_PORT, user=MARIADB_USER, password=MARIADB_PASSWORD,
                           autocommit=True)


def require_mariadb() -> None:
    problem = _mariadb_problem()
    if problem:
        if IN_CI:
            pytest.fail(f"{problem}; CI must run the MariaDB tests: start the server (see .ci/run)")
        pytest.skip(f"!!! SKIPPING MariaDB TESTS: {problem}. Start MariaDB to run them.")


@contextmanager
def fresh_mariadb_database(prefix: str = "recbot_test") -> Iterator[str]:
    """The URL of a new, empty MariaDB database, dropped afterwards."""
    require_mariadb()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _admin_connection()
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        pw = f":{MARIADB_PASSWORD}" if MARIADB_PASSWORD else ""
        yield f"mysql+pymysql://{MARIADB_USER}{pw}@{MARIADB_HOST}:{MARIADB_PORT}/{name}?charset=utf8mb4"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """A fresh, empty MariaDB database for one test, dropped afterwards."""
    with fresh_mariadb_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """The URL of an empty database, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'records.db'}"
    return request.getfixturevalue("mariadb_url")


@pytest.fixture
def storage(db_url: str) -> Iterator[Storage]:
    """A migrated database behind the real Storage."""
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    yield Storage(engine)
    engine.dispose()


@pytest.fixture
async def ops() -> AsyncIterator[Ops]:
    """An ops team in a fake Mattermost with an alert channel the bot is in, and a started gateway."""
    async with ops_world() as world:
        yield world


def wipe(storage: Storage) -> None:
    """Empty every table (for property tests that need a clean slate per example)."""
    tables = ["T_ALERT_HEALTH", "T_LEASE", "T_OUTBOX", "T_SAMPLE", "T_ALERT_STATE", "T_FILE", "T_AUDIT",
              "T_SETTING", "T_REVISION", "T_SHARE", "T_GRANT", "T_TAG", "T_CONTENT", "T_DIGEST", "T_USER"]
    with engine_of(storage).begin() as conn:
        for name in tables:
            conn.execute(text(f"DELETE FROM {name}"))
        if storage.search_backend == "mroonga":
            conn.execute(text("DELETE FROM T_CONTENT_FT"))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    problem = _reachable
    if problem:
        verb = "FAILED" if IN_CI else "were SKIPPED"
        terminalreporter.write_sep("!", f"MariaDB tests {verb}: {problem}", red=True, bold=True)
