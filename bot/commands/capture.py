""""Save this message": `@recbot save [#tags] [note]` in a thread, or `save <permalink> [#tags] [note]`
in a direct message, keeps someone else's message as a record of the asker, with a permalink to it,
its author and time, and its files as links. Mattermost decides whether the asker may read it."""

from __future__ import annotations

from collections.abc import Mapping

from bot.context import Context, Reply
from bot.dispatch import MENTION, Router
from bot.i18n import N_, _, ngettext, when
from bot.mattermost.posts import Original, Posts, post_id_in
from bot.parse import MAX_TEXT, ParseError, split_first
from bot.storage import extract_tags

router = Router()

SAVE = "save"


def is_save(text: str) -> bool:
    """A direct message that asks to keep a linked message: `save <permalink> ...`."""
    word, rest = split_first(text.strip())
    return word.lower() == SAVE and post_id_in(split_first(rest)[0]) is not None


@router.event(MENTION, "save message",
              N_("`@{bot} save [#tags] [note]` in a message's thread keeps that message as your record"),
              failure=N_("Not saved: "))
def save_thread(ctx: Context, rest: str) -> Reply:
    """The door hands over what follows `@recbot save`; the thread's root is the message kept."""
    context: Mapping[str, str] = ctx.event.context if ctx.event is not None else {}
    root_id = context.get("root_id", "")
    if not root_id:
        raise ParseError(_("reply in the thread of the message to keep, with @{bot} save [#tags] [note]",
                           bot=ctx.bot_name))
    return _keep(ctx, root_id, rest)


def save_linked(ctx: Context, text: str) -> Reply:
    """`save <permalink> [#tags] [note]` in a direct message to the bot."""
    _word, rest = split_first(text.strip())
    link, note = split_first(rest)
    post_id = post_id_in(link)
    if post_id is None:
        raise ParseError(_("put a message's permalink after save (in Mattermost: ... > Copy Link)"))
    return _keep(ctx, post_id, note)


def _keep(ctx: Context, post_id: str, note: str) -> Reply:
    if len(note) > MAX_TEXT:
        raise ParseError(_("the note is too long: at most {n} characters", n=MAX_TEXT))
    gateway = ctx.services.gateway
    if gateway is None:
        raise ParseError(_("saving a Mattermost message needs the Mattermost connection"))
    original = Posts(gateway).original_for(ctx.caller.mm_user_id, post_id)
    record_id, new = ctx.storage.add_record_once(ctx.caller, _body(ctx, original, note.strip()), original.files)
    trigger = ctx.config.mattermost.trigger
    if not new:
        return Reply(_("You already saved that message as record **#{id}**. `/{trigger} show {id}` shows it.",
                       id=record_id, trigger=trigger))
    files, tags = len(original.files), extract_tags(note)
    parts = [ngettext("Saved the message as record **#{id}** with {n} file.",
                      "Saved the message as record **#{id}** with {n} files.", files, id=record_id)
             if files else _("Saved the message as record **#{id}**.", id=record_id)]
    if tags:
        parts.append(_("Tags: {tags}", tags=", ".join(f"`#{t}`" for t in tags)) + _("."))
    parts.append(_("`/{trigger} show {id}` shows it.", trigger=trigger, id=record_id))
    return Reply(" ".join(parts))


def _body(ctx: Context, original: Original, note: str) -> str:
    """The original text first (what a list shows), then where it came from, then the asker's words."""
    source = _("From @{author}, {when}: {link}", author=original.author,
               when=when(original.created_at, ctx.zone), link=original.permalink)
    parts = [original.message.strip(), source, note]
    return "\n\n".join(p for p in parts if p)
