"""share: let named users see one record, or post it into a channel."""

from __future__ import annotations

import logging
from datetime import UTC

from bot.config import zone_or_none
from bot.context import Context, Reply
from bot.dispatch import Router
from bot.i18n import N_, _, language_of, speaking
from bot.mattermost.gateway import GatewayError
from bot.parse import ParseError, parse_filters, parse_id, split_first
from bot.render import neutralise, record_full

router = Router()
log = logging.getLogger(__name__)


@router.command("share", N_("<id> @user [@user ...] | <id> ~channel"),
                N_("let users see one record (they get a direct message), or post it into a channel"),
                details=N_("Mattermost itself refuses a channel you are not in."))
def share(ctx: Context, rest: str) -> Reply:
    head, tail = split_first(rest)
    if not head:
        raise ParseError(_("give the record id, then @users or one ~channel"))
    record_id = parse_id(head)
    args = parse_filters(tail, words_allowed=False)
    if args.tags or args.since or args.until or args.page or args.before:
        raise ParseError(_("after the id, name only @users or one ~channel"))
    if args.channels and args.users:
        raise ParseError(_("share with @users or into one ~channel, not both at once"))
    if len(args.channels) > 1:
        raise ParseError(_("name one ~channel at a time"))
    record = ctx.storage.get_record(ctx.caller, record_id)
    if args.channels:
        name = args.channels[0]
        channel_id = ctx.request.channel_mentions.get(name)
        if not channel_id:
            raise ParseError(_("~{channel} is not a channel Mattermost recognised (it passes on public channels "
                               "only); pick a public channel from the ~ autocomplete, or share with @users",
                               channel=name))
        # A channel has many readers: its times are in the config's zone and its words in the config's language.
        zone = zone_or_none(ctx.config.timezone) or UTC
        with speaking(ctx.config.language):
            text = _("{name} shared a record:", name=ctx.caller.username) + "\n\n" + \
                record_full(record, ctx.file_link, zone)
        # in_channel with channel_id: Mattermost posts it only if the caller is a member there.
        return Reply(text, in_channel=True, channel_id=channel_id)
    if not args.users:
        raise ParseError(_("name who to share with (@user) or where (~channel)"))
    targets = ctx.users(args.users)
    added = ctx.storage.share(ctx.caller, record_id, [u.id for u in targets if u.id != record.owner_id])
    names = ", ".join(u.username for u in targets)
    done = (_("Shared record **#{id}** with {names}.", id=record_id, names=names) if len(added) == len(targets)
            else _("Shared record **#{id}** with {names} ({new} new).", id=record_id, names=names, new=len(added)))
    gateway = ctx.services.gateway
    if gateway is None:
        return Reply(done)
    failed: list[str] = []
    for target in targets:
        # Each reader's own zone, as far as recbot knows it; a post, unlike an ephemeral reply, notifies,
        # so mentions in the record must not ping from it.
        zone = zone_or_none(target.timezone or "") or zone_or_none(ctx.config.timezone) or UTC
        with speaking(language_of(target.locale, ctx.config.language)):
            message = neutralise(_("{name} shared a record with you:", name=ctx.caller.username) + "\n\n"
                                 + record_full(record, ctx.file_link, zone))
        try:
            gateway.send_direct(target.mm_user_id, message)
        except GatewayError as exc:
            log.warning("direct message to %s failed: %s", target.username, exc)
            failed.append(target.username)
    if failed:
        return Reply(done + " " + _("The direct message to {names} could not be sent (Mattermost did not accept "
                                    "it); they can still open it with `/{trigger} show {id}`.",
                                    names=", ".join(failed), trigger=ctx.config.mattermost.trigger, id=record_id))
    return Reply(done + " " + _("They got a direct message."))
