"""A direct message to the bot: it becomes a record of its sender, with attached files kept as links."""

from __future__ import annotations

from bot.commands.capture import is_save, save_linked
from bot.context import Context, Reply
from bot.dispatch import DIRECT, Router
from bot.i18n import N_, _, ngettext

router = Router()


@router.event(DIRECT, "direct message",
              N_("a direct message to `@{bot}` becomes your record, its files kept as links; "
                 "`save <link to a message> [#tags] [note]` there keeps that message instead"),
              failure=N_("Not saved: "))
def save(ctx: Context, rest: str) -> Reply:
    trigger = ctx.config.mattermost.trigger
    if rest.strip().lower() in ("help", f"/{trigger} help"):
        return Reply(_("Send me a message and I keep it as a record of yours, with any files attached. "
                       "Use /{trigger} in any channel to find, list and share records.", trigger=trigger))
    if is_save(rest):  # "save <permalink> ...": keep that message, not these words
        return save_linked(ctx, rest)
    files = tuple(ctx.event.attachments) if ctx.event is not None else ()
    record_id = ctx.storage.add_record(ctx.caller, rest, files)
    if files:
        return Reply(ngettext("Saved record **#{id}** with {n} file. `/{trigger} show {id}` shows it.",
                              "Saved record **#{id}** with {n} files. `/{trigger} show {id}` shows it.",
                              len(files), id=record_id, trigger=trigger))
    return Reply(_("Saved record **#{id}**. `/{trigger} show {id}` shows it.", id=record_id, trigger=trigger))
