"""Every alert is posted exactly once: through outages with checks and drains running meanwhile,
restarts, a kill -9 between posting and recording, a lost answer, and permanent refusals.

On SQLite and MariaDB, against the fake Mattermost through the real client."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.metrics import Metrics
from bot.storage import Storage
from tests.alerting import Clock, Disk, Ops

ROOT = Path(__file__).resolve().parent.parent


def counts(ops: Ops) -> Counter[str]:
    """How often each distinct alert text was posted."""
    return Counter(ops.messages())


def slow_posts(ops: Ops, seconds: float) -> None:
    """Hold each created post's answer a while, so drains running side by side overlap."""
    async def hold(post: dict) -> None:
        await asyncio.sleep(seconds)
    ops.fake.on_post_created = hold


async def test_an_outage_with_checks_and_drains_running_meanwhile_posts_each_alert_once(
        storage: Storage, ops: Ops) -> None:
    disk, clock = Disk(var=85.0, data=40.0), Clock()
    disk.inodes["/data"] = 95.0  # an inode alert too
    alerts = ops.alerts(storage, disk, clock)
    ops.fake.set_failure("/api/v4/posts", 503, count=1000)
    await alerts.check()
    for _ in range(3):  # more checks and the outbox job during the outage
        clock.advance(minutes=1)
        await asyncio.gather(alerts.check(), alerts.drain())
    assert ops.posts() == [] and alerts.store.pending_count() == 2
    ops.fake.heal()
    slow_posts(ops, 0.2)
    clock.advance(minutes=15)
    # The scheduler's check and its outbox job both reach the queue at once, as they do in production.
    await asyncio.gather(alerts.check(), alerts.drain(), alerts.drain())
    got = counts(ops)
    assert sorted(m.split(" ")[0:2] for m in got) == [["CRITICAL", "inodes"], ["WARNING", "disk"]]
    assert set(got.values()) == {1}
    assert alerts.store.pending_count() == 0


async def test_a_restart_while_an_alert_is_pending_posts_it_once(storage: Storage, ops: Ops) -> None:
    disk, clock = Disk(var=85.0, data=40.0), Clock()
    old = ops.alerts(storage, disk, clock, holder="before-restart")
    ops.fake.set_failure("/api/v4/posts", 503, count=1000)
    await old.check()
    assert old.store.pending_count() == 1
    old.store.release(old.holder)  # a clean stop gives the lease up
    new = ops.alerts(storage, disk, clock, holder="after-restart")
    clock.advance(minutes=1)
    await new.check()  # takes the lease over
    ops.fake.heal()
    slow_posts(ops, 0.2)
    clock.advance(minutes=15)
    # The old process is still finishing a drain while the new one drains: only the lease holder posts.
    await asyncio.gather(old.drain(), new.drain())
    assert list(counts(ops).values()) == [1]
    # Whichever drain reached that post first, the old process posts nothing more: a later alert that
    # is due while it may still believe it holds the lease goes out once, by the holder, and the old
    # process learns at its attempt that the lease is gone.
    ops.fake.set_failure("/api/v4/posts", 503, count=1000)
    disk.percent["/var"] = 95.0
    clock.advance(minutes=1)
    await new.check()  # queues the CRITICAL; its post fails, so it is due again after the back-off
    ops.fake.heal()
    clock.advance(minutes=15)
    assert await old.drain() == 0 and old.fencing is None
    assert await new.drain() == 1
    assert sorted(counts(ops).values()) == [1, 1]


@pytest.mark.parametrize("retry_after", [5, 45], ids=["within-the-servers-30s", "after-the-server-forgot"])
async def test_a_post_made_but_its_answer_lost_is_not_posted_again(storage: Storage, ops: Ops,
                                                                    retry_after: int) -> None:
    disk, clock = Disk(var=85.0, data=40.0), Clock()
    alerts = ops.alerts(storage, disk, clock)
    ops.fake.set_failure("/api/v4/posts", 504, after_handler=True)  # a proxy gave up; Mattermost did post
    await alerts.check()
    assert len(ops.posts()) == 1 and alerts.store.pending_count() == 1
    real = ops.fake.clock
    ops.fake.clock = lambda: real() + retry_after
    clock.advance(minutes=10)
    assert await alerts.drain() == 1
    assert len(ops.posts()) == 1 and alerts.store.pending_count() == 0


CHILD = """
import asyncio, sys
from bot.alerts.service import Alerts
from bot.config import AlertsConfig, Config, MattermostConfig, ServerConfig
from bot.alerts.sampler import Sampler
from bot.mattermost.gateway import Gateway
from bot.storage import Storage, make_engine
from tests.alerting import Disk

db, base, token = sys.argv[1:4]
config = Config(server=ServerConfig(public_url="http://127.0.0.1:1"),
                mattermost=MattermostConfig(url=base, bot_token=token, team="ops"),
                alerts=AlertsConfig(channel="ops-alerts", paths=("/var", "/data")))

async def main():
    gateway = Gateway(config)
    await gateway.start()
    alerts = Alerts(Storage(make_engine(db)), config, gateway, host="web-01", holder="killed",
                    sampler=Sampler(Disk(var=85.0, data=40.0).read, timeout=5))
    await alerts.check()
    print("the check returned: the kill came too late", flush=True)

asyncio.run(main())
"""


@pytest.mark.parametrize("restart_after", [5, 45], ids=["within-the-servers-30s", "after-the-server-forgot"])
async def test_kill_9_between_posting_and_recording_the_post_posts_it_once(
        storage: Storage, db_url: str, ops: Ops, restart_after: int) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, db_url, ops.fake.base_url, ops.bot["token"]],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})

    async def kill(post: dict) -> None:
        # Mattermost has stored the post; the bot dies before it hears so.
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    ops.fake.on_post_created = kill
    try:
        deadline = time.monotonic() + 60
        while child.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert child.returncode == -signal.SIGKILL, child.communicate()
    finally:
        if child.poll() is None:
            child.kill()
    ops.fake.on_post_created = None
    assert len(ops.posts()) == 1
    real = ops.fake.clock
    ops.fake.clock = lambda: real() + restart_after
    # The restarted bot: a new process, after the killed one's lease ran out.
    disk = Disk(var=85.0, data=40.0)
    clock = Clock(datetime.now(UTC) + timedelta(minutes=10))
    restarted = ops.alerts(storage, disk, clock, holder="restarted")
    await restarted.check()
    assert len(ops.posts()) == 1, ops.messages()
    assert restarted.store.pending_count() == 0


async def test_a_permanent_refusal_is_set_aside_and_later_alerts_still_go_out(storage: Storage, ops: Ops) -> None:
    metrics = Metrics([], ["ok"])
    disk, clock = Disk(var=85.0, data=40.0), Clock()
    alerts = ops.alerts(storage, disk, clock, metrics=metrics)
    ops.fake.set_failure("/api/v4/posts", 403, count=1)  # e.g. the bot was removed from the channel
    await alerts.check()
    assert ops.posts() == []
    [aside] = alerts.store.set_aside_items()
    assert aside.path == "/var" and (aside.last_error or "").startswith("NotEnoughPermissions")
    disk.percent["/data"] = 95.0
    clock.advance(minutes=1)
    await alerts.check()
    assert [m.split(" ")[0] for m in ops.messages()] == ["CRITICAL"]
    assert "recbot_alert_posts_set_aside_total 1" in metrics.render()
    # The cause is gone (the bot is back in the channel): the resend re-queues it, and it goes out once.
    assert alerts.retry_set_aside() == 1
    clock.advance(seconds=1)
    await alerts.drain()
    await alerts.drain()
    assert [m.split(" ")[0] for m in ops.messages()] == ["CRITICAL", "WARNING"]
    assert alerts.store.set_aside_items() == [] and alerts.store.pending_count() == 0


async def test_a_refused_chart_does_not_hold_the_alert_back(storage: Storage, ops: Ops) -> None:
    disk, clock = Disk(var=85.0, data=40.0), Clock()
    alerts = ops.alerts(storage, disk, clock)
    ops.fake.set_failure("/api/v4/files", 413, count=1)
    await alerts.check()
    [post] = ops.posts()
    assert post["message"].startswith("WARNING") and post["file_ids"] == []


async def test_a_chart_uploaded_before_a_failed_post_is_attached_on_the_retry(storage: Storage, ops: Ops) -> None:
    disk, clock = Disk(var=85.0, data=40.0), Clock()
    alerts = ops.alerts(storage, disk, clock)
    ops.fake.set_failure("/api/v4/posts", 503, count=1)
    await alerts.check()
    uploads = [r for r in ops.fake.requests if r[1].startswith("/api/v4/files")]
    clock.advance(minutes=1)
    await alerts.drain()
    [post] = ops.posts()
    assert len(post["file_ids"]) == 1
    assert [r for r in ops.fake.requests if r[1].startswith("/api/v4/files")] == uploads
