"""A direct message to the bot becomes a record of its sender, with attached files kept as links."""

from __future__ import annotations

import asyncio
import logging
import uuid
from concurrent.futures import Executor

from bot.context import Services
from bot.dispatch import Dispatcher
from bot.errors import UserError
from bot.mattermost.gateway import Gateway
from bot.mattermost.slash import SlashRequest
from bot.storage import Attachment

log = logging.getLogger(__name__)


class DirectMessages:
    """The WebSocket's `posted` handler: only direct channels with the bot count."""

    def __init__(self, services: Services, dispatcher: Dispatcher, gateway: Gateway, pool: Executor) -> None:
        self.services = services
        self.dispatcher = dispatcher
        self.gateway = gateway
        self.pool = pool

    async def __call__(self, post: dict, data: dict) -> None:
        if data.get("channel_type") != "D" or post.get("type"):
            return  # not a direct message, or a system message (joins, header changes)
        sender = post.get("user_id", "")
        username = await self.gateway.username_of(sender)
        attachments = []
        for file_id in post.get("file_ids") or []:
            info = await self.gateway.file_info(file_id)
            attachments.append(Attachment(file_id, info.get("name", file_id), int(info.get("size", 0)),
                                          info.get("mime_type", "")))
        message = post.get("message", "")
        reply = await asyncio.get_running_loop().run_in_executor(
            self.pool, self._save, sender, username, message, attachments)
        await self.gateway.post(post["channel_id"], reply, root_id=post.get("root_id") or None)

    def _save(self, sender: str, username: str, message: str, attachments: list[Attachment]) -> str:
        trigger = self.services.config.mattermost.trigger
        if message.strip().lower() in ("help", f"/{trigger} help"):
            return (f"Send me a message and I keep it as a record of yours, with any files attached. "
                    f"Use /{trigger} in any channel to find, list and share records.")
        try:
            user = self.dispatcher.identify(self.services, SlashRequest(user_id=sender, user_name=username, text=""))
            record_id = self.services.storage.add_record(user, message, attachments)
        except UserError as exc:
            return f"Not saved: {exc}."
        except Exception:  # the sender must hear that it was not kept
            ref = uuid.uuid4().hex[:8]
            log.exception("saving a direct message failed (ref %s)", ref)
            return f"Not saved: something broke on our side (ref {ref}); send it again in a moment."
        files = f" with {len(attachments)} file{'s' if len(attachments) != 1 else ''}" if attachments else ""
        return f"Saved record **#{record_id}**{files}. `/{trigger} show {record_id}` shows it."
