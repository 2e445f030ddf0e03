"""The fake Mattermost server behaves like the real one (SPEC section 4).

Everything goes over real sockets on 127.0.0.1: the real ``mattermostautodriver`` client where it
has the call (AsyncTypedDriver and its Websocket class), aiohttp otherwise. Slash command tests run
a tiny integration endpoint inside the test and check, field by field, what the fake sent it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from mattermostautodriver import AsyncTypedDriver
from mattermostautodriver.exceptions import (
    InvalidOrMissingParameters,
    NoAccessTokenProvided,
    NotEnoughPermissions,
    ResourceNotFound,
    TooManyRequests,
    UnknownMattermostError,
)
from multidict import CIMultiDict

from tests.fakes.mattermost import FakeMattermost, is_valid_id
from tests.fakes.mattermost.seed import seed

JSON = dict[str, Any]
# The schemas the fake is checked against, extracted from ../shared/mattermost-openapi (see "source" inside).
OPENAPI_SCHEMAS = Path(__file__).resolve().parent / "fakes" / "openapi_schemas.json"


# ---------------------------------------------------------------------------- fixtures and helpers

@dataclass
class World:
    """A team with a public and a private channel, a bot account and three people."""

    team: JSON
    town: JSON  # public, everybody is in it
    secret: JSON  # private, only alice
    other: JSON  # public, nobody but carol
    bot: JSON
    alice: JSON
    bob: JSON
    carol: JSON
    admin: JSON


@pytest.fixture
async def mm() -> AsyncIterator[FakeMattermost]:
    fake = FakeMattermost()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def world(mm: FakeMattermost) -> World:
    w = seed(mm, people=("alice", "bob", "carol"), admins=("root",), private=("secret",),
             channels={"town-square": ("recbot", "alice", "bob"), "secret": ("alice",), "other": ("carol",)})
    u, c = w.users, w.channels
    return World(w.team, c["town-square"], c["secret"], c["other"], w.bot, u["alice"], u["bob"], u["carol"],
                 u["root"])


@contextlib.asynccontextmanager
async def logged_in(mm: FakeMattermost, user: JSON, **options: Any) -> AsyncIterator[AsyncTypedDriver]:
    """The real driver, logged in with the user's personal access token."""
    driver = AsyncTypedDriver({"url": "127.0.0.1", "port": mm.port, "scheme": "http", "token": user["token"],
                               "keepalive_delay": 0.1, **options})
    await driver.login()
    try:
        yield driver
    finally:
        driver.disconnect()
        await driver.close()


@dataclass
class SlashCall:
    method: str
    path: str
    headers: dict[str, str]
    raw_body: str
    query: str
    form: list[tuple[str, str]]

    def one(self, key: str) -> str:
        values = self.all(key)
        assert len(values) == 1, f"{key}: {values}"
        return values[0]

    def all(self, key: str) -> list[str]:
        return [v for k, v in self.form if k == key]


@dataclass
class SlashEndpoint:
    """A tiny integration: records each request and answers with ``reply(call)``."""

    reply: Callable[[SlashCall], web.StreamResponse] = field(
        default=lambda call: web.json_response({"response_type": "ephemeral", "text": "ok"}))
    calls: list[SlashCall] = field(default_factory=list)
    url: str = ""
    delay: float = 0.0  # seconds before answering

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(self.delay)
        raw = (await request.read()).decode()
        source = raw if request.method == "POST" else request.query_string
        call = SlashCall(request.method, request.path, dict(request.headers), raw, request.query_string,
                         urllib.parse.parse_qsl(source, keep_blank_values=True))
        self.calls.append(call)
        return self.reply(call)


@pytest.fixture
async def slash() -> AsyncIterator[SlashEndpoint]:
    endpoint = SlashEndpoint()
    app = web.Application()
    app.router.add_route("*", "/slash", endpoint.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    endpoint.url = f"http://127.0.0.1:{port}/slash"
    yield endpoint
    await runner.cleanup()


def register_rec(mm: FakeMattermost, world: World, slash: SlashEndpoint, method: str = "P") -> JSON:
    return mm.add_command(world.team, "rec", slash.url, creator=world.bot, method=method)


async def raw_request(mm: FakeMattermost, method: str, path: str, token: str | None = None,
                      **kwargs: Any) -> tuple[int, CIMultiDict[str], Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.request(
            method, mm.base_url + path, headers=headers, **kwargs) as resp:
        body = await resp.read()
        ctype = resp.headers.get("Content-Type", "")
        return resp.status, resp.headers.copy(), json.loads(body) if ctype == "application/json" else body


def assert_app_error(body: Any, status: int, error_id: str) -> None:
    assert isinstance(body, dict), body
    assert body["id"] == error_id, body
    assert body["status_code"] == status, body
    assert body["message"] and isinstance(body["message"], str), body
    assert is_valid_id(body["request_id"]), body


async def next_message(queue: asyncio.Queue[JSON], predicate: Callable[[JSON], bool], timeout: float = 5.0) -> JSON:
    async with asyncio.timeout(timeout):
        while True:
            message = await queue.get()
            if predicate(message):
                return message


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


# ---------------------------------------------------------------------------- OpenAPI checks

@cache
def openapi_schemas() -> JSON:
    return json.loads(OPENAPI_SCHEMAS.read_text(encoding="utf-8"))["schemas"]


_PY_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "integer": (int,), "boolean": (bool,),
                                          "object": (dict,), "array": (list,), "number": (int, float)}


def assert_matches_schema(obj: JSON, name: str, *, may_be_absent: frozenset[str] = frozenset(),
                          may_be_null: frozenset[str] = frozenset()) -> None:
    """Every property the spec documents is present with its documented JSON type.

    The spec declares no ``required`` lists, so "required" here means every documented property,
    minus the ones the server itself leaves out (``omitempty`` in its Go structs) or sends as null.
    """
    schema = openapi_schemas()[name]
    problems = []
    for prop, spec in schema["properties"].items():
        if prop not in obj:
            if prop not in may_be_absent:
                problems.append(f"missing {prop!r}")
            continue
        value = obj[prop]
        if value is None:
            if prop not in may_be_null:
                problems.append(f"{prop!r} is null")
            continue
        kind = "object" if "$ref" in spec else spec.get("type", "object")
        ok = isinstance(value, _PY_TYPES[kind]) and not (kind in ("integer", "number") and isinstance(value, bool))
        if not ok:
            problems.append(f"{prop!r} should be {kind}, is {value!r}")
    assert not problems, f"{name}: {problems}"


# model/user.go: these are `omitempty` and zero/empty on a fresh account, so the server omits them
USER_OMITTED_WHEN_EMPTY = frozenset({"email_verified", "failed_attempts", "mfa_active", "terms_of_service_id",
                                     "terms_of_service_create_at", "props", "last_picture_update",
                                     "last_password_update"})


async def test_users_me_matches_openapi_user_schema(mm: FakeMattermost, world: World) -> None:
    async with logged_in(mm, world.alice) as driver:
        me = await driver.users.get_user("me")
    assert_matches_schema(me, "User", may_be_absent=USER_OMITTED_WHEN_EMPTY)
    assert "last_password_update" in me  # a person has a password, so the field is set
    assert "token" not in me and "password" not in me


async def test_team_and_channel_match_openapi_schemas(mm: FakeMattermost, world: World) -> None:
    async with logged_in(mm, world.bot) as driver:
        team = await driver.teams.get_team_by_name("ops")
        channel = await driver.channels.get_channel_by_name(team["id"], "town-square")
    # model/team.go: PolicyID is a *string, null when no retention policy applies
    assert_matches_schema(team, "Team", may_be_null=frozenset({"policy_id"}))
    assert_matches_schema(channel, "Channel")


async def test_post_matches_openapi_schema_except_hashtags(mm: FakeMattermost, world: World) -> None:
    async with logged_in(mm, world.bot) as driver:
        post = await driver.posts.create_post(world.town["id"], "deployed #release to prod")
    # Spec defect: it documents "hashtag"; model/post.go serialises the field as "hashtags".
    assert_matches_schema(post, "Post", may_be_absent=frozenset({"hashtag"}))
    assert "hashtag" in openapi_schemas()["Post"]["properties"]
    assert post["hashtags"] == "#release"


async def test_command_matches_openapi_schema(mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    async with logged_in(mm, world.bot) as driver:
        command = await driver.commands.create_command(world.team["id"], "P", "rec", slash.url)
    assert_matches_schema(command, "Command")


async def test_command_response_is_snake_case_not_the_specs_pascal_case(
        mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    # Documented exception (PROVENANCE.md): components.schemas.CommandResponse uses PascalCase,
    # the server (model/command_response.go) speaks snake_case. Prove both halves.
    spec_keys = set(openapi_schemas()["CommandResponse"]["properties"])
    assert {"ResponseType", "Text", "GotoLocation"} <= spec_keys
    register_rec(mm, world, slash)
    async with logged_in(mm, world.alice) as driver:
        response = await driver.commands.execute_command(world.town["id"], "/rec help")
    assert set(response) == {"response_type", "text", "username", "channel_id", "icon_url", "type", "props",
                             "goto_location", "trigger_id", "skip_slack_parsing", "attachments",
                             "extra_responses"}
    assert not spec_keys & set(response)


async def test_error_bodies_match_openapi_app_error_schema(mm: FakeMattermost, world: World) -> None:
    status, _, body = await raw_request(mm, "GET", "/api/v4/teams/name/nope", world.bot["token"])
    assert status == 404
    assert_matches_schema(body, "AppError")


# ---------------------------------------------------------------------------- login, users, teams

async def test_driver_login_with_token_reads_users_me(mm: FakeMattermost, world: World) -> None:
    async with logged_in(mm, world.bot) as driver:
        assert driver.client.userid == world.bot["id"]
        assert driver.client.username == "recbot"
        me = await driver.users.get_user("me")
    assert me["id"] == world.bot["id"] and me["is_bot"] is True
    assert is_valid_id(me["id"])


async def test_missing_or_bad_token_is_401_session_expired(mm: FakeMattermost, world: World) -> None:
    status, headers, body = await raw_request(mm, "GET", "/api/v4/users/me")
    assert status == 401
    assert_app_error(body, 401, "api.context.session_expired.app_error")
    assert body["request_id"] == headers["X-Request-Id"]
    driver = AsyncTypedDriver({"url": "127.0.0.1", "port": mm.port, "scheme": "http", "token": "x" * 26})
    try:
        with pytest.raises(NoAccessTokenProvided) as caught:
            await driver.login()
    finally:
        await driver.close()
    assert caught.value.error_id == "api.context.session_expired.app_error"


async def test_json_content_type_is_exactly_application_json(mm: FakeMattermost, world: World) -> None:
    # mattermostautodriver compares the header verbatim; "application/json; charset=utf-8" would
    # make driver.get() return a raw httpx response instead of parsed JSON.
    _, headers, _ = await raw_request(mm, "GET", "/api/v4/users/me", world.bot["token"])
    assert headers["Content-Type"] == "application/json"
    async with logged_in(mm, world.bot) as driver:
        assert isinstance(await driver.users.get_user_by_username("alice"), dict)


async def test_users_by_username_usernames_and_ids(mm: FakeMattermost, world: World) -> None:
    async with logged_in(mm, world.bot) as driver:
        alice = await driver.users.get_user_by_username("alice")
        found = await driver.users.get_users_by_usernames(["bob", "ghost", "alice"])
        by_ids = await driver.users.get_users_by_ids([world.carol["id"]])
        with pytest.raises(ResourceNotFound) as caught:
            await driver.users.get_user_by_username("ghost")
    assert alice["id"] == world.alice["id"]
    assert sorted(u["username"] for u in found) == ["alice", "bob"]  # unknown names are skipped
    assert [u["username"] for u in by_ids] == ["carol"]
    assert caught.value.error_id == "app.user.get_by_username.app_error"


async def test_team_and_channel_by_name(mm: FakeMattermost, world: World) -> None:
    async with logged_in(mm, world.bot) as driver:
        team = await driver.teams.get_team_by_name("ops")
        channel = await driver.channels.get_channel_by_name(team["id"], "town-square")
        with pytest.raises(ResourceNotFound) as no_team:
            await driver.teams.get_team_by_name("dev")
        with pytest.raises(ResourceNotFound) as no_channel:
            await driver.channels.get_channel_by_name(team["id"], "nope")
    assert team["id"] == world.team["id"] and team["name"] == "ops"
    assert channel["id"] == world.town["id"] and channel["type"] == "O" and channel["team_id"] == team["id"]
    assert no_team.value.error_id == "app.team.get_by_name.missing.app_error"
    assert no_channel.value.error_id == "app.channel.get_by_name.missing.app_error"


async def test_private_channel_by_name_does_not_exist_for_non_members(mm: FakeMattermost, world: World) -> None:
    # api4/channel.go getChannelByName answers 404 (not 403) so a private channel does not leak.
    async with logged_in(mm, world.bob) as driver:
        with pytest.raises(ResourceNotFound) as caught:
            await driver.channels.get_channel_by_name(world.team["id"], "secret")
    assert caught.value.error_id == "app.channel.get_by_name.missing.app_error"
    async with logged_in(mm, world.alice) as driver:
        assert (await driver.channels.get_channel_by_name(world.team["id"], "secret"))["type"] == "P"


async def test_team_of_which_the_caller_is_not_a_member_is_403(mm: FakeMattermost, world: World) -> None:
    mm.add_team("elsewhere")
    async with logged_in(mm, world.bot) as driver:
        with pytest.raises(NotEnoughPermissions) as caught:
            await driver.teams.get_team_by_name("elsewhere")
    assert caught.value.error_id == "api.context.permissions.app_error"


async def test_channel_member_lookup(mm: FakeMattermost, world: World) -> None:
    async with logged_in(mm, world.bot) as driver:
        member = await driver.channels.get_channel_member(world.town["id"], world.alice["id"])
        with pytest.raises(ResourceNotFound) as caught:
            await driver.channels.get_channel_member(world.town["id"], world.carol["id"])
    assert member["user_id"] == world.alice["id"] and member["channel_id"] == world.town["id"]
    assert caught.value.error_id == "app.channel.get_member.missing.app_error"


# ---------------------------------------------------------------------------- direct channels and posts

async def test_direct_channel_creation_is_idempotent(mm: FakeMattermost, world: World) -> None:
    async with logged_in(mm, world.bot) as driver:
        first = await driver.channels.create_direct_channel([world.bot["id"], world.alice["id"]])
        again = await driver.channels.create_direct_channel([world.alice["id"], world.bot["id"]])
    assert first["id"] == again["id"]
    assert first["type"] == "D" and first["team_id"] == ""
    assert first["name"] == "__".join(sorted([world.bot["id"], world.alice["id"]]))
    assert mm.direct_channel(world.alice, world.bot)["id"] == first["id"]
    assert mm.channel_members[first["id"]] == {world.bot["id"], world.alice["id"]}
    assert sum(1 for c in mm.channels.values() if c["type"] == "D") == 1


async def test_direct_channel_of_two_other_users_is_refused(mm: FakeMattermost, world: World) -> None:
    async with logged_in(mm, world.bot) as driver:
        with pytest.raises(NotEnoughPermissions):
            await driver.channels.create_direct_channel([world.alice["id"], world.bob["id"]])
    assert mm.direct_channel(world.alice, world.bob) is None


async def test_post_to_channel_the_bot_is_not_in_is_403(mm: FakeMattermost, world: World) -> None:
    async with logged_in(mm, world.bot) as driver:
        with pytest.raises(NotEnoughPermissions) as caught:
            await driver.posts.create_post(world.other["id"], "hello")
        post = await driver.posts.create_post(world.town["id"], "hello", props={"k": "v"})
    assert caught.value.error_id == "api.context.permissions.app_error"
    assert [p["id"] for p in mm.posts] == [post["id"]]
    assert post["user_id"] == world.bot["id"] and post["channel_id"] == world.town["id"]
    assert post["message"] == "hello" and post["props"] == {"k": "v"} and post["root_id"] == ""
    assert post["file_ids"] == [] and isinstance(post["create_at"], int) and is_valid_id(post["id"])


async def test_system_admin_may_post_without_membership(mm: FakeMattermost, world: World) -> None:
    # SessionHasPermissionToChannel is true for system admins whatever the membership
    async with logged_in(mm, world.admin) as driver:
        post = await driver.posts.create_post(world.other["id"], "maintenance")
    assert post["channel_id"] == world.other["id"]


async def test_get_post_and_channel_posts(mm: FakeMattermost, world: World) -> None:
    first = await mm.post_as(world.alice, world.town, "one")
    second = await mm.post_as(world.alice, world.town, "two")
    async with logged_in(mm, world.bot) as driver:
        got = await driver.posts.get_post(first["id"])
        listing = await driver.posts.get_posts_for_channel(world.town["id"])
    assert got == first
    assert listing["order"] == [second["id"], first["id"]]
    assert set(listing["posts"]) == {first["id"], second["id"]}


async def test_a_repeated_pending_post_id_returns_the_first_post_within_30_seconds(
        mm: FakeMattermost, world: World) -> None:
    # app.deduplicateCreatePost: the same pending_post_id within PendingPostIDsCacheTTL makes no second post
    now = [1_000_000.0]
    mm.clock = lambda: now[0]
    body = {"channel_id": world.town["id"], "message": "disk full", "pending_post_id": "k" * 26}
    async with logged_in(mm, world.bot) as driver:
        first = await driver.client.post("/api/v4/posts", options=body)
        now[0] += 29
        again = await driver.client.post("/api/v4/posts", options=body)
        assert again["id"] == first["id"] and len(mm.posts) == 1
        now[0] += 2  # 31 s after the first: the server has forgotten the id
        third = await driver.client.post("/api/v4/posts", options=body)
    assert third["id"] != first["id"] and len(mm.posts) == 2


async def test_a_lost_response_still_creates_the_post(mm: FakeMattermost, world: World) -> None:
    mm.set_failure("/api/v4/posts", 504, after_handler=True)
    async with logged_in(mm, world.bot) as driver:
        with pytest.raises(UnknownMattermostError) as caught:
            await driver.posts.create_post(world.town["id"], "made, answer lost")
    assert caught.value.status_code == 504
    assert [p["message"] for p in mm.posts] == ["made, answer lost"]


async def test_channel_posts_since_a_time_lists_every_post_changed_after_it(mm: FakeMattermost, world: World) -> None:
    first = await mm.post_as(world.alice, world.town, "one")
    second = await mm.post_as(world.alice, world.town, "two")
    second_at = second["update_at"]
    async with logged_in(mm, world.bot) as driver:
        after_first = await driver.posts.get_posts_for_channel(world.town["id"], since=first["update_at"] - 1)
        after_second = await driver.posts.get_posts_for_channel(world.town["id"], since=second_at)
    assert set(after_first["posts"]) == {first["id"], second["id"]}
    assert after_second["posts"] == {} and after_second["order"] == []


async def test_ephemeral_post_endpoint_is_for_system_admins(mm: FakeMattermost, world: World) -> None:
    async with logged_in(mm, world.bot) as driver:
        with pytest.raises(NotEnoughPermissions):
            await driver.posts.create_post_ephemeral(world.alice["id"], {"channel_id": world.town["id"],
                                                                         "message": "psst"})
    async with logged_in(mm, world.admin) as driver:
        post = await driver.posts.create_post_ephemeral(world.alice["id"], {"channel_id": world.town["id"],
                                                                            "message": "psst"})
    assert post["type"] == "system_ephemeral" and post["user_id"] == world.admin["id"]
    (stored,) = mm.posts
    assert stored["ephemeral"] is True and stored["user_id"] == world.alice["id"]
    assert stored["author_id"] == world.admin["id"]


# ---------------------------------------------------------------------------- files

async def test_file_upload_through_the_driver(mm: FakeMattermost, world: World) -> None:
    async with logged_in(mm, world.bot) as driver:
        uploaded = await driver.files.upload_file(files=("report.csv", b"a,b\n1,2\n", "text/plain"),
                                                  channel_id=world.town["id"])
        (info,) = uploaded["file_infos"]
        content = await driver.files.get_file(info["id"])
        fetched = await driver.files.get_file_info(info["id"])
        post = await driver.posts.create_post(world.town["id"], "the report", file_ids=[info["id"]])
    assert uploaded["client_ids"] == []
    assert info["name"] == "report.csv" and info["size"] == 8 and info["extension"] == "csv"
    assert info["mime_type"] == "text/csv"  # from the extension, not from what the client claimed
    assert info["user_id"] == world.bot["id"] and info["channel_id"] == world.town["id"]
    assert content.content == b"a,b\n1,2\n"
    assert fetched["id"] == info["id"]
    assert post["file_ids"] == [info["id"]]
    assert [f["id"] for f in post["metadata"]["files"]] == [info["id"]]
    assert mm.files[info["id"]]["post_id"] == post["id"]


async def test_file_upload_to_a_channel_the_bot_is_not_in_is_403(mm: FakeMattermost, world: World) -> None:
    async with logged_in(mm, world.bot) as driver:
        with pytest.raises(NotEnoughPermissions):
            await driver.files.upload_file(files=("a.txt", b"x", "text/plain"), channel_id=world.other["id"])
    assert mm.files == {}


async def test_unattached_upload_is_private_to_its_uploader(mm: FakeMattermost, world: World) -> None:
    info = mm.add_file(world.alice, world.town, "draft.txt", b"draft")
    async with logged_in(mm, world.bot) as driver:
        with pytest.raises(NotEnoughPermissions):
            await driver.files.get_file_info(info["id"])
    await mm.post_as(world.alice, world.town, "here", file_ids=[info["id"]])
    async with logged_in(mm, world.bot) as driver:
        assert (await driver.files.get_file(info["id"])).content == b"draft"


# ---------------------------------------------------------------------------- command registration

def full_command(team_id: str, url: str, **overrides: Any) -> JSON:
    return {"team_id": team_id, "trigger": "rec", "method": "P", "url": url, "display_name": "Records",
            "description": "Operation records", "auto_complete": True, "auto_complete_desc": "record, find",
            "auto_complete_hint": "add|find|help", "username": "", "icon_url": "", **overrides}


async def test_command_create_list_update_via_the_driver(
        mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    async with logged_in(mm, world.bot) as driver:
        created = await driver.client.post("/api/v4/commands", options=full_command(world.team["id"], slash.url))
        listed = await driver.commands.list_commands(team_id=world.team["id"], custom_only=True)
        # the body carries no token: app.UpdateCommand keeps the stored one whatever is sent
        body = {k: v for k, v in created.items() if k != "token"}
        changed = await driver.commands.update_command(
            created["id"], {**body, "url": slash.url + "?v=2", "auto_complete_hint": "[add|find]"})
        listed_after = await driver.commands.list_commands(team_id=world.team["id"], custom_only=True)
    assert is_valid_id(created["id"]) and len(created["token"]) == 26
    assert created["creator_id"] == world.bot["id"] and created["team_id"] == world.team["id"]
    for key, value in full_command(world.team["id"], slash.url).items():
        assert created[key] == value, key  # the full Command struct is decoded, not just four fields
    assert [c["id"] for c in listed] == [created["id"]] and listed[0]["token"] == created["token"]
    assert changed["token"] == created["token"] and changed["url"] == slash.url + "?v=2"
    assert changed["auto_complete_hint"] == "[add|find]" and changed["create_at"] == created["create_at"]
    assert listed_after[0]["url"] == slash.url + "?v=2"


async def test_command_list_without_custom_only_hides_tokens(
        mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    register_rec(mm, world, slash)
    async with logged_in(mm, world.bot) as driver:
        (listed,) = await driver.commands.list_commands(team_id=world.team["id"])
    assert listed["trigger"] == "rec" and listed["token"] == "" and listed["url"] == ""


async def test_duplicate_trigger_in_a_team_is_400(mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    register_rec(mm, world, slash)
    async with logged_in(mm, world.bot) as driver:
        with pytest.raises(InvalidOrMissingParameters) as duplicate:
            await driver.commands.create_command(world.team["id"], "P", "REC", slash.url)
        with pytest.raises(InvalidOrMissingParameters) as builtin:
            await driver.commands.create_command(world.team["id"], "P", "echo", slash.url)
    assert duplicate.value.error_id == builtin.value.error_id == "api.command.duplicate_trigger.app_error"
    assert len(mm.commands) == 1


async def test_command_update_must_name_the_team(mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    # api4 updateCommand compares the body's team_id with the stored one: a partial body fails
    cmd = register_rec(mm, world, slash)
    async with logged_in(mm, world.bot) as driver:
        with pytest.raises(InvalidOrMissingParameters) as caught:
            await driver.commands.update_command(cmd["id"], {"id": cmd["id"], "trigger": "rec", "url": slash.url})
    assert caught.value.error_id == "api.command.team_mismatch.app_error"


async def test_invalid_command_is_refused(mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    async with logged_in(mm, world.bot) as driver:
        with pytest.raises(InvalidOrMissingParameters) as bad_method:
            await driver.commands.create_command(world.team["id"], "X", "rec", slash.url)
        with pytest.raises(InvalidOrMissingParameters) as bad_url:
            await driver.commands.create_command(world.team["id"], "P", "rec", "ftp://x")
    assert bad_method.value.error_id == "model.command.is_valid.method.app_error"
    assert bad_url.value.error_id == "model.command.is_valid.url_http.app_error"
    assert mm.commands == {}


async def test_managing_commands_needs_the_permission(
        mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    cmd = register_rec(mm, world, slash)
    async with logged_in(mm, world.alice) as driver:
        with pytest.raises(NotEnoughPermissions):
            await driver.commands.create_command(world.team["id"], "P", "mine", slash.url)
        with pytest.raises(NotEnoughPermissions):
            await driver.commands.list_commands(team_id=world.team["id"], custom_only=True)
        with pytest.raises(ResourceNotFound):  # 404, not 403: ids of commands do not leak
            await driver.commands.regen_command_token(cmd["id"])


async def test_regen_token_and_delete(mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    cmd = register_rec(mm, world, slash)
    async with logged_in(mm, world.bot) as driver:
        regenerated = await driver.commands.regen_command_token(cmd["id"])
        assert regenerated["token"] != cmd["token"] and len(regenerated["token"]) == 26
        assert await driver.commands.delete_command(cmd["id"]) == {"status": "OK"}
        assert await driver.commands.list_commands(team_id=world.team["id"], custom_only=True) == []


# ---------------------------------------------------------------------------- executing commands

async def test_execute_posts_the_form_exactly_like_the_server(
        mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    cmd = register_rec(mm, world, slash)
    mm.add_team_member(world.team, world.carol)  # in the team: mentionable; dave is not
    dave = mm.add_user("dave")
    text = "share 42 @Bob @carol. @dave @ghost @bob ~town-square ~secret ~nowhere mail@example.com"
    async with logged_in(mm, world.alice) as driver:
        response = await driver.commands.execute_command(world.town["id"], "/REC " + text)
    (call,) = slash.calls
    assert call.method == "POST" and call.path == "/slash"
    assert call.headers["Authorization"] == "Token " + cmd["token"]
    assert call.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert call.headers["Accept"] == "application/json"
    assert call.headers["User-Agent"] == "Mattermost-Bot/1.1"
    assert call.one("token") == cmd["token"]
    assert call.one("team_id") == world.team["id"] and call.one("team_domain") == "ops"
    assert call.one("channel_id") == world.town["id"] and call.one("channel_name") == "town-square"
    assert call.one("user_id") == world.alice["id"] and call.one("user_name") == "alice"
    assert call.one("command") == "/rec"  # the trigger is lower-cased
    assert call.one("text") == text  # the text keeps its case
    assert call.one("root_id") == ""
    assert call.one("trigger_id") and call.one("trigger_id") != response["trigger_id"]
    hook_id = call.one("response_url").removeprefix(mm.base_url + "/hooks/commands/")
    assert is_valid_id(hook_id) and hook_id in mm.hooks
    # repeated keys, one value per mention, in step with their ids; the trailing "." is trimmed
    assert call.all("user_mentions") == ["bob", "carol"]
    assert call.all("user_mentions_ids") == [world.bob["id"], world.carol["id"]]
    assert dave["id"] not in call.all("user_mentions_ids")
    assert call.all("channel_mentions") == ["town-square"]  # only public channels of the team
    assert call.all("channel_mentions_ids") == [world.town["id"]]
    keys = [k for k, _ in call.form]
    assert keys == sorted(keys)  # url.Values.Encode sorts by key
    assert response["response_type"] == "ephemeral" and response["text"] == "ok"


async def test_execute_without_mentions_sends_no_mention_keys(
        mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    register_rec(mm, world, slash)
    status, _ = await mm.execute(world.alice, world.town, "/rec")
    assert status == 200
    (call,) = slash.calls
    assert call.one("text") == ""
    assert not {k for k, _ in call.form} & {"user_mentions", "user_mentions_ids", "channel_mentions",
                                            "channel_mentions_ids"}


async def test_execute_with_method_get_sends_a_query(mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    cmd = mm.add_command(world.team, "rec", slash.url + "?fixed=1", creator=world.bot, method="G")
    status, _ = await mm.execute(world.alice, world.town, "/rec find disk full")
    assert status == 200
    (call,) = slash.calls
    assert call.method == "GET" and call.raw_body == ""
    assert "Content-Type" not in call.headers
    assert call.query.startswith("fixed=1&")
    assert call.one("text") == "find disk full" and call.one("token") == cmd["token"]


async def test_ephemeral_reply_is_only_for_the_caller(mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    register_rec(mm, world, slash)
    slash.reply = lambda call: web.json_response({"response_type": "ephemeral", "text": "saved #7"})
    status, response = await mm.execute(world.alice, world.town, "/rec add hi")
    assert status == 200 and response["text"] == "saved #7"
    (post,) = mm.posts
    assert post["ephemeral"] is True and post["user_id"] == world.alice["id"]
    assert post["channel_id"] == world.town["id"] and post["message"] == "saved #7"
    assert post["type"] == "system_ephemeral"


async def test_in_channel_reply_is_a_post_by_the_invoking_user(
        mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    register_rec(mm, world, slash)
    slash.reply = lambda call: web.json_response({
        "response_type": "in_channel", "text": "record 42: fixed the disk", "props": {"record_id": 42},
        "extra_responses": [{"response_type": "ephemeral", "text": "shared"},
                            {"response_type": "in_channel", "text": "second", "channel_id": world.secret["id"]}]})
    status, response = await mm.execute(world.alice, world.town, "/rec share 42 ~town-square")
    assert status == 200
    visible = [p for p in mm.posts if not p.get("ephemeral")]
    assert [(p["channel_id"], p["message"]) for p in visible] == [
        (world.town["id"], "record 42: fixed the disk"), (world.secret["id"], "second")]
    assert all(p["user_id"] == world.alice["id"] for p in visible)
    assert visible[0]["props"] == {"record_id": 42, "from_webhook": "true"}
    assert [p["message"] for p in mm.posts if p.get("ephemeral")] == ["shared"]
    assert response["response_type"] == "in_channel" and len(response["extra_responses"]) == 2


async def test_in_channel_to_a_channel_the_caller_is_not_in_is_refused(
        mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    register_rec(mm, world, slash)
    slash.reply = lambda call: web.json_response({"response_type": "in_channel", "text": "leak",
                                                  "channel_id": world.secret["id"]})
    async with logged_in(mm, world.bob) as driver:  # bob is not in ~secret
        with pytest.raises(UnknownMattermostError) as caught:
            await driver.commands.execute_command(world.town["id"], "/rec share 1 ~secret")
    assert caught.value.status_code == 500
    assert caught.value.error_id == "api.command.execute_command.create_post_failed.app_error"
    assert mm.posts == []


async def test_plain_text_reply_is_an_ephemeral_text(mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    register_rec(mm, world, slash)
    slash.reply = lambda call: web.Response(text='{"response_type": "in_channel", "text": "x"}')  # text/plain
    status, response = await mm.execute(world.alice, world.town, "/rec help")
    assert status == 200 and response["response_type"] == ""
    (post,) = mm.posts
    assert post["ephemeral"] is True and post["message"] == '{"response_type": "in_channel", "text": "x"}'


async def test_pascal_case_reply_from_the_openapi_file_is_not_understood(
        mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    # Go's decoder matches keys case-insensitively: "Text" fills text, "ResponseType" fills nothing,
    # so a bot following the spec's PascalCase answers ephemerally instead of in the channel.
    register_rec(mm, world, slash)
    slash.reply = lambda call: web.json_response({"ResponseType": "in_channel", "Text": "hello"})
    status, response = await mm.execute(world.alice, world.town, "/rec help")
    assert status == 200 and response["response_type"] == "" and response["text"] == "hello"
    (post,) = mm.posts
    assert post["ephemeral"] is True


async def test_ephemeral_reply_without_text_shows_nothing(
        mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    register_rec(mm, world, slash)
    slash.reply = lambda call: web.json_response({"response_type": "ephemeral", "text": ""})
    status, _ = await mm.execute(world.alice, world.town, "/rec add")
    assert status == 200 and mm.posts == []


async def test_non_200_reply_is_an_error_for_the_caller(
        mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    register_rec(mm, world, slash)
    slash.reply = lambda call: web.json_response({"text": "nope"}, status=401)
    status, body = await mm.execute(world.alice, world.town, "/rec add x")
    assert status == 500
    assert_app_error(body, 500, "api.command.execute_command.failed_resp.app_error")
    assert "401" in body["message"] and mm.posts == []


async def test_broken_json_reply_is_an_error(mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    register_rec(mm, world, slash)
    slash.reply = lambda call: web.Response(text="{not json", content_type="application/json")
    status, body = await mm.execute(world.alice, world.town, "/rec add x")
    assert status == 500 and body["id"] == "api.command.execute_command.failed.app_error"


async def test_slow_integration_times_out(mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    register_rec(mm, world, slash)
    mm.command_timeout = 0.2  # the server waits 30 s; the fake's wait is configurable for tests
    slash.delay = 1.0
    status, body = await mm.execute(world.alice, world.town, "/rec add x")
    assert status == 500 and body["id"] == "api.command.execute_command.failed.app_error"
    assert mm.command_timeout == 0.2 and mm.posts == []


async def test_unknown_trigger_is_404_and_outsiders_may_not_execute(
        mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    register_rec(mm, world, slash)
    status, body = await mm.execute(world.alice, world.town, "/nothing here")
    assert status == 404 and body["id"] == "api.command.execute_command.not_found.app_error"
    status, body = await mm.execute(world.bob, world.secret, "/rec add x")
    assert status == 403 and body["id"] == "api.context.permissions.app_error"
    assert slash.calls == []


# ---------------------------------------------------------------------------- response_url

async def test_response_url_is_usable_five_times_then_refused(
        mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    register_rec(mm, world, slash)
    await mm.execute(world.alice, world.town, "/rec find disk")
    response_url = slash.calls[0].one("response_url")
    mm.posts.clear()
    answers = []
    async with aiohttp.ClientSession() as session:  # no credentials: the hook id is the secret
        for n in range(6):
            payload = {"response_type": "in_channel" if n % 2 else "ephemeral", "text": f"part {n}"}
            async with session.post(response_url, json=payload) as resp:
                answers.append((resp.status, await resp.read(), resp.headers.get("Content-Type", "")))
    assert [a[0] for a in answers] == [200] * 5 + [400]
    assert answers[0][1] == b"ok" and answers[0][2].startswith("text/plain")
    assert_app_error(json.loads(answers[5][1]), 400, "app.command_webhook.try_use.invalid")
    assert [(p["message"], bool(p.get("ephemeral"))) for p in mm.posts] == [
        ("part 0", True), ("part 1", False), ("part 2", True), ("part 3", False), ("part 4", True)]
    assert all(p["user_id"] == world.alice["id"] for p in mm.posts)


async def test_response_url_expires_after_thirty_minutes(
        mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    register_rec(mm, world, slash)
    await mm.execute(world.alice, world.town, "/rec find disk")
    response_url = slash.calls[0].one("response_url")
    now = mm.clock()
    mm.clock = lambda: now + 29 * 60
    async with aiohttp.ClientSession() as session:
        async with session.post(response_url, data="still fine") as resp:
            assert resp.status == 200
        mm.clock = lambda: now + 31 * 60
        async with session.post(response_url, data="too late") as resp:
            assert resp.status == 404
            assert_app_error(await resp.json(), 404, "app.command_webhook.get.missing")
    assert [p["message"] for p in mm.posts if p.get("ephemeral")][-1] == "still fine"


async def test_response_url_refuses_broken_json(mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    register_rec(mm, world, slash)
    await mm.execute(world.alice, world.town, "/rec find disk")
    mm.posts.clear()
    async with aiohttp.ClientSession() as session, session.post(
            slash.calls[0].one("response_url"), data="{", headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400
        assert_app_error(await resp.json(), 400, "web.command_webhook.parse.app_error")
    assert mm.posts == []


# ---------------------------------------------------------------------------- WebSocket

@pytest.mark.parametrize("hello_first", [True, False])
async def test_driver_websocket_receives_posted_with_post_as_json_string(
        mm: FakeMattermost, world: World, hello_first: bool) -> None:
    mm.hello_first = hello_first
    received: asyncio.Queue[JSON] = asyncio.Queue()

    async def on_message(message: str) -> None:
        await received.put(json.loads(message))

    async with logged_in(mm, world.bot) as driver:
        task = asyncio.create_task(driver.init_websocket(on_message))
        try:
            hello = await next_message(received, lambda m: m.get("event") == "hello")
            assert hello["seq"] == 0 and hello["broadcast"]["user_id"] == world.bot["id"]
            await eventually(lambda: mm.open_websockets == 1)
            await mm.post_as(world.carol, world.other, "not for the bot")  # not a member: no event
            sent = await mm.user_posts_dm(world.alice, world.bot, "add fixed the disk")
            posted = await next_message(received, lambda m: m.get("event") == "posted")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert isinstance(posted["data"]["post"], str)
    post = json.loads(posted["data"]["post"])
    assert post == sent and post["message"] == "add fixed the disk" and post["user_id"] == world.alice["id"]
    assert posted["data"]["channel_type"] == "D"
    assert posted["data"]["sender_name"] == "@alice"
    assert posted["data"]["channel_name"] == mm.direct_channel(world.alice, world.bot)["name"]
    assert json.loads(posted["data"]["mentions"]) == [world.bot["id"]]
    assert posted["broadcast"]["channel_id"] == post["channel_id"]
    assert posted["seq"] == 1  # the first event after hello (0) on this connection


async def raw_ws_auth(mm: FakeMattermost, ws: aiohttp.ClientWebSocketResponse, token: str) -> list[JSON]:
    await ws.send_json({"seq": 1, "action": "authentication_challenge", "data": {"token": token}})
    return [await ws.receive_json(timeout=5), await ws.receive_json(timeout=5)]


@pytest.mark.parametrize("hello_first", [True, False])
async def test_challenge_reply_and_hello_order_is_switchable(
        mm: FakeMattermost, world: World, hello_first: bool) -> None:
    mm.hello_first = hello_first
    async with aiohttp.ClientSession() as session, session.ws_connect(mm.base_url + "/api/v4/websocket") as ws:
        first, second = await raw_ws_auth(mm, ws, world.bot["token"])
    hello, ok = (first, second) if hello_first else (second, first)
    assert ok == {"status": "OK", "seq_reply": 1}
    assert hello["event"] == "hello" and hello["seq"] == 0 and is_valid_id(hello["data"]["connection_id"])


async def test_websocket_bad_token_is_closed(mm: FakeMattermost, world: World) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(mm.base_url + "/api/v4/websocket") as ws:
        await ws.send_json({"seq": 1, "action": "authentication_challenge", "data": {"token": "wrong"}})
        msg = await ws.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert mm.ws_authentications == 0


async def test_websocket_token_in_the_upgrade_request_authenticates(mm: FakeMattermost, world: World) -> None:
    headers = {"Authorization": "Bearer " + world.alice["token"]}
    async with aiohttp.ClientSession() as session, session.ws_connect(
            mm.base_url + "/api/v4/websocket", headers=headers) as ws:
        hello = await ws.receive_json(timeout=5)
        await mm.post_as(world.bob, world.town, "hi all")
        posted = await ws.receive_json(timeout=5)
    assert hello["event"] == "hello" and hello["broadcast"]["user_id"] == world.alice["id"]
    assert posted["event"] == "posted" and posted["seq"] == 1
    assert json.loads(posted["data"]["post"])["message"] == "hi all"


async def test_ephemeral_reply_reaches_only_the_callers_websocket(
        mm: FakeMattermost, world: World, slash: SlashEndpoint) -> None:
    register_rec(mm, world, slash)
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(mm.base_url + "/api/v4/websocket") as alice_ws, \
            session.ws_connect(mm.base_url + "/api/v4/websocket") as bob_ws:
        await raw_ws_auth(mm, alice_ws, world.alice["token"])
        await raw_ws_auth(mm, bob_ws, world.bob["token"])
        await mm.execute(world.alice, world.town, "/rec add hi")
        event = await alice_ws.receive_json(timeout=5)
        with pytest.raises(asyncio.TimeoutError):
            await bob_ws.receive_json(timeout=0.3)
    assert event["event"] == "ephemeral_message" and event["broadcast"]["user_id"] == world.alice["id"]
    assert json.loads(event["data"]["post"])["message"] == "ok"


async def test_drop_websockets_closes_the_connection(mm: FakeMattermost, world: World) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(mm.base_url + "/api/v4/websocket") as ws:
        await raw_ws_auth(mm, ws, world.bot["token"])
        assert mm.open_websockets == 1
        assert await mm.drop_websockets() == 1
        msg = await ws.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await eventually(lambda: mm.open_websockets == 0)


async def test_driver_websocket_reconnects_after_a_drop(mm: FakeMattermost, world: World) -> None:
    # mattermostautodriver's Websocket.connect() retries after keepalive_delay whenever the socket
    # ends with an error, which a server-side close is; the fake must close the way that triggers it.
    received: asyncio.Queue[JSON] = asyncio.Queue()

    async def on_message(message: str) -> None:
        await received.put(json.loads(message))

    async with logged_in(mm, world.bot) as driver:
        task = asyncio.create_task(driver.init_websocket(on_message))
        try:
            await next_message(received, lambda m: m.get("event") == "hello")
            await eventually(lambda: mm.open_websockets == 1)
            await mm.drop_websockets()
            await next_message(received, lambda m: m.get("event") == "hello")
            await eventually(lambda: mm.open_websockets == 1)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert mm.ws_authentications == 2


# ---------------------------------------------------------------------------- injected failures

async def test_set_failure_gives_503_with_an_app_error_body(mm: FakeMattermost, world: World) -> None:
    mm.set_failure("/api/v4/posts", 503, count=1)
    payload = {"channel_id": world.town["id"], "message": "hi"}
    status, _, body = await raw_request(mm, "POST", "/api/v4/posts", world.bot["token"], json=payload)
    assert status == 503
    assert_app_error(body, 503, "api.context.server_busy.app_error")
    status, _, _ = await raw_request(mm, "POST", "/api/v4/posts", world.bot["token"], json=payload)
    assert status == 201  # only `count` requests fail
    assert [p["message"] for p in mm.posts] == ["hi"]


async def test_driver_retries_a_503_on_get(mm: FakeMattermost, world: World) -> None:
    async with logged_in(mm, world.bot) as driver:
        mm.set_failure("/api/v4/users/me", 503, count=1)
        me = await driver.users.get_user("me")
    assert me["id"] == world.bot["id"]
    assert mm.requests.count(("GET", "/api/v4/users/me")) == 3  # login, the 503, the retry


async def test_set_failure_429_carries_the_wait(mm: FakeMattermost, world: World) -> None:
    mm.set_failure("/api/v4/posts", 429, count=1, retry_after=60, plain_text="limit exceeded\n")
    async with logged_in(mm, world.bot, retry_max_sleep=5) as driver:
        with pytest.raises(TooManyRequests) as caught:
            await driver.posts.create_post(world.town["id"], "hi")
    assert caught.value.retry_after == pytest.approx(60)
    assert caught.value.error_id is None  # like the real rate limiter: a plain text body
    assert mm.posts == []
