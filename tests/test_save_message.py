""""Save this message": `@recbot save [#tags] [note]` in a thread and `save <permalink>` in a direct
message, end to end: the bot's real server and client against the fake Mattermost, on SQLite and MariaDB.
Mattermost decides whether the asker may read the message; nobody keeps what they could not see."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from aiohttp import web

from bot.config import Config, MattermostConfig, ServerConfig
from bot.context import Services
from bot.mattermost.gateway import Gateway
from bot.storage import Filter, Record, Storage
from tests.botserver import free_port, serve_here, until_connected
from tests.fakes.mattermost import JSON, FakeMattermost, new_id
from tests.fakes.mattermost.seed import seed
from tests.helpers import rows

WRITTEN_AT = datetime(2026, 3, 4, 5, 6, tzinfo=UTC)  # when the fake's users write, in these tests
SECRET = "the root password of db-01 is hunter2"


@dataclass
class World:
    fake: FakeMattermost
    storage: Storage
    bot: JSON
    users: dict[str, JSON]
    channels: dict[str, JSON]
    runner: web.AppRunner

    def records_of(self, name: str) -> list[Record]:
        user = self.storage.users_by_username([name]).get(name)
        return [] if user is None else list(self.storage.find(user, Filter(), limit=20).records)

    def permalink(self, post: JSON) -> str:
        return f"{self.fake.base_url}/ops/pl/{post['id']}"

    def may_post_ephemeral(self) -> None:
        # Mattermost gives create_post_ephemeral to system admins only.
        self.fake.set_roles(self.bot, "system_user system_admin")

    async def answer_to(self, name: str, *, after: int) -> JSON:
        """The bot's first answer to `name` made after post number `after`: ephemeral, or in their DM."""
        uid = self.users[name]["id"]
        dm = self.fake._get_or_create_dm(uid, self.bot["id"])
        return await self.fake.wait_for_post(
            lambda p: self.fake.posts.index(p) >= after and (
                (p.get("ephemeral") and p["user_id"] == uid)
                or (p["channel_id"] == dm["id"] and p["user_id"] == self.bot["id"])), timeout=10)

    async def dm_bot(self, name: str, text: str) -> str:
        before = len(self.fake.posts)
        await self.fake.user_posts_dm(self.users[name], self.bot, text)
        return str((await self.answer_to(name, after=before))["message"])


@asynccontextmanager
async def running(storage: Storage, bot: str = "recbot") -> AsyncIterator[World]:
    """The bot's real server against the fake, whose bot account is named `bot`."""
    fake = FakeMattermost()
    fake.clock = WRITTEN_AT.timestamp
    base = await fake.start()
    seeded = seed(fake, people=("alice", "bob", "carol", "dave"),
                  channels={"town-square": ("alice", "bob", "carol", "dave", bot),
                            "secret": ("alice", "carol", bot), "backstage": ("alice",),
                            "lobby": ("alice", bot)},
                  private=("secret", "backstage"), bot=bot)
    port = free_port()
    config = Config(server=ServerConfig(port=port, public_url=f"http://127.0.0.1:{port}"),
                    mattermost=MattermostConfig(url=base, bot_token=seeded.bot["token"], team="ops"))
    services = Services(storage, config, Gateway(config))
    runner = await serve_here(services, port)
    try:
        await until_connected(services)
        yield World(fake, storage, seeded.bot, seeded.users, seeded.channels, runner)
    finally:
        await runner.cleanup()
        await fake.stop()


@pytest.fixture
async def world(storage: Storage) -> AsyncIterator[World]:
    async with running(storage) as made:
        yield made


async def alice_writes(world: World, channel: str, text: str, *, files: tuple[str, ...] = ()) -> JSON:
    alice, where = world.users["alice"], world.channels[channel]
    ids = [world.fake.add_file(alice, where, name, b"log line\n")["id"] for name in files]
    return await world.fake.post_as(alice, where, text, file_ids=ids)


async def test_save_in_a_thread_keeps_the_root_as_the_askers_record_with_link_author_time_tags_and_files(
        world: World) -> None:
    world.may_post_ephemeral()
    world.fake.users[world.users["bob"]["id"]]["timezone"] = {
        "useAutomaticTimezone": "false", "manualTimezone": "Asia/Shanghai", "automaticTimezone": ""}
    root = await alice_writes(world, "town-square", "web-01 OOM killed nginx at 05:02", files=("dmesg.txt",))
    before = len(world.fake.posts)
    await world.fake.reply_as(world.users["bob"], root, "@recbot save #incident #web keep for the postmortem")
    answer = await world.answer_to("bob", after=before)
    assert answer.get("ephemeral") and answer["channel_id"] == world.channels["town-square"]["id"]
    assert answer["root_id"] == root["id"]  # the answer shows in the thread
    assert re.search(r"Saved the message as record \*\*#\d+\*\* with 1 file\. Tags: `#incident`, `#web`\.",
                     answer["message"])
    [record] = world.records_of("bob")
    assert record.body.startswith("web-01 OOM killed nginx at 05:02\n")
    assert f"From @alice, Mar 4, 2026 13:06 UTC+8: {world.permalink(root)}" in record.body
    assert record.body.endswith("#incident #web keep for the postmortem")
    assert set(record.tags) == {"incident", "web"}
    [kept] = rows(world.storage, "T_FILE", record_id=record.id)
    assert (kept.mm_file_id, kept.name) == (root["file_ids"][0], "dmesg.txt")
    assert world.records_of("alice") == []  # the author keeps nothing; the asker does


async def test_the_confirmation_is_ephemeral_to_the_asker_and_pings_nobody(world: World) -> None:
    world.may_post_ephemeral()
    root = await alice_writes(world, "town-square", "@channel heads up: @dave rotated the TLS keys")
    before = len(world.fake.posts)
    await world.fake.reply_as(world.users["bob"], root, "@recbot save #tls")
    answer = await world.answer_to("bob", after=before)
    await asyncio.sleep(0.2)  # anything else the bot would post comes within this
    made = [p for p in world.fake.posts[before:] if p.get("author_id", p["user_id"]) == world.bot["id"]]
    assert made == [answer] and answer.get("ephemeral") and answer["user_id"] == world.users["bob"]["id"]
    assert not re.search(r"@(?!\u200b)\w", answer["message"])
    assert "heads up" in world.records_of("bob")[0].body


async def test_without_the_ephemeral_permission_the_confirmation_comes_as_a_direct_message(world: World) -> None:
    root = await alice_writes(world, "town-square", "moved backups to s3://ops-backups")
    before = len(world.fake.posts)
    await world.fake.reply_as(world.users["bob"], root, "@recbot save")
    answer = await world.answer_to("bob", after=before)
    assert not answer.get("ephemeral")
    assert answer["channel_id"] == world.fake.direct_channel(world.users["bob"], world.bot)["id"]
    assert "Saved the message as record" in answer["message"]
    assert not [p for p in world.fake.posts[before:]
                if p["channel_id"] == world.channels["town-square"]["id"] and p["user_id"] == world.bot["id"]]


async def test_save_by_someone_no_longer_in_a_private_channel_is_refused_stores_nothing_and_leaks_nothing(
        world: World) -> None:
    world.may_post_ephemeral()
    root = await alice_writes(world, "secret", SECRET)
    secret, carol = world.channels["secret"], world.users["carol"]

    async def removed_as_she_posts(post: JSON) -> None:
        if post["user_id"] == carol["id"]:  # an admin removes carol the moment her reply is stored
            world.fake.remove_member(secret, carol)

    world.fake.on_post_created = removed_as_she_posts
    before = len(world.fake.posts)
    await world.fake.reply_as(carol, root, "@recbot save #loot")
    answer = await world.answer_to("carol", after=before)
    assert answer["message"] == "Not saved: that message does not exist, or you cannot read it."
    assert world.records_of("carol") == []
    assert not [p for p in world.fake.posts[before:] if "hunter2" in p["message"]]


async def test_save_on_a_reply_in_a_thread_keeps_the_threads_root(world: World) -> None:
    root = await alice_writes(world, "town-square", "db-02 replica lag 40 s")
    reply = await world.fake.reply_as(world.users["bob"], root, "fixed: the backup job held a lock")
    before = len(world.fake.posts)
    await world.fake.reply_as(world.users["carol"], reply, "@recbot save #db")
    assert "Saved the message" in (await world.answer_to("carol", after=before))["message"]
    [record] = world.records_of("carol")
    assert record.body.startswith("db-02 replica lag 40 s") and "backup job" not in record.body
    assert world.permalink(root) in record.body


async def test_save_outside_a_thread_says_to_reply_in_the_thread(world: World) -> None:
    before = len(world.fake.posts)
    await alice_writes(world, "town-square", "@recbot save")
    answer = await world.answer_to("alice", after=before)
    assert "reply in the thread of the message to keep" in answer["message"]
    assert world.records_of("alice") == []


async def test_a_permalink_in_a_direct_message_saves_that_message(world: World) -> None:
    root = await alice_writes(world, "town-square", "renewed the wildcard certificate", files=("cert.txt",))
    answer = await world.dm_bot("dave", f"save {world.permalink(root)} #tls renewal done")
    assert re.fullmatch(r"Saved the message as record \*\*#\d+\*\* with 1 file\. Tags: `#tls`\. "
                        r"`/rec show \d+` shows it\.", answer)
    [record] = world.records_of("dave")
    assert record.body.startswith("renewed the wildcard certificate") and world.permalink(root) in record.body
    assert record.tags == ("tls",)
    again = await world.dm_bot("dave", f"save {world.permalink(root)} #tls renewal done")
    assert again.startswith(f"You already saved that message as record **#{record.id}**")


async def test_a_public_channel_message_may_be_saved_by_a_team_member_outside_that_channel(world: World) -> None:
    root = await alice_writes(world, "lobby", "lobby wifi password rotated")
    answer = await world.dm_bot("bob", f"save {world.permalink(root)}")
    assert answer.startswith("Saved the message as record")


async def test_a_permalink_to_a_message_the_asker_cannot_read_is_refused_like_one_that_does_not_exist(
        world: World) -> None:
    root = await alice_writes(world, "secret", SECRET)
    refused = await world.dm_bot("bob", f"save {world.permalink(root)} #mine")
    missing = await world.dm_bot("bob", f"save {world.fake.base_url}/ops/pl/{new_id()}")
    assert refused == missing == "Not saved: that message does not exist, or you cannot read it."
    assert world.records_of("bob") == []
    assert not [p for p in world.fake.posts if "hunter2" in p["message"] and p["user_id"] != world.users["alice"]["id"]]


async def test_a_permalink_to_a_channel_the_bot_is_not_in_tells_the_asker_to_add_the_bot(world: World) -> None:
    root = await alice_writes(world, "backstage", "backstage pass codes changed")
    answer = await world.dm_bot("alice", f"save {world.permalink(root)}")
    assert answer == "Not saved: recbot may not read that message: add @recbot to its channel, then ask again."
    assert world.records_of("alice") == []


async def test_a_direct_message_that_only_starts_with_save_is_still_a_record(world: World) -> None:
    answer = await world.dm_bot("bob", "save the date: DR drill on Friday")
    assert answer.startswith("Saved record **#")
    assert world.records_of("bob")[0].body == "save the date: DR drill on Friday"


async def test_help_tells_members_how_to_save_without_rec_under_the_bots_own_name(storage: Storage) -> None:
    async with running(storage, bot="opsbot") as world:
        status, _body = await world.fake.execute(world.users["bob"]["id"], world.channels["town-square"]["id"],
                                                 "/rec help")
        helped = [p["message"] for p in world.fake.posts if p.get("ephemeral")]
        assert status == 200 and len(helped) == 1
        assert "**Without /rec**" in helped[0]
        assert "`@opsbot save [#tags] [note]` in a message's thread keeps that message as your record" in helped[0]
        assert "a direct message to `@opsbot` becomes your record" in helped[0]
        assert "@recbot" not in helped[0]
        # What help tells works under that name.
        root = await alice_writes(world, "town-square", "swapped the disk of db-3")
        before = len(world.fake.posts)
        await world.fake.reply_as(world.users["bob"], root, "@opsbot save #disk")
        assert "Saved the message as record" in (await world.answer_to("bob", after=before))["message"]
        assert "swapped the disk of db-3" in world.records_of("bob")[0].body
