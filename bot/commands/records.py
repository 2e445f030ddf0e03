"""add, find, list, show, edit, delete: a member's own work with records."""

from __future__ import annotations

from bot.context import Context, Reply
from bot.dispatch import Router
from bot.errors import UserError
from bot.parse import Args, ParseError, parse_filters, parse_id, split_first
from bot.render import record_full, record_list
from bot.storage import Filter, Page, extract_tags

router = Router()
MAX_WALK = 50  # searches one page:N may run before it gives up


@router.command("add", "<text>", "save a record of what you did; #words are tags",
                details="Example: `/rec add restarted nginx on web-01 after the config change #deploy`")
def add(ctx: Context, rest: str) -> Reply:
    record_id, new = ctx.storage.add_record_once(ctx.caller, rest)
    if not new:
        return Reply(f"Already saved as record **#{record_id}** a moment ago (the same text); no second copy made.")
    found = extract_tags(rest)
    tags = " Tags: " + " ".join(f"`#{t}`" for t in sorted(found)) + "." if found else ""
    return Reply(f"Saved record **#{record_id}**.{tags}")


def _filter(ctx: Context, args: Args) -> Filter:
    owner_id = None
    if len(args.users) > 1:
        raise ParseError("name at most one @user to search their records")
    if args.users:
        owner_id = ctx.users(args.users)[0].id
    if args.channels:
        raise ParseError(f"'~{args.channels[0]}' is a channel; records are filtered by @user and #tag")
    # since:/until: are days of the caller's own calendar.
    return Filter(words=tuple(args.words), owner_id=owner_id, tags=tuple(args.tags), since=args.since,
                  until=args.until, zone=ctx.zone.key)


def _page(ctx: Context, flt: Filter, args: Args, count_up_to: int) -> tuple[Page, int]:
    """The requested page: by cursor (before:ID), else by walking keyset pages up to page:N."""
    number = args.page or 1
    before = args.before
    if before is None:
        walked, steps = 1, 0
        while walked < number:
            step = ctx.storage.find(ctx.caller, flt, limit=ctx.page_size, before=before)
            if step.next_before is None:
                raise UserError(f"there is no page {number}; the results end before it")
            before = step.next_before
            steps += 1
            # A search that ran out of time found part of a page: the page goes on from its cursor.
            if not (step.partial and len(step.records) < ctx.page_size):
                walked += 1
            if steps > MAX_WALK:
                raise UserError(f"page {number} is too far to reach in one go; use the `before:` command of "
                                "the page you are on, or narrow the search with @user, #tag or since:")
    return ctx.storage.find(ctx.caller, flt, limit=ctx.page_size, before=before, count_up_to=count_up_to), number


def _listing(ctx: Context, command: str, rest: str, *, words_allowed: bool) -> Reply:
    args = parse_filters(rest, words_allowed=words_allowed)
    if words_allowed and not args.words:
        raise ParseError("give at least one word to find; to see the newest records use "
                         f"/{ctx.config.mattermost.trigger} list")
    flt = _filter(ctx, args)
    size = ctx.page_size
    # The search also counts up to ten pages ahead: counting every match of a common word would cost
    # more than the page itself.
    page, number = _page(ctx, flt, args, count_up_to=10 * size)
    trigger = ctx.config.mattermost.trigger
    if not page.records and page.partial:
        kept = " ".join(t for t in rest.split() if not t.lower().startswith(("before:", "page:")))
        return Reply(f"No matches among the records newer than #{page.next_before} in the time allowed. "
                     f"Search the older ones: `/{trigger} {command} {kept + ' ' if kept else ''}"
                     f"before:{page.next_before}`, or narrow with @user, #tag or since:.")
    if not page.records:
        what = "matches" if words_allowed else "records you can see"
        return Reply(f"No {what}{' on this page' if number > 1 else ''}. "
                     f"Try fewer words, or `/{trigger} list` for the newest records.")
    earlier = (number - 1) * size
    total = earlier + page.matched
    if page.matched_all:
        shown_total, pages = "", str(number - 1 + -(-page.matched // size))
    elif page.matched > 10 * size:
        shown_total, pages = f"more than {earlier + 10 * size}", f"more than {number + 9}"
    else:  # the search ran out of time before it could count further
        shown_total, pages = f"at least {total}", "?"
    header = f"**{shown_total or total} record{'s' if total != 1 else ''}** · page {number} of {pages}"
    if page.next_before is not None:
        kept = " ".join(t for t in rest.split() if not t.lower().startswith(("before:", "page:")))
        footer = (f"Next page: `/{trigger} {command} {kept + ' ' if kept else ''}"
                  f"before:{page.next_before} page:{number + 1}`")
        if page.partial:
            footer = (f"_Searched records newer than #{page.next_before} in the time allowed; older ones may "
                      f"match too._ {footer}")
    else:
        footer = "_That is all._"
    return Reply(record_list(page.records, header, footer, trigger, ctx.zone))


@router.command("find", "<words> [@user] [#tag] [since:YYYY-MM-DD] [until:YYYY-MM-DD]",
                "your visible records containing every word, newest first",
                details='Words match inside other words and ignore case; "quote a phrase". '
                        "Chinese needs no spaces: one or two characters work.")
def find(ctx: Context, rest: str) -> Reply:
    return _listing(ctx, "find", rest, words_allowed=True)


@router.command("list", "[@user] [#tag] [since:YYYY-MM-DD] [until:YYYY-MM-DD]", "the newest records you can see")
def list_(ctx: Context, rest: str) -> Reply:
    return _listing(ctx, "list", rest, words_allowed=False)


def _one_id(rest: str) -> int:
    head, tail = split_first(rest)
    if not head:
        raise ParseError("give the record id, e.g. 12")
    if tail.strip():
        raise ParseError(f"'{tail.strip()[:40]}' is not expected after the id")
    return parse_id(head)


@router.command("show", "<id>", "one record in full: owner, times, tags, revisions")
def show(ctx: Context, rest: str) -> Reply:
    return Reply(record_full(ctx.storage.get_record(ctx.caller, _one_id(rest)), ctx.file_link, ctx.zone))


@router.command("edit", "<id> <text>", "replace a record's text (owner or admin); the old text is kept")
def edit(ctx: Context, rest: str) -> Reply:
    head, body = split_first(rest)
    if not head:
        raise ParseError("give the record id and the new text")
    record = ctx.storage.edit_record(ctx.caller, parse_id(head), body)
    return Reply(f"Updated record **#{record.id}**; {record.revisions} earlier "
                 f"version{'s are' if record.revisions != 1 else ' is'} kept.")


@router.command("delete", "<id>", "delete a record (owner or admin); an admin can restore it")
def delete(ctx: Context, rest: str) -> Reply:
    record_id = _one_id(rest)
    ctx.storage.delete_record(ctx.caller, record_id)
    return Reply(f"Deleted record **#{record_id}**. An admin can undo this with "
                 f"`/{ctx.config.mattermost.trigger} admin restore {record_id}`.")
