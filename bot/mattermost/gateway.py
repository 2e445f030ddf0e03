"""The gateway to Mattermost over mattermostautodriver's AsyncTypedDriver: identity, lookups, posts,
files, /rec self-registration, and the WebSocket listener for direct messages to the bot.

Its coroutines run on the bot's event loop; command handlers run in worker threads and use the
blocking wrappers, which hand the work to that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from mattermostautodriver import AsyncTypedDriver
from mattermostautodriver.exceptions import MattermostError

from bot.config import Config
from bot.errors import UserError
from bot.i18n import ENGLISH, N_, _, speaking
from bot.mattermost.websocket import listen_forever
from bot.render import cap

log = logging.getLogger(__name__)

CALL_TIMEOUT = 20.0
PROFILE_TIMEOUT = 2.0
UPLOAD_TIMEOUT = 600.0  # an export file may be up to Mattermost's 100 MB
# Written in the config's language when the command is registered (Mattermost shows them to everyone).
COMMAND_DESCRIPTION = N_("Record, find and share operation records")
COMMAND_HINT = N_("add <text> | find <words> | list | show <id> | share <id> @user | help")


KEY_PROP = "recbot_key"  # the post prop that carries an alert's delivery key


def permanent(exc: BaseException) -> bool:
    """Mattermost refused for good (a 4xx other than 408 and 429): sending it again changes nothing."""
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and 400 <= status < 500 and status not in (408, 429)


class GatewayError(UserError):
    """Mattermost refused or could not be reached; the message says what to do."""


class FileTooLarge(GatewayError):
    """Mattermost refused an upload over its FileSettings.MaxFileSize (HTTP 413)."""


def explain(exc: BaseException, doing: str) -> str:
    """One sentence about a failed call: Mattermost's own message when there is one."""
    if isinstance(exc, MattermostError):
        return _("{doing}: Mattermost answered {status} ({error})", doing=doing, status=exc.status_code, error=exc)
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return _("{doing}: Mattermost did not answer in time", doing=doing)
    return _("{doing}: {kind}: {error}", doing=doing, kind=type(exc).__name__, error=exc)


@dataclass
class Identity:
    user_id: str = ""
    username: str = ""
    team_id: str = ""
    alert_channel_id: str = ""
    problems: list[str] = field(default_factory=list)


def driver_options(url: str, token: str) -> dict[str, Any]:
    """The driver wants host, scheme and port apart (it cannot reach a server under a sub-path)."""
    parts = urlsplit(url)
    scheme = parts.scheme or "https"
    port = parts.port or (443 if scheme == "https" else 80)
    return {"url": parts.hostname or "localhost", "scheme": scheme, "port": port, "token": token,
            "timeout": 30, "request_timeout": CALL_TIMEOUT, "max_retries": 3, "retry_max_sleep": 10}


class Gateway:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.mm = config.mattermost
        self.driver = AsyncTypedDriver(driver_options(self.mm.url, self.mm.bot_token))
        self.me = Identity()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._listener: asyncio.Task | None = None
        self.connected = asyncio.Event()

    # ---- start-up ---------------------------------------------------------------------------

    async def start(self) -> Identity:
        """Log in and find the team (and alert channel); problems are collected, not raised."""
        self.loop = asyncio.get_running_loop()
        me = Identity()
        try:
            user = await self.driver.login()
            me.user_id, me.username = user["id"], user["username"]
        except Exception as exc:  # any failure here means "Mattermost is not usable yet"
            me.problems.append(explain(exc, f"cannot log in to {self.mm.url} with mattermost.bot_token") +
                               "; check mattermost.url and REC_MATTERMOST__BOT_TOKEN")
            self.me = me
            return me
        try:
            team = await self.driver.teams.get_team_by_name(self.mm.team)
            me.team_id = team["id"]
        except Exception as exc:
            me.problems.append(explain(exc, f"team '{self.mm.team}' not found") +
                               f"; check mattermost.team and that @{me.username} is in that team")
        if me.team_id and self.config.alerts.channel:
            me.alert_channel_id = await self._alert_channel(me)
        self.me = me
        return me

    async def _alert_channel(self, me: Identity) -> str:
        name = self.config.alerts.channel
        try:
            channel = await self.driver.channels.get_channel_by_name(me.team_id, name)
        except Exception as exc:
            me.problems.append(explain(exc, f"alert channel ~{name} not found in team {self.mm.team}") +
                               "; create it or fix alerts.channel")
            return ""
        try:
            await self.driver.channels.get_channel_member(channel["id"], me.user_id)
        except Exception:
            me.problems.append(f"the bot is not a member of ~{name}: add @{me.username} to that channel")
        return channel["id"]

    async def alert_channel_id(self) -> str:
        """The alert channel's id, or "" while it cannot be found (looked up again later)."""
        if not self.me.team_id or not self.config.alerts.channel:
            return ""
        try:
            channel = await self.driver.channels.get_channel_by_name(self.me.team_id, self.config.alerts.channel)
        except Exception as exc:
            with speaking(ENGLISH):  # a log line, whatever language the caller speaks
                log.warning("%s", explain(exc, f"alert channel ~{self.config.alerts.channel} not found"))
            return ""
        return channel["id"]

    async def register_command(self) -> tuple[str, str]:
        """Create or update the team's /trigger command so it calls this bot.

        Returns (what was done: "created", "updated" or "unchanged", the command's token);
        raises GatewayError when it can't.
        """
        if not self.me.team_id:
            raise GatewayError("cannot register the command without the team")
        if not self.config.server.public_url:
            raise GatewayError("server.public_url is empty, so Mattermost could not reach the bot; "
                               "set it (e.g. http://recbot:8070) or turn mattermost.register_command off")
        with speaking(self.config.language):
            description, hint = _(COMMAND_DESCRIPTION), _(COMMAND_HINT)
        want = {
            "trigger": self.mm.trigger, "method": "P",
            "url": self.config.server.public_url.rstrip("/") + "/mattermost/command",
            "display_name": "recbot", "description": description, "auto_complete": True,
            "auto_complete_desc": description, "auto_complete_hint": hint,
            "username": "recbot",
        }
        try:
            commands = await self.driver.commands.list_commands(team_id=self.me.team_id, custom_only=True)
            existing = next((c for c in commands or [] if c.get("trigger") == self.mm.trigger
                             and not c.get("delete_at")), None)
            if existing is None:
                created = await self.driver.client.post("/api/v4/commands",
                                                        options={**want, "team_id": self.me.team_id})
                return "created", created["token"]
            if all(existing.get(k) == v for k, v in want.items()):
                return "unchanged", existing["token"]
            updated = await self.driver.client.put(f"/api/v4/commands/{existing['id']}",
                                                   options={**existing, **want})
            return "updated", updated.get("token") or existing["token"]
        except MattermostError as exc:
            if exc.status_code in (401, 403):
                raise GatewayError(
                    f"the bot account may not manage slash commands in team {self.mm.team} "
                    f"({exc.status_code}): give @{self.me.username} that permission, or create /{self.mm.trigger} "
                    "by hand and put its token in mattermost.slash_tokens") from None
            raise GatewayError(explain(exc, "registering the command failed")) from None
        except Exception as exc:
            raise GatewayError(explain(exc, "registering the command failed")) from None

    async def command_status(self) -> tuple[bool, str]:
        """Whether the team has /trigger pointing at this bot (for `check`; changes nothing)."""
        want_url = self.config.server.public_url.rstrip("/") + "/mattermost/command"
        try:
            commands = await self.driver.commands.list_commands(team_id=self.me.team_id, custom_only=True)
        except MattermostError as exc:
            if exc.status_code not in (401, 403, 404):
                return False, explain(exc, "listing the team's commands failed")
            if self.mm.slash_tokens:
                return True, (f"the bot may not manage slash commands in team {self.mm.team}; "
                              "serving the hand-made command's token from mattermost.slash_tokens")
            return False, (f"the bot may not manage slash commands in team {self.mm.team}: give @{self.me.username} "
                           f"that permission, or create /{self.mm.trigger} by hand and put its token in "
                           "mattermost.slash_tokens")
        except Exception as exc:
            return False, explain(exc, "listing the team's commands failed")
        found = next((c for c in commands or [] if c.get("trigger") == self.mm.trigger), None)
        if found is None:
            if self.mm.register_command:
                return True, f"/{self.mm.trigger} is not registered yet; serve will create it"
            return False, f"/{self.mm.trigger} does not exist in team {self.mm.team}: create it or set register_command"
        if found.get("url") != want_url:
            if self.mm.register_command:
                return True, f"/{self.mm.trigger} calls {found.get('url')}; serve will point it at {want_url}"
            return False, f"/{self.mm.trigger} calls {found.get('url')}, not {want_url}: fix the command's URL"
        return True, f"/{self.mm.trigger} registered, calling {want_url}"

    # ---- calls used by commands ---------------------------------------------------------------

    async def find_user_id(self, username: str) -> str | None:
        """The id of the account that holds this name now (no cache: names move between accounts)."""
        name = username.lower().lstrip("@")
        try:
            user = await self.driver.users.get_user_by_username(name)
        except MattermostError as exc:
            if exc.status_code != 404:
                raise GatewayError(explain(exc, _("looking up @{name} failed", name=name))) from None
            return None
        return user["id"]

    async def profile(self, user_id: str) -> tuple[str, str]:
        """(locale, IANA timezone) from the user's Mattermost profile; either may be ""."""
        user = await self.driver.users.get_user(user_id)
        zone = user.get("timezone") or {}
        automatic = str(zone.get("useAutomaticTimezone", "true")).lower() == "true"
        name = zone.get("automaticTimezone") if automatic else zone.get("manualTimezone")
        return str(user.get("locale") or ""), str(name or "")

    async def username_of(self, user_id: str) -> str:
        user = await self.driver.users.get_user(user_id)
        return user["username"]

    async def direct_channel(self, user_id: str) -> str:
        channel = await self.driver.channels.create_direct_channel([self.me.user_id, user_id])
        return channel["id"]

    async def post(self, channel_id: str, message: str, *, props: dict | None = None,
                   file_ids: list[str] | None = None, root_id: str | None = None) -> dict:
        """Every post under Mattermost's length limit (a longer one is refused whole)."""
        return await self.driver.posts.create_post(channel_id=channel_id, message=cap(message), props=props,
                                                   file_ids=file_ids, root_id=root_id)

    async def post_once(self, channel_id: str, message: str, *, key: str, props: dict | None = None,
                        file_ids: list[str] | None = None) -> dict:
        """A post that repeating `key` does not make twice: Mattermost answers a repeated pending_post_id
        with the post it already made (for 30 s), and `find_post` recognises the key after that."""
        return await self.driver.client.post("/api/v4/posts", options={
            "channel_id": channel_id, "message": cap(message), "props": {**(props or {}), KEY_PROP: key},
            "file_ids": file_ids or [], "pending_post_id": key})

    @staticmethod
    def refused_for_good(exc: BaseException) -> bool:
        return permanent(exc)

    async def find_post(self, channel_id: str, key: str, since: datetime) -> dict | None:
        """The bot's post carrying `key`, among the channel's posts changed since `since`."""
        found = await self.driver.posts.get_posts_for_channel(channel_id, since=max(1, int(since.timestamp() * 1000)))
        for post in (found or {}).get("posts", {}).values():
            if (post.get("props") or {}).get(KEY_PROP) == key and post.get("user_id") == self.me.user_id:
                return post
        return None

    async def post_direct(self, user_id: str, message: str) -> dict:
        return await self.post(await self.direct_channel(user_id), message)

    async def upload(self, channel_id: str, filename: str, data: bytes) -> str:
        mime = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        result = await self.driver.files.upload_file(channel_id=channel_id, files=(filename, data, mime))
        return result["file_infos"][0]["id"]

    async def file_info(self, file_id: str) -> dict:
        return await self.driver.files.get_file_info(file_id)

    def file_url(self, file_id: str) -> str:
        return f"{self.mm.url.rstrip('/')}/api/v4/files/{file_id}"

    # ---- blocking wrappers for worker threads -------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, Any], doing: str, timeout: float = CALL_TIMEOUT + 5) -> Any:
        if self.loop is None:
            coro.close()
            raise GatewayError(_("{doing}: the Mattermost connection is not started", doing=doing))
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except GatewayError:
            raise
        except Exception as exc:
            future.cancel()
            raise GatewayError(explain(exc, doing)) from None

    def user_profile(self, user_id: str) -> tuple[str, str]:
        # Read on the way to answering a command: a slow Mattermost must not hold the answer long.
        return self._call(self.profile(user_id), _("reading the user's Mattermost profile"), PROFILE_TIMEOUT)

    def user_id_by_username(self, username: str) -> str | None:
        return self._call(self.find_user_id(username), _("looking up @{name}", name=username))

    def send_direct(self, user_id: str, message: str) -> None:
        self._call(self.post_direct(user_id, message), _("sending the direct message"))

    def send_direct_file(self, user_id: str, message: str, filename: str, data: bytes) -> None:
        async def send() -> None:
            channel = await self.direct_channel(user_id)
            await self.post(channel, message, file_ids=[await self.upload(channel, filename, data)])

        self._call(send(), _("sending the chart"))

    def send_direct_file_from(self, user_id: str, message: str, filename: str, path: str) -> None:
        """send_direct_file for a file on disk: it is streamed to Mattermost, never read whole."""
        async def send() -> None:
            channel = await self.direct_channel(user_id)
            mime = mimetypes.guess_type(filename)[0] or "application/octet-stream"
            try:
                with open(path, "rb") as fh:  # httpx reads it in chunks as it sends, never whole
                    result = await self.driver.files.upload_file(channel_id=channel, files=(filename, fh, mime))
            except MattermostError as exc:
                if exc.status_code == 413:
                    raise FileTooLarge(_("Mattermost refused the file as too large")) from None
                raise
            await self.post(channel, message, file_ids=[result["file_infos"][0]["id"]])

        self._call(send(), _("sending the file"), UPLOAD_TIMEOUT)

    # ---- the WebSocket (bot.mattermost.websocket) ------------------------------------------------

    def listen(self, on_post: Callable[[dict, dict], Awaitable[None]]) -> asyncio.Task:
        """Start the listener task: authenticate, hand each `posted` event on, reconnect with backoff."""
        self._listener = asyncio.create_task(listen_forever(self, on_post))
        return self._listener

    async def stop_listening(self) -> None:
        """Stop the listener task (another host does the listening now, or the bot stops)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener

    async def close(self) -> None:
        await self.stop_listening()
        await self.driver.client.close()
