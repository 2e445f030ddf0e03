"""Reading a message someone wants to keep: the post as the bot may read it, whether the asker may read
its channel (as Mattermost would judge it), its permalink and files; and the quiet answer to the asker
(an ephemeral post, else a direct message).

Mattermost's own rules, followed here (api4/post.go getPost, app/authorization.go): a post is readable
by who may read its channel; a public channel by every member of its team; a private channel, a direct
or group message only by its members; a system admin reads everything.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mattermostautodriver.exceptions import MattermostError

from bot.i18n import _, current, speaking
from bot.mattermost.gateway import Gateway, GatewayError
from bot.render import cap
from bot.storage import Attachment

log = logging.getLogger(__name__)

# <site URL>/<team name>/pl/<post id>: a team name is lower-case letters, digits, - and _ (model/team.go),
# a post id 26 lower-case letters and digits (model.IsValidId).
PERMALINK = re.compile(r"https?://\S+?/[a-z0-9][a-z0-9_-]*/pl/(?P<post_id>[a-z0-9]{26})/?", re.ASCII)


class Unseen(GatewayError):
    """No such post, or the asker may not read it: one sentence for both, so that a refusal does not
    tell an asker that a message exists in a channel closed to them."""

    def __init__(self) -> None:
        super().__init__(_("that message does not exist, or you cannot read it"))


class BotCannotRead(GatewayError):
    """The bot itself may not read the post (it is not in that channel)."""


@dataclass(frozen=True)
class Original:
    """A message as it will be kept: who wrote it, when, where it lives, its files."""

    post_id: str
    channel_id: str
    author: str  # the author's username now
    message: str
    created_at: datetime  # UTC
    permalink: str
    files: tuple[Attachment, ...]


def post_id_in(link: str) -> str | None:
    """The post id of a Mattermost permalink, or None when `link` is not one."""
    found = PERMALINK.fullmatch(link.strip("<>"))
    return found.group("post_id") if found else None


class Posts:
    """Post reading over the gateway's client; coroutines on the bot's loop, `original_for` for a
    handler's worker thread."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.driver = gateway.driver

    async def read(self, post_id: str) -> dict[str, Any]:
        """The post as the bot reads it (GET /posts/{id}): 404 and 403 become sentences."""
        try:
            return await self.driver.posts.get_post(post_id)
        except MattermostError as exc:
            if exc.status_code == 404:
                raise Unseen() from None
            if exc.status_code == 403:
                raise BotCannotRead(_("recbot may not read that message: add @{bot} to its channel, "
                                      "then ask again", bot=self.gateway.me.username)) from None
            raise

    async def can_read(self, user_id: str, channel: dict[str, Any]) -> bool:
        """Whether Mattermost lets `user_id` read `channel`: its members; for a public channel, its
        team's members; system admins always."""
        if await self._found(self.driver.channels.get_channel_member(channel["id"], user_id)):
            return True
        if channel.get("type") == "O" and channel.get("team_id") and await self._found(
                self.driver.teams.get_team_member(channel["team_id"], user_id)):
            return True
        user = await self.driver.users.get_user(user_id)
        return "system_admin" in str(user.get("roles", "")).split()

    @staticmethod
    async def _found(call: Any) -> bool:
        try:
            member = await call
        except MattermostError as exc:
            if exc.status_code == 404:
                return False
            raise
        return not (member or {}).get("delete_at")

    async def original(self, asker_id: str, post_id: str) -> Original:
        """The post `asker_id` asks to keep, once Mattermost says they may read it."""
        post = await self.read(post_id)
        channel = await self.driver.channels.get_channel(post["channel_id"])
        if not await self.can_read(asker_id, channel):
            log.info("user %s may not read channel %s; capture of post %s refused", asker_id, channel["id"], post_id)
            raise Unseen()
        return Original(
            post_id=post["id"], channel_id=channel["id"], author=await self.gateway.username_of(post["user_id"]),
            message=str(post.get("message") or ""),
            created_at=datetime.fromtimestamp(int(post.get("create_at") or 0) / 1000, UTC),
            permalink=await self.permalink(post["id"], channel.get("team_id") or ""),
            files=await self._files(post))

    async def permalink(self, post_id: str, team_id: str) -> str:
        """<site>/<team>/pl/<id>; a direct or group message belongs to no team, and any of the
        reader's teams opens it, so the bot's own team stands in."""
        team = self.gateway.mm.team
        if team_id:
            team = (await self.driver.teams.get_team(team_id))["name"]
        return f"{self.gateway.mm.url.rstrip('/')}/{team}/pl/{post_id}"

    async def _files(self, post: dict[str, Any]) -> tuple[Attachment, ...]:
        known = {f["id"]: f for f in (post.get("metadata") or {}).get("files") or [] if isinstance(f, dict)}
        found = []
        for file_id in post.get("file_ids") or []:
            info = known.get(file_id) or await self.gateway.file_info(file_id)
            found.append(Attachment(file_id, info.get("name", file_id), int(info.get("size", 0)),
                                    info.get("mime_type", "")))
        return tuple(found)

    def original_for(self, asker_id: str, post_id: str) -> Original:
        """`original` from a worker thread; its refusals are in the caller's language (the loop's
        tasks do not share the thread's context)."""
        language = current()

        async def read() -> Original:
            with speaking(language):
                return await self.original(asker_id, post_id)

        return self.gateway._call(read(), _("reading the message"))

    async def tell(self, user_id: str, channel_id: str, message: str, root_id: str = "") -> None:
        """An answer only `user_id` sees: ephemeral in the channel (the thread, when there is one).
        Mattermost gives `create_post_ephemeral` to system admins only, so a bot without that role
        answers in a direct message instead."""
        post = {"channel_id": channel_id, "message": cap(message), "root_id": root_id}
        try:
            await self.driver.posts.create_post_ephemeral(user_id, post)
            return
        except MattermostError as exc:
            if exc.status_code != 403:
                raise
        await self.gateway.post_direct(user_id, message)
