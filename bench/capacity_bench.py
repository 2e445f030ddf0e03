"""Capacity: recbot's `/rec find` and `/rec add` next to a bare aiohttp handler that runs the same SQL.

    python -m bench.capacity_bench [--records 20000] [--backends sqlite,mariadb] [--commands find,add]
                                   [--duration 8] [--concurrency 10] [--profile DIR]

For each backend a fresh database is seeded as bench.http_bench does, and two servers, each its own
process, are put under the same wrk load (bench/wrk/slash.lua) one after the other: the real bot
(`python -m bot serve`) and a bare aiohttp handler (`--bare-server PORT`, this module) that parses the
form, checks the token and runs, through the raw DB-API (sqlite3 / pymysql, one connection per pool
thread, as many threads as recbot's pool), exactly the statements recbot sends for the command (the
constants below, captured with SQLAlchemy's before_cursor_execute), with the same parameter binding
and the same round trips (pymysql: the pre-ping of every checkout, the ROLLBACK that closes a read, the
COMMIT and the pool's ROLLBACK after a write; SQLite: BEGIN / BEGIN IMMEDIATE, ROLLBACK, COMMIT), and
answers with a trivial text. Before loading, the script runs each command once in-process through
recbot's dispatcher and once through the bare handler, and checks that both send the same statement
texts with the same parameter shapes, and the same sequence on the wire (sqlite3's trace callback,
pymysql's commands); a difference fails the run, since the comparison would no longer be fair.

Printed: per backend and command, requests/s of each server, the ratio recbot/bare, the CPU seconds
of each server process per 1000 requests (from /proc) and their ratio. `--profile DIR` samples both
servers with py-spy during the measured loads and prints their hottest functions.

Exit status: 0 recbot reaches GOAL (50%) of the bare-SQL handler's throughput in every cell, 1 it does
not somewhere, 2 failed requests or a SQL check that did not match.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hmac
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from bench import http_bench as hb

GOAL = 0.50  # recbot req/s as a share of the bare-SQL handler's
PAGE_SIZE = 10  # config records.page_size
FIND_LIMIT = 10 * PAGE_SIZE + 1  # recbot counts ten pages ahead: max(limit, count_up_to) + 1 ids
RECENT = 20  # add_record_once compares the text with the owner's newest 20 records of RETRY_WINDOW
MARIADB_DB = "recbot_capacitybench"


# ---- recbot's statements, as SQLAlchemy renders them (whitespace aside) -------------------------
# `{page}` is the IN list of a page of ids: ?, ?, ... on SQLite; %(p0)s, %(p1)s, ... on MariaDB.

@dataclass(frozen=True)
class Statements:
    top: str  # the newest id (MariaDB: the scan starts below it)
    ids: str  # the visible matching ids: SQLite through the FTS5 trigram index; MariaDB without Mroonga a
    # primary-key walk of one chunk (floor < id < below)
    page: str  # the records of the page with their tags
    recent: str  # add: the owner's newest records, to spot a retry
    add: str  # add: INSERT ... SELECT that inserts only while the owner is not disabled
    tag: str
    user: str  # not in the measured sequence: each caller is looked up once, with their grants
    window: str = ""  # MariaDB with Mroonga: the walk of the newest WINDOW records (id > floor)
    index: str = ""  # MariaDB with Mroonga: add keeps the bigram table in step


_SQLITE_VISIBLE = (
    '"T_CONTENT".deleted_at IS NULL AND (EXISTS (SELECT * FROM "T_USER" AS viewer WHERE viewer.id = ? AND '
    '(viewer.role = ? OR viewer.role = ?))) AND ("T_CONTENT".owner_id + ? = ? OR "T_CONTENT".owner_id + ? IN (SELECT '
    '"T_GRANT".owner_id FROM "T_GRANT" WHERE "T_GRANT".viewer_id = ?) OR "T_CONTENT".id + ? IN (SELECT '
    '"T_SHARE".record_id FROM "T_SHARE" WHERE "T_SHARE".user_id = ?))')
SQLITE = Statements(
    top='SELECT max("T_CONTENT".id) AS max_1 FROM "T_CONTENT"',
    ids=('SELECT "T_CONTENT".id FROM "T_CONTENT" JOIN T_CONTENT_FTS ON T_CONTENT_FTS.rowid = T_CONTENT.id WHERE '
         + _SQLITE_VISIBLE + ' AND "T_CONTENT".deleted_at IS NULL AND instr("T_CONTENT".search_text, ?) > ? AND '
         'T_CONTENT_FTS MATCH ? ORDER BY T_CONTENT_FTS.rowid DESC LIMIT ? OFFSET ?'),
    page=('SELECT "T_CONTENT".id, "T_CONTENT".owner_id, owner.username AS owner, "T_CONTENT".body, '
          '"T_CONTENT".created_at, "T_CONTENT".updated_at, (SELECT group_concat("T_TAG".tag) AS group_concat_1 '
          'FROM "T_TAG" WHERE "T_TAG".record_id = "T_CONTENT".id) AS tags FROM "T_CONTENT" JOIN "T_USER" AS owner '
          'ON owner.id = "T_CONTENT".owner_id WHERE "T_CONTENT".id IN ({page}) AND ' + _SQLITE_VISIBLE
          + ' ORDER BY "T_CONTENT".id DESC'),
    recent=('SELECT "T_CONTENT".id, "T_CONTENT".body FROM "T_CONTENT" WHERE "T_CONTENT".owner_id = ? AND '
            '"T_CONTENT".created_at >= ? AND "T_CONTENT".deleted_at IS NULL ORDER BY "T_CONTENT".id DESC '
            'LIMIT ? OFFSET ?'),
    add=('INSERT INTO "T_CONTENT" (owner_id, body, search_text, created_at, updated_at) SELECT ? AS anon_1, '
         '? AS anon_2, ? AS anon_3, ? AS anon_4, ? AS anon__1 WHERE EXISTS (SELECT * FROM "T_USER" WHERE '
         '"T_USER".id = ? AND ("T_USER".role = ? OR "T_USER".role = ?))'),
    tag='INSERT INTO "T_TAG" (record_id, tag) VALUES (?, ?)',
    user='SELECT id, (SELECT group_concat(owner_id) FROM "T_GRANT" WHERE viewer_id = "T_USER".id) FROM "T_USER" '
         'WHERE mm_user_id = ?',
)

_MARIADB_VISIBLE = (
    "`T_CONTENT`.deleted_at IS NULL AND (EXISTS (SELECT * FROM `T_USER` AS viewer WHERE viewer.id = %(viewer_id)s "
    "AND (viewer.role = %(role_1)s OR viewer.role = %(role_2)s))) AND (`T_CONTENT`.owner_id + %(owner_id_1)s = "
    "%(viewer_id)s "
    "OR `T_CONTENT`.owner_id + %(owner_id_1)s IN (SELECT `T_GRANT`.owner_id FROM `T_GRANT` WHERE "
    "`T_GRANT`.viewer_id = %(viewer_id)s) OR `T_CONTENT`.id + %(id_1)s IN (SELECT `T_SHARE`.record_id FROM "
    "`T_SHARE` WHERE `T_SHARE`.user_id = %(viewer_id)s))")
_MARIADB_WALK = ("SELECT `T_CONTENT`.id FROM `T_CONTENT` FORCE INDEX (PRIMARY) WHERE " + _MARIADB_VISIBLE
                 + " AND `T_CONTENT`.deleted_at IS NULL AND locate(%(w0)s, `T_CONTENT`.search_text) > %(locate_1)s "
                 "AND ")
MARIADB = Statements(
    top="SELECT max(`T_CONTENT`.id) AS max_1 FROM `T_CONTENT`",
    ids=_MARIADB_WALK + "`T_CONTENT`.id < %(below)s AND `T_CONTENT`.id > %(floor)s ORDER BY `T_CONTENT`.id DESC "
    "LIMIT %(lim)s",
    window=_MARIADB_WALK + "`T_CONTENT`.id > %(floor)s ORDER BY `T_CONTENT`.id DESC LIMIT %(lim)s",
    index="REPLACE INTO T_CONTENT_FT (record_id, search_text) VALUES (%(id)s, %(t)s)",
    page=("SELECT `T_CONTENT`.id, `T_CONTENT`.owner_id, owner.username AS owner, `T_CONTENT`.`body`, "
          "`T_CONTENT`.created_at, `T_CONTENT`.updated_at, (SELECT group_concat(`T_TAG`.tag) AS group_concat_1 "
          "FROM `T_TAG` WHERE `T_TAG`.record_id = `T_CONTENT`.id) AS tags FROM `T_CONTENT` INNER JOIN `T_USER` AS "
          "owner ON owner.id = `T_CONTENT`.owner_id WHERE `T_CONTENT`.id IN ({page}) AND " + _MARIADB_VISIBLE
          + " ORDER BY `T_CONTENT`.id DESC"),
    recent=("SELECT `T_CONTENT`.id, `T_CONTENT`.`body` FROM `T_CONTENT` WHERE `T_CONTENT`.owner_id = %(owner_id)s "
            "AND `T_CONTENT`.created_at >= %(since)s AND `T_CONTENT`.deleted_at IS NULL ORDER BY "
            "`T_CONTENT`.id DESC LIMIT %(param_1)s"),
    add=("INSERT INTO `T_CONTENT` (owner_id, `body`, search_text, created_at, updated_at) SELECT %(owner_id)s AS "
         "anon_1, %(body)s AS anon_2, %(folded)s AS anon_3, %(now)s AS anon_4, %(now)s AS anon__1 FROM DUAL WHERE "
         "EXISTS (SELECT * FROM `T_USER` WHERE `T_USER`.id = %(owner_id)s AND (`T_USER`.role = %(role_1)s "
         "OR `T_USER`.role = %(role_2)s))"),
    tag="INSERT INTO `T_TAG` (record_id, tag) VALUES (%(record_id)s, %(tag)s)",
    user="SELECT id, (SELECT group_concat(owner_id) FROM `T_GRANT` WHERE viewer_id = `T_USER`.id) FROM `T_USER` "
         "WHERE mm_user_id = %(mm)s",
)


# ---- the bare handler's database work ---------------------------------------------------------

class BareSql:
    """recbot's statements for find and add through the raw DB-API, a connection per thread.

    Follows storage's plan for one word of 3+ characters on each search backend: `sqlite-fts5` the FTS5
    trigram join; `like` (MariaDB without Mroonga) the newest-first scan in chunks; `mroonga` the walk of
    the newest WINDOW records only: when those do not fill the page, recbot asks Mroonga for older
    candidates and the bare handler does not, which the SQL check reports (a rarer word would need it).
    `trace`, when a list, gets every (statement, parameters) sent, for the SQL check.
    """

    def __init__(self, url: str, search_backend: str) -> None:
        from sqlalchemy.engine import make_url

        self.search_backend = search_backend
        self.url = make_url(url)
        self.sqlite = self.url.get_backend_name() == "sqlite"
        self.sql = SQLITE if self.sqlite else MARIADB
        self.local = threading.local()
        self.write_turn = threading.Lock()  # recbot's _WriteTurn: SQLite writers queue instead of busy-waiting
        self.users: dict[str, int] = {}
        self.trace: list[tuple[str, Any]] | None = None

    def _connect(self) -> Any:
        if self.sqlite:
            import sqlite3

            conn = sqlite3.connect(self.url.database or "", timeout=30)
            conn.isolation_level = None  # as recbot: transactions are begun by hand
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=30000"):
                conn.execute(f"PRAGMA {pragma}")
            return conn
        import pymysql  # type: ignore[import-untyped]

        args = self.url.translate_connect_args(username="user")
        return pymysql.connect(**args, charset=self.url.query.get("charset", "utf8mb4"), connect_timeout=10,
                               read_timeout=10, write_timeout=10)

    @contextlib.contextmanager
    def session(self, *, write: bool) -> Iterator[Any]:
        """A checkout as recbot's engine does it: MariaDB pings first (pool_pre_ping); SQLite begins by
        hand; a read ends in ROLLBACK; a write in COMMIT, then the pool's reset (a ROLLBACK on MariaDB,
        nothing on SQLite outside a transaction)."""
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = self._connect()
        elif not self.sqlite:
            conn.ping(False)
        cur = conn.cursor()
        try:
            if self.sqlite:  # as recbot, straight to the driver (the wire check still sees it)
                cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield cur
            if write:
                conn.commit()
        finally:
            conn.rollback()

    def run(self, cur: Any, sql: str, params: Any, many: bool = False) -> list[Any]:
        if self.trace is not None:
            self.trace.append((sql, params))
        if many:
            cur.executemany(sql, params)
        else:
            cur.execute(sql, params)
        return cur.fetchall() if cur.description else []

    def user_id(self, mm_id: str) -> int:
        known = self.users.get(mm_id)
        if known is None:
            with self.session(write=False) as cur:
                rows = self.run(cur, self.sql.user, (mm_id,) if self.sqlite else {"mm": mm_id})
            if not rows:
                raise LookupError(f"no user {mm_id!r}")
            known = self.users[mm_id] = int(rows[0][0])
        return known

    def answer(self, mm_id: str, text: str) -> str:
        verb, _, rest = text.strip().partition(" ")
        if verb == "find":
            return self.find(self.user_id(mm_id), rest)
        if verb == "add":
            return self.add(self.user_id(mm_id), rest)
        return f"the bare handler knows find and add, not {verb!r}"

    def _visible(self, viewer: int) -> Any:
        if self.sqlite:
            return (viewer, "admin", "member", 0, viewer, 0, viewer, 0, viewer)
        return {"viewer_id": viewer, "owner_id_1": 0, "id_1": 0, "role_1": "admin", "role_2": "member"}

    def find(self, viewer: int, rest: str) -> str:
        from bot import search

        words = [search.fold(w) for w in rest.split()]
        if len(words) != 1 or len(words[0]) < 3:
            return "the bare handler finds one word of 3+ characters"
        with self.session(write=False) as cur:
            if self.sqlite:
                fts = search.plan_search(None, "sqlite-fts5", words).match  # type: ignore[arg-type]  # unused there
                ids = [r[0] for r in self.run(cur, self.sql.ids, (*self._visible(viewer), words[0], 0, fts,
                                                                   FIND_LIMIT, 0))]
            elif self.search_backend == "mroonga":
                ids = self._window(cur, viewer, words[0])
            else:
                ids = self._scan(cur, viewer, words[0])
            page = ids[:PAGE_SIZE]
            rows: list[Any] = []
            params: Any
            if page:
                if self.sqlite:
                    marks, params = ", ".join("?" * len(page)), (*page, *self._visible(viewer))
                else:
                    marks = ", ".join(f"%(p{i})s" for i in range(len(page)))
                    params = {**self._visible(viewer), **{f"p{i}": p for i, p in enumerate(page)}}
                rows = self.run(cur, self.sql.page.format(page=marks), params)
        lines = [f"{len(ids) if len(ids) <= 10 * PAGE_SIZE else 'more than 100'} records · page 1 of "
                 f"{-(-min(len(ids), 10 * PAGE_SIZE) // PAGE_SIZE)}"]
        lines += [f"#{r[0]} {r[2]} {r[4]}: {r[3][:120]} {r[6] or ''}" for r in rows]
        return "\n".join(lines)

    def _scan(self, cur: Any, viewer: int, word: str) -> list[int]:
        """storage's scan without an index (MariaDB without Mroonga): newest first in id chunks."""
        from bot import search

        deadline = time.monotonic() + search.SCAN_SECONDS
        high = int(self.run(cur, self.sql.top, {})[0][0] or 0) + 1
        ids: list[int] = []
        while high > 1 and len(ids) < FIND_LIMIT:
            low = max(1, high - search.SCAN_CHUNK)
            ids += [r[0] for r in self.run(cur, self.sql.ids, {
                **self._visible(viewer), "w0": word, "locate_1": 0, "below": high, "floor": low - 1,
                "lim": FIND_LIMIT - len(ids)})]
            high = low
            if len(ids) < FIND_LIMIT and high > 1 and time.monotonic() > deadline:
                break
        return ids

    def _window(self, cur: Any, viewer: int, word: str) -> list[int]:
        """storage's first step with Mroonga: the newest WINDOW records, walked by the primary key."""
        from bot import search

        floor = int(self.run(cur, self.sql.top, {})[0][0] or 0) - search.WINDOW
        return [r[0] for r in self.run(cur, self.sql.window, {
            **self._visible(viewer), "w0": word, "locate_1": 0, "floor": floor, "lim": FIND_LIMIT})]

    def _time(self, value: Any) -> Any:
        """SQLAlchemy hands SQLite a datetime as this text, pymysql the datetime itself."""
        return value.isoformat(" ", "microseconds") if self.sqlite else value

    def add(self, owner: int, body: str) -> str:
        from bot import search
        from bot.storage import extract_tags, utcnow
        from bot.store.models import RETRY_WINDOW

        tags = extract_tags(body)
        with self.write_turn if self.sqlite else contextlib.nullcontext(), self.session(write=True) as cur:
            since = self._time(utcnow() - RETRY_WINDOW)
            recent = self.run(cur, self.sql.recent, (owner, since, RECENT, 0) if self.sqlite else
                              {"owner_id": owner, "since": since, "param_1": RECENT})
            same = next((r[0] for r in recent if r[1] == body), None)
            if same is not None:
                return f"Already saved as record #{same}"
            folded, now = search.fold(body), self._time(utcnow())
            self.run(cur, self.sql.add, (owner, body, folded, now, now, owner, "admin", "member") if self.sqlite
                     else {"owner_id": owner, "body": body, "folded": folded, "now": now, "role_1": "admin",
                           "role_2": "member"})
            if cur.rowcount != 1:
                return "Not saved: the account is disabled"
            record_id = int(cur.lastrowid)
            rows = [(record_id, t) if self.sqlite else {"record_id": record_id, "tag": t} for t in tags]
            if rows:  # SQLAlchemy sends a list of one as a plain execute
                self.run(cur, self.sql.tag, rows if len(rows) > 1 else rows[0], many=len(rows) > 1)
            if self.search_backend == "mroonga":
                self.run(cur, self.sql.index, {"id": record_id, "t": folded})
        return f"Saved record **#{record_id}**." + (f" Tags: {' '.join(f'`#{t}`' for t in sorted(tags))}."
                                                    if tags else "")


def run_bare_sql_server(port: int, processes: int, url: str, search_backend: str, threads: int) -> int:
    """The bare handler: parse the form, check the token, run the command's SQL in a thread pool, reply."""
    from aiohttp import web

    from bot import workers

    token = os.environ["BENCH_TOKEN"].encode()
    _, children = workers.fork(processes)
    bare = BareSql(url, search_backend)
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bare")

    async def command(request: web.Request) -> web.Response:
        form = await request.post()
        given = str(form.get("token") or request.headers.get("Authorization", "").removeprefix("Token ").strip())
        if not hmac.compare_digest(given.encode(), token):
            return web.json_response({"error": "this request's token is not accepted"}, status=401)
        text = await asyncio.get_running_loop().run_in_executor(
            pool, bare.answer, str(form.get("user_id", "")), str(form.get("text", "")))
        return web.json_response({"response_type": "ephemeral", "text": text})

    async def healthz(_request: web.Request) -> web.Response:
        # Through the pool, like recbot's: it answers after the work left in flight (http_bench.drain).
        await asyncio.get_running_loop().run_in_executor(pool, lambda: None)
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/mattermost/command", command)
    app.router.add_get("/healthz", healthz)
    try:
        web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, reuse_port=processes > 1)
    finally:
        pool.shutdown(wait=False)
        workers.stop(children)
    return 0


# ---- the SQL check: recbot and the bare handler send the same ------------------------------------

def _normal(sql: str) -> str:
    return " ".join(sql.split())


def _shape(params: Any) -> Any:
    """Parameter names (or positions) and value types; a list of rows for executemany."""
    if isinstance(params, dict):
        return tuple(sorted((k, type(v).__name__) for k, v in params.items()))
    if isinstance(params, list):
        return [_shape(p) for p in params]
    return tuple(type(v).__name__ for v in params)


def _verb(sql: Any) -> str:
    words = (sql.decode(errors="replace") if isinstance(sql, bytes) else str(sql)).split()
    if not words:
        return "?"
    return " ".join(words[:2]).upper() if words[0].upper() == "BEGIN" else words[0].upper()


@contextlib.contextmanager
def wire_tap() -> Iterator[list[str]]:
    """What every DB-API connection opened inside sends: sqlite3's trace callback, pymysql's commands."""
    import sqlite3

    import pymysql.connections  # type: ignore[import-untyped]
    from pymysql.constants import COMMAND  # type: ignore[import-untyped]

    got: list[str] = []
    real_connect, real_command = sqlite3.dbapi2.connect, pymysql.connections.Connection._execute_command

    def connect(*args: Any, **kwargs: Any) -> Any:
        conn = real_connect(*args, **kwargs)
        # Left out: what SQLite runs inside a statement (trigger programs come as "-- ...", FTS5's own
        # statements name its shadow tables 'main'.'..._data').
        conn.set_trace_callback(lambda sql: None if sql.startswith("--") or "'main'." in sql
                                else got.append(_verb(sql)))
        return conn

    def command(self: Any, code: int, sql: Any) -> Any:
        got.append("PING" if code == COMMAND.COM_PING else _verb(sql))
        return real_command(self, code, sql)

    # Patched for the check only; SQLAlchemy calls sqlite3.dbapi2.connect, the bare handler sqlite3.connect.
    for module in (sqlite3, sqlite3.dbapi2):
        setattr(module, "connect", connect)  # noqa: B010
    setattr(pymysql.connections.Connection, "_execute_command", command)  # noqa: B010
    try:
        yield got
    finally:
        for module in (sqlite3, sqlite3.dbapi2):
            setattr(module, "connect", real_connect)  # noqa: B010
        setattr(pymysql.connections.Connection, "_execute_command", real_command)  # noqa: B010


@dataclass
class Sent:
    statements: list[tuple[str, Any]] = field(default_factory=list)
    wire: list[str] = field(default_factory=list)


def _third(run: Callable[[int], object], sent: Sent, wire: list[str]) -> Sent:
    """Run a command three times (the caches warm: the caller's row, the settings, the statements) and
    keep what the third sent."""
    for i in range(3):
        sent.statements.clear()
        wire.clear()
        run(i)
    sent.wire = list(wire)
    return sent


def check_sql(url: str, search_backend: str, cmds: Sequence[hb.Command]) -> tuple[list[str], list[str]]:
    """Each command once through recbot's dispatcher (in this process, as the server runs it) and once
    through BareSql: (report lines, mismatches)."""
    from sqlalchemy import event

    from bot.commands import dispatcher as build_dispatcher
    from bot.config import load_config
    from bot.context import Services
    from bot.mattermost.slash import SlashRequest
    from bot.storage import Storage, make_engine

    lines: list[str] = []
    problems: list[str] = []
    with wire_tap() as wire:
        engine = make_engine(url, 10)
        config = load_config(str(hb.REPO / "config.yaml"), {"REC_DATABASE__URL": url,
                                                           "REC_MATTERMOST__SLASH_TOKENS": hb.TOKEN})
        services, dispatcher = Services(Storage(engine), config), build_dispatcher()
        bare = BareSql(url, search_backend)
        bare.trace = []
        try:
            for cmd in cmds:
                ours = Sent()

                def seen(_conn: Any, _cur: Any, sql: str, params: Any, _ctx: Any, _many: bool, s: Sent = ours) -> None:
                    s.statements.append((sql, params))

                event.listen(engine, "before_cursor_execute", seen)
                def by_recbot(i: int, cmd: hb.Command = cmd) -> object:
                    text = cmd.text + (f" recbot-check-{i}" if cmd.vary else "")
                    return dispatcher.handle(services, SlashRequest(user_id=cmd.who[0], user_name=cmd.who[1],
                                                                    text=text))

                def by_bare(i: int, cmd: hb.Command = cmd) -> object:
                    return bare.answer(cmd.who[0], cmd.text + (f" bare-check-{i}" if cmd.vary else ""))

                _third(by_recbot, ours, wire)
                event.remove(engine, "before_cursor_execute", seen)
                theirs = Sent(bare.trace)
                _third(by_bare, theirs, wire)
                lines.append(f"  [{cmd.name}] {len(ours.statements)} statements; on the wire: {' '.join(ours.wire)}")
                problems += [f"{cmd.name}: {p}" for p in _differences(ours, theirs)]
        finally:
            engine.dispose()
            bare.trace = None
    return lines, problems


def _differences(ours: Sent, theirs: Sent) -> list[str]:
    out = []
    if ours.wire != theirs.wire:
        out.append(f"on the wire recbot sends {' '.join(ours.wire)}, the bare handler {' '.join(theirs.wire)}")
    if len(ours.statements) != len(theirs.statements):
        out.append(f"recbot sends {len(ours.statements)} statements, the bare handler {len(theirs.statements)}")
    pairs = zip(ours.statements, theirs.statements, strict=False)
    for n, ((sql, params), (bare_sql, bare_params)) in enumerate(pairs, 1):
        if _normal(sql) != _normal(bare_sql):
            out.append(f"statement {n} differs:\n    recbot: {_normal(sql)}\n    bare:   {_normal(bare_sql)}")
        elif _shape(params) != _shape(bare_params):
            out.append(f"statement {n}: parameters differ: recbot {_shape(params)}, bare {_shape(bare_params)}")
    return out


# ---- the report ---------------------------------------------------------------------------------

@dataclass
class Pair:
    backend: str
    command: str
    concurrency: int
    recbot: hb.Load
    bare: hb.Load

    @property
    def ratio(self) -> float:
        return self.recbot.rps / self.bare.rps if self.bare.rps else float("nan")

    @property
    def cpu_ratio(self) -> float:
        return self.recbot.cpu_ms_per_request / self.bare.cpu_ms_per_request if self.bare.rps else float("nan")


@dataclass
class CapacityReport(hb.Report):
    pairs: list[Pair] = field(default_factory=list)

    HEAD: ClassVar[tuple[str, ...]] = (
        "backend", "command", "conc", "recbot req/s", "bare-SQL req/s", "ratio", "recbot CPU s/1k req",
        "bare CPU s/1k req", "CPU ratio", "recbot p50/p99 ms", "bare p50/p99 ms", "recbot CPU %", "bare CPU %",
        "db CPU % r/b", "goal")

    def cells(self) -> list[tuple[str, ...]]:
        return [(p.backend, p.command, str(p.concurrency), f"{p.recbot.rps:,.0f}", f"{p.bare.rps:,.0f}",
                 f"{p.ratio:.1%}", f"{p.recbot.cpu_ms_per_request:.2f}", f"{p.bare.cpu_ms_per_request:.2f}",
                 f"{p.cpu_ratio:.2f}x", f"{p.recbot.p50_ms:.1f}/{p.recbot.p99_ms:.1f}",
                 f"{p.bare.p50_ms:.1f}/{p.bare.p99_ms:.1f}", f"{p.recbot.server_cpu:.0f}", f"{p.bare.server_cpu:.0f}",
                 f"{p.recbot.db_cpu:.0f}/{p.bare.db_cpu:.0f}", "PASS" if p.ratio >= GOAL else "MISS")
                for p in self.pairs]

    def targets(self) -> list[tuple[bool, str]]:
        return [(p.ratio >= GOAL, f"[{p.backend}] {p.command} c={p.concurrency}: recbot {p.recbot.rps:,.0f} req/s = "
                 f"{p.ratio:.1%} of the bare-SQL handler's {p.bare.rps:,.0f} (goal >= {GOAL:.0%}); CPU per request "
                 f"{p.cpu_ratio:.2f}x the bare handler's") for p in self.pairs]


# ---- main ---------------------------------------------------------------------------------------

def _database(backend: str, args: argparse.Namespace, workdir: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{workdir / 'capacity.db'}"
    return hb.create_mariadb(args, MARIADB_DB)


def _unique(cmd: hb.Command, tag: str) -> hb.Command:
    """An add whose texts no earlier request sent: recbot (and the bare handler) answer "Already saved" to
    a text among the same owner's newest 20 records of the last two minutes (the smoke requests of the two
    servers would collide), and wrk numbers its texts from 1 in every run."""
    return dataclasses.replace(cmd, text=f"{cmd.text} {tag}") if cmd.vary else cmd


def _measure(generator: hb.LoadGenerator, server: hb.Server, cmd: hb.Command, conc: int,
             args: argparse.Namespace, profile: Path | None) -> hb.Load:
    tag = f"{server.proc.pid}-{time.monotonic_ns()}"
    if args.warmup > 0:
        generator.run(server.base, _unique(cmd, f"warm-{tag}"), conc, args.warmup, server.proc.pid)
        hb.drain(server.base, server.proc)
    load = generator.run(server.base, _unique(cmd, tag), conc, args.duration, server.proc.pid, profile)
    hb.drain(server.base, server.proc)
    return load


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="records to seed (default 20000)")
    parser.add_argument("--owners", type=int, default=200, help="record owners (default 200)")
    parser.add_argument("--backends", type=hb._words, default=["sqlite", "mariadb"], help="sqlite,mariadb")
    parser.add_argument("--commands", type=hb._words, default=["find", "add"], help="find,add")
    parser.add_argument("--duration", type=int, default=8, help="whole seconds of each measured load (default 8)")
    parser.add_argument("--warmup", type=int, default=2, help="whole seconds of unmeasured load before each "
                        "(default 2)")
    parser.add_argument("--concurrency", type=hb._ints, default=[10], help="connections, e.g. 10 or 1,10 (default 10)")
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto",
                        help="load generator: wrk when installed (auto), or the aiohttp fallback")
    parser.add_argument("--workers", type=int, default=1, help="server processes of recbot and of the bare handler")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample both servers with py-spy --gil during the measured loads; raw stacks go to DIR")
    parser.add_argument("--mariadb-url", default="mysql+pymysql://root@127.0.0.1:3306")
    parser.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--db-url", help=argparse.SUPPRESS)
    parser.add_argument("--search-backend", help=argparse.SUPPRESS)
    parser.add_argument("--pool", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_server:
        return run_bare_sql_server(args.bare_server, args.workers, args.db_url, args.search_backend, args.pool)
    if set(args.backends) - {"sqlite", "mariadb"}:
        parser.error("backends: sqlite, mariadb")
    from bench.storage_bench import COMMON
    from bot.app import pool_size

    table = hb.commands(COMMON)
    if set(args.commands) - {"find", "add"}:
        parser.error("commands: find, add")
    kind = args.client if args.client != "auto" else ("wrk" if shutil.which("wrk") else "python")

    def log(line: str = "") -> None:
        print(line, flush=True)

    report = CapacityReport()
    run = hb.Run(Path(tempfile.mkdtemp(prefix="recbot-capacity-")), "capacity.db*", report.failures)
    children, workdir = run.children, run.workdir
    # py-spy --gil: only the thread holding the GIL is sampled, so the profile is the Python CPU that
    # bounds a process's throughput (not the waits on MariaDB, nor SQLite's C code, which runs without it).
    generator = hb.LoadGenerator(kind, children, args.threads, spy_options=["--gil"], db_port=hb.mariadb_port(args))
    cmds = [table[c] for c in args.commands]
    profiles: list[str] = []
    if args.profile:
        hb.py_spy()
        args.profile.mkdir(parents=True, exist_ok=True)
    with run:
        ncpu = os.cpu_count() or 1
        log(f"recbot capacity benchmark: {args.records:,} records, backends {','.join(args.backends)}, commands "
            f"{','.join(args.commands)}, concurrency {','.join(map(str, args.concurrency))}, {args.duration} s per "
            f"load after {args.warmup} s warm-up; {ncpu} CPU core(s); load generator: {generator.describe()}")
        log(f"code under test: {hb.code_version()}; CPU busy before: {hb.machine_busy(2.0):.0f}% of one core")
        for backend in args.backends:
            log(f"\n== {backend}: seeding")
            t0 = time.perf_counter()
            url = _database(backend, args, workdir)
            if backend == "mariadb":
                run.drop = lambda: hb.drop_mariadb(args, MARIADB_DB)
            search_backend = hb.seed(url, args.records, args.owners, log)
            threads = pool_size("sqlite" if backend == "sqlite" else "mysql")
            log(f"  seeded in {time.perf_counter() - t0:.1f} s; search backend {search_backend}; {threads} pool "
                "threads in each server")
            log(f"== {backend}: SQL check (one command through recbot's dispatcher, one through the bare handler)")
            lines, problems = check_sql(url, search_backend, cmds)
            for line in lines:
                log(line)
            log("  same statements, parameter shapes and wire sequence: " + ("yes" if not problems else "NO"))
            for p in problems:
                report.failures.append(f"[{backend}] SQL check: {p}")
                log(f"!! {p}")
            bot = hb.start_bot(children, url, workdir, backend, args.workers)
            bare = hb.start_bare(children, workdir, args.workers, module="bench.capacity_bench", name="bare SQL",
                                 log_name=f"bare-sql-{backend}.log", env={**os.environ, "BENCH_TOKEN": hb.TOKEN},
                                 extra=["--db-url", url, "--search-backend", search_backend, "--pool", str(threads)])
            log(f"  recbot pid {bot.proc.pid} on {bot.base}; bare SQL handler pid {bare.proc.pid} on {bare.base}")
            for cmd in cmds:
                for server in (bot, bare):
                    status, body = hb.send_once(server.base, _unique(cmd, f"{server.proc.pid}"))
                    if status != 200 or cmd.expect not in body:
                        raise RuntimeError(f"smoke {cmd.name} on {server.name}: HTTP {status} {body[:300]}")
                for conc in args.concurrency:
                    loads = {}
                    for label, server in (("bare", bare), ("recbot", bot)):
                        profile = args.profile / f"{backend}-{cmd.name}-c{conc}-{label}.txt" if args.profile else None
                        loads[label] = _measure(generator, server, cmd, conc, args, profile)
                        log(hb.progress(f"{cmd.name}/{label}", conc, loads[label]))
                        hb._check(report, f"{backend}/{label}", cmd.name, conc, loads[label], log)
                        if profile is not None and profile.exists():
                            profiles.append(f"[{backend}] {cmd.name} c={conc} {label} ({profile}):\n"
                                            + hb.summarise_profile(profile))
                    report.pairs.append(Pair(backend, cmd.name, conc, loads["recbot"], loads["bare"]))
            errors = [line for line in bot.log.read_text(errors="replace").splitlines()
                      if " ERROR " in line] if bot.log else []
            if errors:
                report.failures.append(f"[{backend}] the bot logged {len(errors)} ERROR line(s), first: {errors[0]}")
            children.stop(bot.proc)
            children.stop(bare.proc)

        if profiles:
            log("\n== profiles (py-spy --gil at 200 Hz: the thread holding the GIL, i.e. Python's CPU)")
            log("\n".join(profiles))
        log("\n== results")
        log(report.plain())
        log(f"ratio = recbot req/s / bare-SQL req/s; CPU s/1k req = CPU seconds of the server process (all its "
            f"threads) per 1000 answered requests; CPU ratio = recbot's / the bare handler's; CPU % of one core "
            f"({100 * ncpu}% = all cores); db = mariadbd during recbot's / the bare handler's load")
        for ok, text in report.targets():
            log(f"{'PASS' if ok else 'MISS'}  {text}")
        for f in report.failures:
            log(f"!! {f}")
        if report.failures:
            return 2
        return 0 if all(ok for ok, _ in report.targets()) else 1
    return 130  # interrupted: hb.Run said so and stopped everything


if __name__ == "__main__":
    sys.exit(main())
