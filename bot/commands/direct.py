"""A direct message to the bot: it becomes a record of its sender, with attached files kept as links."""

from __future__ import annotations

from bot.context import Context, Reply
from bot.dispatch import DIRECT, Router

router = Router()


@router.event(DIRECT, "direct message", "a direct message to the bot becomes a record", failure="Not saved: ")
def save(ctx: Context, rest: str) -> Reply:
    trigger = ctx.config.mattermost.trigger
    if rest.strip().lower() in ("help", f"/{trigger} help"):
        return Reply("Send me a message and I keep it as a record of yours, with any files attached. "
                     f"Use /{trigger} in any channel to find, list and share records.")
    files = tuple(ctx.event.attachments) if ctx.event is not None else ()
    record_id = ctx.storage.add_record(ctx.caller, rest, files)
    attached = f" with {len(files)} file{'s' if len(files) != 1 else ''}" if files else ""
    return Reply(f"Saved record **#{record_id}**{attached}. `/{trigger} show {record_id}` shows it.")
