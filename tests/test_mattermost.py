"""End to end: the bot's real server and the real mattermostautodriver client against the stateful fake
Mattermost, over real sockets, on SQLite and MariaDB."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.app import COMMAND_TOKEN_SETTING, build_app
from bot.config import Config, MattermostConfig, ServerConfig
from bot.context import Services
from bot.mattermost.gateway import Gateway
from bot.storage import Filter, Storage
from tests.botserver import free_port
from tests.fakes.mattermost import FakeMattermost
from tests.fakes.mattermost.seed import seed
from tests.helpers import insert_rows, rows

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class World:
    fake: FakeMattermost
    storage: Storage
    config: Config
    bot: dict
    team: dict
    town: dict
    alerts: dict
    users: dict[str, dict]
    runner: web.AppRunner | None = None
    services: Services | None = None

    async def start_bot(self, config: Config | None = None) -> None:
        config = config or self.config
        self.services = Services(self.storage, config, Gateway(config))
        self.runner = web.AppRunner(build_app(self.services))
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", config.server.port).start()

    async def stop_bot(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def ready(self) -> None:
        """Until the bot has registered /rec and its WebSocket is authenticated."""
        for _ in range(500):
            if self.services and self.services.gateway.connected.is_set() and any(
                    c["trigger"] == "rec" and c["url"].startswith(self.config.server.public_url)
                    for c in self.fake.commands.values()):
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the bot did not connect and register within 10 s")

    async def rec(self, user: str, text: str, channel: dict | None = None) -> tuple[int, dict, str]:
        """Run /rec as a user through the fake's commands/execute; return (status, body, reply seen)."""
        before = len(self.fake.posts)
        status, body = await self.fake.execute(self.users[user]["id"], (channel or self.town)["id"], f"/rec {text}")
        seen = [p["message"] for p in self.fake.posts[before:]
                if p.get("ephemeral") and p["user_id"] == self.users[user]["id"]]
        return status, body, "\n".join(seen)


@pytest.fixture
async def world(storage: Storage) -> AsyncIterator[World]:
    fake = FakeMattermost()
    base = await fake.start()
    seeded = seed(fake, people=("alice", "bob", "carol"),
                  channels={"town-square": ("alice", "bob", "carol", "recbot"), "ops-alerts": ("recbot",)})
    bot, team, users = seeded.bot, seeded.team, seeded.users
    town, alerts = seeded.channels["town-square"], seeded.channels["ops-alerts"]
    port = free_port()
    config = Config(server=ServerConfig(port=port, public_url=f"http://127.0.0.1:{port}"),
                    mattermost=MattermostConfig(url=base, bot_token=bot["token"], team="ops"), admins=("alice",))
    w = World(fake, storage, config, bot, team, town, alerts, users)
    await w.start_bot()
    await w.ready()
    yield w
    await w.stop_bot()
    await fake.stop()


async def test_a_user_adds_a_record_through_commands_execute_and_sees_the_ephemeral_reply(world: World) -> None:
    status, _, seen = await world.rec("bob", "add restarted nginx on web-01 #deploy")
    assert status == 200
    assert re.fullmatch(r"Saved record \*\*#\d+\*\*\. Tags: `#deploy`\.", seen)
    bob = world.storage.users_by_username(["bob"])["bob"]
    assert bob.mm_user_id == world.users["bob"]["id"]
    assert [r.body for r in world.storage.find(bob, Filter(), limit=5).records] == ["restarted nginx on web-01 #deploy"]
    request = world.fake.slash_requests[-1]
    assert request["headers"]["Authorization"] == "Token " + world.storage.settings()[COMMAND_TOKEN_SETTING]


async def test_an_admin_grant_then_find_shows_the_owners_records(world: World) -> None:
    await world.rec("carol", "add rotated certificates on lb-02")
    _, _, before = await world.rec("bob", "find certificates")
    assert before.startswith("No matches")
    _, _, granted = await world.rec("alice", "admin grant @bob @carol")
    assert "may now see every record of carol" in granted
    _, _, after = await world.rec("bob", "find certificates")
    assert "rotated certificates on lb-02" in after


async def test_share_to_a_user_sends_them_a_direct_message_from_the_bot_without_pings(world: World) -> None:
    _, _, added = await world.rec("bob", "add paged @channel about the outage")
    rid = re.search(r"#(\d+)", added).group(1)
    _, _, shared = await world.rec("bob", f"share {rid} @carol")
    assert "They got a direct message" in shared
    dm = world.fake.direct_channel(world.bot["id"], world.users["carol"]["id"])
    assert dm is not None
    post = await world.fake.wait_for_post(lambda p: p["channel_id"] == dm["id"] and not p.get("ephemeral"))
    assert post["user_id"] == world.bot["id"]
    assert "paged @\u200bchannel about the outage" in post["message"]
    _, _, shown = await world.rec("carol", f"show {rid}")
    assert "paged" in shown


async def test_share_into_a_channel_the_caller_is_not_in_is_refused_by_mattermost(world: World) -> None:
    backstage = world.fake.add_channel(world.team, "backstage")  # public, but bob is not in it
    world.fake.add_member(backstage, world.users["alice"])
    _, _, added = await world.rec("bob", "add bob's finding")
    rid = re.search(r"#(\d+)", added).group(1)
    status, body, _ = await world.rec("bob", f"share {rid} ~backstage")
    assert status != 200, body
    assert not [p for p in world.fake.posts if p["channel_id"] == backstage["id"]]
    # Mattermost does not resolve private channels in mentions, so the bot says what to do instead.
    secret = world.fake.add_channel(world.team, "secret", type="P")
    world.fake.add_member(secret, world.users["bob"])
    status, _, seen = await world.rec("bob", f"share {rid} ~secret")
    assert status == 200 and "~secret is not a channel Mattermost recognised" in seen
    # A channel the caller is in takes the post, authored by the caller as Mattermost does it.
    status, _, _ = await world.rec("bob", f"share {rid} ~town-square")
    assert status == 200
    post = await world.fake.wait_for_post(lambda p: p["channel_id"] == world.town["id"] and "shared a record" in
                                          p["message"] and not p.get("ephemeral"))
    assert post["user_id"] == world.users["bob"]["id"]


async def test_a_restart_does_not_create_a_second_command(world: World) -> None:
    token = world.storage.settings()[COMMAND_TOKEN_SETTING]
    await world.stop_bot()
    await world.start_bot()
    await world.ready()
    assert len([c for c in world.fake.commands.values() if c["trigger"] == "rec"]) == 1
    assert world.storage.settings()[COMMAND_TOKEN_SETTING] == token
    status, _, seen = await world.rec("bob", "add after restart")
    assert status == 200 and seen.startswith("Saved record")


async def test_a_changed_public_url_updates_the_command_instead_of_adding_one(world: World) -> None:
    await world.stop_bot()
    port = free_port()
    moved = Config(server=ServerConfig(port=port, public_url=f"http://127.0.0.1:{port}"),
                   mattermost=world.config.mattermost, admins=world.config.admins)
    world.config = moved
    await world.start_bot(moved)
    await world.ready()
    commands = [c for c in world.fake.commands.values() if c["trigger"] == "rec"]
    assert len(commands) == 1 and commands[0]["url"] == f"http://127.0.0.1:{port}/mattermost/command"
    status, _, seen = await world.rec("bob", "help")
    assert status == 200 and "/rec add" in seen


async def test_the_registered_command_is_described_in_the_configs_language(world: World) -> None:
    [english] = [c for c in world.fake.commands.values() if c["trigger"] == "rec"]
    assert english["auto_complete_desc"] == "Record, find and share operation records"
    assert not re.search(r"[\u4e00-\u9fff]", english["auto_complete_desc"] + english["auto_complete_hint"])
    await world.stop_bot()
    chinese = replace(world.config, language="zh-CN")
    await world.start_bot(chinese)
    await world.ready()
    [command] = [c for c in world.fake.commands.values() if c["trigger"] == "rec"]
    assert re.search(r"[\u4e00-\u9fff]", command["auto_complete_desc"]), command["auto_complete_desc"]
    assert command["description"] == command["auto_complete_desc"] and command["token"] == english["token"]
    assert "share" in command["auto_complete_hint"]  # the subcommands themselves are not translated


async def test_a_direct_message_with_a_file_becomes_a_record_with_that_file(world: World) -> None:
    bob = world.users["bob"]
    dm = world.fake._get_or_create_dm(bob["id"], world.bot["id"])
    info = world.fake.add_file(bob, dm["id"], "df-web01.txt", b"/dev/sda1 95% /var\n")
    await world.fake.user_posts_dm(bob, world.bot, "disk nearly full on web-01 #disk", file_ids=[info["id"]])
    reply = await world.fake.wait_for_post(lambda p: p["channel_id"] == dm["id"] and p["user_id"] == world.bot["id"])
    assert "Saved record" in reply["message"] and "with 1 file" in reply["message"]
    rid = int(re.search(r"#(\d+)", reply["message"]).group(1))
    files = rows(world.storage, "T_FILE", record_id=rid)
    assert [(f.mm_file_id, f.name) for f in files] == [(info["id"], "df-web01.txt")]
    _, _, shown = await world.rec("bob", f"show {rid}")
    assert f"[df-web01.txt]({world.fake.base_url}/api/v4/files/{info['id']})" in shown
    # The bot's own reply came back over the WebSocket too, and was not taken for a record.
    assert len(world.storage.find(world.storage.users_by_username(["bob"])["bob"], Filter(), limit=10).records) == 1


async def test_a_chinese_users_direct_messages_are_answered_in_chinese(world: World) -> None:
    bob = world.users["bob"]
    world.fake.users[bob["id"]]["locale"] = "zh-CN"
    dm = world.fake._get_or_create_dm(bob["id"], world.bot["id"])

    async def answer_to(text: str) -> str:
        before = len(world.fake.posts)
        await world.fake.user_posts_dm(bob, world.bot, text)
        reply = await world.fake.wait_for_post(lambda p: p["channel_id"] == dm["id"] and p["user_id"] == world.bot["id"]
                                               and world.fake.posts.index(p) >= before)
        return str(reply["message"])

    assert re.fullmatch(r"已保存记录 \*\*#\d+\*\*。用 `/rec show \d+` 查看。", await answer_to("换了 web-01 的硬盘"))
    assert (await answer_to("help")).startswith("给我发消息")
    refused = await answer_to("标签太多 " + " ".join(f"#t{i}" for i in range(60)))
    assert refused.startswith("未保存：") and "60" in refused


async def test_a_dropped_websocket_reconnects_and_the_next_direct_message_still_arrives(world: World) -> None:
    before = world.fake.ws_authentications
    assert await world.fake.drop_websockets() >= 1
    for _ in range(300):
        if world.fake.ws_authentications > before and world.fake.open_websockets:
            break
        await asyncio.sleep(0.05)
    assert world.fake.ws_authentications > before
    await world.fake.user_posts_dm(world.users["carol"], world.bot, "after the drop")
    dm = world.fake.direct_channel(world.users["carol"]["id"], world.bot["id"])
    reply = await world.fake.wait_for_post(lambda p: p["channel_id"] == dm["id"] and p["user_id"] == world.bot["id"],
                                           timeout=10)
    assert "Saved record" in reply["message"]


async def test_an_unknown_user_named_without_a_mention_is_looked_up_in_mattermost(world: World) -> None:
    world.fake.add_user("dave")  # known to Mattermost, never used /rec
    _, _, added = await world.rec("bob", "add for dave")
    rid = re.search(r"#(\d+)", added).group(1)
    bob = world.storage.users_by_username(["bob"])["bob"]
    services = world.services
    from bot.commands import dispatcher
    from bot.mattermost.slash import SlashRequest

    loop = asyncio.get_running_loop()

    async def as_bob(text: str) -> str:
        request = SlashRequest(user_id=bob.mm_user_id, user_name="bob", text=text)
        result = await loop.run_in_executor(None, dispatcher().handle, services, request)
        return result.reply.text

    assert "Shared record" in await as_bob(f"share {rid} @dave")
    assert "@zed is not a Mattermost user" in await as_bob(f"share {rid} @zed")


async def test_without_permission_to_register_the_bot_still_serves_its_configured_token(storage: Storage) -> None:
    fake = FakeMattermost()
    base = await fake.start()
    seeded = seed(fake, people=("bob",), channels={"town-square": ("bob",)}, bot_manages_commands=False)
    bot, team, town, bob = seeded.bot, seeded.team, seeded.channels["town-square"], seeded.users["bob"]
    port = free_port()
    hand_made = fake.add_command(team, "rec", f"http://127.0.0.1:{port}/mattermost/command", creator=bob)
    config = Config(server=ServerConfig(port=port, public_url=f"http://127.0.0.1:{port}"),
                    mattermost=MattermostConfig(url=base, bot_token=bot["token"], team="ops",
                                                slash_tokens=(hand_made["token"],)))
    w = World(fake, storage, config, bot, team, town, {}, {"bob": bob})
    await w.start_bot()
    try:
        for _ in range(200):
            if w.services.gateway.connected.is_set():
                break
            await asyncio.sleep(0.02)
        assert len(fake.commands) == 1
        status, _, seen = await w.rec("bob", "add works with the hand-made command")
        assert status == 200 and seen.startswith("Saved record")
    finally:
        await w.stop_bot()
        await fake.stop()


def run_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bot", "check"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), **env})


async def test_check_reports_each_mattermost_part(world: World, db_url: str) -> None:
    env = {"REC_DATABASE__URL": db_url, "REC_MATTERMOST__URL": world.fake.base_url,
           "REC_MATTERMOST__BOT_TOKEN": world.bot["token"], "REC_MATTERMOST__TEAM": "ops",
           "REC_SERVER__PUBLIC_URL": world.config.server.public_url, "REC_ALERTS__CHANNEL": "ops-alerts"}
    done = await asyncio.get_running_loop().run_in_executor(None, run_check, env)
    lines = {line.split("  ")[0]: line for line in done.stdout.splitlines()}
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bot @recbot" in lines["mattermost"]
    assert "ok" in lines["alert channel"] and "registered" in lines["command"]
    world.fake.channel_members[world.alerts["id"]].discard(world.bot["id"])
    done = await asyncio.get_running_loop().run_in_executor(None, run_check, env)
    assert done.returncode == 1
    assert "not a member of ~ops-alerts: add @recbot" in done.stdout


async def test_mattermost_down_at_start_slash_commands_still_work_and_check_says_why(storage: Storage,
                                                                                    db_url: str) -> None:
    from tests.botserver import SlashClient

    dead = f"http://127.0.0.1:{free_port()}"
    port = free_port()
    config = Config(server=ServerConfig(port=port, public_url=f"http://127.0.0.1:{port}"),
                    mattermost=MattermostConfig(url=dead, bot_token="tok", team="ops", slash_tokens=("hand",)))
    services = Services(storage, config, Gateway(config))
    runner = web.AppRunner(build_app(services))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        client = SlashClient(f"http://127.0.0.1:{port}", "hand")
        status, body = await asyncio.get_running_loop().run_in_executor(None, client.send, "bob", "add still here")
        assert status == 200 and body["text"].startswith("Saved record")
    finally:
        await runner.cleanup()
    env = {"REC_DATABASE__URL": db_url, "REC_MATTERMOST__URL": dead, "REC_MATTERMOST__BOT_TOKEN": "tok",
           "REC_MATTERMOST__TEAM": "ops"}
    done = await asyncio.get_running_loop().run_in_executor(None, run_check, env)
    assert done.returncode == 1
    line = next(x for x in done.stdout.splitlines() if x.startswith("mattermost"))
    assert "FAIL" in line and "cannot log in" in line and "REC_MATTERMOST__BOT_TOKEN" in line
    assert "Traceback" not in done.stdout + done.stderr


async def test_status_sends_the_admin_a_chart_in_a_direct_message(world: World) -> None:
    from bot.alerts.service import Alerts

    world.services.alerts = Alerts(world.storage, world.config, world.services.gateway)
    status, _, seen = await world.rec("alice", "admin status")
    assert status == 200
    assert "**Host status**" in seen and "every watched path is ok" in seen
    assert "The chart is in your direct messages" in seen
    dm = world.fake.direct_channel(world.bot["id"], world.users["alice"]["id"])
    post = await world.fake.wait_for_post(lambda p: p["channel_id"] == dm["id"] and p.get("file_ids"))
    assert world.fake.file_contents[post["file_ids"][0]].startswith(b"\x89PNG")


async def test_check_says_when_the_bot_may_not_manage_commands(storage: Storage, db_url: str) -> None:
    fake = FakeMattermost()
    base = await fake.start()
    seeded = seed(fake, bot_manages_commands=False)
    bot = seeded.bot
    fake.add_team_member(seeded.team, bot)
    env = {"REC_DATABASE__URL": db_url, "REC_MATTERMOST__URL": base, "REC_MATTERMOST__BOT_TOKEN": bot["token"],
           "REC_MATTERMOST__TEAM": "ops", "REC_SERVER__PUBLIC_URL": "http://127.0.0.1:1"}
    try:
        done = await asyncio.get_running_loop().run_in_executor(None, run_check, env)
    finally:
        await fake.stop()
    line = next(x for x in done.stdout.splitlines() if x.startswith("command"))
    assert done.returncode == 1, done.stdout
    assert "FAIL" in line and "may not manage slash commands in team ops: give @recbot that permission" in line


# ---- identity: a username is a cache, the Mattermost id is the user ----------------------------------

def grants_of(world: World, name_holder_id: str) -> list[str]:
    """The owners (by Mattermost id) whose records the account with this id may see by grant."""
    viewer = world.storage.user_by_mm_id(name_holder_id)
    if viewer is None:
        return []
    admin = world.storage.user_by_mm_id(world.users["alice"]["id"])
    assert admin is not None
    sees, _ = world.storage.perms(admin, viewer.id)
    return [u.mm_user_id for u in sees]


async def test_a_name_taken_over_by_a_new_account_reaches_the_new_account_not_the_renamed_one(world: World) -> None:
    dave = world.fake.add_user("dave")
    world.fake.add_member(world.town, dave)
    world.users["dave"] = dave
    await world.rec("dave", "help")  # recbot now has dave's id under the name "dave"
    await world.rec("alice", "add alice's private runbook")
    world.fake.rename_user(dave, "david")  # renamed in Mattermost; he has not used /rec since
    newcomer = world.fake.add_user("dave")
    world.fake.add_member(world.town, newcomer)
    _, _, granted = await world.rec("alice", "admin grant @dave @alice")
    assert "may now see every record of alice" in granted
    assert grants_of(world, newcomer["id"]) == [world.users["alice"]["id"]]
    assert grants_of(world, dave["id"]) == []
    _, _, added = await world.rec("alice", "add a note for the new dave")
    rid = re.search(r"#(\d+)", added).group(1)
    await world.rec("alice", f"share {rid} @dave")
    dm_new = world.fake.direct_channel(world.bot["id"], newcomer["id"])
    assert dm_new is not None and world.fake.direct_channel(world.bot["id"], dave["id"]) is None


async def test_a_name_typed_without_a_mention_is_looked_up_afresh(world: World) -> None:
    from bot.commands import dispatcher
    from bot.mattermost.slash import SlashRequest

    erin = world.fake.add_user("erin")
    await world.rec("alice", "help")
    services = world.services
    assert services is not None
    loop = asyncio.get_running_loop()

    def grant_erin() -> str:
        request = SlashRequest(user_id=world.users["alice"]["id"], user_name="alice", text="admin grant @erin @alice")
        return dispatcher().handle(services, request).reply.text

    assert "may now see" in await loop.run_in_executor(None, grant_erin)
    world.fake.rename_user(erin, "erin-old")
    frank = world.fake.add_user("erin")  # the name moves to another account: the next lookup must see it
    assert "may now see" in await loop.run_in_executor(None, grant_erin)
    assert grants_of(world, frank["id"]) == [world.users["alice"]["id"]]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(moves=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["dan", "eve", "fay", "gus", "hal"])),
                      min_size=1, max_size=5))
async def test_usernames_moving_between_accounts_always_resolve_to_the_current_holder(world: World,
                                                                                      moves: list) -> None:
    accounts = [world.fake.find_user(n) or world.fake.add_user(n) for n in ("acct-a", "acct-b", "acct-c")]
    for account in accounts:
        world.fake.add_member(world.town, account)
    for index, name in moves:
        holder = world.fake.find_user(name)
        if holder is not None and holder["id"] != accounts[index]["id"]:
            world.fake.rename_user(holder, f"spare-{holder['id'][:8]}")
        world.fake.rename_user(accounts[index], name)
        # The account uses /rec under its new name now and then, leaving stale names behind in recbot.
        world.users[name] = world.fake.users[accounts[index]["id"]]
        await world.rec(name, "help")
    for account in accounts:
        current = world.fake.users[account["id"]]
        name = current["username"]
        _, _, reply = await world.rec("alice", f"admin grant @{name} @bob")
        assert "may now see" in reply
        assert world.users["bob"]["id"] in grants_of(world, current["id"])
        await world.rec("alice", f"admin revoke @{name} @bob")
        for other in accounts:
            assert world.users["bob"]["id"] not in grants_of(world, other["id"])


async def test_config_admins_apply_at_registration_and_a_demotion_sticks(world: World) -> None:
    # alice is listed in config admins and became admin when she first used /rec (in the fixture).
    await world.rec("alice", "help")
    await world.rec("bob", "help")
    _, _, promoted = await world.rec("alice", "admin role @bob admin")
    assert "is now **admin**" in promoted
    _, _, demoted = await world.rec("bob", "admin role @alice member")
    assert "is now **member**" in demoted
    _, _, after = await world.rec("alice", "admin users")
    assert "is for recbot admins" in after  # not re-promoted by her listed name
    alice = world.storage.user_by_mm_id(world.users["alice"]["id"])
    assert alice is not None and alice.role == "member"
    # The listed name moves to a new account: the newcomer is a plain member.
    world.fake.rename_user(world.users["alice"], "alice-away")
    impostor = world.fake.add_user("alice")
    world.fake.add_member(world.town, impostor)
    world.users["alice-new"] = impostor
    _, _, tried = await world.rec("alice-new", "admin users")
    assert "is for recbot admins" in tried
    newcomer = world.storage.user_by_mm_id(impostor["id"])
    assert newcomer is not None and newcomer.role == "member"


async def test_a_share_dm_of_a_record_with_thousands_of_tags_fits_mattermosts_limit(world: World) -> None:
    await world.rec("bob", "help")
    bob = world.storage.user_by_mm_id(world.users["bob"]["id"])
    assert bob is not None
    rid = world.storage.add_record(bob, "a record from before the tag cap " + "body " * 2000)
    insert_rows(world.storage, "T_TAG", [{"record_id": rid, "tag": f"t{i:04d}-" + "y" * 50} for i in range(3000)])
    _, _, shared = await world.rec("bob", f"share {rid} @carol")
    assert "They got a direct message" in shared
    dm = world.fake.direct_channel(world.bot["id"], world.users["carol"]["id"])
    assert dm is not None
    post = await world.fake.wait_for_post(lambda p: p["channel_id"] == dm["id"] and not p.get("ephemeral"))
    assert len(post["message"]) <= 16_383


async def test_a_direct_message_takes_the_same_way_as_a_command_and_shows_in_metrics(world: World) -> None:
    from tests.botserver import get

    await world.rec("alice", "help")  # the listed admin registers
    dm = world.fake._get_or_create_dm(world.users["carol"]["id"], world.bot["id"])
    await world.fake.user_posts_dm(world.users["carol"], world.bot, "rotated the logs on web-02")
    reply = await world.fake.wait_for_post(lambda p: p["channel_id"] == dm["id"] and p["user_id"] == world.bot["id"])
    assert reply["message"].startswith("Saved record")
    # A disabled account is refused by the same role gate as its slash commands.
    carol = world.storage.user_by_mm_id(world.users["carol"]["id"])
    alice = world.storage.user_by_mm_id(world.users["alice"]["id"])
    assert carol is not None and alice is not None
    world.storage.set_role(alice, carol.id, "disabled")
    await world.fake.user_posts_dm(world.users["carol"], world.bot, "should not be kept")
    refused = await world.fake.wait_for_post(lambda p: p["channel_id"] == dm["id"] and p["user_id"] == world.bot["id"]
                                             and "disabled" in p["message"])
    assert refused["message"].startswith("Not saved: your recbot account is disabled")
    _, metrics = await asyncio.get_running_loop().run_in_executor(
        None, get, world.config.server.public_url + "/metrics")
    assert 'recbot_commands_total{command="direct message",outcome="ok"} 1' in metrics
    assert 'recbot_commands_total{command="direct message",outcome="user_error"} 1' in metrics
