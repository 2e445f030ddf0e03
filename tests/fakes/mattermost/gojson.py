"""The fake's wire format: Go's JSON decoding rules, ids, AppErrors and the server's message texts."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

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
