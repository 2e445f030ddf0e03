"""The door for direct messages: a `posted` event in a DM with the bot becomes an Event for the
dispatcher (the `direct message` route saves it as a record), and the reply goes back to the DM."""

from __future__ import annotations

import time

from bot.dispatch import DIRECT, Event
from bot.mattermost.doors import PostedDoor
from bot.mattermost.slash import SlashRequest
from bot.storage import Attachment


class DirectMessages(PostedDoor):
    """The WebSocket's `posted` handler: only direct channels with the bot count."""

    async def __call__(self, post: dict, data: dict) -> None:
        if data.get("channel_type") != "D" or post.get("type"):
            return  # not a direct message, or a system message (joins, header changes)
        started = time.perf_counter()
        sender = post.get("user_id", "")
        username = await self.gateway.username_of(sender)
        attachments = []
        for file_id in post.get("file_ids") or []:
            info = await self.gateway.file_info(file_id)
            attachments.append(Attachment(file_id, info.get("name", file_id), int(info.get("size", 0)),
                                          info.get("mime_type", "")))
        event = Event(SlashRequest(user_id=sender, user_name=username, text=post.get("message", "")),
                      source=DIRECT, attachments=tuple(attachments))
        result = await self.dispatch(event, started)
        await self.gateway.post(post["channel_id"], result.reply.text, root_id=post.get("root_id") or None)
