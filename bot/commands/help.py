"""help: generated from the same command table that routes."""

from __future__ import annotations

from bot.context import Context, Reply
from bot.dispatch import Router

router = Router()


@router.command("help", "[command]", "this list, or one command in detail")
def help_(ctx: Context, rest: str) -> Reply:
    trigger = ctx.config.mattermost.trigger
    wanted = " ".join(rest.lower().split())
    commands = [c for c in ctx.commands if c.listed and (ctx.caller.is_admin or not c.admin)]
    if wanted:
        # "help set" finds "admin set": a group's commands answer to their own word too.
        match = next((c for c in ctx.commands if c.listed and (c.name == wanted or c.name.endswith(f" {wanted}"))),
                     None)
        if match is None:
            return Reply(f"'{wanted[:40]}' is not a /{trigger} command; `/{trigger} help` lists them all.")
        lines = [f"`{match.usage_line(trigger)}`", match.summary[0].upper() + match.summary[1:] + "."]
        if match.details:
            lines.append(match.details)
        if match.admin:
            lines.append("_For recbot admins._")
        return Reply("\n".join(lines))
    member = [c for c in commands if not c.admin]
    admin = [c for c in commands if c.admin]
    lines = ["**recbot: your team's operation records**", ""]
    lines += [f"- `{c.usage_line(trigger)}`: {c.summary}" for c in member]
    if admin:
        lines += ["", "**Admin**", ""]
        lines += [f"- `{c.usage_line(trigger)}`: {c.summary}" for c in admin]
    lines += ["", f"`/{trigger} help <command>` tells more about one."]
    return Reply("\n".join(lines))
