"""help: generated from the same command table that routes."""

from __future__ import annotations

from bot.context import Context, Reply
from bot.dispatch import Router
from bot.i18n import N_, _

router = Router()


@router.command("help", N_("[command]"), N_("this list, or one command in detail"))
def help_(ctx: Context, rest: str) -> Reply:
    trigger = ctx.config.mattermost.trigger
    wanted = " ".join(rest.lower().split())
    commands = [c for c in ctx.commands if c.listed and (ctx.caller.is_admin or not c.admin)]
    if wanted:
        # "help set" finds "admin set": a group's commands answer to their own word too.
        match = next((c for c in ctx.commands if c.listed and (c.name == wanted or c.name.endswith(f" {wanted}"))),
                     None)
        if match is None:
            return Reply(_("'{name}' is not a /{trigger} command; `/{trigger} help` lists them all.",
                           name=wanted[:40], trigger=trigger))
        summary = _(match.summary)
        lines = [f"`{match.usage_line(trigger)}`", summary[0].upper() + summary[1:] + _(".")]
        if match.details:
            lines.append(_(match.details))
        if match.admin:
            lines.append(_("_For recbot admins._"))
        return Reply("\n".join(lines))
    member = [c for c in commands if not c.admin]
    admin = [c for c in commands if c.admin]
    lines = [_("**recbot: your team's operation records**"), ""]
    lines += [f"- `{c.usage_line(trigger)}`: {_(c.summary)}" for c in member]
    told = [c for c in ctx.commands if c.told]
    if told:
        lines += ["", _("**Without /{trigger}**", trigger=trigger), ""]
        lines += [f"- {_(c.summary, bot=ctx.bot_name)}" for c in told]
    if admin:
        lines += ["", _("**Admin**"), ""]
        lines += [f"- `{c.usage_line(trigger)}`: {_(c.summary)}" for c in admin]
    lines += ["", _("`/{trigger} help <command>` tells more about one.", trigger=trigger)]
    return Reply("\n".join(lines))
