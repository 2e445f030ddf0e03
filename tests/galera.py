"""The real 3-node Galera cluster of deploy/galera/cluster.sh, for the cluster tests: started when it
is not up, a fresh database on it per test, nodes killed with -9 and started again.

Under CI=true a cluster that cannot start fails the tests that need it; elsewhere they are skipped,
loudly (the machine may lack galera-4 or haproxy).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pymysql
import pytest

from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "galera" / "cluster.sh"
NODES = (1, 2, 3)
BALANCED = 3310  # HAProxy: round robin over the Synced nodes


def node_port(n: int) -> int:
    return 3310 + n


def preferring(n: int) -> int:
    """HAProxy's port that sends to node n while it is Synced, else to the others."""
    return 3320 + n


_problem: str | None = None


def _script(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False)


def require_galera() -> None:
    """Start the cluster if it is not up (idempotent), once per run; fail in CI, skip elsewhere."""
    global _problem
    if _problem is None:
        done = _script("start")
        _problem = "" if done.returncode == 0 else \
            f"the Galera cluster did not start (deploy/galera/cluster.sh start): {(done.stderr or done.stdout).strip()}"
    if _problem:
        if IN_CI:
            pytest.fail(f"{_problem}; CI must run the cluster tests (see .ci/run)")
        pytest.skip(f"!!! SKIPPING GALERA TESTS: {_problem}")


def connect(port: int, database: str | None = None) -> pymysql.connections.Connection:
    return pymysql.connect(host="127.0.0.1", port=port, user="root", database=database, autocommit=True,
                           connect_timeout=5, read_timeout=30)


def state(n: int) -> str:
    try:
        conn = connect(node_port(n))
    except pymysql.MySQLError:
        return "down"
    with conn, conn.cursor() as cur:
        cur.execute("SHOW STATUS LIKE 'wsrep_local_state_comment'")
        row = cur.fetchone()
        return str(row[1]) if row else "unknown"


def kill(n: int) -> None:
    """kill -9 node n, then wait until HAProxy and the survivors have noticed."""
    done = _script("kill", str(n), timeout=30)
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        sizes = {cluster_size(m) for m in NODES if m != n}
        if sizes == {len(NODES) - 1}:
            return
        time.sleep(0.2)
    raise AssertionError(f"the survivors still count node {n} after 30 s")


def start(n: int) -> None:
    done = _script("start-node", str(n))
    assert state(n) == "Synced", f"node {n} did not rejoin: {done.stdout}{done.stderr}"


def cluster_size(n: int) -> int:
    try:
        conn = connect(node_port(n))
    except pymysql.MySQLError:
        return 0
    with conn, conn.cursor() as cur:
        cur.execute("SHOW STATUS LIKE 'wsrep_cluster_size'")
        row = cur.fetchone()
        return int(row[1]) if row else 0


def heal() -> None:
    """Every node back and Synced (after a test that killed one, pass or fail)."""
    for n in NODES:
        if state(n) != "Synced":
            start(n)


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new database on the cluster (created through HAProxy, so on every node); its name."""
    require_galera()
    heal()
    name = f"recbot_galera_{uuid.uuid4().hex[:10]}"
    with connect(BALANCED) as admin, admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    try:
        yield name
    finally:
        heal()
        with connect(BALANCED) as admin, admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


def url(database: str, port: int) -> str:
    return f"mysql+pymysql://root@127.0.0.1:{port}/{database}?charset=utf8mb4"


def count_on(n: int, database: str, sql: str, args: tuple = ()) -> int:
    with connect(node_port(n), database) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        row = cur.fetchone()
        return int(row[0]) if row else 0
