"""Copy benchmark: `python -m bot copy` from a SQLite file of N records to a fresh MariaDB database.

    .venv/bin/python -m bench.copy_bench [--records 1000000] [--mariadb mysql+pymysql://root@127.0.0.1:3306]

The SQLite file is filled in bulk (kept in --workdir, so a second run with the same N skips that), then
the copy runs as its own process, as an operator would run it; the figures are that process's wall
time (copy and the final count/checksum check of both sides) and its peak resident memory
(`resource.getrusage(RUSAGE_CHILDREN)`). Run it with 100000 and with 1000000: the memory stays flat.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pymysql
from sqlalchemy import func, insert, select
from sqlalchemy.engine import make_url

from bot import migrate, search
from bot.storage import make_engine
from bot.tables import content, tag, user

ROOT = Path(__file__).resolve().parent.parent
BATCH = 20_000
WORDS = ["部署", "重启", "巡检", "磁盘", "告警", "回滚", "nginx", "mysql", "redis", "kafka", "deploy", "restart",
         "cleanup", "backup", "扩容", "证书"]


def fill(path: Path, records: int) -> None:
    """N records of a few owners, with tags, inserted in bulk (SQLite's triggers index them)."""
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    with engine.begin() as conn:
        if conn.execute(select(func.count()).select_from(content)).scalar_one() == records:
            return
    start = datetime(2020, 1, 1)
    with engine.begin() as conn:
        conn.execute(insert(user), [dict(id=i, mm_user_id=f"mm-{i}", username=f"用户{i}", role="member",
                                         created_at=start, updated_at=start) for i in range(1, 21)])
    for lo in range(0, records, BATCH):
        rows, tags = [], []
        for i in range(lo + 1, min(records, lo + BATCH) + 1):
            body = f"{WORDS[i % len(WORDS)]} {WORDS[(i * 7) % len(WORDS)]} 第{i}次 host-{i % 97} ok #{WORDS[i % 5]}"
            at = start + timedelta(seconds=i * 13)
            rows.append(dict(id=i, owner_id=1 + i % 20, body=body, search_text=search.fold(body), created_at=at,
                             updated_at=at))
            tags.append(dict(record_id=i, tag=WORDS[i % 5]))
        with engine.begin() as conn:
            conn.execute(insert(content), rows)
            conn.execute(insert(tag), tags)
        print(f"\rfilled {min(records, lo + BATCH)}/{records}", end="", file=sys.stderr)
    print(file=sys.stderr)
    engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.copy_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--mariadb", default="mysql+pymysql://root@127.0.0.1:3306",
                        help="server URL without a database name; a fresh database is created and dropped")
    parser.add_argument("--workdir", default=tempfile.gettempdir(), help="where the SQLite file is kept")
    args = parser.parse_args()
    path = Path(args.workdir) / f"recbot-copy-bench-{args.records}.db"
    started = time.perf_counter()
    fill(path, args.records)
    print(f"source: {path} ({args.records} records, filled or checked in {time.perf_counter() - started:.0f} s)")
    server = make_url(args.mariadb)
    name = f"recbot_bench_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(host=server.host, port=server.port or 3306, user=server.username,
                            password=server.password or "", autocommit=True)
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        target = f"{args.mariadb}/{name}?charset=utf8mb4"
        env = {**os.environ, "REC_DATABASE__URL": f"sqlite:///{path}", "PYTHONPATH": str(ROOT),
               "REC_CONFIG": str(ROOT / "config.yaml")}
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "bot", "copy", "--to", target], env=env, cwd=ROOT,
                              capture_output=True, text=True)
        elapsed = time.perf_counter() - started
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()
    if done.returncode != 0:
        print(done.stdout, done.stderr, sep="\n")
        return 1
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(done.stdout.rstrip())
    # The CLI says how long each phase took: the copy itself, then reading both sides for the checksums.
    phases = re.search(r"in ([\d.]+) s .*\n.*checked in ([\d.]+) s", done.stderr)
    copy_s, check_s = (float(phases.group(1)), float(phases.group(2))) if phases else (elapsed, 0.0)
    print(f"| records | copy, s | copy records/s | check, s | whole command, s | whole records/s | "
          f"peak RSS of the copy, MiB |\n|---|--:|--:|--:|--:|--:|--:|\n"
          f"| {args.records:,} | {copy_s:.1f} | {args.records / copy_s:,.0f} | {check_s:.1f} | {elapsed:.1f} | "
          f"{args.records / elapsed:,.0f} | {peak_mib:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
