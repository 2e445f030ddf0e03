"""`/rec add` with no text opens a dialog; its submission (verified by the door, routed in records as
"add dialog") becomes a record of the submitter. A wrong field is answered per field, as the dialog
shows it."""

from __future__ import annotations

import re

from bot.context import Context, Reply
from bot.errors import UserError
from bot.i18n import _, number
from bot.mattermost.dialogs import dialog_possible, open_add_dialog
from bot.storage import MAX_BODY, MAX_TAG, MAX_TAGS, extract_tags

TAG_WORD = re.compile(r"#?(\w[\w-]*)")


def open_form(ctx: Context) -> Reply | None:
    """The dialog, when Mattermost can show one: the reply is then empty, the dialog is the answer.
    None when it cannot (the shell, no server.public_url): `/rec add` then says how to add text."""
    if not dialog_possible(ctx.services, ctx.request):
        return None
    trigger = ctx.config.mattermost.trigger
    try:
        open_add_dialog(ctx.services, ctx.request)
    except UserError as exc:
        raise UserError(_("Mattermost did not open the dialog ({error}). Type `/{trigger} add` again, "
                          "or put the text on the same line: `/{trigger} add <text>`",
                          error=str(exc).rstrip("."), trigger=trigger)) from None
    return Reply("")


def _tags(raw: str, errors: dict[str, str]) -> list[str]:
    """The tags field's words as #tags; a word that is no tag is a field error."""
    found: list[str] = []
    for word in raw.split():
        match = TAG_WORD.fullmatch(word)
        if match is None:
            errors["tags"] = _("'{word}' is not a tag; tags are words like #deploy or #web-01", word=word[:40])
            return []
        tag = match.group(1).lower()
        if len(tag) > MAX_TAG:
            errors["tags"] = _("the tag #{tag}… is {length} characters long once lower-cased; keep tags to {limit}",
                               tag=tag[:20], length=number(len(tag)), limit=number(MAX_TAG))
            return []
        found.append(tag)
    return list(dict.fromkeys(found))


def body_of(text: str, raw_tags: str) -> tuple[str, dict[str, str]]:
    """The record's text (the tags field's tags added on a line of their own) and the field errors."""
    errors: dict[str, str] = {}
    if "\x00" in text:
        errors["text"] = _("the text contains a NUL character (\\0); remove it and send it again")
    elif not text.strip():
        errors["text"] = _("write what you did; the text cannot be empty")
    if "\x00" in raw_tags:
        errors["tags"] = _("the tags contain a NUL character (\\0); remove it and send it again")
    tags = _tags(raw_tags, errors) if "tags" not in errors else []
    present = set(extract_tags(text))
    extra = [t for t in tags if t not in present]
    body = text.rstrip() + ("\n" + " ".join(f"#{t}" for t in extra) if extra else "")
    if "text" not in errors and len(body) > MAX_BODY:
        errors["text"] = _("the record is {length} characters long; keep it under {limit}",
                           length=number(len(body)), limit=number(MAX_BODY))
    count = len(present) + len(extra)
    if not errors and count > MAX_TAGS:
        errors["tags" if extra else "text"] = _("the text has {count} different #tags; keep it to {limit}",
                                                count=number(count), limit=number(MAX_TAGS))
    return body, errors
