"""A stateful fake Mattermost server: REST API v4, slash commands, response_url hooks, WebSocket.

It is an aiohttp app on 127.0.0.1 (random free port) keeping its state in plain dicts and lists, so
a test can seed users, teams and channels, drive the bot through the real protocol and then assert
on what the server saw (``posts``, ``commands``, ``files``, ``slash_requests``).

The behaviour follows the Mattermost server's Go source (mattermost/mattermost), read for this fake:
- ``server/channels/app/command.go``: ExecuteCommand, tryExecuteCustomCommand, DoCommandRequest,
  HandleCommandResponse, HandleCommandResponsePost, CreateCommandPost, MentionsToTeamMembers,
  MentionsToPublicChannels, validateCommandTriggerUniqueness, UpdateCommand, RegenCommandToken;
- ``server/channels/api4/command.go``: the /commands endpoints and their permission checks;
- ``server/channels/app/webhook.go`` (HandleCommandWebhook), ``server/channels/web/webhook.go``
  (commandWebhook) and the SQL CommandWebhook store (Get: 30 minutes, TryUse: 5 uses);
- ``server/public/model/``: command.go, command_response.go, mention_map.go, channel_mentions.go,
  post.go, user.go, websocket_message.go; ``app/platform/websocket_router.go`` (the challenge) and
  ``web_conn.go`` (the hello event); api4 post.go/post_utils.go/channel.go for the REST checks.

Known deviations from the real server (kept on purpose, because tests do not need more):
- no built-in slash commands (/echo, /me, ...): an unknown trigger is 404 ``not_found``; built-in
  triggers are only reserved (creating a custom /echo is refused as a duplicate, like the server);
- permissions are reduced to: system admins may do everything; otherwise team/channel membership,
  plus a per-user ``can_manage_commands`` flag standing for ``manage_slash_commands``; only system
  admins may ``POST /posts/ephemeral`` (``create_post_ephemeral`` is a system permission);
- no login by password, no sessions other than personal access tokens, no cookies/CSRF;
- no Slack attachment field stringification, no post metadata other than ``files``, no images
  (no width/height/previews), no threads (reply counts stay 0), no group channels;
- the real server refuses to call integrations on loopback addresses unless
  ``AllowedUntrustedInternalConnections`` allows it; the fake always calls;
- ephemeral posts are not stored by the real server; the fake records them in ``posts`` with
  ``ephemeral: True``, ``user_id`` = the user who sees it and ``author_id`` = the real author;
- user mentions in a slash request are listed in the order they appear (Go iterates a map);
- a response_url hook answers the error of the failing step directly (app.command_webhook.*),
  as the server did before it started wrapping it in ``web.command_webhook.general.app_error``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from tests.fakes.mattermost.commands import CommandsMixin
from tests.fakes.mattermost.dialogs import DialogsMixin
from tests.fakes.mattermost.gojson import (
    _COMMAND_DEFAULTS,
    _DEFAULT_NOTIFY_PROPS,
    _DEFAULT_TIMEZONE,
    API,
    JSON,
    SERVER_VERSION,
    AppError,
    UserRef,
    _Failure,
    _id_of,
    _json_response,
    _WsConn,
    is_valid_id,
    new_id,
)
from tests.fakes.mattermost.posts import PostsMixin
from tests.fakes.mattermost.rest import RestMixin
from tests.fakes.mattermost.websocket import WebSocketMixin


class FakeMattermost(RestMixin, CommandsMixin, WebSocketMixin, PostsMixin, DialogsMixin):
    """A Mattermost server in memory. ``await start()``, seed it, point the code under test at it.

    State (read it in assertions, mutate it only through the helpers):
    ``users``/``teams``/``channels``/``commands``/``files`` (dicts by id), ``team_members`` and
    ``channel_members`` (sets of user ids by id), ``posts`` (creation order, ephemeral ones flagged),
    ``file_contents`` (bytes by file id), ``hooks`` (response_url hooks by id), ``slash_requests``
    (every outgoing slash command request), ``requests`` ((method, path) of every request received).
    """

    def __init__(self, *, hello_first: bool = True) -> None:
        self.hello_first = hello_first  # the server sends hello and the challenge's OK in either order
        self.clock: Callable[[], float] = time.time  # seconds; replace it to age response_url hooks
        self.command_timeout = 30.0  # ServiceSettings.OutgoingIntegrationRequestsTimeout
        self.base_url = ""
        self.port = 0
        self.users: dict[str, JSON] = {}
        self.tokens: dict[str, str] = {}
        self.teams: dict[str, JSON] = {}
        self.channels: dict[str, JSON] = {}
        self.team_members: dict[str, set[str]] = {}
        self.channel_members: dict[str, set[str]] = {}
        self.posts: list[JSON] = []
        self.commands: dict[str, JSON] = {}
        self.files: dict[str, JSON] = {}
        self.file_contents: dict[str, bytes] = {}
        self.hooks: dict[str, JSON] = {}
        self.slash_requests: list[JSON] = []
        self.requests: list[tuple[str, str]] = []
        self.ws_authentications = 0  # successful WebSocket authentications, to observe reconnects
        self._can_manage_commands: dict[str, bool] = {}
        self._failures: list[_Failure] = []
        # app.deduplicateCreatePost's cache: pending_post_id -> (post id, "" while saving; expiry)
        self._pending_post_ids: dict[str, tuple[str, float]] = {}
        # Awaited after a post is stored and before it is answered: a test can stall or kill the client there.
        self.on_post_created: Callable[[JSON], Any] | None = None
        self._conns: list[_WsConn] = []
        self._init_dialogs()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> str:
        """Listen on 127.0.0.1 on a free port; return the base URL (http://127.0.0.1:PORT)."""
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        self._add_routes(app.router)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        self._http = aiohttp.ClientSession()
        self.base_url = f"http://127.0.0.1:{self.port}"
        return self.base_url

    async def stop(self) -> None:
        """Close every WebSocket, the outgoing HTTP client and the listener."""
        await self.drop_websockets()
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeMattermost:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ seeding

    def add_user(self, username: str, *, is_bot: bool = False, roles: str = "system_user",
                 can_manage_commands: bool | None = None, email: str | None = None,
                 first_name: str = "", last_name: str = "", nickname: str = "") -> JSON:
        """Create a user (or bot account) with a personal access token.

        Returns the user as the server shows it plus ``token``. ``can_manage_commands`` stands for
        the team permission ``manage_slash_commands``; it defaults to True for system admins only.
        """
        name = username.lower()  # model.NormalizeUsername
        if self.find_user(name) is not None:
            raise ValueError(f"username {name!r} is taken")
        now = self._now_ms()
        user: JSON = {
            "id": new_id(), "create_at": now, "update_at": now, "delete_at": 0, "username": name,
            "auth_service": "", "email": email or f"{name}@{'localhost' if is_bot else 'example.com'}",
            "nickname": nickname, "first_name": first_name, "last_name": last_name, "position": "",
            "roles": roles, "notify_props": dict(_DEFAULT_NOTIFY_PROPS),
        }
        if not is_bot:  # bots have no password; the field is omitempty
            user["last_password_update"] = now
        user.update({"locale": "en", "timezone": dict(_DEFAULT_TIMEZONE)})
        if is_bot:
            user["is_bot"] = True
        user["disable_welcome_email"] = False
        token = new_id()
        self.users[user["id"]] = user
        self.tokens[token] = user["id"]
        if can_manage_commands is None:
            can_manage_commands = "system_admin" in roles.split()
        self._can_manage_commands[user["id"]] = can_manage_commands
        return {**copy.deepcopy(user), "token": token}

    def add_team(self, name: str, *, display_name: str | None = None, open_invite: bool = False) -> JSON:
        """Create a team; ``open_invite`` makes it visible to non-members (type O)."""
        if self.find_team(name) is not None:
            raise ValueError(f"team {name!r} exists")
        now = self._now_ms()
        team: JSON = {
            "id": new_id(), "create_at": now, "update_at": now, "delete_at": 0,
            "display_name": display_name or name, "name": name, "description": "", "email": "",
            "type": "O" if open_invite else "I", "company_name": "", "allowed_domains": "",
            "invite_id": new_id(), "allow_open_invite": open_invite, "scheme_id": None,
            "group_constrained": None, "policy_id": None, "cloud_limits_archived": False,
        }
        self.teams[team["id"]] = team
        self.team_members[team["id"]] = set()
        return copy.deepcopy(team)

    def add_channel(self, team_id: UserRef, name: str, *, type: str = "O", display_name: str | None = None,
                    creator: UserRef | None = None) -> JSON:
        """Create a public (``type="O"``) or private (``"P"``) channel in a team."""
        tid = _id_of(team_id)
        if tid not in self.teams:
            raise ValueError(f"no team {tid}")
        if type not in ("O", "P"):
            raise ValueError("a team channel is of type O or P; use direct channels for D")
        if self.find_channel(tid, name) is not None:
            raise ValueError(f"channel {name!r} exists in that team")
        channel = self._new_channel(tid, name, type, display_name or name, _id_of(creator) if creator else "")
        return copy.deepcopy(channel)

    def add_team_member(self, team_id: UserRef, user_id: UserRef) -> None:
        self.team_members[_id_of(team_id)].add(_id_of(user_id))

    def add_member(self, channel_id: UserRef, user_id: UserRef) -> None:
        """Add a user to a channel (and to its team: the server keeps channel members in the team)."""
        cid, uid = _id_of(channel_id), _id_of(user_id)
        channel = self.channels[cid]
        if channel["team_id"]:
            self.team_members[channel["team_id"]].add(uid)
        self.channel_members[cid].add(uid)

    def add_command(self, team_id: UserRef, trigger: str, url: str, *, creator: UserRef, method: str = "P",
                    auto_complete: bool = True, display_name: str = "", description: str = "",
                    auto_complete_desc: str = "", auto_complete_hint: str = "") -> JSON:
        """Register a custom slash command as if an admin had made it in the UI; return it (with token)."""
        now = self._now_ms()
        cmd = {**copy.deepcopy(_COMMAND_DEFAULTS),
               "id": new_id(), "token": new_id(), "create_at": now, "update_at": now,
               "creator_id": _id_of(creator), "team_id": _id_of(team_id), "trigger": trigger.lower(),
               "method": method, "auto_complete": auto_complete, "auto_complete_desc": auto_complete_desc,
               "auto_complete_hint": auto_complete_hint, "display_name": display_name,
               "description": description, "url": url}
        self._check_trigger_unique(cmd["team_id"], cmd["trigger"])
        self._validate_command(cmd)
        self.commands[cmd["id"]] = cmd
        return copy.deepcopy(self._command_json(cmd))

    def add_file(self, user: UserRef, channel_id: UserRef, name: str, data: bytes) -> JSON:
        """Store a file as if ``user`` had uploaded it to the channel; return its FileInfo."""
        return copy.deepcopy(self._store_file(_id_of(user), _id_of(channel_id), name, data))

    def set_failure(self, path_prefix: str, status: int, count: int = 1, *, retry_after: float | None = None,
                    plain_text: str | None = None, after_handler: bool = False) -> None:
        """Answer the next ``count`` requests whose path starts with ``path_prefix`` with ``status``.

        The body is an AppError, or ``plain_text`` (the real rate limiter answers 429 with a plain
        "limit exceeded"). A 429 carries Retry-After/X-RateLimit-Reset = ``retry_after`` (default 1 s).
        With ``after_handler`` the server does the work first and only the answer is lost, as when a
        proxy in front of Mattermost gives up waiting (504) after the post was created.
        """
        self._failures.append(_Failure(path_prefix, status, count, retry_after, plain_text, after_handler))

    def heal(self) -> None:
        """Stop every injected failure."""
        self._failures.clear()

    async def drop_websockets(self) -> int:
        """Close every open WebSocket from the server side; return how many were closed."""
        conns = list(self._conns)
        for conn in conns:
            await conn.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"dropped by the test")
        return len(conns)

    # ------------------------------------------------------------------ reading state

    def rename_user(self, user: UserRef, new_name: str) -> None:
        """A Mattermost admin changes a username (the id stays); the old name is free for others."""
        name = new_name.lower()
        holder = self.find_user(name)
        if holder is not None and holder["id"] != _id_of(user):
            raise ValueError(f"username {name!r} is taken")
        self.users[_id_of(user)]["username"] = name
        self.users[_id_of(user)]["update_at"] = self._now_ms()

    def find_user(self, username: str) -> JSON | None:
        name = username.lower()
        return next((u for u in self.users.values() if u["username"] == name), None)

    def find_team(self, name: str) -> JSON | None:
        return next((t for t in self.teams.values() if t["name"] == name), None)

    def find_channel(self, team_id: UserRef, name: str) -> JSON | None:
        tid = _id_of(team_id)
        return next((c for c in self.channels.values() if c["team_id"] == tid and c["name"] == name), None)

    def direct_channel(self, user_a: UserRef, user_b: UserRef) -> JSON | None:
        """The direct channel of two users, or None if nobody created it yet."""
        name = self._dm_name(_id_of(user_a), _id_of(user_b))
        return next((c for c in self.channels.values() if c["type"] == "D" and c["name"] == name), None)

    @property
    def open_websockets(self) -> int:
        """Authenticated WebSocket connections currently open."""
        return sum(1 for c in self._conns if c.user_id is not None and not c.ws.closed)

    async def wait_for_post(self, predicate: Callable[[JSON], bool], *, timeout: float = 5.0) -> JSON:
        """The first post (ephemeral included) matching ``predicate``, waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            for post in self.posts:
                if predicate(post):
                    return post
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching post within {timeout} s; posts: {self.posts!r}")
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ acting as users

    async def post_as(self, user: UserRef, channel_id: UserRef, message: str, *, root_id: str = "",
                      file_ids: Iterable[str] = (), props: Mapping[str, Any] | None = None) -> JSON:
        """Create a post as ``user`` (no permission check) and broadcast it like the server."""
        return await self._create_post(_id_of(user), _id_of(channel_id), message, root_id=root_id,
                                       file_ids=file_ids, props=dict(props or {}))

    async def user_posts_dm(self, sender: UserRef, bot_user: UserRef, message: str,
                            file_ids: Iterable[str] = ()) -> JSON:
        """``sender`` writes to ``bot_user`` in their direct channel (created on first use)."""
        channel = self._get_or_create_dm(_id_of(sender), _id_of(bot_user))
        return await self.post_as(sender, channel["id"], message, file_ids=file_ids)

    async def execute(self, user: UserRef, channel_id: UserRef, command: str, *, team_id: str = "",
                      root_id: str = "") -> tuple[int, JSON]:
        """Run a slash command as ``user``, like ``POST /commands/execute``: (status, JSON body)."""
        args = {"channel_id": _id_of(channel_id), "command": command, "team_id": team_id, "root_id": root_id}
        try:
            return 200, await self._execute_command(_id_of(user), args)
        except AppError as err:
            return err.status, err.to_json(new_id())

    # ------------------------------------------------------------------ plumbing

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        r = router
        r.add_get(API + "/system/ping", self._ping)
        r.add_get(API + "/websocket", self._websocket)
        r.add_post(API + "/users/usernames", self._users_by_usernames)
        r.add_post(API + "/users/ids", self._users_by_ids)
        r.add_get(API + "/users/username/{username}", self._user_by_username)
        r.add_get(API + "/users/{user_id}", self._get_user)
        r.add_get(API + "/teams/name/{name}", self._team_by_name)
        r.add_get(API + "/teams/{team_id}/channels/name/{name}", self._channel_by_name)
        r.add_get(API + "/teams/{team_id}/members/{user_id}", self._team_member)
        r.add_get(API + "/teams/{team_id}", self._get_team)
        r.add_post(API + "/channels/direct", self._create_direct)
        r.add_get(API + "/channels/{channel_id}/members/{user_id}", self._channel_member)
        r.add_get(API + "/channels/{channel_id}/posts", self._channel_posts)
        r.add_get(API + "/channels/{channel_id}", self._get_channel)
        r.add_post(API + "/posts/ephemeral", self._create_ephemeral)
        r.add_post(API + "/actions/dialogs/open", self._open_dialog)
        r.add_post(API + "/actions/dialogs/submit", self._submit_dialog_handler)
        r.add_post(API + "/posts", self._create_post_handler)
        r.add_post(API + "/posts/{post_id}/actions/{action_id}", self._do_post_action)
        r.add_get(API + "/posts/{post_id}", self._get_post)
        r.add_post(API + "/files", self._upload_files)
        r.add_get(API + "/files/{file_id}/info", self._file_info)
        r.add_get(API + "/files/{file_id}", self._file_content)
        r.add_post(API + "/commands/execute", self._execute_handler)
        r.add_get(API + "/commands", self._list_commands)
        r.add_post(API + "/commands", self._create_command)
        r.add_put(API + "/commands/{command_id}/regen_token", self._regen_token)
        r.add_get(API + "/commands/{command_id}", self._get_command)
        r.add_put(API + "/commands/{command_id}", self._update_command)
        r.add_delete(API + "/commands/{command_id}", self._delete_command)
        r.add_post("/hooks/commands/{hook_id:[A-Za-z0-9]+}", self._command_hook)
        r.add_route("*", "/{tail:.*}", self._not_found)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = new_id()
        self.requests.append((request.method, request.path))
        failure = self._take_failure(request.path)
        if failure is not None and not failure.after_handler:
            return self._failure_response(failure, request_id)
        try:
            response = await handler(request)
        except AppError as err:
            response = _json_response(err.to_json(request_id), err.status)
        except web.HTTPException as exc:  # aiohttp's own refusals (size limits, ...) as AppErrors too
            if exc.status < 400:
                raise
            error_id = "api.context.404.app_error" if exc.status == 404 else "api.context.http_error"
            err = AppError(exc.status, error_id, detailed=exc.reason)
            response = _json_response(err.to_json(request_id), exc.status)
        if failure is not None and not response.prepared:
            return self._failure_response(failure, request_id)
        if not response.prepared:  # a WebSocket is already switched
            response.headers["X-Request-Id"] = request_id
            response.headers["X-Version-Id"] = f"{SERVER_VERSION}.0.fake.false"
        return response

    def _take_failure(self, path: str) -> _Failure | None:
        for failure in self._failures:
            if failure.remaining > 0 and path.startswith(failure.prefix):
                failure.remaining -= 1
                return failure
        return None

    def _failure_response(self, failure: _Failure, request_id: str) -> web.Response:
        if failure.plain_text is not None:
            response = web.Response(status=failure.status, text=failure.plain_text)
        else:
            error_id = {503: "api.context.server_busy.app_error",
                        429: "api.context.rate_limited.app_error"}.get(failure.status, "api.context.fake_failure")
            err = AppError(failure.status, error_id, detailed="injected by FakeMattermost.set_failure")
            response = _json_response(err.to_json(request_id), failure.status)
        if failure.status == 429:
            wait = str(failure.retry_after if failure.retry_after is not None else 1)
            response.headers.update({"Retry-After": wait, "X-RateLimit-Reset": wait,
                                     "X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0"})
        response.headers["X-Request-Id"] = request_id
        return response

    async def _not_found(self, request: web.Request) -> web.Response:
        raise AppError(404, "api.context.404.app_error")

    def _session_user(self, request: web.Request) -> str:
        """The user id behind the request's token (``Authorization: Bearer|Token``); else 401."""
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        token = value.strip() if scheme.lower() in ("bearer", "token") else request.query.get("access_token", "")
        user_id = self.tokens.get(token)
        if user_id is None or user_id not in self.users:
            raise AppError(401, "api.context.session_expired.app_error")
        return user_id

    async def _json_body(self, request: web.Request, name: str) -> Any:
        try:
            return json.loads(await request.text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise AppError(400, "api.context.invalid_body_param.app_error", detailed=str(exc), name=name) from exc

    @staticmethod
    def _require_id(value: str, name: str) -> str:
        if not is_valid_id(value):
            raise AppError(400, "api.context.invalid_url_param.app_error", name=name)
        return value

    # ------------------------------------------------------------------ permissions

    def _is_admin(self, user_id: str) -> bool:
        return "system_admin" in self.users[user_id]["roles"].split()

    def _in_team(self, team_id: str, user_id: str) -> bool:
        return user_id in self.team_members.get(team_id, ())

    def _in_channel(self, channel_id: str, user_id: str) -> bool:
        return user_id in self.channel_members.get(channel_id, ())

    def _has_team_access(self, team_id: str, user_id: str) -> bool:
        """Team-scoped permissions of a team member (view_team, read_public_channel, ...)."""
        return self._is_admin(user_id) or self._in_team(team_id, user_id)

    def _has_channel_access(self, channel_id: str, user_id: str) -> bool:
        """Channel-scoped permissions of a member (create_post, upload_file, use_slash_commands)."""
        return self._is_admin(user_id) or self._in_channel(channel_id, user_id)

    def _can_read_channel(self, channel: JSON, user_id: str) -> bool:
        if self._has_channel_access(channel["id"], user_id):
            return True
        return channel["type"] == "O" and self._in_team(channel["team_id"], user_id)

    def _can_manage_commands_in(self, team_id: str, user_id: str) -> bool:
        if self._is_admin(user_id):
            return True
        return self._can_manage_commands.get(user_id, False) and self._in_team(team_id, user_id)
