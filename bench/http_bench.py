"""HTTP load benchmark: the real `python -m bot serve` under `/rec add` and `/rec find`, next to a bare aiohttp handler.

    python -m bench.http_bench [--records 100000] [--backends sqlite,mariadb] [--duration 10]
                               [--concurrency 1,10,50] [--commands find,add] [--client auto|wrk|python]
                               [--workers N] [--profile DIR] [--wait-idle SECONDS]

For each backend a fresh database is migrated and seeded in bulk (the corpus of bench.storage_bench:
mixed Chinese/English notes of 200 owners, plus a member granted 20 of them and an admin), then the
bot is started as its own process, configured only through REC_* environment variables, and loaded
over loopback with wrk (bench/wrk/slash.lua posts form bodies shaped like Mattermost's, with the
token also in `Authorization: Token`) at each concurrency, after a short warm-up. The same load goes
to a bare aiohttp handler (`--bare-server PORT`, its own process too) that parses the form and
returns a fixed reply; recbot's throughput is reported as a share of it. Without wrk, an aiohttp
closed-loop client in a separate process stands in.

`response_url` is sent empty, so the bot always answers inline and the latency is the whole command
(with one, the bot would acknowledge after 2.5 s and post the answer later). Every reply is checked
(status, and a text the command must answer with); failures make the run fail loudly. Between loads
the script waits for the bot to finish what wrk left in flight. CPU of the bot, the load generator,
mariadbd and everything else is measured from /proc for each load, since a shared 2-core machine
skews figures. `--profile DIR` samples the bot with py-spy during every measured load and prints
its hottest functions.

Every process the script starts is stopped at the end, on Ctrl-C/SIGTERM and on errors too, and the
MariaDB database `recbot_httpbench` is dropped. Exit status: 0 every target met, 1 a target missed,
2 failed requests (non-2xx, socket errors, unexpected replies, a load in which nothing finished).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

REPO = Path(__file__).resolve().parent.parent
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "slash.lua"
MARIADB_DB = "recbot_httpbench"
GRANTED = 20
P99_TARGET_MS = 50.0
P99_TARGET_CONCURRENCY = 10
RATIO_TARGET = 0.30
QUIET_CPU = 30.0  # % of one core: above this before the start, the machine is not quiet
BARE_REPLY = {"response_type": "ephemeral", "text": "ok"}

TOKEN = "bench" + secrets.token_hex(12)  # a letter first, so YAML reads the env value as a string
MEMBER = ("benchmember".ljust(26, "0"), "benchmember")  # (Mattermost user id, username)
ADMIN = ("benchadmin".ljust(26, "0"), "benchadmin")
TEAM_ID = "httpbenchteam".ljust(26, "0")
CHANNEL_ID = "httpbenchchan".ljust(26, "0")


# ---- the processes this script starts ---------------------------------------------------------

class Children:
    """Every process started here, stopped by its own pid at the end (and on Ctrl-C / SIGTERM)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: Sequence[str], *, env: dict[str, str] | None = None, log: Path | None = None,
              capture: bool = False) -> subprocess.Popen:
        out: Any = subprocess.PIPE if capture else (log.open("ab") if log else subprocess.DEVNULL)
        proc = subprocess.Popen(list(argv), cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT if not capture else subprocess.PIPE,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        if log and not capture:
            out.close()  # the child holds its own copy
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, grace: float = 10.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(5)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.procs)):
            self.stop(proc, grace=5.0)


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def drain(url: str, proc: subprocess.Popen, timeout: float = 600.0) -> float:
    """Wait until the server has worked off what the last load left queued; returns the seconds waited.

    wrk stops with requests in flight, and the bot finishes them anyway; its /healthz runs on the same
    worker pool, so it answers only after them.
    """
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=timeout) as resp:  # noqa: S310 (http://127.0.0.1)
                if resp.status == 200:
                    return time.monotonic() - t0
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not drain within {timeout:.0f} s")


def wait_healthy(url: str, proc: subprocess.Popen, log: Path | None, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before it was healthy"
                               + (f"; its log:\n{_tail(log)}" if log else ""))
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:  # noqa: S310 (http://127.0.0.1)
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"{url}/healthz was not 200 within {timeout:.0f} s ({last})"
                       + (f"; its log:\n{_tail(log)}" if log else ""))


def _tail(path: Path | None, lines: int = 30) -> str:
    if path is None or not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# ---- the bare handler -------------------------------------------------------------------------

def run_bare_server(port: int, processes: int = 1) -> int:
    """A minimal aiohttp app: parse the form like recbot does, answer a fixed ephemeral reply; in as
    many processes on the port as recbot is given (server.workers), so the ratio compares like with like."""
    from aiohttp import web

    from bot import workers

    async def command(request: web.Request) -> web.Response:
        await request.post()
        return web.json_response(BARE_REPLY)

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/mattermost/command", command)
    app.router.add_get("/healthz", healthz)
    _, children = workers.fork(processes)
    try:
        web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, reuse_port=processes > 1)
    finally:
        workers.stop(children)
    return 0


# ---- seeding ----------------------------------------------------------------------------------

@dataclass
class Database:
    backend: str
    url: str
    search_backend: str = ""
    seconds: float = 0.0


def seed(url: str, records: int, owners: int, log: Any) -> str:
    """Migrate and fill a fresh database in bulk; returns the search backend storage detects."""
    from sqlalchemy import insert, select, text

    from bench.storage_bench import Corpus
    from bot import migrate, search
    from bot.storage import make_engine
    from bot.tables import content, grant, tag, user

    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        start = datetime(2023, 1, 1)
        with engine.begin() as conn:
            people = [{"mm_user_id": f"httpbench-owner-{i:03d}".ljust(26, "0"), "username": f"owner{i:03d}",
                       "role": "member", "created_at": start, "updated_at": start} for i in range(owners)]
            people += [{"mm_user_id": mm, "username": name, "role": role, "created_at": start, "updated_at": start}
                       for (mm, name), role in ((MEMBER, "member"), (ADMIN, "admin"))]
            conn.execute(insert(user), people)
            ids = dict(conn.execute(select(user.c.username, user.c.id)).tuples().all())
            owner_ids = [ids[f"owner{i:03d}"] for i in range(owners)]
            member_id, admin_id = ids[MEMBER[1]], ids[ADMIN[1]]
            step = max(1, owners // GRANTED)
            conn.execute(insert(grant), [{"viewer_id": member_id, "owner_id": o, "granted_by": admin_id,
                                          "created_at": start} for o in owner_ids[::step][:GRANTED]])
        corpus = Corpus(records, owner_ids, member_id)
        done = 0
        t0 = time.perf_counter()
        for rows, tags in corpus.batches(1, start):
            with engine.begin() as conn:
                conn.execute(insert(content), rows)
                if tags:
                    conn.execute(insert(tag), tags)
            done += len(rows)
            if done % 50_000 == 0 or done == records:
                log(f"    {done:,} records ({time.perf_counter() - t0:.0f} s)")
        if engine.dialect.name == "sqlite":
            with engine.connect() as conn:
                conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        else:
            search.ensure_mroonga(engine)
        return search.detect_backend(engine)
    finally:
        engine.dispose()


def mariadb_server_url(args: argparse.Namespace) -> str:
    return args.mariadb_url.rstrip("/")


def mariadb_port(args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url

    return make_url(args.mariadb_url).port or 3306


def create_mariadb(args: argparse.Namespace, database: str = MARIADB_DB) -> str:
    from sqlalchemy import create_engine

    server = create_engine(mariadb_server_url(args), isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{database}`")
            conn.exec_driver_sql(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    finally:
        server.dispose()
    return f"{mariadb_server_url(args)}/{database}?charset=utf8mb4"


def drop_mariadb(args: argparse.Namespace, database: str = MARIADB_DB) -> None:
    from sqlalchemy import create_engine

    server = create_engine(mariadb_server_url(args), isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{database}`")
    finally:
        server.dispose()


# ---- requests ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Command:
    name: str  # the row label
    text: str  # what the user types after /rec
    vary: bool  # append a counter so every request differs
    expect: str  # a substring of every good reply
    who: tuple[str, str]


def commands(word: str) -> dict[str, Command]:
    return {
        "add": Command("add", "add http-bench 压测记录 restart web-017 检查磁盘 disk usage 85% #bench", True,
                       "Saved record", MEMBER),
        "find": Command("find", f"find {word}", False, "page 1 of", MEMBER),
        "find-admin": Command("find-admin", f"find {word}", False, "page 1 of", ADMIN),
    }


def form_fields(who: tuple[str, str]) -> list[tuple[str, str]]:
    """Every field Mattermost's command.go sends except `text` (response_url empty: answer inline)."""
    return [("channel_id", CHANNEL_ID), ("channel_name", "town-square"), ("command", "/rec"),
            ("response_url", ""), ("team_domain", "ops"), ("team_id", TEAM_ID), ("token", TOKEN),
            ("trigger_id", "httpbenchtrigger"), ("user_id", who[0]), ("user_name", who[1])]


def send_once(base: str, cmd: Command) -> tuple[int, str]:
    text = cmd.text + (" smoke" if cmd.vary else "")
    data = urllib.parse.urlencode([*form_fields(cmd.who), ("text", text)]).encode()
    req = urllib.request.Request(f"{base}/mattermost/command", data=data, method="POST", headers={  # noqa: S310
        "Content-Type": "application/x-www-form-urlencoded", "Authorization": f"Token {TOKEN}",
        "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 (http://127.0.0.1)
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


# ---- load -------------------------------------------------------------------------------------

@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int = 0
    socket_errors: int = 0
    bad_replies: int = 0
    bad_sample: str = ""
    # CPU during the run, in % of one core: the server under test, the load generator, the database
    # server (whoever it serves) and all other processes of the machine.
    server_cpu: float = 0.0
    loadgen_cpu: float = 0.0
    db_cpu: float = 0.0
    other_cpu: float = 0.0
    raw: str = ""

    @property
    def cpu_ms_per_request(self) -> float:
        """The server's CPU time per answered request (all its threads, C code included)."""
        return 10.0 * self.server_cpu / self.rps if self.rps else float("nan")

    @property
    def failures(self) -> int:
        # A run in which no request finished at all failed as a whole (wrk does not count the requests
        # still in flight when it stops), and its latencies would read 0.
        return self.non_2xx + self.socket_errors + self.bad_replies + (1 if self.requests == 0 else 0)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value.strip())
    if not m:
        raise ValueError(f"cannot read wrk's latency {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(output: str) -> Load:
    """wrk's own text (Requests/sec, the --latency distribution, error lines) plus the Lua done() line."""
    rps = re.search(r"^Requests/sec:\s*([\d.]+)", output, re.M)
    dist = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.M))
    total = re.search(r"^\s*(\d+) requests in", output, re.M)
    if not rps or "50" not in dist or "99" not in dist or not total:
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    result = re.search(r"^BENCH_RESULT (.*)$", output, re.M)
    extra = dict(kv.split("=", 1) for kv in result.group(1).split()) if result else {}
    sample = re.search(r"^BENCH_BAD_SAMPLE (.*)$", output, re.M)
    return Load(
        rps=float(rps.group(1)), p50_ms=_ms(dist["50"]), p99_ms=_ms(dist["99"]), requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(x) for x in sock.groups()) if sock else 0,
        bad_replies=int(extra.get("bad", 0)), bad_sample=sample.group(1) if sample else "", raw=output)


def _cpu_ticks(pid: int) -> int:
    """utime + stime of the process (all threads) and of its live children (server.workers copies)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = int(fields[11]) + int(fields[12])
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in (children.read_text().split() if children.exists() else []):
        with contextlib.suppress(OSError):
            total += _cpu_ticks(int(child))
    return total


def _machine_ticks() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values), values[3] + values[4]  # total, idle + iowait


def _db_pid(port: int = 3306) -> int | None:
    """The mariadbd that listens on `port` (others may run beside it), else the first one found."""
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                cols = row.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    listening.add(f"socket:[{cols[9]}]")
    found = None
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if comm.read_text().strip() in ("mariadbd", "mysqld"):
                found = found or int(comm.parent.name)
                if any(os.readlink(fd) in listening for fd in (comm.parent / "fd").iterdir()):
                    return int(comm.parent.name)
    return found


@contextlib.contextmanager
def cpu_meter(pid: int, db_port: int = 3306) -> Iterator[dict[str, float]]:
    """CPU used while the block runs, each in % of one core: the server, the load generator (this
    script's finished children), the database server (whoever it serves) and everything else."""
    import resource

    got: dict[str, float] = {}
    hz = os.sysconf("SC_CLK_TCK")
    ncpu = os.cpu_count() or 1
    db = _db_pid(db_port)

    def children() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def ticks(p: int | None) -> int:
        if p is None:
            return 0
        try:
            return _cpu_ticks(p)
        except OSError:
            return 0

    t0, s0, d0, c0, (m0, i0) = time.monotonic(), ticks(pid), ticks(db), children(), _machine_ticks()
    yield got
    t1, s1, d1, c1, (m1, i1) = time.monotonic(), ticks(pid), ticks(db), children(), _machine_ticks()
    wall = max(t1 - t0, 1e-9)
    got["server"] = 100.0 * (s1 - s0) / hz / wall
    got["loadgen"] = 100.0 * (c1 - c0) / wall
    got["db"] = 100.0 * (d1 - d0) / hz / wall
    busy = 100.0 * ncpu * (1 - (i1 - i0) / max(m1 - m0, 1)) if m1 > m0 else 0.0
    got["other"] = max(0.0, busy - got["server"] - got["loadgen"] - got["db"])


def machine_busy(seconds: float) -> float:
    """CPU busy over `seconds`, in % of one core (all cores busy = 100 x cores)."""
    m0, i0 = _machine_ticks()
    time.sleep(seconds)
    m1, i1 = _machine_ticks()
    return 100.0 * (os.cpu_count() or 1) * (1 - (i1 - i0) / max(m1 - m0, 1))


class LoadGenerator:
    def __init__(self, kind: str, children: Children, threads: int, spy_options: Sequence[str] = (),
                 db_port: int = 3306) -> None:
        self.kind = kind
        self.children = children
        self.threads = threads
        self.spy_options = list(spy_options)  # more py-spy options, e.g. --gil
        self.db_port = db_port  # whose mariadbd the "db" CPU is

    def describe(self) -> str:
        if self.kind == "wrk":
            return (f"wrk ({_wrk_version()}) -t{self.threads}, closed loop, keep-alive connections, "
                    f"script {WRK_SCRIPT.relative_to(REPO)}")
        return "aiohttp closed-loop client in its own process (no wrk), keep-alive connections"

    def run(self, base: str, cmd: Command, concurrency: int, seconds: float, server_pid: int,
            profile: Path | None = None) -> Load:
        spy = None
        if profile is not None:  # sample the server for the whole measured load, without pausing it
            spy = self.children.start([py_spy(), "record", "--pid", str(server_pid), "--duration", str(seconds),
                                       "--rate", "200", "--nonblocking", *self.spy_options, "--format", "raw",
                                       "-o", str(profile)],
                                      log=profile.with_suffix(".log"))
        with cpu_meter(server_pid, self.db_port) as cpu:
            load = self._wrk(base, cmd, concurrency, seconds) if self.kind == "wrk" else \
                self._python(base, cmd, concurrency, seconds)
        load.server_cpu, load.loadgen_cpu, load.db_cpu, load.other_cpu = (
            cpu["server"], cpu["loadgen"], cpu["db"], cpu["other"])
        if spy is not None:
            try:
                spy.wait(30)
            finally:
                self.children.stop(spy)
        return load

    def _wrk(self, base: str, cmd: Command, concurrency: int, seconds: float) -> Load:
        env = {**os.environ, "BENCH_FORM": urllib.parse.urlencode(form_fields(cmd.who)), "BENCH_TOKEN": TOKEN,
               "BENCH_TEXT": cmd.text, "BENCH_VARY": "1" if cmd.vary else "0",
               "BENCH_EXPECT": cmd.expect}
        return self._collect(
            ["wrk", f"-t{min(self.threads, concurrency)}", f"-c{concurrency}", f"-d{seconds:g}s", "--latency",
             "--timeout", "10s", "-s", str(WRK_SCRIPT), f"{base}/mattermost/command"],
            env, seconds, parse_wrk)

    def _python(self, base: str, cmd: Command, concurrency: int, seconds: float) -> Load:
        spec = {"url": f"{base}/mattermost/command", "fields": form_fields(cmd.who), "text": cmd.text,
                "vary": cmd.vary, "expect": cmd.expect, "concurrency": concurrency, "seconds": seconds}
        return self._collect([sys.executable, "-m", "bench.http_bench", "--load-client", json.dumps(spec)],
                             None, seconds, lambda out: Load(**json.loads(out.strip().splitlines()[-1])))

    def _collect(self, argv: list[str], env: dict[str, str] | None, seconds: float, parse: Any) -> Load:
        proc = self.children.start(argv, env=env, capture=True)
        try:
            out, err = proc.communicate(timeout=seconds + 60)
        finally:
            self.children.stop(proc)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited with {proc.returncode}:\n{out.decode()}\n{err.decode()}")
        return parse(out.decode(errors="replace"))


def _wrk_version() -> str:
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else "wrk"
    return first.split(" Copyright")[0]


def run_load_client(spec_json: str) -> int:
    """The fallback load generator: `concurrency` closed-loop workers on keep-alive connections."""
    import asyncio

    from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector

    spec = json.loads(spec_json)
    spec["fields"] = [tuple(pair) for pair in spec["fields"]]
    latencies: list[float] = []
    counts = {"non_2xx": 0, "socket_errors": 0, "bad_replies": 0}
    sample = [""]
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json",
               "Authorization": f"Token {dict(spec['fields'])['token']}"}
    base_form = urllib.parse.urlencode(spec["fields"])

    async def worker(session: ClientSession, wid: int, deadline: float) -> None:
        n = 0
        while time.perf_counter() < deadline:
            n += 1
            text = spec["text"] + (f" n{wid}-{n}" if spec["vary"] else "")
            body = f"{base_form}&{urllib.parse.urlencode({'text': text})}"
            t0 = time.perf_counter()
            try:
                async with session.post(spec["url"], data=body.encode(), headers=headers) as resp:
                    reply = await resp.text()
                    status = resp.status
            except (TimeoutError, OSError, ClientError):
                counts["socket_errors"] += 1
                continue
            latencies.append((time.perf_counter() - t0) * 1000)
            if not 200 <= status < 400:
                counts["non_2xx"] += 1
            elif spec["expect"] not in reply:
                counts["bad_replies"] += 1
                sample[0] = sample[0] or reply[:200]

    async def main() -> float:
        connector = TCPConnector(limit=spec["concurrency"])
        async with ClientSession(connector=connector, timeout=ClientTimeout(total=10)) as session:
            t0 = time.perf_counter()
            deadline = t0 + spec["seconds"]
            await asyncio.gather(*(worker(session, i, deadline) for i in range(spec["concurrency"])))
            return time.perf_counter() - t0

    elapsed = asyncio.run(main())
    ordered = sorted(latencies) or [float("nan")]

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]

    print(json.dumps({"rps": len(latencies) / elapsed, "p50_ms": pct(50), "p99_ms": pct(99),
                      "requests": len(latencies), "bad_sample": sample[0], **counts}))
    return 0


# ---- profiles ---------------------------------------------------------------------------------

def py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
# Leaf frames of a thread that only waits: the event loop in select(), a pool worker waiting for work.
_IDLE = {("select", "selectors.py"), ("_worker", "concurrent/futures/thread.py"), ("wait", "threading.py")}


def _short(file: str) -> str:
    for marker in ("site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def _package(file: str) -> str:
    return _short(file).split("/", 1)[0].removesuffix(".py") or "?"


def summarise_profile(path: Path, top: int = 12) -> str:
    """Shares of py-spy's sampled stacks (raw, collapsed format): by package and function of the leaf
    frame (self time), and of recbot's own functions anywhere on the stack (inclusive time)."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    pkg: dict[str, int] = {}
    total = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for raw in stack.split(";"):
            m = _FRAME.match(raw.strip())
            frames.append((m.group("func"), _short(m.group("file"))) if m else (raw.strip(), ""))
        n = int(count)
        func, file = frames[-1]
        if (func.rsplit(".", 1)[-1], file) in _IDLE:
            idle += n
            continue
        total += n
        own[f"{func} ({file})"] = own.get(f"{func} ({file})", 0) + n
        pkg[_package(file)] = pkg.get(_package(file), 0) + n
        for f, fl in dict.fromkeys(frames):
            if fl.startswith("bot/"):
                incl[f"{f} ({fl})"] = incl.get(f"{f} ({fl})", 0) + n
    if not total:
        return "  (no samples)"

    def block(title: str, counts: dict[str, int]) -> list[str]:
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [f"  {title}:"] + [f"    {v / total:6.1%}  {k}" for k, v in ranked]

    head = (f"  {total} busy samples (100% below), {idle} idle ones left out (event loop in select(), "
            "pool workers waiting for work); time in C code (sqlite3, sockets) counts to the Python frame "
            "that called it")
    return "\n".join([head, *block("self time by package", pkg), *block("hottest functions, self time", own),
                      *block("recbot functions, inclusive time", incl)])


# ---- the servers under load -------------------------------------------------------------------

@dataclass
class Server:
    name: str
    base: str
    proc: subprocess.Popen
    log: Path | None


def start_bot(children: Children, url: str, workdir: Path, backend: str, processes: int) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REC_")}
    env.update({
        "REC_CONFIG": str(REPO / "config.yaml"),
        "REC_DATABASE__URL": url,
        "REC_SERVER__HOST": "127.0.0.1",
        "REC_SERVER__PORT": str(port),
        "REC_MATTERMOST__SLASH_TOKENS": TOKEN,
        "REC_MATTERMOST__URL": "",
        "REC_ADMINS": ADMIN[1],
        "REC_SERVER__WORKERS": str(processes),
        "PYTHONUNBUFFERED": "1",
    })
    log = workdir / f"bot-{backend}.log"
    proc = children.start([sys.executable, "-m", "bot", "serve"], env=env, log=log)
    server = Server(f"recbot/{backend}", f"http://127.0.0.1:{port}", proc, log)
    wait_healthy(server.base, proc, log)
    return server


def start_bare(children: Children, workdir: Path, processes: int, *, module: str = "bench.http_bench",
               name: str = "bare aiohttp", log_name: str = "bare.log", env: dict[str, str] | None = None,
               extra: Sequence[str] = ()) -> Server:
    """A bare handler in its own process: `python -m MODULE --bare-server PORT --workers N EXTRA...`."""
    port = free_port()
    log = workdir / log_name
    proc = children.start([sys.executable, "-m", module, "--bare-server", str(port), "--workers", str(processes),
                           *extra], env=env, log=log)
    server = Server(name, f"http://127.0.0.1:{port}", proc, log)
    wait_healthy(server.base, proc, log)
    return server


# ---- report -----------------------------------------------------------------------------------

@dataclass
class Row:
    backend: str
    command: str
    concurrency: int
    load: Load
    bare: Load | None

    @property
    def ratio(self) -> float | None:
        return self.load.rps / self.bare.rps if self.bare and self.bare.rps else None


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    HEAD: ClassVar[tuple[str, ...]] = (
        "backend", "command", "concurrency", "req/s", "p50 ms", "p99 ms", "bare req/s", "ratio",
        "bot CPU %", "bot CPU ms/req", "load CPU %", "db CPU %", "other CPU %", "failed")

    def cells(self) -> list[tuple[str, ...]]:
        out: list[tuple[str, ...]] = []
        for r in self.rows:
            out.append((r.backend, r.command, str(r.concurrency), f"{r.load.rps:,.0f}", f"{r.load.p50_ms:.2f}",
                        f"{r.load.p99_ms:.2f}", f"{r.bare.rps:,.0f}" if r.bare else "-",
                        f"{r.ratio:.1%}" if r.ratio is not None else "-", f"{r.load.server_cpu:.0f}",
                        f"{r.load.cpu_ms_per_request:.2f}", f"{r.load.loadgen_cpu:.0f}", f"{r.load.db_cpu:.0f}",
                        f"{r.load.other_cpu:.0f}", str(r.load.failures)))
        return out

    def plain(self) -> str:
        rows = [self.HEAD, *self.cells()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.HEAD))]
        lines = []
        for n, r in enumerate(rows):
            lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths,
                                                                                                        strict=True))))
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.HEAD) + " |",
                 "| " + " | ".join("---" if i < 2 else "---:" for i in range(len(self.HEAD))) + " |"]
        lines += ["| " + " | ".join(c) + " |" for c in self.cells()]
        return "\n".join(lines)

    def targets(self) -> list[tuple[bool, str]]:
        out: list[tuple[bool, str]] = []
        for backend, command in dict.fromkeys((r.backend, r.command) for r in self.rows):
            at = [r for r in self.rows if (r.backend, r.command, r.concurrency)
                  == (backend, command, P99_TARGET_CONCURRENCY)]
            if at:
                p99 = at[0].load.p99_ms if at[0].load.requests else float("inf")
                out.append((p99 <= P99_TARGET_MS, f"[{backend}] {command}: p99 at concurrency "
                                                  f"{P99_TARGET_CONCURRENCY} = {p99:.1f} ms (target <= "
                                                  f"{P99_TARGET_MS:.0f} ms)"))
            for r in self.rows:
                if (r.backend, r.command) == (backend, command) and r.bare and r.ratio is not None:
                    out.append((r.ratio >= RATIO_TARGET,
                                f"[{backend}] {command} c={r.concurrency}: {r.load.rps:,.0f} req/s = "
                                f"{r.ratio:.1%} of bare {r.bare.rps:,.0f} req/s (target >= {RATIO_TARGET:.0%})"))
        return out


# ---- main -------------------------------------------------------------------------------------

def _ints(value: str) -> list[int]:
    try:
        got = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of numbers") from None
    if not got or min(got) < 1:
        raise argparse.ArgumentTypeError("give positive numbers")
    return got


def _words(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="records to seed (default 100000)")
    parser.add_argument("--owners", type=int, default=200, help="record owners (default 200)")
    parser.add_argument("--backends", type=_words, default=["sqlite", "mariadb"], help="sqlite,mariadb")
    parser.add_argument("--duration", type=int, default=10, help="whole seconds of each measured load (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="whole seconds of unmeasured load before each "
                                                               "(default 2; 0: none)")
    parser.add_argument("--concurrency", type=_ints, default=[1, 10, 50], help="connections, e.g. 1,10,50")
    parser.add_argument("--commands", type=_words, default=["find", "add"], help="find,add (also: find-admin)")
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto",
                        help="load generator: wrk when installed (auto), or the aiohttp fallback")
    parser.add_argument("--workers", type=int, default=1, help="server processes of recbot (server.workers) and "
                        "of the bare handler alike (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: it leaves the CPU to the "
                                                               "server on a small machine)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample the bot with py-spy during every measured load; raw stacks go to DIR")
    parser.add_argument("--wait-idle", type=int, default=0, metavar="SECONDS",
                        help="wait up to this long for other processes to leave the CPU before starting")
    parser.add_argument("--mariadb-url", default="mysql+pymysql://root@127.0.0.1:3306")
    parser.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--load-client", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_server:
        return run_bare_server(args.bare_server, args.workers)
    if args.load_client:
        return run_load_client(args.load_client)
    unknown = set(args.backends) - {"sqlite", "mariadb"}
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    from bench.storage_bench import COMMON

    table = commands(COMMON)
    if set(args.commands) - set(table):
        parser.error(f"unknown command(s); use {', '.join(table)}")
    kind = args.client
    if kind == "auto":
        kind = "wrk" if shutil.which("wrk") else "python"
    elif kind == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not installed (apt-get install -y wrk)")

    def log(line: str = "") -> None:
        print(line, flush=True)

    report = Report()
    run = Run(Path(tempfile.mkdtemp(prefix="recbot-httpbench-")), "httpbench.db*", report.failures)
    children, workdir = run.children, run.workdir
    profiles: list[str] = []
    if args.profile:
        py_spy()
        args.profile.mkdir(parents=True, exist_ok=True)
    generator = LoadGenerator(kind, children, args.threads, db_port=mariadb_port(args))
    cmds = [table[c] for c in args.commands]
    with run:
        ncpu = os.cpu_count() or 1
        log(f"recbot HTTP benchmark: {args.records:,} records, {args.owners} owners, backends "
            f"{','.join(args.backends)}, commands {','.join(args.commands)}, concurrency "
            f"{','.join(map(str, args.concurrency))}, {args.duration:g} s per load after {args.warmup:g} s warm-up")
        log(f"python {platform.python_version()}, {platform.machine()}, {ncpu} CPU core(s); load generator: "
            f"{generator.describe()}; server processes (recbot and bare alike): {args.workers}")
        log(f"NOTE: this machine has {ncpu} core(s), shared by the load generator, the server under test "
            "and MariaDB; absolute figures are for this machine only, the ratio to the bare handler "
            "is the comparable one.")
        version = code_version()
        log(f"code under test: {version}")
        busy = machine_busy(2.0)
        waited = 0.0
        while busy > QUIET_CPU and waited < args.wait_idle:
            busy = machine_busy(5.0)
            waited += 5.0
        log(f"CPU busy before the first load: {busy:.0f}% of one core (of {100 * ncpu}%)"
            + (f" after waiting {waited:.0f} s for a quiet machine" if waited else "")
            + ("  !! WARNING: other processes use the CPU; the 'other CPU %' column shows how much they "
               "took during each load" if busy > QUIET_CPU else ""))
        log(f"find text: '{table['find'].text}' as @{MEMBER[1]} (granted {GRANTED} owners); add text: "
            f"'{table['add'].text} n<thread>-<counter>' as @{MEMBER[1]}; response_url empty, so every "
            "answer is inline")

        # The bare handler first: one figure per command and concurrency, shared by both backends.
        bare_loads: dict[tuple[str, int], Load] = {}
        log("\n== bare aiohttp handler (fixed reply, form parsed, no access log)")
        bare = start_bare(children, workdir, args.workers)
        for cmd in cmds:
            for conc in args.concurrency:
                bare_cmd = Command(cmd.name, cmd.text, cmd.vary, BARE_REPLY["text"], cmd.who)
                if args.warmup > 0:
                    generator.run(bare.base, bare_cmd, conc, args.warmup, bare.proc.pid)
                load = generator.run(bare.base, bare_cmd, conc, args.duration, bare.proc.pid)
                bare_loads[(cmd.name, conc)] = load
                log(progress(cmd.name, conc, load))
                _check(report, "bare", cmd.name, conc, load, log)
        children.stop(bare.proc)

        for backend in args.backends:
            log(f"\n== {backend}: seeding")
            t0 = time.perf_counter()
            if backend == "sqlite":
                url = f"sqlite:///{workdir / 'httpbench.db'}"
            else:
                url = create_mariadb(args)
                run.drop = lambda: drop_mariadb(args)
            search_backend = seed(url, args.records, args.owners, log)
            log(f"  seeded {args.records:,} records in {time.perf_counter() - t0:.1f} s; search backend: "
                f"{search_backend}")
            bot = start_bot(children, url, workdir, backend, args.workers)
            log(f"  recbot serving on {bot.base} (pid {bot.proc.pid}, log {bot.log})")
            for cmd in cmds:
                status, body = send_once(bot.base, cmd)
                shown = json.loads(body).get("text", body) if body.startswith("{") else body
                log(f"  smoke /rec {cmd.text[:40]}...: HTTP {status}: {shown.splitlines()[0][:100]!r}")
                if status != 200 or cmd.expect not in body:
                    raise RuntimeError(f"the smoke request for {cmd.name} failed: HTTP {status} {body[:300]}")
            log(f"== {backend}: load")
            for cmd in cmds:
                for conc in args.concurrency:
                    if args.warmup > 0:
                        generator.run(bot.base, cmd, conc, args.warmup, bot.proc.pid)
                        drain(bot.base, bot.proc)
                    profile = args.profile / f"{backend}-{cmd.name}-c{conc}.txt" if args.profile else None
                    load = generator.run(bot.base, cmd, conc, args.duration, bot.proc.pid, profile)
                    row = Row(backend, cmd.name, conc, load, bare_loads.get((cmd.name, conc)))
                    report.rows.append(row)
                    log(progress(cmd.name, conc, load, row.ratio))
                    _check(report, backend, cmd.name, conc, load, log)
                    waited = drain(bot.base, bot.proc)
                    if waited > 1:
                        log(f"    (the bot took {waited:.1f} s after the run to finish the requests left in flight)")
                    if profile is not None and profile.exists():
                        summary = summarise_profile(profile)
                        profiles.append(f"[{backend}] {cmd.name} c={conc} ({profile}):\n{summary}")
                        log(summary)
            errors = [line for line in bot.log.read_text(errors="replace").splitlines()
                      if " ERROR " in line] if bot.log else []
            children.stop(bot.proc)
            if errors:
                report.failures.append(f"[{backend}] the bot logged {len(errors)} ERROR line(s), first: {errors[0]}")
            if backend == "mariadb":
                drop_mariadb(args)
                run.drop = None

        log("\n== results")
        log(report.plain())
        log("ratio = recbot req/s / bare handler req/s at the same command and concurrency. CPU columns "
            f"are % of one core ({100 * ncpu}% = all {ncpu} cores): bot = the recbot process (event loop and "
            "worker threads share one GIL, so ~100% is its ceiling; C code such as sqlite3 can add more), bot CPU "
            "ms/req = its CPU time per answered request, load = the load generator, db = "
            "mariadbd (whoever it serves), other = every other process on the machine")
        if profiles:
            log("\n== profiles of the bot under load (py-spy, non-blocking sampling at 200 Hz)")
            log("\n".join(profiles))
        log("\n== targets")
        verdicts = report.targets()
        for ok, text in verdicts:
            log(f"{'PASS' if ok else 'MISS'}  {text}")
        if report.failures:
            log("\n!! FAILED REQUESTS — the figures above are not valid:")
            for f in report.failures:
                log(f"!! {f}")
        log("\n== markdown\n")
        log(f"HTTP benchmark, {args.records:,} records, {args.duration:g} s per load, "
            f"{generator.describe()}; {args.workers} server process(es) for recbot and the bare handler alike; "
            f"{ncpu} CPU cores shared by load generator, server and database; "
            f"code: {version}.\n")
        log(report.markdown())
        log("")
        log("\n".join(f"- **{'PASS' if ok else 'MISS'}** {text}" for ok, text in verdicts))
        if report.failures:
            log("\n" + "\n".join(f"- **FAILED** {f}" for f in report.failures))
        if report.failures:
            return 2
        return 0 if all(ok for ok, _ in verdicts) else 1
    return 130  # interrupted: Run said so and stopped everything


@dataclass
class Run:
    """One benchmark run's processes, workdir and MariaDB database, ended however the run ends: every
    process it started is stopped, the signal handlers are put back, the database (`drop`, set once it
    exists) is dropped, and the workdir removed, or its servers' logs kept (not the database files that
    match `databases`) when the run went wrong. Ctrl-C / SIGTERM end the `with` block quietly: the code
    after it runs (return 130)."""

    workdir: Path
    databases: str
    failures: list[str]
    children: Children = field(default_factory=Children)
    drop: Any = None
    previous: dict[signal.Signals, Any] = field(default_factory=dict)

    def __enter__(self) -> Run:
        # SIGINT too: a shell may have started this script with SIGINT ignored (a background job).
        self.previous = {sig: signal.signal(sig, _raise_interrupt)
                         for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if kind is KeyboardInterrupt:
            print("\ninterrupted; stopping everything this run started", flush=True)
        self.children.stop_all()
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if self.drop is not None:
            with contextlib.suppress(Exception):
                self.drop()
        if kind is None and not self.failures:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            for db in self.workdir.glob(self.databases):
                db.unlink(missing_ok=True)
            print(f"server logs kept in {self.workdir}", flush=True)
        return kind is KeyboardInterrupt


def code_version() -> str:
    """The commit the bot runs from, and whether bot/ has changes not committed yet."""
    def git(*argv: str) -> str:
        out = subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True, check=False)
        return out.stdout.strip() if out.returncode == 0 else ""

    head = git("log", "-1", "--format=%h %s")
    if not head:
        return "(not a git checkout)"
    dirty = git("status", "--porcelain", "--", "bot", "migrations")
    return head[:90] + (f"; plus uncommitted changes in {len(dirty.splitlines())} file(s) of bot/ or migrations/"
                        if dirty else "")


def progress(command: str, conc: int, load: Load, ratio: float | None = None) -> str:
    return (f"  {command:<10} c={conc:<3} {load.rps:9,.0f} req/s  p50 {load.p50_ms:7.2f} ms  p99 {load.p99_ms:7.2f} ms"
            + (f"  ratio {ratio:6.1%}" if ratio is not None else "")
            + f"  server CPU {load.server_cpu:4.0f}% ({load.cpu_ms_per_request:.2f} ms/req)  db {load.db_cpu:3.0f}%"
            f"  others {load.other_cpu:3.0f}%  failed {load.failures}")


def _check(report: Report, backend: str, command: str, conc: int, load: Load, log: Any) -> None:
    if load.failures:
        message = (f"[{backend}] {command} c={conc}: " + ("no request finished within the run; " if not load.requests
                                                          else "")
                   + f"{load.non_2xx} non-2xx/3xx responses, {load.socket_errors} socket errors (timeouts "
                   f"included), {load.bad_replies} unexpected replies out of {load.requests}"
                   + (f"; e.g. {load.bad_sample!r}" if load.bad_sample else ""))
        report.failures.append(message)
        log(f"!! {message}")


if __name__ == "__main__":
    sys.exit(main())
