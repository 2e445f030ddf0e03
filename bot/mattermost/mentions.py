"""The door for `@recbot save [#tags] [note]` in a channel: a `posted` event whose `mentions` (the ids
Mattermost notified, a JSON list in a string) hold the bot's and whose message starts with the mention
and `save` becomes an Event for the dispatcher; the answer goes to the asker alone."""

from __future__ import annotations

import json
import re
import time

from bot.dispatch import MENTION, Event
from bot.mattermost.doors import PostedDoor
from bot.mattermost.posts import Posts
from bot.mattermost.slash import SlashRequest
from bot.render import neutralise


def mentioned(data: dict, user_id: str) -> bool:
    """Whether Mattermost counted `user_id` among the post's mentions."""
    try:
        ids = json.loads(data.get("mentions") or "[]")
    except (TypeError, json.JSONDecodeError):
        return False
    return isinstance(ids, list) and user_id in ids


def save_words(message: str, bot_name: str) -> str | None:
    """What follows `@bot save` at the start of a message (tags and note), or None when the message
    is not that command. A name may be followed by `:` or `,` as people type it."""
    found = re.match(rf"\s*@{re.escape(bot_name)}[:,]?\s+save(?:\s+(.*))?\s*\Z", message, re.IGNORECASE | re.DOTALL)
    return None if found is None else (found.group(1) or "").strip()


class Mentions(PostedDoor):
    """The WebSocket's `posted` handler for channel posts (direct messages have their own door)."""

    async def __call__(self, post: dict, data: dict) -> None:
        if data.get("channel_type") == "D" or post.get("type"):
            return  # a direct message, or a system message
        me = self.gateway.me
        if not me.username or not mentioned(data, me.user_id):
            return
        words = save_words(post.get("message", ""), me.username)
        if words is None:
            return
        started = time.perf_counter()
        asker, channel_id, root_id = post.get("user_id", ""), post.get("channel_id", ""), post.get("root_id") or ""
        request = SlashRequest(user_id=asker, user_name=await self.gateway.username_of(asker), text=words,
                               team_id=data.get("team_id") or "", channel_id=channel_id,
                               channel_name=data.get("channel_name") or "")
        event = Event(request, source=MENTION, context={"post_id": post.get("id", ""), "root_id": root_id})
        result = await self.dispatch(event, started)
        await Posts(self.gateway).tell(asker, channel_id, neutralise(result.reply.text), root_id)
