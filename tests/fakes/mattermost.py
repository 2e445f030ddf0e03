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
import base64
import copy
import json
import mimetypes
import os
import re
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import yarl
from aiohttp import web
from aiohttp.typedefs import Handler

JSON = dict[str, Any]
UserRef = str | Mapping[str, Any]

API = "/api/v4"
SERVER_VERSION = "10.11.0"
COMMAND_WEBHOOK_LIFETIME_MS = 30 * 60 * 1000  # model.CommandWebhookLifetime
COMMAND_WEBHOOK_USES = 5  # app.HandleCommandWebhook: TryUse(hook.Id, 5)
MAX_TRIGGER_LEN = 512  # app/command.go: a not-found trigger is cut to this in the error
PENDING_POST_IDS_TTL = 30.0  # app.PendingPostIDsCacheTTL: how long a pending_post_id is remembered

# model.NewId encodes 16 random bytes with this base32 alphabet, without padding: 26 characters.
_ID_ALPHABET = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "ybndrfg8ejkmcpqxot1uwisza345h769")

# Triggers of the server's built-in commands: a custom command may not take them
# (validateCommandTriggerUniqueness checks every registered CommandProvider).
BUILTIN_TRIGGERS = frozenset({
    "away", "code", "collapse", "dnd", "echo", "expand", "groupmsg", "header", "help", "invite",
    "invite_people", "join", "kick", "leave", "logout", "me", "msg", "mute", "offline", "online",
    "open", "purpose", "remove", "rename", "search", "settings", "shortcuts", "shrug", "status",
})

_MESSAGES = {
    "api.context.session_expired.app_error": "Invalid or expired session, please login again.",
    "api.context.permissions.app_error": "You do not have the appropriate permissions.",
    "api.context.invalid_body_param.app_error": "Invalid or missing {name} in request body.",
    "api.context.invalid_url_param.app_error": "Invalid or missing {name} parameter in request URL.",
    "api.context.invalid_param.app_error": "Invalid {name} parameter.",
    "api.context.404.app_error": "Sorry, we could not find the page.",
    "api.context.server_busy.app_error": "Server is busy, non-critical services are temporarily unavailable.",
    "api.context.rate_limited.app_error": "Too many requests, please slow down.",
    "app.user.missing_account.const": "Unable to find the user.",
    "app.user.get_by_username.app_error": "Unable to find an existing account matching your username.",
    "app.team.get_by_name.missing.app_error": "Unable to find the existing team.",
    "app.team.get.find.app_error": "Unable to find the existing team.",
    "app.channel.get_by_name.missing.app_error": "Channel does not exist.",
    "app.channel.get.existing.app_error": "Unable to find the existing channel.",
    "app.channel.get_member.missing.app_error": "No channel member found for that user ID and channel ID.",
    "app.post.get.app_error": "Unable to get post.",
    "api.post.create_post.root_id.app_error": "Invalid RootId parameter.",
    "app.file_info.get.app_error": "Unable to get the file info.",
    "api.file.upload_file.incorrect_number_of_files.app_error": "Unable to upload files. Incorrect number of "
    "files specified.",
    "store.sql_command.save.get.app_error": "Unable to get the command.",
    "api.command.duplicate_trigger.app_error": "This trigger word is already in use. Please choose another word.",
    "api.command.team_mismatch.app_error": "Unable to update commands across teams.",
    "app.command.createcommand.internal_error": "Unable to save the command.",
    "api.command.execute_command.start.app_error": "No command trigger found.",
    "api.command.execute_command.format.app_error": "Command trigger word is missing the leading slash "
    "character",
    "api.command.execute_command.not_found.app_error": "Command with a trigger of '{trigger}' not found. To "
    'send a message beginning with "/", try adding an empty space at the beginning of the message.',
    "api.command.execute_command.failed.app_error": "Command with a trigger of '{trigger}' failed.",
    "api.command.execute_command.failed_resp.app_error": "Command with a trigger of '{trigger}' returned "
    "response {response_status}.",
    "api.command.execute_command.create_post_failed.app_error": "Command '{trigger}' failed to post response. "
    "Please contact your System Administrator.",
    "api.command.command_post.forbidden.app_error": "Specified user is not a member of specified channel.",
    "web.command_webhook.parse.app_error": "Unable to parse incoming data.",
    "web.command_webhook.command.app_error": "Couldn't find the command.",
    "app.command_webhook.get.missing": "Unable to find the webhook.",
    "app.command_webhook.try_use.invalid": "Invalid webhook.",
}

_DEFAULT_NOTIFY_PROPS = {
    "channel": "true", "comments": "never", "desktop": "mention", "desktop_sound": "true",
    "desktop_threads": "all", "email": "true", "email_threads": "all", "first_name": "false",
    "mention_keys": "", "push": "mention", "push_status": "online", "push_threads": "all",
}
_DEFAULT_TIMEZONE = {"automaticTimezone": "", "manualTimezone": "", "useAutomaticTimezone": "true"}

# model/command.go: the Command struct as the JSON decoder sees it (Go types -> JSON types).
_COMMAND_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,), "token": (str,), "create_at": (int,), "update_at": (int,), "delete_at": (int,),
    "creator_id": (str,), "team_id": (str,), "trigger": (str,), "method": (str,), "username": (str,),
    "icon_url": (str,), "auto_complete": (bool,), "auto_complete_desc": (str,),
    "auto_complete_hint": (str,), "display_name": (str,), "description": (str,), "url": (str,),
    "plugin_id": (str,), "autocomplete_data": (dict,), "autocomplete_icon_data": (str,),
}
_COMMAND_DEFAULTS: JSON = {
    "id": "", "token": "", "create_at": 0, "update_at": 0, "delete_at": 0, "creator_id": "", "team_id": "",
    "trigger": "", "method": "", "username": "", "icon_url": "", "auto_complete": False,
    "auto_complete_desc": "", "auto_complete_hint": "", "display_name": "", "description": "", "url": "",
    "plugin_id": "", "autocomplete_data": None, "autocomplete_icon_data": "",
}

# model/command_response.go: snake_case keys (the OpenAPI file's PascalCase is wrong).
_RESPONSE_FIELDS: dict[str, tuple[type, ...]] = {
    "response_type": (str,), "text": (str,), "username": (str,), "channel_id": (str,), "icon_url": (str,),
    "type": (str,), "props": (dict,), "goto_location": (str,), "trigger_id": (str,),
    "skip_slack_parsing": (bool,), "attachments": (list,), "extra_responses": (list,),
}
_RESPONSE_DEFAULTS: JSON = {
    "response_type": "", "text": "", "username": "", "channel_id": "", "icon_url": "", "type": "",
    "props": None, "goto_location": "", "trigger_id": "", "skip_slack_parsing": False,
    "attachments": None, "extra_responses": None,
}

# app/command.go and model/channel_mentions.go; Go's \B and [[:alnum:]] are ASCII-only.
_AT_MENTION = re.compile(r"\B@[A-Za-z0-9][A-Za-z0-9.\-_:]*", re.ASCII)
_CHANNEL_MENTION = re.compile(r"\B~[a-zA-Z0-9\-_]+", re.ASCII)
_VALID_USERNAME_ALLOW_REMOTE = re.compile(r"^[a-z0-9.\-_:]+$")
_RESTRICTED_USERNAMES = frozenset({"all", "channel", "matterbot", "system"})
_USERNAME_SPECIAL_CHARS = ".-_"
# model.ParseSlackLinksToMarkdown and app/slack.go.
_SLACK_LINK = re.compile(r"<([^\n<|>]+)\|([^\n>]+)>")
_SLACK_USER_ID = re.compile(r"<@([a-z0-9]{26})>")
# model.ParseHashtags
_HASHTAG = re.compile(r"^#[^\W\d_][\w\-.]*[^\W_]$")


def new_id() -> str:
    """A 26-character id like model.NewId."""
    return base64.b32encode(os.urandom(16)).decode().translate(_ID_ALPHABET)[:26]


def is_valid_id(value: object) -> bool:
    """model.IsValidId: 26 ASCII letters or digits."""
    return isinstance(value, str) and len(value) == 26 and value.isascii() and value.isalnum()


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _json_response(data: Any, status: int = 200) -> web.Response:
    # Exactly "application/json" like the server: mattermostautodriver compares the header verbatim
    # and hands back the raw response for anything else.
    return web.Response(status=status, body=_dumps(data).encode(), headers={"Content-Type": "application/json"})


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _go_decode(raw: Any, fields: Mapping[str, tuple[type, ...]], defaults: Mapping[str, Any], what: str) -> JSON:
    """Decode a JSON object the way Go's encoding/json fills a struct.

    Unknown keys are ignored; a key matches its field exactly or else case-insensitively (so "Text"
    fills "text" but "ResponseType" fills nothing); null leaves a string/bool alone and clears a
    map/slice; a value of the wrong JSON type is an error.
    """
    out = copy.deepcopy(dict(defaults))
    if raw is None:
        return out
    if not isinstance(raw, dict):
        raise ValueError(f"json: cannot unmarshal {_json_kind(raw)} into Go value of type {what}")
    for key, value in raw.items():
        name = key if key in fields else next((f for f in fields if f.casefold() == key.casefold()), None)
        if name is None:
            continue
        if value is None:
            if defaults[name] is None:
                out[name] = None
            continue
        kinds = fields[name]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ValueError(f"json: cannot unmarshal {_json_kind(value)} into Go struct field {what}.{name}")
        out[name] = value
    return out


def decode_command_response(raw: Any) -> JSON:
    """model.CommandResponseFromJSON: a full CommandResponse dict with every field present."""
    response = _go_decode(raw, _RESPONSE_FIELDS, _RESPONSE_DEFAULTS, "model.CommandResponse")
    attachments = response["attachments"]
    if attachments is not None and not all(isinstance(a, dict | None) for a in attachments):
        raise ValueError("json: cannot unmarshal into Go struct field CommandResponse.attachments")
    if response["extra_responses"] is not None:
        # []*CommandResponse: a null element is a nil pointer, which the server would not survive
        response["extra_responses"] = [decode_command_response(r) for r in response["extra_responses"]
                                       if r is not None]
    return response


def plain_text_command_response(text: str) -> JSON:
    """model.CommandResponseFromPlainText: any body that is not application/json is the text."""
    return {**copy.deepcopy(_RESPONSE_DEFAULTS), "text": text}


def parse_hashtags(text: str) -> str:
    """model.ParseHashtags, enough for the ``hashtags`` field of a post."""
    tags = []
    for word in text.split():
        word = re.sub(r"^[^\w\s#]+", "", word)
        word = re.sub(r"[^\w\s]+$", "", word)
        word = re.sub(r"^#{2,}", "#", word)
        if _HASHTAG.match(word):
            tags.append(word)
    return " ".join(tags)


def _first_space(text: str) -> int:
    """Index of the first Unicode space (strings.IndexFunc(s, unicode.IsSpace)), -1 if none."""
    return next((i for i, ch in enumerate(text) if ch.isspace()), -1)


class AppError(Exception):
    """An error answered as model.AppError JSON."""

    def __init__(self, status: int, error_id: str, *, detailed: str = "", **params: str) -> None:
        self.status = status
        self.error_id = error_id
        self.message = _MESSAGES.get(error_id, error_id).format(**params)
        self.detailed = detailed
        super().__init__(f"{status} {error_id}: {self.message}")

    def to_json(self, request_id: str) -> JSON:
        return {"id": self.error_id, "message": self.message, "detailed_error": self.detailed,
                "request_id": request_id, "status_code": self.status}


def _permission_error(permission: str, user_id: str) -> AppError:
    # c.SetPermissionError / MakePermissionError
    return AppError(403, "api.context.permissions.app_error",
                    detailed=f"userId={user_id}, permission={permission}")


@dataclass
class _Failure:
    prefix: str
    status: int
    remaining: int
    retry_after: float | None
    plain_text: str | None
    after_handler: bool = False  # the request is carried out, then its answer is replaced (a lost response)


@dataclass(eq=False)
class _WsConn:
    ws: web.WebSocketResponse
    connection_id: str = field(default_factory=new_id)
    user_id: str | None = None
    seq: int = 0  # the next event's sequence number; hello is 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _broadcast(*, channel_id: str = "", user_id: str = "", team_id: str = "") -> JSON:
    # model.WebsocketBroadcast as serialised to the client
    return {"omit_users": None, "user_id": user_id, "channel_id": channel_id, "team_id": team_id,
            "connection_id": "", "omit_connection_id": ""}


def _id_of(ref: UserRef) -> str:
    return ref if isinstance(ref, str) else str(ref["id"])


class FakeMattermost:
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
        r.add_get(API + "/teams/{team_id}", self._get_team)
        r.add_post(API + "/channels/direct", self._create_direct)
        r.add_get(API + "/channels/{channel_id}/members/{user_id}", self._channel_member)
        r.add_get(API + "/channels/{channel_id}/posts", self._channel_posts)
        r.add_get(API + "/channels/{channel_id}", self._get_channel)
        r.add_post(API + "/posts/ephemeral", self._create_ephemeral)
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

    # ------------------------------------------------------------------ users and teams

    async def _ping(self, request: web.Request) -> web.Response:
        return _json_response({"status": "OK", "version": SERVER_VERSION})

    async def _get_user(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        target = request.match_info["user_id"]
        target = me if target == "me" else self._require_id(target, "user_id")
        user = self.users.get(target)
        if user is None:
            raise AppError(404, "app.user.missing_account.const")
        return _json_response(user)

    async def _user_by_username(self, request: web.Request) -> web.Response:
        self._session_user(request)
        user = self.find_user(request.match_info["username"])
        if user is None:
            raise AppError(404, "app.user.get_by_username.app_error")
        return _json_response(user)

    async def _users_by_usernames(self, request: web.Request) -> web.Response:
        self._session_user(request)
        names = await self._json_body(request, "usernames")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise AppError(400, "api.context.invalid_body_param.app_error", name="usernames")
        wanted = {n.lower() for n in names}
        return _json_response([u for u in self.users.values() if u["username"] in wanted])

    async def _users_by_ids(self, request: web.Request) -> web.Response:
        self._session_user(request)
        ids = await self._json_body(request, "user_ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise AppError(400, "api.context.invalid_body_param.app_error", name="user_ids")
        return _json_response([self.users[i] for i in dict.fromkeys(ids) if i in self.users])

    def _team_view(self, team: JSON, user_id: str) -> JSON:
        if (team["type"] == "O" and team["allow_open_invite"]) or self._has_team_access(team["id"], user_id):
            # Team.Sanitize for everyone without manage_team
            return team if self._is_admin(user_id) else {**team, "email": "", "invite_id": ""}
        raise _permission_error("view_team", user_id)

    async def _team_by_name(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        team = self.find_team(request.match_info["name"])
        if team is None:
            raise AppError(404, "app.team.get_by_name.missing.app_error")
        return _json_response(self._team_view(team, me))

    async def _get_team(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        team = self.teams.get(self._require_id(request.match_info["team_id"], "team_id"))
        if team is None:
            raise AppError(404, "app.team.get.find.app_error")
        return _json_response(self._team_view(team, me))

    # ------------------------------------------------------------------ channels

    def _new_channel(self, team_id: str, name: str, type_: str, display_name: str, creator_id: str) -> JSON:
        now = self._now_ms()
        channel: JSON = {
            "id": new_id(), "create_at": now, "update_at": now, "delete_at": 0, "team_id": team_id,
            "type": type_, "display_name": display_name, "name": name, "header": "", "purpose": "",
            "last_post_at": now, "total_msg_count": 0, "extra_update_at": 0, "creator_id": creator_id,
            "scheme_id": None, "props": None, "group_constrained": None, "shared": None,
            "total_msg_count_root": 0, "policy_id": None, "last_root_post_at": now,
        }
        self.channels[channel["id"]] = channel
        self.channel_members[channel["id"]] = set()
        return channel

    @staticmethod
    def _dm_name(user_a: str, user_b: str) -> str:
        return "__".join(sorted((user_a, user_b)))  # model.GetDMNameFromIds

    def _get_or_create_dm(self, user_a: str, user_b: str) -> JSON:
        existing = self.direct_channel(user_a, user_b)
        if existing is not None:
            return existing
        channel = self._new_channel("", self._dm_name(user_a, user_b), "D", "", user_a)
        self.channel_members[channel["id"]].update({user_a, user_b})
        return channel

    async def _create_direct(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        ids = await self._json_body(request, "user_ids")
        if not (isinstance(ids, list) and len(ids) == 2 and all(is_valid_id(i) for i in ids)):
            raise AppError(400, "api.context.invalid_body_param.app_error", name="user_ids")
        if me not in ids and not self._is_admin(me):
            raise _permission_error("manage_system", me)
        if any(i not in self.users for i in ids):
            raise AppError(404, "app.user.missing_account.const")
        return _json_response(self._get_or_create_dm(ids[0], ids[1]), 201)

    async def _channel_by_name(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        team_id = self._require_id(request.match_info["team_id"], "team_id")
        name = request.match_info["name"]
        channel = self.find_channel(team_id, name)
        if channel is None:
            raise AppError(404, "app.channel.get_by_name.missing.app_error")
        if channel["type"] == "O":
            if not self._can_read_channel(channel, me):
                raise _permission_error("read_public_channel", me)
        elif not self._has_channel_access(channel["id"], me):
            # api4/channel.go getChannelByName: a private channel the caller cannot read does not
            # exist for them (404, not 403), so its existence does not leak
            raise AppError(404, "app.channel.get_by_name.missing.app_error",
                           detailed=f"teamId={team_id}, name={name}")
        return _json_response(channel)

    def _channel_for_reader(self, request: web.Request, me: str) -> JSON:
        channel = self.channels.get(self._require_id(request.match_info["channel_id"], "channel_id"))
        if channel is None:
            raise AppError(404, "app.channel.get.existing.app_error")
        if not self._can_read_channel(channel, me):
            raise _permission_error("read_channel", me)
        return channel

    async def _get_channel(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        return _json_response(self._channel_for_reader(request, me))

    async def _channel_member(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        channel = self._channel_for_reader(request, me)
        user_id = self._require_id(request.match_info["user_id"], "user_id")
        if not self._in_channel(channel["id"], user_id):
            raise AppError(404, "app.channel.get_member.missing.app_error")
        return _json_response({
            "channel_id": channel["id"], "user_id": user_id, "roles": "channel_user", "last_viewed_at": 0,
            "msg_count": 0, "mention_count": 0, "mention_count_root": 0, "urgent_mention_count": 0,
            "msg_count_root": 0,
            "notify_props": {"desktop": "default", "email": "default", "ignore_channel_mentions": "default",
                             "mark_unread": "all", "push": "default"},
            "last_update_at": channel["create_at"], "scheme_guest": False, "scheme_user": True,
            "scheme_admin": False, "explicit_roles": "",
        })

    async def _channel_posts(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        channel = self._channel_for_reader(request, me)
        try:
            page = max(int(request.query.get("page", "0") or 0), 0)
            per_page = min(max(int(request.query.get("per_page", "60") or 60), 1), 200)
        except ValueError as exc:
            raise AppError(400, "api.context.invalid_url_param.app_error", name="page") from exc
        stored = [p for p in reversed(self.posts) if p["channel_id"] == channel["id"] and not p.get("ephemeral")]
        since = request.query.get("since", "")
        if since not in ("", "0"):
            # GetPostsSince: every post of the channel changed after that time, with no paging
            if not since.isdigit():
                raise AppError(400, "api.context.invalid_url_param.app_error", name="since")
            chosen = [p for p in stored if p["update_at"] > int(since)]
            return _json_response({"order": [p["id"] for p in chosen], "posts": {p["id"]: p for p in chosen},
                                   "next_post_id": "", "prev_post_id": "", "has_next": False})
        chosen = stored[page * per_page:(page + 1) * per_page]
        return _json_response({"order": [p["id"] for p in chosen], "posts": {p["id"]: p for p in chosen},
                               "next_post_id": "", "prev_post_id": "", "has_next": len(stored) > (page + 1) * per_page})

    # ------------------------------------------------------------------ posts

    def _new_post(self, user_id: str, channel_id: str, message: str, *, root_id: str = "", post_type: str = "",
                  props: Mapping[str, Any] | None = None, file_ids: Iterable[str] = (),
                  pending_post_id: str = "") -> JSON:
        now = self._now_ms()
        return {
            "id": new_id(), "create_at": now, "update_at": now, "edit_at": 0, "delete_at": 0, "is_pinned": False,
            "user_id": user_id, "channel_id": channel_id, "root_id": root_id, "original_id": "",
            "message": message, "type": post_type, "props": dict(props or {}), "hashtags": parse_hashtags(message),
            "file_ids": list(file_ids), "pending_post_id": pending_post_id, "reply_count": 0, "last_reply_at": 0,
            "participants": None, "metadata": {},
        }

    def _deduplicate(self, pending_post_id: str) -> JSON | None:
        """app.deduplicateCreatePost: the post a repeated pending_post_id already made, within the TTL."""
        now = self.clock()
        seen = self._pending_post_ids.get(pending_post_id)
        if seen is None or seen[1] <= now:
            self._pending_post_ids[pending_post_id] = ("", now + PENDING_POST_IDS_TTL)
            return None
        if not seen[0]:
            raise AppError(500, "api.post.deduplicate_create_post.pending")
        post = next((p for p in self.posts if p["id"] == seen[0]), None)
        if post is None:
            raise AppError(500, "api.post.deduplicate_create_post.failed_to_get")
        return copy.deepcopy(post)

    async def _create_post(self, user_id: str, channel_id: str, message: str, *, root_id: str = "",
                           post_type: str = "", props: Mapping[str, Any] | None = None,
                           file_ids: Iterable[str] = (), pending_post_id: str = "") -> JSON:
        """app.CreatePost: deduplicate, store, attach files, count, broadcast ``posted``."""
        if pending_post_id:
            found = self._deduplicate(pending_post_id)
            if found is not None:
                return found
            try:
                post = await self._store_post(user_id, channel_id, message, root_id=root_id, post_type=post_type,
                                              props=props, file_ids=file_ids, pending_post_id=pending_post_id)
            except Exception:
                self._pending_post_ids.pop(pending_post_id, None)  # a failed create may be retried
                raise
            self._pending_post_ids[pending_post_id] = (post["id"], self.clock() + PENDING_POST_IDS_TTL)
            return post
        return await self._store_post(user_id, channel_id, message, root_id=root_id, post_type=post_type,
                                      props=props, file_ids=file_ids)

    async def _store_post(self, user_id: str, channel_id: str, message: str, *, root_id: str = "",
                          post_type: str = "", props: Mapping[str, Any] | None = None,
                          file_ids: Iterable[str] = (), pending_post_id: str = "") -> JSON:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise AppError(404, "app.channel.get.existing.app_error")
        if root_id:
            root = next((p for p in self.posts if p["id"] == root_id and not p.get("ephemeral")), None)
            if root is None or root["channel_id"] != channel_id:
                raise AppError(400, "api.post.create_post.root_id.app_error")
        # attachFilesToPost: only the author's own unattached uploads to this channel stick
        attached = [f for f in dict.fromkeys(file_ids)
                    if f in self.files and self.files[f]["user_id"] == user_id
                    and self.files[f]["channel_id"] == channel_id and not self.files[f]["post_id"]]
        post = self._new_post(user_id, channel_id, message, root_id=root_id, post_type=post_type, props=props,
                              file_ids=attached, pending_post_id=pending_post_id)
        for file_id in attached:
            self.files[file_id]["post_id"] = post["id"]
        if attached:
            post["metadata"] = {"files": [copy.deepcopy(self.files[f]) for f in attached]}
        self.posts.append(post)
        channel["last_post_at"] = post["create_at"]
        channel["total_msg_count"] += 1
        if not root_id:
            channel["last_root_post_at"] = post["create_at"]
            channel["total_msg_count_root"] += 1
        await self._broadcast_posted(post, channel)
        if self.on_post_created is not None:
            await self.on_post_created(copy.deepcopy(post))
        return copy.deepcopy(post)

    async def _send_ephemeral(self, target_id: str, post: JSON) -> JSON:
        """app.SendEphemeralPost: only ``target_id``'s connections get ``ephemeral_message``."""
        post = {**post, "type": "system_ephemeral"}
        post.setdefault("id", new_id())
        post.setdefault("create_at", self._now_ms())
        self.posts.append({**copy.deepcopy(post), "ephemeral": True, "user_id": target_id,
                           "author_id": post["user_id"]})
        data = {"post": _dumps(post)}
        broadcast = _broadcast(channel_id=post["channel_id"], user_id=target_id)
        for conn in list(self._conns):
            if conn.user_id == target_id:
                await self._send_event(conn, "ephemeral_message", data, broadcast)
        return post

    def _mentioned_members(self, post: JSON, channel: JSON) -> list[str]:
        members = self.channel_members.get(channel["id"], set())
        if channel["type"] == "D":
            return sorted(m for m in members if m != post["user_id"])
        names = {m[1:].lower().rstrip(_USERNAME_SPECIAL_CHARS) for m in _AT_MENTION.findall(post["message"])}
        return sorted(m for m in members
                      if m != post["user_id"] and self.users.get(m, {}).get("username") in names)

    async def _broadcast_posted(self, post: JSON, channel: JSON) -> None:
        sender = self.users.get(post["user_id"], {})
        sender_name = "@" + sender.get("username", "")
        data: JSON = {
            "channel_display_name": sender_name if channel["type"] == "D" else channel["display_name"],
            "channel_name": channel["name"], "channel_type": channel["type"],
            "post": _dumps(post),  # a JSON string inside the event, as the server sends it
            "sender_name": sender_name, "set_online": True, "team_id": channel["team_id"],
        }
        if post["file_ids"]:
            data["otherFile"] = "true"
            if any(self.files[f]["mime_type"].startswith("image/") for f in post["file_ids"]):
                data["image"] = "true"
        mentions = self._mentioned_members(post, channel)
        if mentions:
            data["mentions"] = _dumps(mentions)
        members = self.channel_members.get(channel["id"], set())
        broadcast = _broadcast(channel_id=channel["id"])
        for conn in list(self._conns):
            if conn.user_id in members:
                await self._send_event(conn, "posted", data, broadcast)

    async def _create_post_handler(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        body = await self._json_body(request, "post")
        if not isinstance(body, dict):
            raise AppError(400, "api.context.invalid_body_param.app_error", name="post")
        channel_id = body.get("channel_id") or ""
        # api4 userCreatePostPermissionCheckWithContext: create_post in the channel (members);
        # create_post_public is not granted to plain team members by default
        if not isinstance(channel_id, str) or not self._has_channel_access(channel_id, me):
            raise _permission_error("create_post", me)
        props = body.get("props") if isinstance(body.get("props"), dict) else {}
        file_ids = body.get("file_ids") if isinstance(body.get("file_ids"), list) else []
        post = await self._create_post(me, channel_id, str(body.get("message") or ""),
                                       root_id=str(body.get("root_id") or ""), props=props,
                                       file_ids=[str(f) for f in file_ids],
                                       pending_post_id=str(body.get("pending_post_id") or ""))
        return _json_response(post, 201)

    async def _create_ephemeral(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        body = await self._json_body(request, "body")
        if not isinstance(body, dict) or not body.get("user_id"):
            raise AppError(400, "api.context.invalid_body_param.app_error", name="user_id")
        if not isinstance(body.get("post"), dict):
            raise AppError(400, "api.context.invalid_body_param.app_error", name="post")
        if not self._is_admin(me):
            raise _permission_error("create_post_ephemeral", me)
        raw = body["post"]
        post = self._new_post(me, str(raw.get("channel_id") or ""), str(raw.get("message") or ""),
                              root_id=str(raw.get("root_id") or ""),
                              props=raw.get("props") if isinstance(raw.get("props"), dict) else None)
        return _json_response(await self._send_ephemeral(str(body["user_id"]), post), 201)

    async def _get_post(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        post_id = self._require_id(request.match_info["post_id"], "post_id")
        post = next((p for p in self.posts if p["id"] == post_id and not p.get("ephemeral")), None)
        if post is None:
            raise AppError(404, "app.post.get.app_error")
        if not self._can_read_channel(self.channels[post["channel_id"]], me):
            raise _permission_error("read_channel", me)
        return _json_response(post)

    async def click(self, user: UserRef, post_id: str, action_id: str) -> tuple[int, JSON]:
        """``user`` clicks a message button, like ``POST /posts/{id}/actions/{action}``: (status, body)."""
        try:
            return 200, await self._post_action(_id_of(user), post_id, action_id)
        except AppError as err:
            return err.status, err.to_json(new_id())

    async def _do_post_action(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        post_id = self._require_id(request.match_info["post_id"], "post_id")
        return _json_response(await self._post_action(me, post_id, request.match_info["action_id"]))

    async def _post_action(self, user_id: str, post_id: str, action_id: str) -> JSON:
        """app.DoPostActionWithCookie: the stored context goes to the integration; its answer is applied."""
        post = next((p for p in self.posts if p["id"] == post_id and not p.get("ephemeral")), None)
        if post is None:
            raise AppError(404, "app.post.get.app_error")
        channel = self.channels[post["channel_id"]]
        if not self._can_read_channel(channel, user_id):
            raise _permission_error("read_channel", user_id)
        actions = [a for att in (post.get("props") or {}).get("attachments") or [] for a in att.get("actions") or []]
        chosen = next((a for a in actions if a.get("id") == action_id), None)
        if chosen is None:
            raise AppError(404, "api.post.do_action.action_id.app_error")
        integration = chosen.get("integration") or {}
        team = self.teams.get(channel["team_id"]) or {}
        body = {"user_id": user_id, "user_name": self.users[user_id]["username"], "channel_id": channel["id"],
                "channel_name": channel["name"], "team_id": channel["team_id"], "team_domain": team.get("name", ""),
                "post_id": post_id, "trigger_id": new_id(), "type": "", "data_source": "",
                "context": integration.get("context") or {}}
        assert self._http is not None
        async with self._http.post(integration["url"], json=body) as resp:
            raw = await resp.read()
            if resp.status != 200:
                raise AppError(400, "api.post.do_action.action_integration.app_error",
                               detailed=f"status={resp.status} body={raw[:200]!r}")
        answer = json.loads(raw or b"{}")
        if answer.get("update"):
            post.update({k: v for k, v in answer["update"].items() if k in ("message", "props")})
        if answer.get("ephemeral_text"):
            await self._send_ephemeral(user_id, self._new_post(self.users[user_id]["id"], channel["id"],
                                                               answer["ephemeral_text"]))
        return {"status": "OK", "trigger_id": body["trigger_id"]}

    # ------------------------------------------------------------------ files

    def _store_file(self, user_id: str, channel_id: str, name: str, data: bytes) -> JSON:
        now = self._now_ms()
        extension = os.path.splitext(name)[1].lstrip(".").lower()
        info: JSON = {
            "id": new_id(), "user_id": user_id, "channel_id": channel_id, "post_id": "", "create_at": now,
            "update_at": now, "delete_at": 0, "name": name, "extension": extension, "size": len(data),
            # model.GetInfoForBytes: the MIME type comes from the extension, not from the client
            "mime_type": (mimetypes.guess_type("x." + extension)[0] or "") if extension else "",
            "mini_preview": None, "remote_id": None, "archived": False,
        }
        self.files[info["id"]] = info
        self.file_contents[info["id"]] = data
        return info

    async def _upload_files(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        channel_id = request.query.get("channel_id", "")
        infos: list[JSON] = []
        client_ids: list[str] = []

        def check_channel() -> None:
            if not is_valid_id(channel_id):
                raise AppError(400, "api.context.invalid_body_param.app_error", name="channel_id")
            if not self._has_channel_access(channel_id, me):
                raise _permission_error("upload_file", me)

        if not request.content_type.startswith("multipart/"):
            # uploadFileSimple: the body is the file, name and channel in the query
            check_channel()
            name = request.query.get("filename", "")
            infos.append(self._store_file(me, channel_id, name, await request.read()))
        else:
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, aiohttp.BodyPartReader):
                    continue
                if part.name == "channel_id":
                    channel_id = (await part.text()).strip()
                elif part.name == "client_ids":
                    client_ids.append(await part.text())
                elif part.name == "files":
                    check_channel()
                    infos.append(self._store_file(me, channel_id, part.filename or "", await part.read()))
        if not infos:
            raise AppError(400, "api.file.upload_file.incorrect_number_of_files.app_error")
        return _json_response({"file_infos": infos, "client_ids": client_ids}, 201)

    def _readable_file(self, request: web.Request, me: str) -> JSON:
        info = self.files.get(self._require_id(request.match_info["file_id"], "file_id"))
        if info is None:
            raise AppError(404, "app.file_info.get.app_error")
        # api4/file.go: the uploader, or whoever can read the channel of the post it is attached to
        if info["user_id"] != me and not self._is_admin(me):
            channel = self.channels.get(info["channel_id"])
            if not info["post_id"] or channel is None or not self._can_read_channel(channel, me):
                raise _permission_error("read_channel_content", me)
        return info

    async def _file_info(self, request: web.Request) -> web.Response:
        return _json_response(self._readable_file(request, self._session_user(request)))

    async def _file_content(self, request: web.Request) -> web.Response:
        info = self._readable_file(request, self._session_user(request))
        quoted = urllib.parse.quote(info["name"])
        return web.Response(body=self.file_contents[info["id"]], headers={
            "Content-Type": info["mime_type"] or "application/octet-stream",
            "Content-Disposition": f"attachment;filename=\"{quoted}\"; filename*=UTF-8''{quoted}",
        })

    # ------------------------------------------------------------------ commands (api4/command.go)

    def _live_command(self, command_id: str) -> JSON | None:
        command = self.commands.get(command_id)
        return command if command is not None and not command["delete_at"] else None

    def _team_commands(self, team_id: str) -> list[JSON]:
        return [c for c in self.commands.values() if c["team_id"] == team_id and not c["delete_at"]]

    def _check_trigger_unique(self, team_id: str, trigger: str, exclude_id: str = "") -> None:
        trigger = trigger.lower()
        taken = trigger in BUILTIN_TRIGGERS or any(
            c["id"] != exclude_id and c["trigger"].lower() == trigger for c in self._team_commands(team_id))
        if taken:
            raise AppError(400, "api.command.duplicate_trigger.app_error")

    @staticmethod
    def _validate_command(cmd: JSON) -> None:
        """model.Command.IsValid."""
        def invalid(what: str) -> AppError:
            return AppError(400, f"model.command.is_valid.{what}.app_error")

        if not is_valid_id(cmd["id"]):
            raise invalid("id")
        if len(cmd["token"]) != 26:
            raise invalid("token")
        if not is_valid_id(cmd["creator_id"]):
            raise invalid("user_id")
        if not is_valid_id(cmd["team_id"]):
            raise invalid("team_id")
        trigger = cmd["trigger"]
        if not 1 <= len(trigger) <= 128 or trigger.startswith("/") or " " in trigger:
            raise invalid("trigger")
        if not cmd["url"] or len(cmd["url"]) > 1024:
            raise invalid("url")
        if not cmd["url"].startswith(("http://", "https://")):
            raise invalid("url_http")
        if cmd["method"] not in ("G", "P"):
            raise invalid("method")
        if len(cmd["display_name"]) > 64:
            raise invalid("display_name")
        if len(cmd["description"]) > 128:
            raise invalid("description")

    async def _decode_command(self, request: web.Request) -> JSON:
        body = await self._json_body(request, "command")
        try:
            return _go_decode(body, _COMMAND_FIELDS, _COMMAND_DEFAULTS, "model.Command")
        except ValueError as exc:
            raise AppError(400, "api.context.invalid_body_param.app_error", detailed=str(exc),
                           name="command") from exc

    @staticmethod
    def _command_json(cmd: JSON) -> JSON:
        return {k: v for k, v in cmd.items() if not (k == "autocomplete_data" and v is None)
                and not (k == "autocomplete_icon_data" and not v)}

    @staticmethod
    def _sanitized(cmd: JSON) -> JSON:
        # model.Command.Sanitize: what non-managers and the full listing see
        return {**cmd, "token": "", "creator_id": "", "method": "", "url": "", "username": "", "icon_url": ""}

    async def _create_command(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        cmd = await self._decode_command(request)
        if not self._can_manage_commands_in(cmd["team_id"], me):
            raise _permission_error("manage_slash_commands", me)
        cmd["creator_id"] = me
        cmd["trigger"] = cmd["trigger"].lower()
        self._check_trigger_unique(cmd["team_id"], cmd["trigger"])
        if cmd["id"]:
            # SqlCommandStore.Save refuses a command that already has an id
            raise AppError(500, "app.command.createcommand.internal_error", detailed="id must be empty")
        cmd["id"] = new_id()
        cmd["token"] = cmd["token"] or new_id()  # Command.PreSave keeps a token given by the client
        cmd["create_at"] = cmd["update_at"] = self._now_ms()
        cmd["delete_at"] = 0
        self._validate_command(cmd)
        self.commands[cmd["id"]] = cmd
        return _json_response(self._command_json(cmd), 201)

    async def _list_commands(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        team_id = request.query.get("team_id", "")
        if not team_id:
            raise AppError(400, "api.context.invalid_body_param.app_error", name="team_id")
        if not self._has_team_access(team_id, me):
            raise _permission_error("view_team", me)
        custom_only = request.query.get("custom_only", "").lower() in ("1", "t", "true")
        can_manage = self._can_manage_commands_in(team_id, me)
        commands = self._team_commands(team_id)
        if custom_only:
            if not can_manage:
                raise _permission_error("manage_slash_commands", me)
            listing = commands  # ListTeamCommands: full commands, tokens included
        elif can_manage:
            listing = [self._sanitized(c) for c in commands]  # ListAllCommands (built-ins not faked)
        else:
            listing = [self._sanitized(c) for c in commands if c["auto_complete"]]  # ListAutocompleteCommands
        return _json_response([self._command_json(c) for c in listing])

    def _managed_command(self, request: web.Request, me: str) -> JSON:
        """A live command the caller may manage; 404 otherwise, so ids do not leak (api4)."""
        cmd = self._live_command(request.match_info["command_id"])
        if cmd is None or not self._can_manage_commands_in(cmd["team_id"], me):
            raise AppError(404, "store.sql_command.save.get.app_error")
        return cmd

    def _require_owner_or_admin(self, cmd: JSON, me: str) -> None:
        if cmd["creator_id"] != me and not self._is_admin(me):
            raise _permission_error("manage_others_slash_commands", me)

    async def _get_command(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        return _json_response(self._command_json(self._managed_command(request, me)))

    async def _update_command(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        updated = await self._decode_command(request)
        if updated["id"] != request.match_info["command_id"]:
            raise AppError(400, "api.context.invalid_body_param.app_error", name="command")
        old = self._live_command(updated["id"])
        if old is None:
            raise AppError(404, "store.sql_command.save.get.app_error")
        if updated["team_id"] != old["team_id"]:
            raise AppError(400, "api.command.team_mismatch.app_error", detailed=f"user_id={me}")
        old = self._managed_command(request, me)
        self._require_owner_or_admin(old, me)
        # app.UpdateCommand keeps identity, token, times and owner; everything else is replaced
        for key in ("id", "token", "create_at", "delete_at", "creator_id", "plugin_id", "team_id"):
            updated[key] = old[key]
        updated["trigger"] = updated["trigger"].lower()
        updated["update_at"] = self._now_ms()
        self._check_trigger_unique(updated["team_id"], updated["trigger"], exclude_id=updated["id"])
        self._validate_command(updated)
        self.commands[updated["id"]] = updated
        return _json_response(self._command_json(updated))

    async def _delete_command(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        cmd = self._managed_command(request, me)
        self._require_owner_or_admin(cmd, me)
        cmd["delete_at"] = self._now_ms()
        return _json_response({"status": "OK"})

    async def _regen_token(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        cmd = self._managed_command(request, me)
        self._require_owner_or_admin(cmd, me)
        cmd["token"] = new_id()
        cmd["update_at"] = self._now_ms()
        return _json_response({"token": cmd["token"]})

    # ------------------------------------------------------------------ executing (app/command.go)

    async def _execute_handler(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        body = await self._json_body(request, "command_args")
        if not isinstance(body, dict):
            raise AppError(400, "api.context.invalid_body_param.app_error", name="command_args")
        return _json_response(await self._execute_command(me, body))

    def _trigger_ids(self, user_id: str) -> tuple[str, str]:
        """model.GenerateTriggerId: (client trigger id, signed trigger id sent to the integration)."""
        client_id = new_id()
        data = f"{client_id}:{user_id}:{self._now_ms()}:"
        signature = base64.b64encode(os.urandom(64)).decode()
        return client_id, base64.b64encode((data + signature).encode()).decode()

    def _user_mentions(self, message: str, team_id: str) -> list[tuple[str, str]]:
        """app.MentionsToTeamMembers: (name, user id) of @mentions of team members."""
        found: list[tuple[str, str]] = []
        seen: set[str] = set()
        for match in _AT_MENTION.findall(message):
            name = match[1:].lower()
            if name in seen or not (1 <= len(name) <= 64 and _VALID_USERNAME_ALLOW_REMOTE.match(name)
                                    and name not in _RESTRICTED_USERNAMES):
                continue
            seen.add(name)
            candidate = name
            user = self.find_user(candidate)
            # trimUsernameSpecialChar: "@bob." mentions bob
            while user is None and candidate and candidate[-1] in _USERNAME_SPECIAL_CHARS:
                candidate = candidate[:-1]
                user = self.find_user(candidate)
            # the server collects them in a map keyed by name: "@bob" and "@bob." are one mention
            if user is not None and self._in_team(team_id, user["id"]) and candidate not in dict(found):
                found.append((candidate, user["id"]))
        return found

    def _channel_mentions(self, message: str, team_id: str) -> list[tuple[str, str]]:
        """app.MentionsToPublicChannels: (name, channel id) of ~mentions of public channels."""
        found: list[tuple[str, str]] = []
        for name in dict.fromkeys(m[1:] for m in _CHANNEL_MENTION.findall(message)):
            channel = self.find_channel(team_id, name)
            if channel is not None and channel["type"] == "O":
                found.append((name, channel["id"]))
        return found

    async def _execute_command(self, user_id: str, args: JSON) -> JSON:
        command, channel_id = args.get("command"), args.get("channel_id")
        if not isinstance(command, str) or len(command) <= 1 or not command.startswith("/") \
                or not is_valid_id(channel_id):
            raise AppError(400, "api.command.execute_command.start.app_error")
        assert isinstance(channel_id, str)
        if not self._has_channel_access(channel_id, user_id):
            raise _permission_error("use_slash_commands", user_id)
        channel = self.channels.get(channel_id)
        if channel is None:
            raise AppError(404, "app.channel.get.existing.app_error")
        team_id = str(args.get("team_id") or "")
        if channel["type"] in ("O", "P"):
            team_id = channel["team_id"]  # commands of another team cannot run here
        elif not self._has_team_access(team_id, user_id):
            raise _permission_error("use_slash_commands", user_id)
        root_id = str(args.get("root_id") or "")

        # ExecuteCommand
        space = _first_space(command)
        trigger, message = (command[:space], command[space + 1:]) if space != -1 else (command, "")
        trigger = trigger.lower()
        if not trigger.startswith("/"):
            raise AppError(400, "api.command.execute_command.format.app_error")
        trigger = trigger[1:]
        client_trigger_id, trigger_id = self._trigger_ids(user_id)

        # tryExecuteCustomCommand
        team = self.teams.get(team_id)
        if team is None:
            raise AppError(404, "app.team.get.find.app_error")
        cmd = None
        for team_cmd in self._team_commands(team_id):
            if team_cmd["trigger"] == trigger:
                cmd = team_cmd
        if cmd is None:
            shown = trigger if len(trigger) <= MAX_TRIGGER_LEN else trigger[:MAX_TRIGGER_LEN] + "..."
            raise AppError(404, "api.command.execute_command.not_found.app_error", trigger=shown)
        values: dict[str, list[str]] = {
            "token": [cmd["token"]], "team_id": [cmd["team_id"]], "team_domain": [team["name"]],
            "channel_id": [channel_id], "channel_name": [channel["name"]], "user_id": [user_id],
            "user_name": [self.users[user_id]["username"]], "command": ["/" + trigger], "text": [message],
            "trigger_id": [trigger_id], "root_id": [root_id],
        }
        for key, mentions in (("user_mentions", self._user_mentions(message, team["id"])),
                              ("channel_mentions", self._channel_mentions(message, team["id"]))):
            if mentions:
                values[key] = [name for name, _ in mentions]
                values[key + "_ids"] = [ident for _, ident in mentions]
        hook = {"id": new_id(), "command_id": cmd["id"], "user_id": user_id, "channel_id": channel_id,
                "root_id": root_id, "create_at": self._now_ms(), "use_count": 0}
        self.hooks[hook["id"]] = hook
        values["response_url"] = [f"{self.base_url}/hooks/commands/{hook['id']}"]
        response = await self._do_command_request(cmd, values)
        response["trigger_id"] = client_trigger_id
        handle_args = {"user_id": user_id, "channel_id": channel_id, "team_id": team_id, "root_id": root_id,
                       "command": command}
        return await self._handle_command_response(handle_args, response)

    async def _do_command_request(self, cmd: JSON, values: dict[str, list[str]]) -> JSON:
        """app.DoCommandRequest: the outgoing request and the parsing of its answer."""
        assert self._http is not None, "start() the fake first"
        # url.Values.Encode: keys sorted, values of a key in order, spaces as '+'
        encoded = urllib.parse.urlencode([(k, v) for k in sorted(values) for v in values[k]])
        headers = {"Accept": "application/json", "Accept-Encoding": "gzip", "User-Agent": "Mattermost-Bot/1.1"}
        if cmd["token"]:
            headers["Authorization"] = "Token " + cmd["token"]
        body: bytes | None = None
        if cmd["method"] == "G":
            parts = urllib.parse.urlsplit(cmd["url"])
            url = urllib.parse.urlunsplit(parts._replace(query=f"{parts.query}&{encoded}" if parts.query else encoded))
            method = "GET"
        else:
            url, method, body = cmd["url"], "POST", encoded.encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.slash_requests.append({"method": method, "url": url, "headers": dict(headers),
                                    "form": [(k, v) for k in sorted(values) for v in values[k]]})
        try:
            async with self._http.request(method, yarl.URL(url, encoded=True), data=body, headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=self.command_timeout)) as resp:
                raw = await resp.read()
                status, reason = resp.status, resp.reason or ""
                content_type = resp.headers.get("Content-Type", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AppError(500, "api.command.execute_command.failed.app_error", detailed=repr(exc),
                           trigger=cmd["trigger"]) from exc
        if status != 200:
            raise AppError(500, "api.command.execute_command.failed_resp.app_error",
                           detailed=raw.decode("utf-8", "replace"), trigger=cmd["trigger"],
                           response_status=f"{status} {reason}".strip())
        # model.CommandResponseFromHTTPBody: JSON only for exactly application/json (case matters)
        if content_type.split(";")[0].strip() == "application/json":
            try:
                return decode_command_response(json.loads(raw.decode("utf-8")))
            except (ValueError, UnicodeDecodeError) as exc:
                raise AppError(500, "api.command.execute_command.failed.app_error", detailed=str(exc),
                               trigger=cmd["trigger"]) from exc
        return plain_text_command_response(raw.decode("utf-8", "replace"))

    async def _handle_command_response(self, args: JSON, response: JSON) -> JSON:
        """app.HandleCommandResponse: the response, then each extra response; the last error wins."""
        trigger = args["command"].split(" ")[0][1:].lower() if args["command"] else ""
        last_error: AppError | None = None
        for each in [response, *(response["extra_responses"] or [])]:
            try:
                await self._handle_command_response_post(args, each)
            except AppError as err:
                last_error = err
        if last_error is not None:
            raise AppError(500, "api.command.execute_command.create_post_failed.app_error",
                           detailed=f"{last_error.error_id}: {last_error.message}", trigger=trigger)
        return response

    async def _handle_command_response_post(self, args: JSON, response: JSON) -> None:
        """app.HandleCommandResponsePost and CreateCommandPost for a custom command."""
        post: JSON = {"channel_id": args["channel_id"], "root_id": args["root_id"], "user_id": args["user_id"],
                      "type": response["type"], "props": dict(response["props"] or {})}
        if response["channel_id"]:
            # GetChannelMember(response.ChannelId, args.UserId): no admin bypass here
            if not self._in_channel(response["channel_id"], args["user_id"]):
                raise AppError(403, "api.command.command_post.forbidden.app_error")
            post["channel_id"] = response["channel_id"]
        # a custom command's answer is a bot post; username/icon overrides are off by default
        post["props"]["from_webhook"] = "true"
        if not response["skip_slack_parsing"]:
            response["text"] = self._process_slack_text(response["text"])
        message = response["text"] if response["skip_slack_parsing"] else _SLACK_LINK.sub(r"[\2](\1)",
                                                                                           response["text"])
        if post["type"].startswith("system_"):
            raise AppError(400, "api.context.invalid_param.app_error", name="post.type")
        attachments = response["attachments"]
        if attachments is not None:
            if attachments:
                post["props"]["attachments"] = attachments
                post["type"] = post["type"] or "slack_attachment"
            else:
                post["props"].pop("attachments", None)
        if response["response_type"] == "in_channel":
            await self._create_post(post["user_id"], post["channel_id"], message, root_id=post["root_id"],
                                    post_type=post["type"], props=post["props"])
        elif response["response_type"] in ("", "ephemeral") and (response["text"] or attachments is not None):
            await self._send_ephemeral(post["user_id"], self._new_post(
                post["user_id"], post["channel_id"], message, root_id=post["root_id"], post_type=post["type"],
                props=post["props"]))

    def _process_slack_text(self, text: str) -> str:
        """app.ProcessSlackText: <!channel>/<!here>/<!all> and <@userid> become @mentions."""
        for word in ("channel", "here", "all"):
            text = text.replace(f"<!{word}>", f"@{word}")

        def user(match: re.Match[str]) -> str:
            found = self.users.get(match.group(1))
            return "@" + found["username"] if found else match.group(0)

        return _SLACK_USER_ID.sub(user, text)

    async def _command_hook(self, request: web.Request) -> web.Response:
        """web.commandWebhook + app.HandleCommandWebhook: a response_url, without authentication."""
        raw = await request.read()
        if request.headers.get("Content-Type", "").split(";")[0].strip() == "application/json":
            try:
                response = decode_command_response(json.loads(raw.decode("utf-8")))
            except (ValueError, UnicodeDecodeError) as exc:
                raise AppError(400, "web.command_webhook.parse.app_error", detailed=str(exc)) from exc
        else:
            response = plain_text_command_response(raw.decode("utf-8", "replace"))
        hook = self.hooks.get(request.match_info["hook_id"])
        if hook is None or hook["create_at"] <= self._now_ms() - COMMAND_WEBHOOK_LIFETIME_MS:
            raise AppError(404, "app.command_webhook.get.missing")
        cmd = self._live_command(hook["command_id"])
        if cmd is None:
            raise AppError(400, "web.command_webhook.command.app_error")
        if hook["use_count"] >= COMMAND_WEBHOOK_USES:
            raise AppError(400, "app.command_webhook.try_use.invalid")
        hook["use_count"] += 1
        args = {"user_id": hook["user_id"], "channel_id": hook["channel_id"], "team_id": cmd["team_id"],
                "root_id": hook["root_id"], "command": ""}
        await self._handle_command_response(args, response)
        return web.Response(text="ok", content_type="text/plain")

    # ------------------------------------------------------------------ WebSocket

    async def _send(self, conn: _WsConn, payload: JSON) -> None:
        async with conn.lock:
            if conn.ws.closed:
                return
            try:
                await conn.ws.send_str(_dumps(payload))
            except ConnectionError:
                return

    async def _send_event(self, conn: _WsConn, event: str, data: JSON, broadcast: JSON) -> None:
        async with conn.lock:
            if conn.ws.closed:
                return
            payload = {"event": event, "data": data, "broadcast": broadcast, "seq": conn.seq}
            conn.seq += 1
            try:
                await conn.ws.send_str(_dumps(payload))
            except ConnectionError:
                return

    async def _send_hello(self, conn: _WsConn) -> None:
        assert conn.user_id is not None
        data = {"connection_id": conn.connection_id, "server_version": f"{SERVER_VERSION}.0.fake.false"}
        await self._send_event(conn, "hello", data, _broadcast(user_id=conn.user_id))

    async def _ws_error(self, conn: _WsConn, seq: Any, error_id: str, status: int) -> None:
        err = AppError(status, error_id).to_json("")
        del err["request_id"]
        await self._send(conn, {"status": "FAIL", "seq_reply": seq, "error": err})

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        # A token in the upgrade request authenticates at once (hello follows, the challenge is then
        # ignored); otherwise the client must send authentication_challenge (websocket_router.go).
        try:
            header_user: str | None = self._session_user(request)
        except AppError:
            header_user = None
        ws = web.WebSocketResponse(timeout=2.0)
        await ws.prepare(request)
        conn = _WsConn(ws=ws)
        self._conns.append(conn)
        try:
            if header_user is not None:
                conn.user_id = header_user
                self.ws_authentications += 1
                await self._send_hello(conn)
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    req = json.loads(msg.data)
                except ValueError:
                    continue
                if not isinstance(req, dict):
                    continue
                if not await self._ws_request(conn, req):
                    break
        finally:
            self._conns.remove(conn)
        return ws

    async def _ws_request(self, conn: _WsConn, req: JSON) -> bool:
        """One client request; False when the connection must close."""
        action, seq = req.get("action"), req.get("seq")
        if not action:
            await self._ws_error(conn, seq, "api.web_socket_router.no_action.app_error", 400)
            return True
        if not isinstance(seq, int) or seq <= 0:
            await self._ws_error(conn, seq, "api.web_socket_router.bad_seq.app_error", 400)
            return True
        if action == "authentication_challenge":
            if conn.user_id is not None:
                return True  # already authenticated: the server says nothing
            data = req.get("data")
            token = data.get("token") if isinstance(data, dict) else None
            user_id = self.tokens.get(token) if isinstance(token, str) else None
            if user_id is None:
                await conn.ws.close()  # the server closes on a bad or missing token
                return False
            conn.user_id = user_id
            self.ws_authentications += 1
            ok = {"status": "OK", "seq_reply": seq}
            if self.hello_first:
                await self._send_hello(conn)
                await self._send(conn, ok)
            else:
                await self._send(conn, ok)
                await self._send_hello(conn)
            return True
        if conn.user_id is None:
            await self._ws_error(conn, seq, "api.web_socket_router.not_authenticated.app_error", 401)
        elif action in ("user_typing", "get_statuses", "get_statuses_by_ids", "presence", "posted_notify_ack",
                        "user_update_active_status"):
            await self._send(conn, {"status": "OK", "seq_reply": seq})
        else:
            await self._ws_error(conn, seq, "api.web_socket_router.bad_action.app_error", 501)
        return True
