"""`/rec add` with no text opens a Mattermost interactive dialog; its submission is saved as the submitter.
End to end on SQLite and MariaDB: the bot's real server and client against the fake Mattermost, which
issues trigger ids, opens dialogs and submits them as the server and the webapp do."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import MultiDict

from bot.commands import dispatcher
from bot.config import Config, MattermostConfig, ServerConfig
from bot.context import Services
from bot.mattermost.gateway import Gateway
from bot.mattermost.slash import SlashRequest
from bot.storage import MAX_BODY, Filter, Storage
from tests.botserver import free_port, serve_here, until_connected
from tests.fakes.mattermost import FakeMattermost
from tests.fakes.mattermost.gojson import API
from tests.fakes.mattermost.seed import seed
from tests.helpers import count_rows


@dataclass
class World:
    fake: FakeMattermost
    storage: Storage
    users: dict[str, dict]
    town: dict
    bot: dict
    runner: web.AppRunner

    def id(self, name: str) -> str:
        return self.users[name]["id"]

    async def rec(self, user: str, text: str) -> tuple[int, dict, str]:
        """/rec as a user through commands/execute: (status, body, the ephemeral replies they saw)."""
        before = len(self.fake.posts)
        status, body = await self.fake.execute(self.id(user), self.town["id"], f"/rec {text}")
        seen = [p["message"] for p in self.fake.posts[before:] if p.get("ephemeral") and p["user_id"] == self.id(user)]
        return status, body, "\n".join(seen)

    def records_of(self, name: str) -> list[Any]:
        user = self.storage.users_by_username([name])[name]
        return self.storage.find(user, Filter(), limit=10).records

    def bot_is_system_admin(self) -> None:
        # POST /posts/ephemeral needs create_post_ephemeral, which only system admins hold.
        self.fake.users[self.bot["id"]]["roles"] = "system_user system_admin"


@pytest.fixture
async def world(storage: Storage) -> AsyncIterator[World]:
    fake = FakeMattermost()
    base = await fake.start()
    seeded = seed(fake, people=("alice", "bob"), channels={"town-square": ("alice", "bob", "recbot")})
    port = free_port()
    config = Config(server=ServerConfig(port=port, public_url=f"http://127.0.0.1:{port}"),
                    mattermost=MattermostConfig(url=base, bot_token=seeded.bot["token"], team="ops"))
    services = Services(storage, config, Gateway(config))
    runner = await serve_here(services, port)
    await until_connected(services, lambda: bool(fake.commands))
    yield World(fake, storage, seeded.users, seeded.channels["town-square"], seeded.bot, runner)
    await runner.cleanup()
    await fake.stop()


async def _open(world: World, user: str) -> dict:
    status, body, seen = await world.rec(user, "add")
    assert status == 200, body
    assert seen == "", "the dialog is the answer: no ephemeral line besides it"
    return world.fake.open_dialogs[world.id(user)]


async def test_add_with_no_text_opens_a_dialog_whose_submission_is_saved_as_the_submitter_and_confirmed(
        world: World) -> None:
    world.bot_is_system_admin()
    opened = await _open(world, "bob")
    assert opened["url"].endswith("/mattermost/dialog")
    elements = {e["name"]: e for e in opened["dialog"]["elements"]}
    assert elements["text"]["type"] == "textarea" and not elements["text"]["optional"]
    assert elements["tags"]["type"] == "text" and elements["tags"]["optional"]
    assert world.fake.dialog_problems == []
    answer = await world.fake.submit_dialog(world.id("bob"), {"text": "restarted nginx\n$ nginx -t\nok #ops",
                                                              "tags": "#deploy web-01"})
    assert answer == {}
    [record] = world.records_of("bob")
    assert record.body == "restarted nginx\n$ nginx -t\nok #ops\n#deploy #web-01"
    assert set(record.tags) == {"ops", "deploy", "web-01"}
    confirmation = await world.fake.wait_for_post(lambda p: p.get("ephemeral") and p["user_id"] == world.id("bob")
                                                  and "Saved record" in p["message"])
    assert confirmation["channel_id"] == world.town["id"]
    assert re.search(rf"#{record.id}\*\*", confirmation["message"])
    assert world.id("bob") not in world.fake.open_dialogs  # the dialog closed


async def test_without_the_system_admin_role_the_bot_confirms_by_direct_message(world: World) -> None:
    await _open(world, "bob")
    assert await world.fake.submit_dialog(world.id("bob"), {"text": "rotated keys"}) == {}
    dm = world.fake.direct_channel(world.bot["id"], world.id("bob"))
    assert dm is not None
    post = await world.fake.wait_for_post(lambda p: p["channel_id"] == dm["id"])
    assert "Saved record" in post["message"]
    assert [r.body for r in world.records_of("bob")] == ["rotated keys"]


async def test_a_forged_state_or_another_users_state_is_refused_and_nothing_is_stored(world: World) -> None:
    opened = await _open(world, "bob")
    forged = opened["dialog"]["state"].replace(world.id("bob"), world.id("alice"))
    answer = await world.fake.submit_dialog(world.id("bob"), {"text": "sneaky"}, state=forged)
    assert "not opened by recbot for you" in answer["error"] and "errors" not in answer
    await _open(world, "alice")
    # bob submits alice's genuine state: Mattermost says the submitter is bob, the state says alice
    answer = await world.fake.submit_dialog(world.id("bob"), {"text": "as alice"},
                                            state=world.fake.open_dialogs[world.id("alice")]["dialog"]["state"])
    assert "not opened by recbot for you" in answer["error"]
    assert count_rows(world.storage, "T_CONTENT") == (0,)


async def test_a_state_older_than_an_hour_is_refused_and_nothing_is_stored(world: World) -> None:
    await _open(world, "bob")
    real = world.storage.clock
    world.storage.clock = lambda: real() + timedelta(minutes=61)
    answer = await world.fake.submit_dialog(world.id("bob"), {"text": "late"})
    assert "more than an hour ago" in answer["error"]
    assert count_rows(world.storage, "T_CONTENT") == (0,)


async def test_empty_and_too_long_text_are_shown_as_errors_on_the_text_field(world: World) -> None:
    await _open(world, "bob")
    blank = await world.fake.submit_dialog(world.id("bob"), {"text": "  \n "})
    assert set(blank["errors"]) == {"text"} and "cannot be empty" in blank["errors"]["text"]
    long = await world.fake.submit_dialog(world.id("bob"), {"text": "x" * (MAX_BODY + 1)})
    assert set(long["errors"]) == {"text"} and "keep it under" in long["errors"]["text"]
    bad_tag = await world.fake.submit_dialog(world.id("bob"), {"text": "fine", "tags": "#ok not!a-tag"})
    assert set(bad_tag["errors"]) == {"tags"}
    assert count_rows(world.storage, "T_CONTENT") == (0,)
    # the dialog stays open and the corrected text goes through
    assert await world.fake.submit_dialog(world.id("bob"), {"text": "fixed it"}) == {}
    assert [r.body for r in world.records_of("bob")] == ["fixed it"]


async def test_an_expired_trigger_id_is_refused_by_mattermost_and_the_bot_says_what_to_type(world: World) -> None:
    world.fake.trigger_timeout = -1.0  # every trigger id is already expired when the bot uses it
    status, _, seen = await world.rec("bob", "add")
    assert status == 200
    assert "Mattermost did not open the dialog" in seen and "`/rec add <text>`" in seen
    assert world.fake.open_dialogs == {}


async def test_mattermost_refuses_a_trigger_id_of_another_user_or_past_its_time(world: World) -> None:
    await _open(world, "bob")
    trigger = dict(world.fake.slash_requests[-1]["form"])["trigger_id"]
    client_id, user_id, millis, signature = base64.b64decode(trigger).decode().split(":")
    assert user_id == world.id("bob")
    alices = base64.b64encode(f"{client_id}:{world.id('alice')}:{millis}:{signature}".encode()).decode()
    body = {"url": "http://127.0.0.1:1/mattermost/dialog", "dialog": {"title": "x", "elements": []}}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{world.fake.base_url}{API}/actions/dialogs/open",
                             json={**body, "trigger_id": alices}) as resp:
            assert resp.status == 400
            assert (await resp.json())["id"] == "interactive_message.decode_trigger_id.verify_signature_failed"
        real = world.fake.clock
        world.fake.clock = lambda: real() + 31
        async with http.post(f"{world.fake.base_url}{API}/actions/dialogs/open",
                             json={**body, "trigger_id": trigger}) as resp:
            assert resp.status == 400
            assert (await resp.json())["id"] == "interactive_message.decode_trigger_id.expired"
    assert world.id("alice") not in world.fake.open_dialogs


async def test_a_cancelled_dialog_stores_nothing_even_when_a_client_sends_the_cancel(world: World) -> None:
    opened = await _open(world, "bob")
    assert await world.fake.submit_dialog(world.id("bob"), {"text": "never mind"}, cancelled=True) is None
    # a client that sends the cancel anyway (notify_on_cancel is off), with a good state and text
    submit = {"url": opened["url"], "callback_id": "rec-add", "state": opened["dialog"]["state"],
              "channel_id": world.town["id"], "team_id": world.town["team_id"],
              "submission": {"text": "never mind"}, "cancelled": True}
    async with aiohttp.ClientSession() as http, http.post(
            f"{world.fake.base_url}{API}/actions/dialogs/submit", json=submit,
            headers={"Authorization": f"Bearer {world.users['bob']['token']}"}) as resp:
        assert resp.status == 200, await resp.text()
        assert await resp.json() == {}
    assert world.fake.dialog_submissions[-1]["cancelled"] is True
    assert count_rows(world.storage, "T_CONTENT") == (0,)


async def test_a_chinese_user_sees_the_dialog_and_its_errors_in_chinese(world: World) -> None:
    world.fake.users[world.id("bob")]["locale"] = "zh-CN"
    opened = await _open(world, "bob")
    dialog = opened["dialog"]
    assert dialog["title"] == "新建记录"
    assert all(re.search(r"[\u4e00-\u9fff]", e["display_name"]) for e in dialog["elements"])
    assert world.fake.dialog_problems == []  # Chinese labels stay within Go's byte limits
    blank = await world.fake.submit_dialog(world.id("bob"), {"text": " "})
    assert re.search(r"[\u4e00-\u9fff]", blank["errors"]["text"])
    forged = await world.fake.submit_dialog(world.id("bob"), {"text": "x"}, state="{}")
    assert re.search(r"[\u4e00-\u9fff]", forged["error"])


def test_without_mattermost_add_with_no_text_still_says_how_to_add_text(storage: Storage) -> None:
    services = Services(storage, Config(server=ServerConfig(public_url="http://127.0.0.1:1")))
    request = SlashRequest.from_fields(MultiDict({"user_id": "u" * 26, "user_name": "zoe", "text": "add",
                                                  "trigger_id": "t", "channel_id": "c" * 26}))
    result = dispatcher().handle(services, request)
    assert "type what you did after the command" in result.reply.text
    assert count_rows(storage, "T_CONTENT") == (0,)
