"""add, find, list, show, edit, delete: a member's own work with records."""

from __future__ import annotations

from bot.commands.dialog import body_of, open_form
from bot.context import Context, Reply
from bot.dispatch import DIALOG, Router
from bot.errors import UserError
from bot.i18n import N_, _, ngettext, number
from bot.parse import Args, ParseError, parse_filters, parse_id, split_first
from bot.render import record_full, record_list
from bot.storage import Filter, Page, extract_tags

router = Router()
MAX_WALK = 50  # searches one page:N may run before it gives up


@router.command("add", N_("<text>"), N_("save a record of what you did; #words are tags"),
                details=N_("Example: `/rec add restarted nginx on web-01 after the config change #deploy`"))
def add(ctx: Context, rest: str) -> Reply:
    form = open_form(ctx) if not rest.strip() else None
    if form is not None:
        return form
    record_id, new = ctx.storage.add_record_once(ctx.caller, rest)
    if not new:
        return Reply(_("Already saved as record **#{id}** a moment ago (the same text); no second copy made.",
                       id=record_id))
    found = extract_tags(rest)
    if not found:
        return Reply(_("Saved record **#{id}**.", id=record_id))
    return Reply(_("Saved record **#{id}**. Tags: {tags}.", id=record_id,
                   tags=" ".join(f"`#{t}`" for t in sorted(found))))


@router.event(DIALOG, "add dialog", N_("the /rec add dialog's submission becomes a record"))
def add_from_dialog(ctx: Context, rest: str) -> Reply:
    raw_tags = str(ctx.event.context.get("tags") or "") if ctx.event is not None else ""
    body, errors = body_of(rest, raw_tags)
    if errors:  # the door answers these per field, as Mattermost's dialog shows them
        return Reply("", props={"errors": errors})
    return add(ctx, body)


def filter_of(ctx: Context, args: Args) -> Filter:
    """The Filter that @user, #tag, words, since: and until: describe, dates in the caller's calendar."""
    owner_id = None
    if len(args.users) > 1:
        raise ParseError(_("name at most one @user to search their records"))
    if args.users:
        owner_id = ctx.users(args.users)[0].id
    if args.channels:
        raise ParseError(_("'~{channel}' is a channel; records are filtered by @user and #tag",
                           channel=args.channels[0]))
    # since:/until: are days of the caller's own calendar.
    return Filter(words=tuple(args.words), owner_id=owner_id, tags=tuple(args.tags), since=args.since,
                  until=args.until, zone=ctx.zone.key)


def _page(ctx: Context, flt: Filter, args: Args, count_up_to: int) -> tuple[Page, int]:
    """The requested page: by cursor (before:ID), else by walking keyset pages up to page:N."""
    wanted = args.page or 1
    before = args.before
    if before is None:
        walked, steps = 1, 0
        while walked < wanted:
            step = ctx.storage.find(ctx.caller, flt, limit=ctx.page_size, before=before)
            if step.next_before is None:
                raise UserError(_("there is no page {page}; the results end before it", page=wanted))
            before = step.next_before
            steps += 1
            # A search that ran out of time found part of a page: the page goes on from its cursor.
            if not (step.partial and len(step.records) < ctx.page_size):
                walked += 1
            if steps > MAX_WALK:
                raise UserError(_("page {page} is too far to reach in one go; use the `before:` command of "
                                  "the page you are on, or narrow the search with @user, #tag or since:",
                                  page=wanted))
    return ctx.storage.find(ctx.caller, flt, limit=ctx.page_size, before=before, count_up_to=count_up_to), wanted


def _listing(ctx: Context, command: str, rest: str, *, words_allowed: bool) -> Reply:
    args = parse_filters(rest, words_allowed=words_allowed)
    trigger = ctx.config.mattermost.trigger
    if words_allowed and not args.words:
        raise ParseError(_("give at least one word to find; to see the newest records use /{trigger} list",
                           trigger=trigger))
    flt = filter_of(ctx, args)
    # The search also counts up to ten pages ahead: counting every match of a common word would cost
    # more than the page itself.
    page, page_no = _page(ctx, flt, args, count_up_to=10 * ctx.page_size)
    kept = " ".join(t for t in rest.split() if not t.lower().startswith(("before:", "page:")))
    again = f"/{trigger} {command} {kept + ' ' if kept else ''}before:{page.next_before}"
    if not page.records and page.partial:
        return Reply(_("No matches among the records newer than #{id} in the time allowed. "
                       "Search the older ones: `{command}`, or narrow with @user, #tag or since:.",
                       id=page.next_before, command=again))
    if not page.records:
        if words_allowed:
            text = _("No matches on this page.") if page_no > 1 else _("No matches.")
        else:
            text = _("No records you can see on this page.") if page_no > 1 else _("No records you can see.")
        return Reply(text + " " + _("Try fewer words, or `/{trigger} list` for the newest records.",
                                    trigger=trigger))
    if page.next_before is not None:
        following = f"{again} page:{page_no + 1}"
        footer = _("Next page: `{command}`", command=following)
        if page.partial:
            footer = _("_Searched records newer than #{id} in the time allowed; older ones may match too._",
                       id=page.next_before) + " " + footer
    else:
        footer = _("_That is all._")
    return Reply(record_list(page.records, _header(ctx, page, page_no), footer, trigger, ctx.zone))


def _header(ctx: Context, page: Page, page_no: int) -> str:
    """"**23 records** · page 1 of 3", with "more than" or "at least" where the count stopped early."""
    size = ctx.page_size
    earlier = (page_no - 1) * size
    total = earlier + page.matched
    if page.matched_all:
        pages = page_no - 1 + -(-page.matched // size)
        return ngettext("**{n} record** · page {page} of {pages}", "**{n} records** · page {page} of {pages}",
                        total, page=number(page_no), pages=number(pages))
    if page.matched > 10 * size:
        return _("**more than {n} records** · page {page} of more than {pages}",
                 n=number(earlier + 10 * size), page=number(page_no), pages=number(page_no + 9))
    # the search ran out of time before it could count further
    return ngettext("**at least {n} record** · page {page} of ?", "**at least {n} records** · page {page} of ?",
                    total, page=number(page_no))


@router.command("find", N_("<words> [@user] [#tag] [since:YYYY-MM-DD] [until:YYYY-MM-DD]"),
                N_("your visible records containing every word, newest first"),
                details=N_('Words match inside other words and ignore case; "quote a phrase". '
                           "Chinese needs no spaces: one or two characters work."))
def find(ctx: Context, rest: str) -> Reply:
    return _listing(ctx, "find", rest, words_allowed=True)


@router.command("list", N_("[@user] [#tag] [since:YYYY-MM-DD] [until:YYYY-MM-DD]"),
                N_("the newest records you can see"))
def list_(ctx: Context, rest: str) -> Reply:
    return _listing(ctx, "list", rest, words_allowed=False)


def _one_id(rest: str) -> int:
    head, tail = split_first(rest)
    if not head:
        raise ParseError(_("give the record id, e.g. 12"))
    if tail.strip():
        raise ParseError(_("'{text}' is not expected after the id", text=tail.strip()[:40]))
    return parse_id(head)


@router.command("show", N_("<id>"), N_("one record in full: owner, times, tags, revisions"))
def show(ctx: Context, rest: str) -> Reply:
    return Reply(record_full(ctx.storage.get_record(ctx.caller, _one_id(rest)), ctx.file_link, ctx.zone))


@router.command("edit", N_("<id> <text>"), N_("replace a record's text (owner or admin); the old text is kept"))
def edit(ctx: Context, rest: str) -> Reply:
    head, body = split_first(rest)
    if not head:
        raise ParseError(_("give the record id and the new text"))
    record = ctx.storage.edit_record(ctx.caller, parse_id(head), body)
    return Reply(ngettext("Updated record **#{id}**; {n} earlier version is kept.",
                          "Updated record **#{id}**; {n} earlier versions are kept.", record.revisions, id=record.id))


@router.command("delete", N_("<id>"), N_("delete a record (owner or admin); an admin can restore it"))
def delete(ctx: Context, rest: str) -> Reply:
    record_id = _one_id(rest)
    ctx.storage.delete_record(ctx.caller, record_id)
    return Reply(_("Deleted record **#{id}**. An admin can undo this with `/{trigger} admin restore {id}`.",
                   id=record_id, trigger=ctx.config.mattermost.trigger))
