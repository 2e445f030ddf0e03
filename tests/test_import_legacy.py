"""python -m bot import-legacy: the old Tornado + MySQL page's tables, imported once, claimed by username.

The old database is a real MariaDB database built here from the old page's description; the recbot
database is the usual SQLite file and fresh MariaDB database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, inspect, text

from bot.commands import dispatcher
from bot.config import DatabaseConfig
from bot.context import Services
from bot.mattermost.slash import SlashRequest
from bot.storage import Filter, Storage
from bot.transfer.legacy import run_import_legacy
from tests.conftest import fresh_mariadb_database, wipe
from tests.helpers import all_pages, config, count_rows, rows

ROOT = Path(__file__).resolve().parent.parent
TABLES = ("T_USER", "T_CONTENT", "T_GRANT", "T_TAG", "T_SETTING", "T_AUDIT")

OLD_SCHEMA = [
    "CREATE TABLE T_USER (id INT PRIMARY KEY, username VARCHAR(64), password CHAR(32), type INT, "
    "permission VARCHAR(255), email VARCHAR(128)) CHARSET utf8mb4",
    "CREATE TABLE T_CONTENT (id INT AUTO_INCREMENT PRIMARY KEY, user_id INT, content TEXT, created_at DATETIME, "
    "ip VARCHAR(40)) CHARSET utf8mb4",
    "CREATE TABLE T_SETTING (name VARCHAR(64) PRIMARY KEY, value VARCHAR(255)) CHARSET utf8mb4",
]
MD5 = "5f4dcc3b5aa765d61d8327deb882cf99"
OLD_USERS = [  # id, username, type, permission
    (1, "boss", 1, ""),
    (3, "alice", 0, "7, 12,"),
    (7, "bob", 0, "3"),
    (9, "mallory", 0, "3,x"),  # a broken list: skipped, with her records
    (12, "张三", 0, None),
    (15, "quiet", 0, "1,3,7,12"),  # no records of her own
]
OLD_RECORDS = [  # id, author, text, time
    (1, 3, "restarted nginx on web-01 #deploy", "2015-03-01 09:00:00"),
    (2, 7, "rotated logs #ops", "2015-03-02 10:30:00"),
    (3, 12, "修复了数据库主从同步 #数据库", "2016-07-08 12:00:00"),
    (4, 1, "budget approved", "2016-08-01 08:00:00"),
    (5, 99, "written by a user that is gone", "2016-08-02 08:00:00"),  # unknown owner
    (6, 7, "bad\x00byte", "2016-08-03 08:00:00"),  # NUL in text
    (7, 9, "mallory's secret", "2016-08-04 08:00:00"),  # owner skipped
    (8, 3, "cleaned /tmp on db-02", "2017-01-01 00:00:00"),
    (9, 3, "kept the time", None),  # unreadable time
]


@pytest.fixture
def legacy_url() -> Iterator[str]:
    """A fresh MariaDB database for the old page's tables (db_url may already hold the target)."""
    with fresh_mariadb_database("recbot_legacy") as url:
        yield url


def build_old(url: str, users=OLD_USERS, records=OLD_RECORDS, schema=OLD_SCHEMA) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for table in ("T_CONTENT", "T_USER", "T_SETTING"):
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        for ddl in schema:
            conn.execute(text(ddl))
        if users:
            conn.execute(text("INSERT INTO T_USER VALUES (:id, :name, :pw, :type, :perm, :email)"),
                         [{"id": i, "name": n, "pw": MD5, "type": t, "perm": p, "email": f"{i}@old"}
                          for i, n, t, p in users])
        if records:
            conn.execute(text("INSERT INTO T_CONTENT VALUES (:id, :author, :body, :at, '10.0.0.1')"),
                         [{"id": i, "author": a, "body": b, "at": t} for i, a, b, t in records])
        conn.execute(text("INSERT INTO T_SETTING VALUES ('page_size', '25'), ('theme', 'dark')"))
    engine.dispose()


def run(db_url: str, *options: str) -> int:
    return run_import_legacy(config(database=DatabaseConfig(url=db_url)), list(options))


def cli(db_url: str, *options: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "REC_DATABASE__URL": db_url, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "bot", "import-legacy", *options], env=env, capture_output=True,
                          text=True, timeout=120)


def list_as(storage: Storage, mm_id: str, name: str) -> str:
    result = dispatcher().handle(Services(storage, config()), SlashRequest(user_id=mm_id, user_name=name, text="list"))
    return result.reply.text


def test_dry_run_prints_counts_unmapped_columns_and_bad_rows_and_writes_nothing(
        db_url: str, legacy_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    build_old(legacy_url)
    assert run(db_url, "--from", legacy_url, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "would import: 5 users (0 bound to recbot users of the same name, 1 admins), 5 records, 7 grants, " \
           "1 settings" in out
    assert "columns not mapped: T_USER.email, T_CONTENT.ip" in out
    assert "rows that cannot be read (skipped): 5" in out
    assert "T_USER id=9 (mallory): the permission list '3,x' is not a comma-separated list of ids" in out
    assert "T_CONTENT id=5: owner 99 is not in T_USER" in out
    assert "T_CONTENT id=6 (owner bob): the text contains a NUL character" in out
    assert "T_CONTENT id=7: its owner was skipped" in out
    assert "T_CONTENT id=9 (owner alice): the time None cannot be read" in out
    assert "setting theme = 'dark': recbot has no such setting" in out
    assert inspect(create_engine(db_url)).get_table_names() == []  # not even migrated


def test_a_dry_run_on_a_migrated_database_changes_no_row(storage: Storage, db_url: str, legacy_url: str) -> None:
    build_old(legacy_url)
    before = count_rows(storage, *TABLES)
    assert run(db_url, "--from", legacy_url, "--dry-run") == 0
    assert count_rows(storage, *TABLES) == before


def test_import_keeps_times_text_tags_and_roles_and_a_rerun_duplicates_nothing(
        storage: Storage, db_url: str, legacy_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    build_old(legacy_url)
    assert run(db_url, "--from", legacy_url) == 0
    assert "imported: 5 users (0 bound to recbot users of the same name, 1 admins), 5 records, 7 grants" \
        in capsys.readouterr().out
    first = count_rows(storage, *TABLES)
    assert first[:4] == (5, 5, 7, 3)
    (zhang,) = rows(storage, "T_USER", username="张三")
    assert zhang.mm_user_id == "legacy:张三" and zhang.role == "member"
    assert rows(storage, "T_USER", username="boss")[0].role == "admin"
    (chinese,) = rows(storage, "T_CONTENT", owner_id=zhang.id)
    assert chinese.body == "修复了数据库主从同步 #数据库" and chinese.created_at == datetime(2016, 7, 8, 12)
    assert {r.tag for r in rows(storage, "T_TAG", record_id=chinese.id)} == {"数据库"}
    assert not any("5f4dcc3b" in str(tuple(r)) for t in TABLES for r in rows(storage, t))  # passwords dropped
    assert run(db_url, "--from", legacy_url) == 0
    out = capsys.readouterr().out
    assert "imported: 0 users" in out and "0 records, 0 grants, 0 settings; 5 users imported before" in out
    assert count_rows(storage, *TABLES)[:5] == first[:5]


def test_a_rerun_imports_only_new_and_fixed_rows_and_keeps_a_revoked_grant_revoked(
        storage: Storage, db_url: str, legacy_url: str) -> None:
    build_old(legacy_url)
    assert run(db_url, "--from", legacy_url) == 0
    boss = storage.ensure_user("mm-boss", "boss")[0]
    alice = storage.ensure_user("mm-alice", "alice")[0]
    bob = storage.users_by_username(["bob"])["bob"]
    assert storage.revoke(boss, alice.id, [bob.id]) == 1
    engine = create_engine(legacy_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE T_CONTENT SET content = 'no byte', created_at = '2016-08-03' WHERE id IN (6, 9)"))
        conn.execute(text("UPDATE T_USER SET permission = '3' WHERE id = 9"))
        conn.execute(text("INSERT INTO T_CONTENT VALUES (10, 3, 'new in the old page', '2018-01-01', '')"))
    engine.dispose()
    assert run(db_url, "--from", legacy_url) == 0
    bodies = [r.body for r in rows(storage, "T_CONTENT")]
    assert sorted(bodies).count("no byte") == 2 and "new in the old page" in bodies
    assert "mallory's secret" in bodies
    assert len(bodies) == 9
    assert not rows(storage, "T_GRANT", viewer_id=alice.id, owner_id=bob.id)
    assert run(db_url, "--from", legacy_url) == 0
    assert count_rows(storage, "T_CONTENT")[0] == 9


def test_the_first_account_of_a_username_claims_its_history_and_a_later_one_does_not(
        storage: Storage, db_url: str, legacy_url: str) -> None:
    build_old(legacy_url)
    assert run(db_url, "--from", legacy_url) == 0
    seen = list_as(storage, "mm-alice-1", "alice")
    assert "restarted nginx on web-01" in seen and "cleaned /tmp on db-02" in seen  # her own
    assert "rotated logs" in seen and "修复了数据库主从同步" in seen  # bob's and 张三's, per "7, 12,"
    assert "budget approved" not in seen
    (alice,) = rows(storage, "T_USER", username="alice")
    assert alice.mm_user_id == "mm-alice-1"
    assert any(r.action == "claim" and "mm-alice-1" in r.detail for r in rows(storage, "T_AUDIT"))
    later = list_as(storage, "mm-alice-2", "alice")  # the name now belongs to another account
    assert "restarted nginx" not in later and "rotated logs" not in later
    assert "修复了数据库主从同步" in list_as(storage, "mm-zhang", "张三")
    assert "rotated logs" in list_as(storage, "mm-boss", "boss")  # the old admin is an admin


def test_an_unreachable_source_is_one_line_exit_2_and_writes_nothing(db_url: str, tmp_path: Path) -> None:
    done = cli(db_url, "--from", "mysql+pymysql://root@127.0.0.1:1/olddb")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "cannot read the old database" in done.stderr
    assert "Traceback" not in done.stderr
    assert inspect(create_engine(db_url)).get_table_names() == []


def test_a_mapping_naming_a_missing_column_is_one_line_exit_2_and_writes_nothing(
        db_url: str, legacy_url: str, tmp_path: Path) -> None:
    build_old(legacy_url)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("user:\n  permission: can_see\n", encoding="utf-8")
    done = cli(db_url, "--from", legacy_url, "--mapping", str(mapping))
    assert done.returncode == 2
    assert done.stderr.strip() == ("import-legacy: the mapping names T_USER.can_see for user permission, but T_USER "
                                   "has no such column; it has: id, username, password, type, permission, email")
    assert inspect(create_engine(db_url)).get_table_names() == []


def test_odd_column_names_are_read_through_a_mapping_file(
        storage: Storage, db_url: str, legacy_url: str, tmp_path: Path) -> None:
    schema = ["CREATE TABLE accounts (uid INT PRIMARY KEY, login VARCHAR(64), pwd CHAR(32), kind VARCHAR(8), "
              "can_see TEXT) CHARSET utf8mb4",
              "CREATE TABLE posts (pid INT PRIMARY KEY, author INT, body TEXT, ts INT) CHARSET utf8mb4",
              "CREATE TABLE T_SETTING (name VARCHAR(64) PRIMARY KEY, value VARCHAR(255)) CHARSET utf8mb4"]
    build_old(legacy_url, users=[], records=[], schema=schema)
    engine = create_engine(legacy_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO accounts VALUES (1, 'root', '', 'admin', ''), (2, 'ann', '', 'user', '1')"))
        conn.execute(text("INSERT INTO posts VALUES (1, 2, 'ann was here', 1425200400)"))
    engine.dispose()
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("admin_types: [admin]\nsettings: {}\n"
                       "user: {table: accounts, id: uid, username: login, password: pwd, type: kind, "
                       "permission: can_see}\n"
                       "content: {table: posts, id: pid, author: author, text: body, time: ts}\n", encoding="utf-8")
    assert run(db_url, "--from", legacy_url, "--mapping", str(mapping)) == 0
    (record,) = rows(storage, "T_CONTENT")
    assert record.body == "ann was here" and record.created_at == datetime(2015, 3, 1, 9)
    assert rows(storage, "T_USER", username="root")[0].role == "admin"
    assert len(rows(storage, "T_GRANT")) == 1
    assert storage.settings()["page_size"] == "25"


def test_the_example_mapping_file_is_the_default(db_url: str, legacy_url: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    build_old(legacy_url)
    assert run(db_url, "--from", legacy_url, "--dry-run") == 0
    default = capsys.readouterr().out
    assert run(db_url, "--from", legacy_url, "--dry-run", "--mapping", str(ROOT / "deploy/legacy-mapping.yaml")) == 0
    assert capsys.readouterr().out == default


@st.composite
def old_worlds(draw: st.DrawFn) -> tuple[list[tuple], list[tuple]]:
    n = draw(st.integers(1, 6))
    ids = draw(st.lists(st.integers(1, 40), min_size=n, max_size=n, unique=True))
    users = []
    for i, uid in enumerate(ids):
        sees = draw(st.lists(st.sampled_from([*ids, 99]), max_size=4))
        sep = draw(st.sampled_from([",", ", "]))
        perm = sep.join(map(str, sees)) + draw(st.sampled_from(["", ","]))
        users.append((uid, f"u{i}" if draw(st.booleans()) else f"用户{i}", draw(st.sampled_from([0, 0, 1])), perm))
    records = [(rid, draw(st.sampled_from([*ids, 77])), f"record {rid} #t{rid % 3}", "2020-01-02 03:04:05")
               for rid in range(1, draw(st.integers(0, 15)) + 1)]
    return users, records


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(world=old_worlds())
def test_after_import_and_claiming_each_old_user_sees_exactly_what_the_old_page_allowed(
        storage: Storage, db_url: str, legacy_url: str, world: tuple[list[tuple], list[tuple]]) -> None:
    users, records = world
    wipe(storage)
    build_old(legacy_url, users=users, records=records)
    assert run(db_url, "--from", legacy_url) == 0
    admin_ids = {uid for uid, _, kind, _ in users if kind == 1}
    for uid, name, _, perm in users:
        viewer, _ = storage.ensure_user(f"mm-{uid}", name)
        allowed = {uid, *(int(p) for p in perm.replace(" ", "").split(",") if p)}
        expected = {f"record {rid} #t{rid % 3}" for rid, author, _, _ in records
                    if author in {u[0] for u in users} and (uid in admin_ids or author in allowed)}
        found = all_pages(storage, viewer, Filter(), page=50)
        assert {storage.get_record(viewer, i).body for i in found} == expected


def test_two_accounts_racing_for_one_imported_name_give_it_to_exactly_one(
        storage: Storage, db_url: str, legacy_url: str) -> None:
    build_old(legacy_url)
    assert run(db_url, "--from", legacy_url) == 0
    (old,) = rows(storage, "T_USER", username="alice")
    start = threading.Barrier(4)

    def claim(mm_id: str) -> int:
        start.wait()
        return storage.ensure_user(mm_id, "alice")[0].id

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(claim, [f"mm-racer-{i}" for i in range(4)]))
    assert got.count(old.id) == 1
    assert len(set(got)) == 4
    assert sum(r.action == "claim" for r in rows(storage, "T_AUDIT")) == 1
