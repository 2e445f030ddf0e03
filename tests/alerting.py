"""Helpers for the disk-alert tests: disks set by hand, a clock moved by hand, and an ops world in the
fake Mattermost (a team, an alert channel, the bot) with a started gateway."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.alerts.model import Sample
from bot.alerts.sampler import Sampler
from bot.alerts.service import Alerts
from bot.config import AlertsConfig, Config, MattermostConfig, ServerConfig
from bot.mattermost.gateway import Gateway
from bot.metrics import Metrics
from bot.storage import Storage
from tests.botserver import free_port
from tests.fakes.mattermost import FakeMattermost
from tests.fakes.mattermost.seed import seed

GiB = 1024 ** 3


class Disk:
    """Readings a test sets by hand: path -> used percent (None: the read hangs until released;
    an exception: the read raises it). `inodes` holds used inode percentages the same way."""

    def __init__(self, **percent: float | None) -> None:
        self.percent: dict[str, float | BaseException | None] = {f"/{k}": v for k, v in percent.items()}
        self.inodes: dict[str, float] = {}
        self.release = threading.Event()

    def read(self, path: str, at: datetime) -> Sample:
        value = self.percent[path]
        if isinstance(value, BaseException):
            raise value
        if value is None:
            self.release.wait(30)
            raise OSError(5, "Input/output error")
        used = int(100 * GiB * value / 100)
        inodes_used = int(10 * self.inodes.get(path, 1.0))
        return Sample(path=path, at=at, used_percent=value, total_bytes=100 * GiB, used_bytes=used,
                      free_bytes=100 * GiB - used, inodes_total=1000, inodes_used=inodes_used)


class Clock:
    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Ops:
    fake: FakeMattermost
    gateway: Gateway
    channel: dict
    bot: dict
    config: Config

    def alerts(self, storage: Storage, disk: Disk, clock: Clock, holder: str = "p1",
               metrics: Metrics | None = None) -> Alerts:
        return Alerts(storage, self.config, self.gateway, host="web-01", holder=holder, clock=clock,
                      sampler=Sampler(disk.read, timeout=0.3), channel_id=self.channel["id"], metrics=metrics)

    def posts(self) -> list[dict]:
        return [p for p in self.fake.posts if p["channel_id"] == self.channel["id"] and not p.get("ephemeral")]

    def messages(self) -> list[str]:
        return [p["message"] for p in self.posts()]


@asynccontextmanager
async def ops_world() -> AsyncIterator[Ops]:
    fake = FakeMattermost()
    base = await fake.start()
    world = seed(fake, channels={"ops-alerts": ("recbot",)})
    bot, channel = world.bot, world.channels["ops-alerts"]
    port = free_port()
    config = Config(server=ServerConfig(port=port, public_url=f"http://127.0.0.1:{port}"),
                    mattermost=MattermostConfig(url=base, bot_token=bot["token"], team="ops"),
                    alerts=AlertsConfig(channel="ops-alerts", paths=("/var", "/data"), interval_seconds=60))
    gateway = Gateway(config)
    await gateway.start()
    try:
        yield Ops(fake, gateway, channel, bot, config)
    finally:
        await gateway.close()
        await fake.stop()
