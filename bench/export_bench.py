"""Export benchmark: `/rec export` of 10k and 100k records, per backend and format.

Run `python -m bench.export_bench --help`. For each backend a fresh database is filled in bulk with
the storage benchmark's corpus (mixed Chinese/English records, tags), then `/rec export` runs through
the real dispatcher as in the shell (no Mattermost: the file is written to a temp directory), as an
admin (sees everything) and as a member granted a few owners (sees a share of it).

Each export runs twice: once timed (records/s, and how much the process's peak RSS grew), once under
tracemalloc (the peak of Python allocations during the export). An export that streams page by page
has the same memory peak at 10k and at 100k records.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import resource
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import create_engine, insert
from sqlalchemy.engine import make_url

from bench.storage_bench import Corpus
from bot import migrate
from bot.commands import dispatcher as build_dispatcher
from bot.config import Config
from bot.context import Services
from bot.mattermost.slash import SlashRequest
from bot.storage import Storage, User, make_engine
from bot.tables import content, grant, tag

TARGET_RATE = 20_000  # records/s
OWNERS = 50
GRANTED = 5  # owners the member may see
MARIADB_DB = "recbot_bench_export"


@dataclass
class Row:
    backend: str
    records: int
    viewer: str
    fmt: str
    exported: int
    seconds: float
    cpu: float  # this process's CPU seconds: what the export costs, whatever else the machine runs
    size: int
    rss_growth_kb: int
    py_peak_kb: int

    @property
    def rate(self) -> float:
        return self.exported / self.seconds if self.seconds else 0.0

    @property
    def cpu_rate(self) -> float:
        return self.exported / self.cpu if self.cpu else 0.0


def fresh_url(backend: str, args: argparse.Namespace, workdir: Path, n: int) -> str:
    if backend == "sqlite":
        path = workdir / f"export-{n}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{path}"
    server = create_engine(make_url(args.mariadb_url).set(database=None), isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{MARIADB_DB}`")
        conn.exec_driver_sql(f"CREATE DATABASE `{MARIADB_DB}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    server.dispose()
    return make_url(args.mariadb_url).set(database=MARIADB_DB, query={"charset": "utf8mb4"}).render_as_string(
        hide_password=False)


def fill(storage: Storage, n: int) -> tuple[User, User]:
    """n records in bulk through the store's tables; (an admin, a member granted GRANTED owners)."""
    engine = storage._engine
    owners = [storage.ensure_user(f"bench-owner-{i:03d}", f"owner{i:03d}")[0] for i in range(OWNERS)]
    admin, _ = storage.ensure_user("bench-admin", "benchadmin", role_if_new="admin")
    member, _ = storage.ensure_user("bench-member", "benchmember")
    with engine.begin() as conn:
        conn.execute(insert(grant), [{"viewer_id": member.id, "owner_id": o.id, "granted_by": admin.id,
                                      "created_at": datetime(2023, 1, 1)} for o in owners[:GRANTED]])
    t0 = time.perf_counter()
    for rows, tags in Corpus(n, [o.id for o in owners], member.id).batches(1, datetime(2023, 1, 1)):
        with engine.begin() as conn:
            conn.execute(insert(content), rows)
            if tags:
                conn.execute(insert(tag), tags)
    print(f"  filled {n:,} records in {time.perf_counter() - t0:.1f} s", flush=True)
    return admin, member


def run_export(services: Services, viewer: User, fmt: str, folder: Path) -> tuple[int, float, float, int]:
    """(records exported, seconds, CPU seconds, file size) of one `/rec export format:fmt` in `folder`."""
    before = set(folder.iterdir())
    request = SlashRequest(user_id=viewer.mm_user_id, user_name=viewer.username, text=f"export format:{fmt}")
    dispatcher = build_dispatcher()
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    result = dispatcher.handle(services, request)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    found = re.search(r"Exported ([\d,]+) records? to (.+)\.$", result.reply.text)
    if not found:
        raise SystemExit(f"export failed: {result.reply.text}")
    made = set(folder.iterdir()) - before
    size = sum(p.stat().st_size for p in made)
    for p in made:
        p.unlink()
    return int(found.group(1).replace(",", "")), seconds, cpu, size


def measure(backend: str, n: int, storage: Storage, viewers: dict[str, User], formats: list[str],
            folder: Path) -> list[Row]:
    services = Services(storage, Config())
    out: list[Row] = []
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        for viewer_name, viewer in viewers.items():
            for fmt in formats:
                rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                exported, seconds, cpu, size = run_export(services, viewer, fmt, folder)
                rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
                tracemalloc.start()
                run_export(services, viewer, fmt, folder)
                _now, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                row = Row(backend, n, viewer_name, fmt, exported, seconds, cpu, size, rss_growth, peak // 1024)
                print(f"  {viewer_name:6} {fmt:4} {exported:>8,} records {seconds:6.2f} s "
                      f"{row.rate:>9,.0f} rec/s ({row.cpu_rate:,.0f} per CPU s)  peak py {row.py_peak_kb:,} KiB",
                      flush=True)
                out.append(row)
    finally:
        os.chdir(cwd)
    return out


def table(rows: list[Row]) -> str:
    lines = ["| backend | records | viewer | format | exported | seconds | records/s | CPU s | records/CPU s "
             "| file MB | RSS growth KiB | Python peak KiB | target |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        verdict = "PASS" if r.rate >= TARGET_RATE else "MISS"
        lines.append(f"| {r.backend} | {r.records:,} | {r.viewer} | {r.fmt} | {r.exported:,} | {r.seconds:.2f} "
                     f"| {r.rate:,.0f} | {r.cpu:.2f} | {r.cpu_rate:,.0f} | {r.size / 1e6:.1f} | {r.rss_growth_kb:,} "
                     f"| {r.py_peak_kb:,} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.export_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--records", default="10000,100000", help="record counts, comma separated")
    parser.add_argument("--backends", default="sqlite", help="sqlite and/or mariadb, comma separated")
    parser.add_argument("--formats", default="csv,json,md", help="export formats, comma separated")
    parser.add_argument("--mariadb-url", default="mysql+pymysql://root@127.0.0.1:3306")
    parser.add_argument("--workdir", type=Path, default=None, help="where the SQLite files go (default: temp)")
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.records.split(",")]
    formats = args.formats.split(",")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="recbot-export-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        folder = Path(tmp) / "out"
        folder.mkdir()
        for backend in args.backends.split(","):
            for n in counts:
                print(f"{backend}, {n:,} records", flush=True)
                engine = make_engine(fresh_url(backend, args, workdir, n))
                migrate.upgrade(engine)
                storage = Storage(engine)
                admin, member = fill(storage, n)
                rows += measure(backend, n, storage, {"admin": admin, "member": member}, formats, folder)
                engine.dispose()
    print()
    print(table(rows))
    print(f"\nTarget: >= {TARGET_RATE:,} records/s; memory flat in the record count (compare 10k with 100k).")
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; "
          "records/CPU s counts this process only (on MariaDB the server's work is not in it); "
          "RSS growth is ru_maxrss after minus before the timed run; "
          "Python peak is tracemalloc's peak during a second, untimed run.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
