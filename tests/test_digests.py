"""Personal digests: `/rec digest` subscribes, shows and stops; each subscriber's digest comes as a
direct message at the digest hour of their own day, lists only the new records they may see, and
goes out exactly once across a restart and with two processes racing. Through the bot's real HTTP
door and the real client against the fake Mattermost, with a clock moved by hand."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from bot.app import build_app
from bot.config import Config
from bot.context import Services
from bot.digests.schedule import last_due
from bot.digests.service import Digests
from bot.duties import LEASE
from bot.mattermost.gateway import Gateway
from bot.storage import Storage, make_engine
from tests.alerting import Clock
from tests.botserver import SlashClient, free_port
from tests.fakes.mattermost import FakeMattermost
from tests.fakes.mattermost.seed import seed
from tests.helpers import TOKEN, fake_mattermost_config, rows

SHANGHAI = {"useAutomaticTimezone": "false", "automaticTimezone": "", "manualTimezone": "Asia/Shanghai"}
NEW_YORK = {"useAutomaticTimezone": "true", "automaticTimezone": "America/New_York", "manualTimezone": ""}
TUESDAY_NOON = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # Shanghai 20:00, New York 07:00


@dataclass
class World:
    fake: FakeMattermost
    storage: Storage
    config: Config
    gateway: Gateway
    client: SlashClient
    users: dict[str, Any]
    clock: Clock
    db_url: str
    digests: Digests  # the instance the bot's own app runs (holder p1)
    extra: list[Any] = field(default_factory=list)  # more storages and gateways, closed at the end

    async def say(self, user: str, text: str) -> str:
        status, body = await asyncio.get_running_loop().run_in_executor(None, self.client.send, user, text)
        assert status == 200, (text, body)
        return str(body["text"])

    async def add(self, user: str, text: str) -> int:
        reply = await self.say(user, f"add {text}")
        found = re.search(r"#(\d+)", reply)
        assert found, reply
        return int(found.group(1))

    def at(self, moment: datetime) -> None:
        self.clock.now = moment

    def dms(self, name: str) -> list[str]:
        """The bot's posts in its direct channel with `name`, oldest first."""
        channel = self.fake.direct_channel(self.users["recbot"]["id"], self.users[name]["id"])
        if channel is None:
            return []
        return [p["message"] for p in self.fake.posts if p["channel_id"] == channel["id"] and not p.get("ephemeral")]

    async def process(self, holder: str) -> Digests:
        """Another bot process on the same database: its own engine, its own Mattermost connection."""
        storage = Storage(make_engine(self.db_url))
        storage.clock = self.storage.clock
        gateway = Gateway(self.config)
        await gateway.start()
        self.extra += [storage, gateway]
        return Digests(storage, self.config, gateway, holder=holder, clock=self.clock)


@pytest.fixture
async def world(storage: Storage, db_url: str) -> AsyncIterator[World]:
    fake = FakeMattermost()
    base = await fake.start()
    made = seed(fake, people=("li", "nina", "bob", "ada"),
                channels={"town-square": ("li", "nina", "bob", "ada", "recbot")})
    fake.users[made.users["li"]["id"]].update(locale="zh-CN", timezone=SHANGHAI)
    fake.users[made.users["nina"]["id"]]["timezone"] = NEW_YORK
    port = free_port()
    config = fake_mattermost_config(base, made.bot["token"], port)
    gateway = Gateway(config)
    await gateway.start()
    clock = Clock(TUESDAY_NOON)
    storage.clock = lambda: clock.now.replace(tzinfo=None)
    digests = Digests(storage, config, gateway, holder="p1", clock=clock)
    runner = web.AppRunner(build_app(Services(storage, config, gateway, digests=digests, holder="p1", clock=clock)))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = SlashClient(f"http://127.0.0.1:{port}", TOKEN, users={n: u["id"] for n, u in made.users.items()},
                         channels={"town-square": made.channels["town-square"]["id"]})
    world = World(fake, storage, config, gateway, client, made.users, clock, db_url, digests)
    try:
        yield world
    finally:
        await runner.cleanup()
        for thing in world.extra:
            if isinstance(thing, Gateway):
                await thing.close()
            else:
                thing.dispose()
        await gateway.close()
        await fake.stop()


def test_the_last_due_moment_is_the_hour_of_the_subscribers_own_day_and_monday_for_weekly() -> None:
    from zoneinfo import ZoneInfo
    shanghai, new_york = ZoneInfo("Asia/Shanghai"), ZoneInfo("America/New_York")
    due, day = last_due(datetime(2026, 12, 2, 0, 0, tzinfo=UTC), shanghai, 8, "daily")
    assert (due, str(day)) == (datetime(2026, 12, 2, 0, 0, tzinfo=UTC), "2026-12-02")
    due, day = last_due(datetime(2026, 12, 1, 23, 59, tzinfo=UTC), shanghai, 8, "daily")
    assert str(day) == "2026-12-01"
    due, day = last_due(datetime(2026, 12, 1, 13, 0, tzinfo=UTC), new_york, 8, "daily")
    assert (due, str(day)) == (datetime(2026, 12, 1, 13, 0, tzinfo=UTC), "2026-12-01")
    due, day = last_due(datetime(2026, 12, 6, 23, 0, tzinfo=UTC), new_york, 8, "weekly")  # a Sunday
    assert (due, str(day)) == (datetime(2026, 11, 30, 13, 0, tzinfo=UTC), "2026-11-30")


async def test_subscribers_in_shanghai_and_new_york_get_their_digest_at_0800_of_their_own_day(world: World) -> None:
    await world.say("li", "digest daily")
    assert "Subscribed" in await world.say("nina", "digest daily")
    world.at(TUESDAY_NOON + timedelta(minutes=30))
    await world.add("li", "swapped the disk on db-3 #disk")
    await world.add("nina", "rotated the nginx logs #logs")
    world.at(datetime(2026, 12, 1, 12, 59, tzinfo=UTC))  # New York 07:59
    await world.digests.run()
    assert world.dms("nina") == [] and world.dms("li") == []
    world.at(datetime(2026, 12, 1, 13, 0, tzinfo=UTC))  # New York 08:00, Shanghai 21:00
    await world.digests.run()
    assert len(world.dms("nina")) == 1 and world.dms("li") == []
    nina = world.dms("nina")[0]
    assert "rotated the nginx logs" in nina and "db-3" not in nina
    assert "Dec 1, 2026 07:30 UTC-5" in nina  # her record's time, in her zone
    world.at(datetime(2026, 12, 1, 23, 59, tzinfo=UTC))  # Shanghai 07:59
    await world.digests.run()
    assert world.dms("li") == []
    world.at(datetime(2026, 12, 2, 0, 0, tzinfo=UTC))  # Shanghai 08:00
    await world.digests.run()
    assert len(world.dms("li")) == 1 and len(world.dms("nina")) == 1
    li = world.dms("li")[0]
    assert "swapped the disk on db-3" in li and "nginx" not in li
    assert "2026年12月1日 20:30 UTC+8" in li  # in her language's format and her zone


async def test_a_digest_lists_only_new_records_the_subscriber_may_see(world: World) -> None:
    await world.say("li", "digest daily")
    world.at(TUESDAY_NOON + timedelta(hours=1))
    hidden = await world.add("bob", "bob's private note about the vpn")
    shared = await world.add("bob", "bob's runbook for the failover")
    await world.say("bob", f"share {shared} @li")
    await world.add("li", "li upgraded postgres")
    await world.add("ada", "ada's admin-only record")
    world.at(datetime(2026, 12, 2, 0, 0, tzinfo=UTC))
    await world.digests.run()
    [digest] = [m for m in world.dms("li") if "digest daily|weekly|off" in m]  # not bob's share message
    assert f"#{shared}" in digest and "failover" in digest and "li upgraded postgres" in digest
    assert f"#{hidden}" not in digest and "vpn" not in digest and "admin-only" not in digest


async def test_a_filtered_digest_of_many_records_shows_twenty_and_the_command_for_the_rest(world: World) -> None:
    await world.say("nina", "digest daily #deploy @nina")
    world.at(TUESDAY_NOON + timedelta(minutes=1))
    for i in range(25):
        await world.add("nina", f"deploy step {i} #deploy")
    await world.add("nina", "unrelated #other")
    world.at(datetime(2026, 12, 1, 13, 0, tzinfo=UTC))
    await world.digests.run()
    [digest] = world.dms("nina")
    assert "25 new records" in digest and "deploy step 24" in digest and "deploy step 5" in digest
    assert "deploy step 4 " not in digest and "unrelated" not in digest
    assert "`/rec list #deploy @nina since:2026-12-01`" in digest


async def test_no_new_records_means_no_direct_message(world: World) -> None:
    await world.say("nina", "digest daily")
    world.at(datetime(2026, 12, 1, 13, 0, tzinfo=UTC))
    await world.digests.run()
    world.at(datetime(2026, 12, 2, 13, 0, tzinfo=UTC))
    await world.digests.run()
    assert world.dms("nina") == []


async def test_a_weekly_digest_comes_on_monday_only(world: World) -> None:
    await world.say("nina", "digest weekly")
    world.at(TUESDAY_NOON + timedelta(minutes=5))
    await world.add("nina", "patched the kernel on web-01")
    for day in range(1, 6):  # Wednesday to Sunday, 08:00 in New York
        world.at(datetime(2026, 12, 1 + day, 13, 0, tzinfo=UTC))
        await world.digests.run()
        assert world.dms("nina") == [], day
    world.at(datetime(2026, 12, 7, 13, 0, tzinfo=UTC))  # Monday
    await world.digests.run()
    [digest] = world.dms("nina")
    assert "weekly" in digest and "patched the kernel" in digest


async def test_unsubscribing_stops_the_digests(world: World) -> None:
    await world.say("nina", "digest daily")
    world.at(TUESDAY_NOON + timedelta(minutes=5))
    await world.add("nina", "first record")
    world.at(datetime(2026, 12, 1, 13, 0, tzinfo=UTC))
    await world.digests.run()
    assert len(world.dms("nina")) == 1
    assert "stopped" in await world.say("nina", "digest off")
    world.at(datetime(2026, 12, 1, 14, 0, tzinfo=UTC))
    await world.add("nina", "second record")
    world.at(datetime(2026, 12, 2, 13, 0, tzinfo=UTC))
    await world.digests.run()
    assert len(world.dms("nina")) == 1
    assert "no digest" in await world.say("nina", "digest off")


async def test_digest_with_no_argument_shows_the_subscription_and_a_new_one_replaces_it(world: World) -> None:
    assert "You have no digest" in await world.say("nina", "digest")
    reply = await world.say("nina", "digest weekly #deploy @bob")
    assert "weekly" in reply and "Mondays at 08:00 (America/New_York)" in reply and "`#deploy @bob`" in reply
    shown = await world.say("nina", "digest")
    assert "weekly" in shown and "`#deploy @bob`" in shown
    await world.say("nina", "digest daily")
    shown = await world.say("nina", "digest")
    assert "daily digest at 08:00 (America/New_York)" in shown and "#deploy" not in shown
    assert len(rows(world.storage, "T_DIGEST")) == 1
    bad = await world.say("nina", "digest hourly")
    assert "not daily, weekly or off" in bad


async def test_a_restarted_bot_sends_no_digest_twice_and_delivers_one_queued_before_a_kill(world: World) -> None:
    await world.say("nina", "digest daily")
    await world.say("li", "digest daily")
    world.at(TUESDAY_NOON + timedelta(minutes=5))
    await world.add("nina", "nina's record")
    await world.add("li", "li's record")
    world.at(datetime(2026, 12, 1, 13, 0, tzinfo=UTC))
    await world.digests.run()
    assert len(world.dms("nina")) == 1
    await world.digests.stop()  # a clean stop gives the lease up
    again = await world.process("p2")
    await again.run()
    world.at(datetime(2026, 12, 1, 13, 1, tzinfo=UTC))
    await again.run()
    assert len(world.dms("nina")) == 1
    # Shanghai's 08:00: li's digest, from p2.
    world.at(datetime(2026, 12, 2, 0, 0, tzinfo=UTC))
    await again.run()
    assert len(world.dms("li")) == 1 and again.queue_due(world.clock()) == 0
    world.at(datetime(2026, 12, 2, 0, 5, tzinfo=UTC))
    await world.add("li", "li's second record")
    # The next day p2 queues li's digest and is killed before posting it (its lease not given up).
    world.at(datetime(2026, 12, 3, 0, 0, tzinfo=UTC))
    assert again.store.acquire(again.holder, world.clock(), LEASE) is not None
    assert again.queue_due(world.clock()) == 1
    third = await world.process("p3")
    await third.run()
    assert len(world.dms("li")) == 1  # p2's lease still holds
    world.at(datetime(2026, 12, 3, 0, 4, tzinfo=UTC))  # past the lease
    await third.run()
    await third.run()
    assert len(world.dms("li")) == 2 and "li's second record" in world.dms("li")[1]


async def test_two_processes_racing_send_each_digest_once(world: World) -> None:
    for name in ("nina", "li"):
        await world.say(name, "digest daily")
    world.at(TUESDAY_NOON + timedelta(minutes=5))
    await world.add("nina", "nina's record")
    await world.add("li", "li's record")
    other = await world.process("p2")
    world.at(datetime(2026, 12, 1, 13, 0, tzinfo=UTC))
    await asyncio.gather(world.digests.run(), other.run())
    assert len(world.dms("nina")) == 1
    # Even two processes that both compute the same digest (a lease lost mid-round) queue it once.
    world.at(datetime(2026, 12, 2, 0, 0, tzinfo=UTC))
    loop = asyncio.get_running_loop()
    queued = await asyncio.gather(*(loop.run_in_executor(None, d.queue_due, world.clock())
                                    for d in (world.digests, other)))
    assert sorted(queued) == [0, 1]
    await asyncio.gather(world.digests.run(), other.run())
    await asyncio.gather(world.digests.run(), other.run())
    assert len(world.dms("li")) == 1 and len(world.dms("nina")) == 1
    assert len(rows(world.storage, "T_OUTBOX", kind="digest")) == 2
