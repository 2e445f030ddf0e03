"""The alert loop reports its own health: /healthz, /metrics, `admin status`, and the alert channel after
three failed checks in a row (on SQLite and MariaDB, the fake Mattermost through the real client)."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime

import pytest

from bot.alerts.model import Sample
from bot.alerts.sampler import Sampler
from bot.alerts.service import Alerts
from bot.app import new_metrics
from bot.commands import dispatcher as build_dispatcher
from bot.config import AlertsConfig, Config, MattermostConfig
from bot.context import Services
from bot.metrics import Metrics
from bot.storage import Storage, make_engine
from tests.alerting import Clock, Disk, Ops
from tests.botserver import BotServer, SlashClient, get

TOKEN = "health-test-token"


class FlakySampler(Sampler):
    """A sampler whose rounds for the alert loop fail while `failure` is set: a fault in the loop itself
    (`admin status` still reads the disks)."""

    def __init__(self, disk: Disk) -> None:
        super().__init__(disk.read, timeout=0.3)
        self.failure: BaseException | None = None

    async def sample(self, paths: tuple[str, ...], at: datetime) -> list[Sample]:
        if self.failure is not None:
            raise self.failure
        return await super().sample(paths, at)


def failing(ops: Ops) -> list[str]:
    return [m for m in ops.messages() if "are failing" in m]


def working(ops: Ops) -> list[str]:
    return [m for m in ops.messages() if "work again:" in m]


async def test_three_failed_checks_tell_the_channel_once_and_the_first_good_one_tells_it_again(
        storage: Storage, ops: Ops) -> None:
    metrics = Metrics([], ["ok"])
    disk, clock = Disk(var=40.0, data=40.0), Clock()
    alerts = ops.alerts(storage, disk, clock, metrics=metrics)
    alerts.sampler = sampler = FlakySampler(disk)
    await alerts.check()
    good_at = clock.now
    sampler.failure = RuntimeError("statvfs wedged")
    for n in range(1, 6):
        clock.advance(minutes=1)
        if n == 3:
            ops.fake.set_failure("/api/v4/posts", 503)  # the first try at telling the channel fails too
        await alerts.check()
        assert len(failing(ops)) == (1 if n >= 4 else 0), n
    [told] = failing(ops)
    assert "web-01" in told and "statvfs wedged" in told and f"{good_at:%H:%M}" in told
    health = alerts.store.health()
    assert health is not None and health.failures == 5 and health.last_ok_at == good_at
    assert "statvfs wedged" in (health.last_error or "")
    assert alerts.health_report()["status"] == "failing"
    assert "recbot_alert_checks_failed_total 5" in metrics.render()
    sampler.failure = None
    for _ in range(3):
        clock.advance(minutes=1)
        await alerts.check()
    assert len(working(ops)) == 1 and len(failing(ops)) == 1
    assert alerts.health_report()["status"] == "ok"


@pytest.mark.parametrize("broken", ["sqlite:////nonexistent-dir/records.db",
                                    "mysql+pymysql://root@127.0.0.1:1/records"], ids=["sqlite", "mariadb"])
async def test_a_database_outage_still_reaches_the_channel(ops: Ops, broken: str) -> None:
    # The database is what fails, so neither the health row nor the outbox can hold the message.
    alerts = Alerts(Storage(make_engine(broken)), ops.config, ops.gateway, host="web-01", holder="p1",
                    clock=Clock(), sampler=Sampler(Disk(var=40.0, data=40.0).read), channel_id=ops.channel["id"])
    for _ in range(4):
        await alerts.check()
    [told] = failing(ops)
    assert "Disk alerts on web-01 are failing" in told


def test_healthz_and_metrics_report_a_failing_loop_and_its_recovery(storage: Storage,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    config = Config(mattermost=MattermostConfig(slash_tokens=(TOKEN,)), admins=("ada",),
                    alerts=AlertsConfig(channel="ops-alerts", paths=("/var", "/data")))
    sampler = FlakySampler(Disk(var=40.0, data=40.0))
    sampler.failure = RuntimeError("statvfs wedged")
    counters = new_metrics(build_dispatcher())
    alerts = Alerts(storage, config, None, host="web-01", holder="p1", sampler=sampler, metrics=counters)
    bot = BotServer(Services(storage, config, None, alerts), counters=counters).start()
    try:
        deadline = time.monotonic() + 10  # the scheduler's first check runs at start
        while alerts.store.health() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        status, body = get(bot.url + "/healthz")
        report = json.loads(body)
        assert status == 503 and report["alerts"]["status"] == "failing" and report["database"] == "ok"
        assert report["alerts"]["last_ok"] is None and "wedged" not in body  # details are for admins
        _, metrics = get(bot.url + "/metrics")
        assert "recbot_alert_checks_failed_total 1" in metrics
        status_text = SlashClient(bot.url, TOKEN).text("ada", "admin status")
        assert "**failed** (1 in a row)" in status_text and "statvfs wedged" in status_text
        sampler.failure = None
        bot.run(alerts.check())
        status, body = get(bot.url + "/healthz")
        assert status == 200 and json.loads(body)["alerts"]["status"] == "ok"
        assert ": ok" in SlashClient(bot.url, TOKEN).text("ada", "admin status")
    finally:
        bot.stop()
    assert not [r for r in caplog.records if r.name.startswith("apscheduler") and r.levelno < logging.WARNING]
    assert [r.getMessage() for r in caplog.records if r.name == "bot.alerts" and r.levelno >= logging.ERROR] == [
        "alerts: the check on web-01 failed (1 in a row): RuntimeError: statvfs wedged"]


def test_a_loop_that_stopped_checking_is_reported_failing(storage: Storage) -> None:
    config = Config(alerts=AlertsConfig(channel="ops-alerts", paths=("/var",), interval_seconds=60))
    clock = Clock()
    alerts = Alerts(storage, config, None, host="web-01", holder="p1", clock=clock,
                    sampler=Sampler(Disk(var=40.0).read))
    import asyncio

    asyncio.run(alerts.check())
    assert alerts.health_report()["status"] == "ok"
    clock.advance(minutes=3)
    assert alerts.health_report()["status"] == "ok"
    clock.advance(minutes=2)  # past the lease (3 intervals) plus one interval without a check
    assert alerts.health_report()["status"] == "failing"
