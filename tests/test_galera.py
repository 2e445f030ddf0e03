"""recbot on the real 3-node MariaDB Galera cluster behind HAProxy (deploy/galera/cluster.sh): nodes
killed with -9 while two bot hosts write through different nodes, a node rejoining, alerts of two
hosts, the once-per-bot duties moving to another host, search and reads the same through every node,
and the lease raced through two nodes."""

from __future__ import annotations

import ast
import asyncio
import itertools
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot import migrate
from bot.alerts.store import AlertStore
from bot.context import Services
from bot.errors import NotFound
from bot.storage import Filter, Storage, make_engine
from tests import galera
from tests.alerting import Clock, Disk, Ops
from tests.botserver import ROOT, BotServer, Serving, SlashClient
from tests.fakes.mattermost import FakeMattermost
from tests.fakes.mattermost.seed import seed
from tests.helpers import TOKEN, config, make_user

SAVED = re.compile(r"Saved record \*\*#(\d+)\*\*")


@pytest.fixture
def cluster_db() -> Iterator[str]:
    """A fresh, migrated database on the cluster; every node is Synced before and after."""
    with galera.fresh_database() as name:
        engine = make_engine(galera.url(name, galera.BALANCED))
        migrate.upgrade(engine)
        engine.dispose()
        yield name


def storage_via(name: str, port: int) -> Storage:
    return Storage(make_engine(galera.url(name, port), timeout=10))


def body_set(node: int, name: str) -> set[str]:
    with galera.connect(galera.node_port(node), name) as conn, conn.cursor() as cur:
        cur.execute("SELECT body FROM T_CONTENT")
        return {row[0] for row in cur.fetchall()}


class Writer(threading.Thread):
    """Adds records through one bot host until stopped; keeps the texts whose save was acknowledged."""

    def __init__(self, client: SlashClient, host: str) -> None:
        super().__init__(daemon=True)
        self.client, self.host = client, host
        self.acknowledged: list[tuple[float, str]] = []
        self.refused = 0
        self.halt = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.halt.is_set():
            text = f"galera {self.host} write {i} #cluster"
            i += 1
            try:
                status, body = self.client.send(f"op{self.host}", f"add {text}")
            except OSError:
                self.refused += 1
                continue
            if status == 200 and SAVED.search(body.get("text", "")):
                self.acknowledged.append((time.monotonic(), text))
            else:
                self.refused += 1


def test_acknowledged_adds_through_two_nodes_survive_a_node_killed_with_9_and_commands_go_on(
        cluster_db: str) -> None:
    hosts = {"a": storage_via(cluster_db, galera.preferring(1)), "b": storage_via(cluster_db, galera.preferring(2))}
    servers = {h: BotServer(Services(s, config())).start() for h, s in hosts.items()}
    writers = [Writer(SlashClient(servers[h].url, TOKEN), h) for h in hosts]
    try:
        for w in writers:
            w.start()
        time.sleep(1.5)
        killed_at = time.monotonic()
        galera.kill(1)  # the node host a writes through
        time.sleep(3.0)
        for w in writers:
            w.halt.set()
            w.join(60)
        acknowledged = {text for w in writers for _, text in w.acknowledged}
        print(f"acknowledged {len(acknowledged)} adds, refused {sum(w.refused for w in writers)} around the kill")
        assert all(any(at > killed_at for at, _ in w.acknowledged) for w in writers), \
            "each host must go on saving after the kill"
        for survivor in (2, 3):
            missing = acknowledged - body_set(survivor, cluster_db)
            assert not missing, f"node {survivor} lacks acknowledged records: {sorted(missing)[:5]}"
        # Every later command works, on both hosts, through HAProxy.
        for h in hosts:
            client = SlashClient(servers[h].url, TOKEN)
            found = client.text(f"op{h}", f"find galera {h} #cluster")
            assert "galera" in found
            mine = [text for w in writers if w.host == h for _, text in w.acknowledged]
            last_id = SAVED.search(client.text(f"op{h}", f"add after the kill on {h}"))
            assert last_id, "an add after the kill must be saved"
            assert f"after the kill on {h}" in client.text(f"op{h}", f"show {last_id.group(1)}")
            assert mine, f"host {h} saved nothing"
    finally:
        for w in writers:
            w.halt.set()
        for server in servers.values():
            server.stop()


def test_a_killed_node_rejoins_and_catches_up_on_what_was_written_while_it_was_down(cluster_db: str) -> None:
    storage = storage_via(cluster_db, galera.BALANCED)
    owner = make_user(storage, "rejoin")
    galera.kill(3)
    ids = [storage.add_record(owner, f"while node 3 was down {i}") for i in range(50)]
    assert galera.count_on(3 - 1, cluster_db, "SELECT COUNT(*) FROM T_CONTENT") == 50
    galera.start(3)
    assert galera.count_on(3, cluster_db, "SELECT COUNT(*) FROM T_CONTENT WHERE id IN ({})".format(
        ",".join(map(str, ids)))) == 50
    assert body_set(3, cluster_db) == body_set(1, cluster_db)


async def test_alerts_of_two_hosts_arrive_exactly_once_while_a_node_is_down(cluster_db: str, ops: Ops) -> None:
    from bot.alerts.sampler import Sampler
    from bot.alerts.service import Alerts

    clock = Clock(datetime.now(UTC).replace(microsecond=0))
    disks = {"web-a": Disk(var=85.0, data=40.0), "web-b": Disk(var=40.0, data=86.0)}
    # Two processes per host (a restart overlapping, or two units by mistake), each through its own node.
    pollers = [
        Alerts(storage_via(cluster_db, galera.preferring(node)), ops.config, ops.gateway, host=host,
               holder=f"{host}-{node}", clock=clock, sampler=Sampler(disks[host].read, timeout=2),
               channel_id=ops.channel["id"])
        for host, nodes in (("web-a", (1, 2)), ("web-b", (2, 3))) for node in nodes]

    async def round_of_checks() -> None:
        await asyncio.gather(*(p.check() for p in pollers))
        clock.advance(minutes=1)

    await round_of_checks()
    galera.kill(1)
    await round_of_checks()
    disks["web-a"].percent["/var"] = 95.0
    disks["web-b"].percent["/data"] = 97.0
    for _ in range(3):
        await round_of_checks()
    alerts = [m for m in ops.messages() if m.startswith(("WARNING", "CRITICAL"))]
    heads = sorted(m.split(" is ")[0] for m in alerts)
    assert heads == ["CRITICAL disk space on web-a:/var", "CRITICAL disk space on web-b:/data",
                     "WARNING disk space on web-a:/var", "WARNING disk space on web-b:/data"], alerts


async def test_when_the_duty_host_is_killed_another_host_takes_over_registration_and_direct_messages(
        cluster_db: str, tmp_path: Path) -> None:
    from bot.duties import LEASE, RENEW_SECONDS

    fake = FakeMattermost()
    base = await fake.start()
    made = seed(fake, people=("alice",), channels={"town-square": ("alice", "recbot")})
    loop = asyncio.get_running_loop()
    bots = {}
    for host, node in (("a", 1), ("b", 2)):
        (tmp_path / host).mkdir()
        bots[host] = Serving(tmp_path / host, {
            "REC_DATABASE__URL": galera.url(cluster_db, galera.preferring(node)), "REC_MATTERMOST__URL": base,
            "REC_MATTERMOST__BOT_TOKEN": made.bot["token"], "REC_MATTERMOST__TEAM": "ops",
            "REC_ALERTS__HOST": f"web-{host}"})
    try:
        for _ in range(750):
            if fake.commands and fake.ws_authentications:
                break
            await asyncio.sleep(0.04)
        await asyncio.sleep(1.0)
        assert fake.ws_authentications == 1 and len(fake.commands) == 1, "one host, not both, does the duties"
        holder = galera.count_on(2, cluster_db, "SELECT CAST(SUBSTRING_INDEX(SUBSTRING_INDEX(holder, ':', 2), ':', -1)"
                                                 " AS UNSIGNED) FROM T_LEASE WHERE name = 'duties'")
        duty, _other = ("a", "b") if holder == bots["a"].proc.pid else ("b", "a")
        assert holder == bots[duty].proc.pid
        os.kill(bots[duty].proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        within = LEASE.total_seconds() + RENEW_SECONDS + 5
        while fake.ws_authentications < 2 and time.monotonic() - killed < within:
            await asyncio.sleep(0.1)
        took = time.monotonic() - killed
        assert fake.ws_authentications == 2, f"no host took the duties over within {within:g} s"
        await fake.user_posts_dm(made.users["alice"], made.bot, "rotated the logs on web-03")
        for _ in range(100):
            if galera.count_on(2, cluster_db, "SELECT COUNT(*) FROM T_CONTENT") == 1:
                break
            await asyncio.sleep(0.05)
        assert galera.count_on(2, cluster_db, "SELECT COUNT(*) FROM T_CONTENT WHERE body LIKE %s",
                               ("rotated%",)) == 1
        print(f"duties taken over {took:.1f} s after the kill -9")
    finally:
        for bot in bots.values():
            await loop.run_in_executor(None, bot.stop)
        await fake.stop()


def test_search_finds_the_same_records_through_every_node(cluster_db: str) -> None:
    writer = storage_via(cluster_db, galera.node_port(1))
    owner = make_user(writer, "searcher")
    texts = ["重启了 nginx 服务", "Restarted NGINX on web-01", "扩容磁盘 /data 到 2T", "rotated nginx logs",
             "数据库 主从 切换", "nginx 配置 回滚"] * 5
    for text in texts:
        writer.add_record(owner, text)
    readers = {n: storage_via(cluster_db, galera.node_port(n)) for n in galera.NODES}
    for n, reader in readers.items():
        assert reader.search_backend == "like", f"node {n}: a Galera node searches the replicated table"
    for query in ("nginx", "磁盘", "主从", "NGINX web", "回滚", "nothing-like-this"):
        flt = Filter(words=tuple(query.lower().split()))
        results = {n: [r.id for r in reader.find(owner, flt, limit=100).records]
                   for n, reader in readers.items()}
        assert results[1] == results[2] == results[3], (query, results)
        expected = sum(all(w in t.lower() for w in query.lower().split()) for t in texts)
        assert len(results[1]) == expected, query


def test_a_record_saved_through_one_node_is_read_at_once_through_another(cluster_db: str) -> None:
    host_a, host_b = storage_via(cluster_db, galera.node_port(1)), storage_via(cluster_db, galera.node_port(2))
    owner = make_user(host_a, "reader")
    viewer = host_b.user_by_mm_id(owner.mm_user_id)
    assert viewer is not None
    for i in range(100):
        record_id = host_a.add_record(owner, f"read me at once {i}")
        try:
            assert host_b.get_record(viewer, record_id).body == f"read me at once {i}"
        except NotFound:
            pytest.fail(f"host b did not see record {record_id} that host a had just saved")


def test_two_hosts_racing_for_the_lease_through_different_nodes_get_it_once_per_term(
        cluster_db: str, caplog: pytest.LogCaptureFixture) -> None:
    stores = [AlertStore(storage_via(cluster_db, galera.node_port(n)), "web-x") for n in (1, 2)]
    start, term = datetime(2026, 12, 1, 12, 0, tzinfo=UTC), timedelta(seconds=30)
    caplog.set_level(logging.INFO, logger="bot.store")
    fencings = []
    for round_no in range(40):
        now = start + round_no * (term + timedelta(seconds=1))  # the last term has run out
        barrier, won = threading.Barrier(2), {}

        def race(i: int, now: datetime = now, barrier: threading.Barrier = barrier, won: dict = won) -> None:
            barrier.wait()
            won[i] = stores[i].acquire(f"holder-{i}", now, term)

        threads = [threading.Thread(target=race, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        winners = [f for f in won.values() if f is not None]
        assert len(winners) == 1, f"round {round_no}: {won}"
        fencings.append(winners[0])
    # A new holder takes a new fencing number; the same holder keeps its own.
    assert all(b >= a for a, b in itertools.pairwise(fencings)) and fencings[-1] > fencings[0]
    retried = [r for r in caplog.records if "refused by" in r.getMessage()]
    print(f"{len(retried)} certification conflicts retried in 40 rounds")


def test_every_function_that_opens_a_write_transaction_is_retried() -> None:
    unretried = []
    for path in sorted((ROOT / "bot").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.name == "transaction":
                continue
            opens = any(isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute) and c.func.attr == "transaction"
                        for c in ast.walk(node))
            if opens and "retried" not in {ast.unparse(d) for d in node.decorator_list}:
                unretried.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not unretried, f"writes without @retried (a certification conflict would fail them): {unretried}"


def test_no_statement_galera_refuses_and_every_table_has_a_primary_key(cluster_db: str) -> None:
    for path in [*sorted((ROOT / "bot").rglob("*.py")), ROOT / "schema.sql", *sorted((ROOT / "migrations").rglob("*"))]:
        if path.is_file():
            source = path.read_text(errors="replace").upper()
            for refused in ("LOCK TABLES", "GET_LOCK(", "ENGINE=MYISAM", "ENGINE=MEMORY"):
                assert refused not in source, f"{path.relative_to(ROOT)} uses {refused}"
    with galera.connect(galera.node_port(1), cluster_db) as conn, conn.cursor() as cur:
        cur.execute("SELECT t.TABLE_NAME, t.ENGINE FROM information_schema.TABLES t "
                    "WHERE t.TABLE_SCHEMA = %s AND NOT EXISTS (SELECT 1 FROM information_schema.TABLE_CONSTRAINTS c "
                    "WHERE c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME "
                    "AND c.CONSTRAINT_TYPE = 'PRIMARY KEY')", (cluster_db,))
        assert cur.fetchall() == ()
        cur.execute("SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                    "AND ENGINE <> 'InnoDB'", (cluster_db,))
        assert cur.fetchall() == (), "Galera replicates InnoDB tables only"
