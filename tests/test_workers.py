"""server.workers: several `python -m bot serve` processes on one port, run as a user would, on a SQLite
file and on MariaDB; with Mattermost, only worker 0 registers /rec and listens for direct messages."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bot import migrate
from bot.storage import Storage, make_engine
from tests.botserver import Serving, SlashClient, alive, children_of, health
from tests.fakes.mattermost import FakeMattermost
from tests.fakes.mattermost.seed import seed
from tests.helpers import count_rows

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "workertoken"


@pytest.fixture
def migrated(db_url: str) -> Iterator[str]:
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    engine.dispose()
    yield db_url


def count_records(url: str) -> int:
    storage = Storage(make_engine(url))
    try:
        return count_rows(storage, "T_CONTENT")[0]
    finally:
        storage.dispose()


def test_two_workers_answer_on_one_port_and_stop_together(migrated: str, tmp_path: Path) -> None:
    bot = Serving(tmp_path, {"REC_DATABASE__URL": migrated, "REC_SERVER__WORKERS": "2",
                             "REC_MATTERMOST__SLASH_TOKENS": TOKEN})
    try:
        assert bot.workers_seen(2) == {0, 1}, bot.text()
        (child,) = children_of(bot.proc.pid)
        client = SlashClient(f"http://127.0.0.1:{bot.port}", TOKEN)
        with ThreadPoolExecutor(6) as pool:
            replies = list(pool.map(lambda i: client.send(f"user{i % 3}", f"add parallel write {i} #w"), range(40)))
        assert all(status == 200 and body["text"].startswith("Saved record") for status, body in replies), replies
        ids = {body["text"].split("#")[1].split("*")[0] for _, body in replies}
        assert len(ids) == 40
        assert count_records(migrated) == 40
        assert client.text("user0", "list").startswith("**14 records** · page 1 of 2")  # only their own
        # Whichever worker answers the scrape reports the whole bot, not its own share.
        for _ in range(10):
            with urllib.request.urlopen(f"http://127.0.0.1:{bot.port}/metrics", timeout=5) as resp:
                text = resp.read().decode()
            assert 'recbot_commands_total{command="add",outcome="ok"} 40' in text, text
            assert "recbot_command_seconds_count 41" in text
    finally:
        code = bot.stop()
    assert code == 0, bot.text()
    assert not alive(child), "the second worker outlived the first"
    assert "Traceback" not in bot.text()


def test_a_worker_that_dies_is_reported_and_the_other_keeps_serving(migrated: str, tmp_path: Path) -> None:
    bot = Serving(tmp_path, {"REC_DATABASE__URL": migrated, "REC_SERVER__WORKERS": "2",
                             "REC_MATTERMOST__SLASH_TOKENS": TOKEN})
    try:
        assert bot.workers_seen(2) == {0, 1}, bot.text()
        (child,) = children_of(bot.proc.pid)
        os.kill(child, signal.SIGKILL)
        for _ in range(100):
            if "exited with status -9" in bot.text():
                break
            time.sleep(0.1)
        assert f"worker process {child} exited with status -9" in bot.text()
        assert "restart recbot" in bot.text()
        # Its socket closed with it, so every new connection reaches worker 0.
        assert {health(bot.port)["worker"] for _ in range(20)} == {0}  # type: ignore[index]
        client = SlashClient(f"http://127.0.0.1:{bot.port}", TOKEN)
        assert client.text("ann", "add still serving").startswith("Saved record")
    finally:
        code = bot.stop()
    assert code == 0, bot.text()


def test_a_bad_worker_count_stops_the_start_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "REC_CONFIG": str(ROOT / "config.yaml"), "PYTHONPATH": str(ROOT),
           "REC_SERVER__WORKERS": "0"}
    done = subprocess.run([sys.executable, "-m", "bot", "serve"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == ("config error: server.workers: 0 is not allowed; "
                                   "use a number of processes from 1 to 64, such as the CPU count")


async def test_only_worker_zero_registers_the_command_and_reads_direct_messages(migrated: str,
                                                                               tmp_path: Path) -> None:
    fake = FakeMattermost()
    base = await fake.start()
    seeded = seed(fake, people=("alice",), channels={"town-square": ("alice", "recbot")})
    bot_user, alice = seeded.bot, seeded.users["alice"]
    town = seeded.channels["town-square"]
    loop = asyncio.get_running_loop()
    bot = Serving(tmp_path, {"REC_DATABASE__URL": migrated, "REC_SERVER__WORKERS": "3",
                             "REC_MATTERMOST__URL": base, "REC_MATTERMOST__BOT_TOKEN": bot_user["token"],
                             "REC_MATTERMOST__TEAM": "ops"})
    try:
        assert await loop.run_in_executor(None, bot.workers_seen, 3) == {0, 1, 2}, bot.text()
        for _ in range(750):  # up to 30 s: three processes starting on two busy cores can be slow
            if fake.commands and fake.ws_authentications:
                break
            await asyncio.sleep(0.04)
        await asyncio.sleep(1.0)  # time for a wrongly started second registration or listener to show
        assert [c["trigger"] for c in fake.commands.values()] == ["rec"]
        assert fake.ws_authentications == 1 and fake.open_websockets == 1
        # Every worker accepts the token that worker 0 stored at registration.
        for i in range(6):
            status, body = await fake.execute(alice["id"], town["id"], f"/rec add from chat {i}")
            assert status == 200, body
        for _ in range(100):
            if count_records(migrated) == 6:
                break
            await asyncio.sleep(0.05)
        assert count_records(migrated) == 6
        await fake.user_posts_dm(alice, bot_user, "restarted nginx on web-02")
        for _ in range(100):
            if count_records(migrated) == 7:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert count_records(migrated) == 7  # one record per direct message, not one per worker
    finally:
        code = await loop.run_in_executor(None, bot.stop)
        await fake.stop()
    assert code == 0, bot.text()
