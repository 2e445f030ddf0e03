"""python -m bot export / import / copy: the whole database out to a file, back in, and across backends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bot import migrate
from bot.storage import Attachment, Filter, Storage, make_engine
from tests.conftest import fresh_mariadb_database
from tests.helpers import all_pages, count_rows, insert_rows, make_user

ROOT = Path(__file__).resolve().parent.parent
ALL = ("T_USER", "T_CONTENT", "T_TAG", "T_GRANT", "T_SHARE", "T_REVISION", "T_SETTING", "T_AUDIT", "T_FILE",
       "T_ALERT_STATE", "T_SAMPLE", "T_OUTBOX", "T_ALERT_HEALTH", "T_LEASE", "T_DIGEST")
BLOB = bytes(range(256)) * 3 + b"\x00\xff"


def bot(url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "REC_DATABASE__URL": url, "REC_CONFIG": str(ROOT / "config.yaml"), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(params=["same", "other"])
def other_url(request: pytest.FixtureRequest, db_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of the same backend as db_url, or of the other one."""
    to_mariadb = db_url.startswith("sqlite") == (request.param == "other")
    if not to_mariadb:
        yield f"sqlite:///{tmp_path / 'other.db'}"
        return
    with fresh_mariadb_database() as url:
        yield url


def opened(url: str) -> Storage:
    engine = make_engine(url)
    migrate.upgrade(engine)
    return Storage(engine)


def fill(storage: Storage) -> None:
    """Every table holds rows, with the text that breaks naive code."""
    admin = make_user(storage, "管理员", "admin")
    zhang, li = make_user(storage, "张三"), make_user(storage, "李四")
    make_user(storage, "wang", "disabled")
    first = storage.add_record(zhang, "部署 nginx 😀\n第二行 #部署 #Deploy", files=[
        Attachment("file-1", "报告.pdf", 1234, "application/pdf")])
    second = storage.add_record(zhang, "巡检\r\n磁盘 'quotes' \"double\" \\ back\ttab %_ #巡检")
    gone = storage.add_record(li, "李四的记录 to be deleted")
    storage.add_record(li, "李四 private 巡检 note 🚀")
    storage.edit_record(zhang, second, "巡检完成\n磁盘 ok #巡检")
    storage.delete_record(li, gone)
    storage.grant(admin, li.id, [zhang.id])
    storage.share(zhang, first, [li.id])
    storage.set_setting(admin, "page_size", "7")
    storage.subscribe_digest(li, "weekly", "部署", zhang.id, "Asia/Shanghai")
    at = datetime(2026, 11, 30, 8, 0, 0, 123456)
    insert_rows(storage, "T_ALERT_STATE", [dict(host="主机-1", path="/Data", kind="space", level="warning",
                posted_level="warning", last_post_at=at, acknowledged=False, snoozed_until=None, updated_at=at,
                episode=3)])
    insert_rows(storage, "T_SAMPLE", [dict(host="主机-1", path="/Data", at=at, used_percent=81.234567890123,
                total_bytes=10**12, used_bytes=812 * 10**9, free_bytes=188 * 10**9, inodes_total=0, inodes_used=0)])
    insert_rows(storage, "T_OUTBOX", [dict(host="主机-1", path="/Data", kind="space", level="warning",
                message="磁盘 81%\n**/Data**", chart=BLOB, created_at=at, attempts=1, next_attempt_at=at,
                sent_at=None, post_id=None, last_error="timeout", episode=3, post_key="k" * 32, file_id=None,
                set_aside_at=None)])
    insert_rows(storage, "T_ALERT_HEALTH", [dict(host="主机-1", last_check_at=at, last_ok_at=None,
                last_error="NFS 挂起", failures=2, failing_posted=True)])
    insert_rows(storage, "T_LEASE", [dict(name="alerts:主机-1", holder="pid 1", expires_at=at, fencing=9)])


def body_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()[1:]


def header(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8").splitlines()[0])


def visible_ids(storage: Storage, username: str, *words: str) -> list[int]:
    viewer = storage.users_by_username([username])[username]
    return all_pages(storage, viewer, Filter(words=words))


def test_export_import_export_is_identical_and_search_and_visibility_are_unchanged(
        storage: Storage, db_url: str, other_url: str, tmp_path: Path) -> None:
    fill(storage)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    assert bot(db_url, "export", "--out", str(first), cwd=tmp_path).returncode == 0
    imported = bot(other_url, "import", str(first), cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    exported = bot(other_url, "export", "--out", str(second), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert body_lines(first) == body_lines(second)
    one, two = header(first), header(second)
    one.pop("exported_at"), two.pop("exported_at")
    assert one == two and one["tables"] == dict(zip(ALL, count_rows(storage, *ALL), strict=True))
    assert all(one["tables"][t] > 0 for t in ALL), one["tables"]
    assert any('{"b64":' in line for line in body_lines(first))
    target = opened(other_url)
    try:
        for name, words in (("李四", ("巡检",)), ("张三", ("巡检",)), ("李四", ("部署",)), ("管理员", ("记录",)),
                            ("wang", ("巡检",)), ("张三", ("private",))):
            assert visible_ids(target, name, *words) == visible_ids(storage, name, *words), (name, words)
        assert visible_ids(target, "李四", "巡") == visible_ids(storage, "李四", "巡") != []
        # New rows continue after the imported ids (AUTO_INCREMENT on MariaDB, the rowid on SQLite).
        zhang = target.users_by_username(["张三"])["张三"]
        newest = max(visible_ids(target, "管理员"))
        assert target.add_record(zhang, "after import") > newest
    finally:
        target.dispose()


def test_import_refuses_a_database_that_holds_data_and_changes_nothing(
        storage: Storage, db_url: str, tmp_path: Path) -> None:
    fill(storage)
    path = tmp_path / "all.jsonl"
    assert bot(db_url, "export", "--out", str(path), cwd=tmp_path).returncode == 0
    before = count_rows(storage, *ALL)
    refused = bot(db_url, "import", str(path), cwd=tmp_path)
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "already holds data" in refused.stderr and "--merge" in refused.stderr and "new ids" in refused.stderr
    assert count_rows(storage, *ALL) == before


def test_merge_matches_users_by_mattermost_id_gives_records_new_ids_and_adds_nothing_twice(
        storage: Storage, db_url: str, other_url: str, tmp_path: Path) -> None:
    fill(storage)
    path = tmp_path / "all.jsonl"
    assert bot(db_url, "export", "--out", str(path), cwd=tmp_path).returncode == 0
    target = opened(other_url)
    try:
        make_user(target, "someone")
        li_here = make_user(target, "李四")  # same Mattermost id as in the file, another local id
        own = target.add_record(li_here, "already here 巡检")
        merged = bot(other_url, "import", str(path), "--merge", cwd=tmp_path)
        assert merged.returncode == 0, merged.stderr
        users, records = count_rows(target, "T_USER", "T_CONTENT")
        assert users == 5 and records == 5
        # 李四's record from the file is now theirs here, and their grant on 张三 came along.
        seen = visible_ids(target, "李四", "巡检")
        assert len(seen) == 3 and own in seen
        assert [r.body for r in target.find(li_here, Filter(words=("private",)), limit=5).records] == [
            "李四 private 巡检 note 🚀"]
        assert count_rows(target, "T_ALERT_STATE", "T_OUTBOX") == (0, 0)
        before = count_rows(target, *ALL)
        again = bot(other_url, "import", str(path), "--merge", cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert count_rows(target, *ALL) == before
    finally:
        target.dispose()


def test_a_cut_damaged_foreign_or_newer_file_is_refused_in_one_line_and_nothing_changes(
        storage: Storage, db_url: str, tmp_path: Path) -> None:
    fill(storage)
    path = tmp_path / "all.jsonl"
    assert bot(db_url, "export", "--out", str(path), cwd=tmp_path).returncode == 0
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    head = json.loads(lines[0])
    bad = {
        "cut mid-line": text[: len(text) - 40],
        "cut at a line end": "".join(lines[:-2]),
        "not recbot": "id,body\n1,hello\n",
        "newer format": json.dumps({**head, "version": 2}) + "\n" + "".join(lines[1:]),
        "other schema": json.dumps({**head, "schema": "0005"}) + "\n" + "".join(lines[1:]),
    }
    says = {"cut mid-line": "cut short", "cut at a line end": "cut short", "not recbot": "not a recbot export",
            "newer format": "newer recbot", "other schema": "exported at schema 0005"}
    empty = tmp_path / "empty.db"
    for what, content in bad.items():
        broken = tmp_path / "broken.jsonl"
        broken.write_text(content, encoding="utf-8")
        done = bot(f"sqlite:///{empty}", "import", str(broken), cwd=tmp_path)
        assert done.returncode == 2, (what, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, (what, done.stderr)
        assert says[what] in done.stderr, (what, done.stderr)
        assert not empty.exists(), what  # refused before the database was even created
    missing = bot(db_url, "import", str(tmp_path / "nope.jsonl"), cwd=tmp_path)
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_copy_to_the_other_backend_matches_counts_and_checksums_and_a_rerun_copies_nothing(
        storage: Storage, db_url: str, tmp_path: Path) -> None:
    fill(storage)
    with (fresh_mariadb_database() if db_url.startswith("sqlite") else _sqlite(tmp_path)) as target:
        done = bot(db_url, "copy", "--to", target, cwd=tmp_path)
        assert done.returncode == 0, done.stderr + done.stdout
        table = [line.split() for line in done.stdout.splitlines()[1:] if line.startswith("T_")]
        assert len(table) == len(ALL) and all(row[-1] == "ok" and row[1] == row[2] for row in table)
        again = bot(db_url, "copy", "--to", target, cwd=tmp_path)
        assert again.returncode == 0 and "0 rows copied" in again.stderr
        copied = opened(target)
        try:
            assert count_rows(copied, *ALL) == count_rows(storage, *ALL)
            assert visible_ids(copied, "李四", "巡检") == visible_ids(storage, "李四", "巡检")
        finally:
            copied.dispose()


@contextmanager
def _sqlite(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'copy.db'}"


def test_copy_refuses_a_target_with_other_data_and_an_unreachable_one(
        storage: Storage, db_url: str, tmp_path: Path) -> None:
    fill(storage)
    other = opened(f"sqlite:///{tmp_path / 'other.db'}")
    make_user(other, "stranger")
    other.dispose()
    refused = bot(db_url, "copy", "--to", f"sqlite:///{tmp_path / 'other.db'}", cwd=tmp_path)
    assert refused.returncode == 2 and "holds other data" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    again = opened(f"sqlite:///{tmp_path / 'other.db'}")
    assert count_rows(again, *ALL) == (1,) + (0,) * (len(ALL) - 1)
    again.dispose()
    for url in ("mysql+pymysql://root@127.0.0.1:1/nowhere?charset=utf8mb4", "not-a-url"):
        done = bot(db_url, "copy", "--to", url, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr


def big_sqlite(path: Path, records: int) -> str:
    url = f"sqlite:///{path}"
    storage = opened(url)
    owner = make_user(storage, "张三")
    start = datetime(2026, 1, 1)
    for lo in range(0, records, 5000):
        insert_rows(storage, "T_CONTENT", [
            dict(owner_id=owner.id, body=f"记录 {i} 部署 nginx " + "x" * 200,
                 search_text=f"记录 {i} 部署 nginx " + "x" * 200, created_at=start + timedelta(seconds=i),
                 updated_at=start + timedelta(seconds=i)) for i in range(lo, min(records, lo + 5000))])
    storage.dispose()
    return url


@pytest.mark.mariadb
def test_a_copy_killed_partway_and_run_again_ends_equal_to_the_source_without_duplicates(
        tmp_path: Path, mariadb_url: str) -> None:
    source = big_sqlite(tmp_path / "big.db", 20_000)
    env = {**os.environ, "REC_DATABASE__URL": source, "REC_CONFIG": str(ROOT / "config.yaml"),
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "bot", "copy", "--to", mariadb_url, "--batch", "200"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + 120
    while b"T_CONTENT" not in seen and time.monotonic() < deadline:
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert b"T_CONTENT" in seen, seen
    target = make_engine(mariadb_url)
    partial = Storage(target)
    try:
        copied = count_rows(partial, "T_CONTENT")[0]
        assert 0 < copied < 20_000, copied  # interrupted partway, not before or after
        there = sum(count_rows(partial, *ALL))
        done = bot(source, "copy", "--to", mariadb_url, cwd=tmp_path)
        assert done.returncode == 0, done.stderr + done.stdout
        assert f"({there} were there already)" in done.stderr, done.stderr
        assert count_rows(partial, "T_CONTENT", "T_USER") == (20_000, 1)
        row = next(line for line in done.stdout.splitlines() if line.startswith("T_CONTENT"))
        assert row.split()[1:3] == ["20000", "20000"] and row.endswith("ok")
    finally:
        partial.dispose()
