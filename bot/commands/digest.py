"""digest: subscribe to a personal digest of new records, see the subscription, or stop it."""

from __future__ import annotations

from bot.context import Context, Reply
from bot.digests.text import filter_words, subscription_text
from bot.dispatch import Router
from bot.i18n import N_, _
from bot.parse import ParseError, parse_filters, split_first
from bot.storage import MAX_TAG

router = Router()
PERIODS = ("daily", "weekly")


@router.command("digest", N_("[daily|weekly|off] [#tag] [@user]"),
                N_("a direct message each morning (or Monday) listing the new records you can see"),
                details=N_("Example: `/rec digest daily #deploy` lists the new #deploy records every day at "
                           "the digest hour of your own timezone; `/rec digest` shows your subscription, "
                           "`/rec digest off` stops it."))
def digest(ctx: Context, rest: str) -> Reply:
    head, tail = split_first(rest)
    choice = head.lower()
    trigger = ctx.config.mattermost.trigger
    if not choice:
        return _show(ctx)
    if choice == "off":
        if tail.strip():
            raise ParseError(_("'{text}' is not expected after off", text=tail.strip()[:40]))
        if ctx.storage.unsubscribe_digest(ctx.caller):
            return Reply(_("Your digest is stopped; no more digest messages will come."))
        return Reply(_("You had no digest; nothing to stop."))
    if choice not in PERIODS:
        raise ParseError(_("'{word}' is not daily, weekly or off", word=head[:40]))
    args = parse_filters(tail, words_allowed=False)
    if len(args.tags) > 1 or len(args.users) > 1:
        raise ParseError(_("a digest follows at most one #tag and one @user"))
    if args.channels or args.since or args.until or args.page or args.before:
        raise ParseError(_("a digest takes only a #tag and an @user after daily or weekly"))
    owner = ctx.users(args.users)[0] if args.users else None
    tag = args.tags[0] if args.tags else None
    if tag is not None and len(tag) > MAX_TAG:
        raise ParseError(_("the tag #{tag}… is longer than {limit} characters", tag=tag[:20], limit=MAX_TAG))
    sub = ctx.storage.subscribe_digest(ctx.caller, choice, tag, owner.id if owner else None, ctx.zone.key)
    hour = ctx.config.digests.hour
    return Reply(_("Subscribed.") + " " + subscription_text(
        sub.period, filter_words(sub.tag, sub.owner), sub.zone, hour, sub.sent_until, trigger, ctx.zone))


def _show(ctx: Context) -> Reply:
    sub = ctx.storage.digest_subscription(ctx.caller)
    trigger = ctx.config.mattermost.trigger
    if sub is None:
        hour = f"{ctx.config.digests.hour:02d}:00"
        return Reply(_("You have no digest. Subscribe with `/{trigger} digest daily` (or `weekly`), "
                       "optionally with a #tag and an @user: a direct message at {at} of your day lists "
                       "the new records you can see.", trigger=trigger, at=hour))
    return Reply(subscription_text(sub.period, filter_words(sub.tag, sub.owner), sub.zone, ctx.config.digests.hour,
                                   sub.sent_until, trigger, ctx.zone))
