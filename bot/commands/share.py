"""share: let named users see one record, or post it into a channel."""

from __future__ import annotations

import logging
from datetime import UTC

from bot.config import zone_or_none
from bot.context import Context, Reply
from bot.dispatch import Router
from bot.mattermost.gateway import GatewayError
from bot.parse import ParseError, parse_filters, parse_id, split_first
from bot.render import neutralise, record_full

router = Router()
log = logging.getLogger(__name__)


@router.command("share", "<id> @user [@user ...] | <id> ~channel",
                "let users see one record (they get a direct message), or post it into a channel",
                details="Mattermost itself refuses a channel you are not in.")
def share(ctx: Context, rest: str) -> Reply:
    head, tail = split_first(rest)
    if not head:
        raise ParseError("give the record id, then @users or one ~channel")
    record_id = parse_id(head)
    args = parse_filters(tail, words_allowed=False)
    if args.tags or args.since or args.until or args.page or args.before:
        raise ParseError("after the id, name only @users or one ~channel")
    if args.channels and args.users:
        raise ParseError("share with @users or into one ~channel, not both at once")
    if len(args.channels) > 1:
        raise ParseError("name one ~channel at a time")
    record = ctx.storage.get_record(ctx.caller, record_id)
    if args.channels:
        name = args.channels[0]
        channel_id = ctx.request.channel_mentions.get(name)
        if not channel_id:
            raise ParseError(f"~{name} is not a channel Mattermost recognised (it passes on public channels only); "
                             "pick a public channel from the ~ autocomplete, or share with @users")
        # A channel has many readers: its times are in the config's zone.
        zone = zone_or_none(ctx.config.timezone) or UTC
        text = f"{ctx.caller.username} shared a record:\n\n{record_full(record, ctx.file_link, zone)}"
        # in_channel with channel_id: Mattermost posts it only if the caller is a member there.
        return Reply(text, in_channel=True, channel_id=channel_id)
    if not args.users:
        raise ParseError("name who to share with (@user) or where (~channel)")
    targets = ctx.users(args.users)
    added = ctx.storage.share(ctx.caller, record_id, [u.id for u in targets if u.id != record.owner_id])
    names = ", ".join(u.username for u in targets)
    new = f" ({len(added)} new)" if len(added) != len(targets) else ""
    done = f"Shared record **#{record_id}** with {names}{new}."
    gateway = ctx.services.gateway
    if gateway is None:
        return Reply(done)
    failed: list[str] = []
    for target in targets:
        # Each reader's own zone, as far as recbot knows it; a post, unlike an ephemeral reply, notifies,
        # so mentions in the record must not ping from it.
        zone = zone_or_none(target.timezone or "") or zone_or_none(ctx.config.timezone) or UTC
        message = neutralise(f"{ctx.caller.username} shared a record with you:\n\n"
                             f"{record_full(record, ctx.file_link, zone)}")
        try:
            gateway.send_direct(target.mm_user_id, message)
        except GatewayError as exc:
            log.warning("direct message to %s failed: %s", target.username, exc)
            failed.append(target.username)
    if failed:
        return Reply(f"{done} The direct message to {', '.join(failed)} could not be sent "
                     "(Mattermost did not accept it); they can still open it with "
                     f"`/{ctx.config.mattermost.trigger} show {record_id}`.")
    return Reply(done + " They got a direct message.")
