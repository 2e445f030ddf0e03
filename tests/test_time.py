"""Times in each user's own zone: record times shown in it, since:/until: read as days of it, taken
from the Mattermost profile (refreshed every few minutes), else the config's `timezone`; stored
times stay UTC. On SQLite and MariaDB, with the fake Mattermost through the real client."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.commands import dispatcher
from bot.config import Config, ConfigError, MattermostConfig, load_config
from bot.context import Services
from bot.i18n import speaking
from bot.mattermost.gateway import Gateway
from bot.mattermost.slash import SlashRequest
from bot.render import when
from bot.storage import Storage
from tests.fakes.mattermost import FakeMattermost
from tests.fakes.mattermost.seed import seed


def zone_of(manual: str = "", automatic: str = "") -> dict:
    """A Mattermost profile's timezone object (the strings the server keeps)."""
    return {"useAutomaticTimezone": "true" if automatic else "false", "automaticTimezone": automatic,
            "manualTimezone": manual}


@dataclass
class Team:
    fake: FakeMattermost
    services: Services
    users: dict
    now: list[datetime]

    async def rec(self, name: str, text: str) -> str:
        user = self.users[name]
        request = SlashRequest(user_id=user["id"], user_name=name, text=text)
        result = await asyncio.get_running_loop().run_in_executor(None, dispatcher().handle, self.services, request)
        return result.reply.text


@pytest.fixture
async def team(storage: Storage) -> AsyncIterator[Team]:
    fake = FakeMattermost()
    base = await fake.start()
    seeded = seed(fake, people=("li", "ny", "ada"), channels={"town-square": ("li", "ny", "ada", "recbot")})
    fake.users[seeded.users["li"]["id"]]["timezone"] = zone_of(manual="Asia/Shanghai")
    fake.users[seeded.users["ny"]["id"]]["timezone"] = zone_of(automatic="America/New_York")
    config = Config(mattermost=MattermostConfig(url=base, bot_token=seeded.bot["token"], team="ops"),
                    admins=("ada",))
    gateway = Gateway(config)
    await gateway.start()
    now = [datetime(2026, 12, 1, 23, 30)]  # stored times are naive UTC
    storage.clock = lambda: now[0]
    try:
        yield Team(fake, Services(storage, config, gateway), seeded.users, now)
    finally:
        await gateway.close()
        await fake.stop()


async def test_a_record_added_at_2330_utc_is_0730_the_next_day_in_shanghai_and_found_by_that_day(
        team: Team) -> None:
    added = await team.rec("li", "add swapped the disk on db-3 #disk")
    rid = re.search(r"#(\d+)", added).group(1)  # type: ignore[union-attr]
    found = await team.rec("li", "find swapped since:2026-12-02")
    assert f"#{rid}" in found and "Dec 2, 2026 07:30 UTC+8" in found
    assert "No matches" in await team.rec("li", "find swapped until:2026-12-01")
    shown = await team.rec("li", f"show {rid}")
    assert "Dec 2, 2026 07:30 UTC+8" in shown


async def test_new_york_sees_the_same_record_on_its_own_date(team: Team) -> None:
    added = await team.rec("li", "add rotated the certificates #tls")
    rid = re.search(r"#(\d+)", added).group(1)  # type: ignore[union-attr]
    await team.rec("li", f"share {rid} @ny")
    shown = await team.rec("ny", f"show {rid}")
    assert "Dec 1, 2026 18:30 UTC-5" in shown
    assert f"#{rid}" in await team.rec("ny", "find rotated since:2026-12-01 until:2026-12-01")
    assert "No matches" in await team.rec("ny", "find rotated since:2026-12-02")


async def test_a_changed_zone_in_mattermost_shows_within_the_refresh_time(team: Team) -> None:
    added = await team.rec("li", "add moved the backups")
    rid = re.search(r"#(\d+)", added).group(1)  # type: ignore[union-attr]
    team.fake.users[team.users["li"]["id"]]["timezone"] = zone_of(manual="Europe/London")
    team.now[0] += timedelta(minutes=2)  # still inside the 5 minutes recbot keeps a profile
    assert "UTC+8" in await team.rec("li", f"show {rid}")
    team.now[0] += timedelta(minutes=4)
    assert "Dec 1, 2026 23:30 UTC" in await team.rec("li", f"show {rid}")


async def test_without_a_zone_in_the_profile_the_config_timezone_answers(team: Team) -> None:
    team.services.config = replace(team.services.config, timezone="Asia/Tokyo")
    team.fake.users[team.users["ada"]["id"]]["timezone"] = zone_of()
    added = await team.rec("ada", "add checked the UPS")
    rid = re.search(r"#(\d+)", added).group(1)  # type: ignore[union-attr]
    assert "Dec 2, 2026 08:30 UTC+9" in await team.rec("ada", f"show {rid}")


def test_when_shows_offsets_of_any_size_and_season() -> None:
    at = datetime(2026, 7, 1, 12, 0)
    assert when(at) == "Jul 1, 2026 12:00 UTC"
    assert when(at, ZoneInfo("Asia/Kolkata")) == "Jul 1, 2026 17:30 UTC+5:30"
    assert when(at, ZoneInfo("America/New_York")) == "Jul 1, 2026 08:00 UTC-4"  # daylight saving
    assert when(datetime(2026, 1, 1, 12, 0), ZoneInfo("America/New_York")) == "Jan 1, 2026 07:00 UTC-5"
    with speaking("zh-CN"):  # the date as the language writes it (Babel's CLDR data)
        assert when(at, ZoneInfo("Asia/Shanghai")) == "2026年7月1日 20:00 UTC+8"


@pytest.mark.parametrize("key, value", [("REC_TIMEZONE", "Mars/Olympus"), ("REC_TIMEZONE", "../../etc/passwd"),
                                        ("REC_ALERTS__TIMEZONE", "Nowhere/Special")])
def test_a_zone_that_does_not_exist_is_refused_at_start(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key[4:].lower().replace("__", ".")):
        load_config(None, environ={key: value})


async def test_mattermost_failing_to_give_the_profile_slows_no_more_than_one_command(team: Team) -> None:
    li = team.users["li"]["id"]
    team.fake.set_failure(f"/api/v4/users/{li}", 503, count=100)
    assert "Saved record" in await team.rec("li", "add during the outage")
    asked = len([r for r in team.fake.requests if r[1] == f"/api/v4/users/{li}"])
    assert asked >= 1  # the driver itself retries a GET on 503 until recbot stops waiting (2 s)
    await team.rec("li", "list")  # within the 5 minutes: not asked again
    assert len([r for r in team.fake.requests if r[1] == f"/api/v4/users/{li}"]) == asked
