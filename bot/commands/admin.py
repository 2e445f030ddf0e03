"""admin ...: who sees whose records, roles, restore, runtime settings, host status, the audit log."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

import psutil

from bot import settings as runtime_settings
from bot.alerts.charts import usage_chart
from bot.alerts.text import human_bytes
from bot.context import Context, Reply
from bot.dispatch import ADMIN, Router
from bot.errors import UserError
from bot.parse import ParseError, is_number, parse_filters, parse_id, split, split_first
from bot.render import escape_md, when

router = Router("admin", role=ADMIN)


def _viewer_and_owners(ctx: Context, rest: str) -> tuple:
    args = parse_filters(rest, words_allowed=False)
    if args.tags or args.channels or args.since or args.until or args.page or args.before:
        raise ParseError("name only @users: first the viewer, then one or more owners")
    if len(args.users) < 2:
        raise ParseError("name the viewer and at least one owner, e.g. @alice @bob")
    users = ctx.users(args.users)
    return users[0], users[1:]


@router.command("grant", "@viewer @owner [@owner ...]", "the viewer may see every record of each owner")
def grant(ctx: Context, rest: str) -> Reply:
    viewer, owners = _viewer_and_owners(ctx, rest)
    new = ctx.storage.grant(ctx.caller, viewer.id, [o.id for o in owners if o.id != viewer.id])
    names = ", ".join(o.username for o in owners)
    return Reply(f"{viewer.username} may now see every record of {names} ({new} new).")


@router.command("revoke", "@viewer @owner [@owner ...]", "take a grant back")
def revoke(ctx: Context, rest: str) -> Reply:
    viewer, owners = _viewer_and_owners(ctx, rest)
    gone = ctx.storage.revoke(ctx.caller, viewer.id, [o.id for o in owners])
    names = ", ".join(o.username for o in owners)
    return Reply(f"{viewer.username} no longer sees the records of {names} ({gone} removed).")


@router.command("perms", "@user", "whom the user can see, and who can see the user")
def perms(ctx: Context, rest: str) -> Reply:
    args = parse_filters(rest, words_allowed=False)
    if len(args.users) != 1:
        raise ParseError("name exactly one @user")
    target = ctx.users(args.users)[0]
    sees, seen_by = ctx.storage.perms(ctx.caller, target.id)
    name = target.username
    sees_text = ", ".join(u.username for u in sees) or "nobody else"
    seen_text = ", ".join(u.username for u in seen_by) or "nobody (besides admins)"
    extra = " As an admin they see every record." if target.is_admin else ""
    return Reply(f"**{name}** ({target.role}) sees the records of: {sees_text}.{extra}\n"
                 f"Who sees {name}'s records by grant: {seen_text}.")


@router.command("role", "@user admin|member|disabled",
                "set a role; a disabled user can neither read nor write (with closed registration, "
                "this admits a newcomer)")
def role(ctx: Context, rest: str) -> Reply:
    tokens = split(rest)
    if len(tokens) != 2 or not tokens[0].startswith("@"):
        raise ParseError("write the @user and then admin, member or disabled")
    target = ctx.users([tokens[0][1:]])[0]
    updated = ctx.storage.set_role(ctx.caller, target.id, tokens[1].lower())
    return Reply(f"{updated.username} is now **{updated.role}**.")


@router.command("users", "", "known users, their role and count of records")
def users(ctx: Context, rest: str) -> Reply:
    if rest.strip():
        raise ParseError(f"'{rest.strip()[:40]}' is not expected; this command takes nothing")
    rows = ctx.storage.users_with_counts(ctx.caller)
    lines = ["| user | role | records |", "|---|---|---:|"]
    lines += [f"| {u.username} | {u.role} | {n} |" for u, n in rows]
    return Reply(f"**{len(rows)} user{'s' if len(rows) != 1 else ''}**\n\n" + "\n".join(lines))


@router.command("restore", "<id>", "undo a delete")
def restore(ctx: Context, rest: str) -> Reply:
    head, tail = split_first(rest)
    if not head or tail.strip():
        raise ParseError("give one record id")
    record_id = parse_id(head)
    ctx.storage.restore_record(ctx.caller, record_id)
    return Reply(f"Restored record **#{record_id}**.")


@router.command("settings", "", "runtime settings and where each value comes from")
def show_settings(ctx: Context, rest: str) -> Reply:
    now = runtime_settings.effective(ctx.config, ctx.storage.settings())
    lines = ["| setting | value | from | accepts |", "|---|---|---|---|"]
    for spec in runtime_settings.SCHEMA:
        source = "set at run time" if spec.key in now.stored else "config"
        lines.append(f"| {spec.key} | {now.values[spec.key]:g} | {source} | {spec.accepts} |")
    problems = "".join(f"\n- {line}" for line in now.problem_lines())
    return Reply("\n".join(lines) + (f"\n\n**Not in use:**{problems}" if problems else "")
                 + f"\n\nChange one with `/{ctx.config.mattermost.trigger} admin set <key> <value>`.")


@router.command("set", "<key> <value>", "change a runtime setting (page_size, alerts.*)")
def set_setting(ctx: Context, rest: str) -> Reply:
    tokens = split(rest)
    if len(tokens) != 2:
        raise ParseError("write the key and one value, e.g. page_size 20")
    key, raw = tokens[0].lower(), tokens[1]

    def decide(stored: dict[str, str]) -> str:
        # Judged against the rows read inside the writing transaction, so two admins setting two
        # keys at once cannot each pass alone and break a rule together.
        return runtime_settings.change(ctx.config, stored, key, raw)

    before = runtime_settings.effective(ctx.config, ctx.storage.settings()).values
    try:
        stored = ctx.storage.set_setting(ctx.caller, key, decide)
    except runtime_settings.SettingError as exc:
        raise ParseError(str(exc)) from None
    value = runtime_settings.BY_KEY[key].parse(stored)
    return Reply(f"{key} is now {value:g} (was {before[key]:g}); it takes effect from the next use.")


@router.command("status", "", "now: watched disks, CPU, memory, load, uptime, the alert loop")
def status(ctx: Context, rest: str) -> Reply:
    alerts = ctx.services.alerts
    sampler = alerts.sampler if alerts is not None else ctx.services.sampler
    now = alerts.clock() if alerts is not None else datetime.now(UTC)
    # Through the sampler and its timeout: a dead network mount costs this command seconds, not a thread.
    samples = sampler.sample_blocking(ctx.config.alerts.paths, now)
    lines = ["| path | used | free | inodes |", "|---|---:|---:|---:|"]
    for s in samples:
        if not s.readable:
            lines.append(f"| {escape_md(s.path)} | cannot read: {escape_md(s.error or '')} | | |")
            continue
        inodes = f"{s.inodes_percent:.1f}%" if s.inodes_percent is not None else "n/a"
        lines.append(f"| {escape_md(s.path)} | {s.used_percent:.1f}% | {human_bytes(s.free_bytes)} | {inodes} |")
    mem = psutil.virtual_memory()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    up = int(time.time() - psutil.boot_time())
    lines.append("")
    lines.append(f"CPU {psutil.cpu_percent(interval=0.1):.0f}% of {psutil.cpu_count()} cores · "
                 f"memory {mem.percent:.0f}% used ({human_bytes(mem.available)} free) · load {load} · "
                 f"up {up // 86400}d {up % 86400 // 3600}h {up % 3600 // 60}m")
    lines += _alert_lines(ctx)
    text = "**Host status**\n\n" + "\n".join(lines)
    return Reply(text + _send_chart(ctx, [(s.path, s.used_percent) for s in samples if s.readable]))


def _alert_lines(ctx: Context) -> list[str]:
    alerts = ctx.services.alerts
    if alerts is None:
        return ["", "Disk alerts are off (alerts.channel is empty)."]
    seen = alerts.overview()
    states = seen.states
    problems = [f"- {escape_md(path)} {kind}: **{st.level}**" + (" (acknowledged)" if st.acknowledged else "")
                + (f" (snoozed until {when(st.snoozed_until, ctx.zone)})" if st.snoozed_until else "")
                for (path, kind), st in sorted(states.items()) if st.level != "ok"]
    held = seen.poster
    poster = f"poster: {held[0]}" if held else "no poster yet"
    health = seen.health
    if health is None:
        checked = "- no check has run yet"
    elif health.failures:
        checked = (f"- last check {when(health.last_check_at, ctx.zone)} **failed** ({health.failures} in a row): "
                   f"{escape_md(health.last_error or '')}; last good check "
                   f"{when(health.last_ok_at, ctx.zone) if health.last_ok_at else 'never'}")
    else:
        checked = f"- last check {when(health.last_check_at, ctx.zone)}: ok"
    aside = [f"- set aside: {escape_md(item.message[:120])} ({escape_md(item.last_error or '')})"
             for item in seen.set_aside]
    if aside:
        aside.append(f"- fix the cause, then `/{ctx.config.mattermost.trigger} admin resend` tries them again")
    return ["", f"**Alerts** ({poster}, {seen.pending} waiting to be posted)", checked,
            *aside, *(problems or ["- every watched path is ok"])]


@router.command("resend", "", "post again the alerts Mattermost refused (after fixing why)")
def resend(ctx: Context, rest: str) -> Reply:
    if rest.strip():
        raise ParseError(f"'{rest.strip()[:40]}' is not expected; this command takes nothing")
    alerts = ctx.services.alerts
    if alerts is None:
        raise ParseError("disk alerts are off (alerts.channel is empty), so there is nothing to resend")
    count = alerts.retry_set_aside()
    ctx.storage.audit_system("alerts resend", f"{count} set-aside alert post(s) queued again", actor=ctx.caller)
    if not count:
        return Reply("No alert post is set aside; nothing to resend.")
    return Reply(f"{count} alert post{'s' if count != 1 else ''} will be tried again within seconds; "
                 "`admin status` shows whether they went out.")


def _send_chart(ctx: Context, usage: list[tuple[str, float]]) -> str:
    gateway, alerts = ctx.services.gateway, ctx.services.alerts
    if gateway is None or alerts is None or not usage:
        return ""
    now = alerts.clock()
    trend = alerts.trend(usage[0][0], now)
    png = usage_chart(f"Disk use on {alerts.host}", usage, trend, ctx.settings["alerts.warn_percent"],
                      ctx.settings["alerts.critical_percent"], now)
    try:
        gateway.send_direct_file(ctx.caller.mm_user_id,
                                 f"Disk use on {alerts.host} (status of {when(now, ctx.zone)})", "disk-status.png", png)
    except UserError as exc:
        return f"\n\n_The chart could not be sent: {exc}._"
    return "\n\n_The chart is in your direct messages with the bot._"


@router.command("audit", "[N]", "the newest admin actions: who, what, when")
def audit(ctx: Context, rest: str) -> Reply:
    raw = rest.strip() or "20"
    if not is_number(raw) or not 1 <= int(raw) <= 200:
        raise ParseError(f"'{raw[:40]}' is not a count; give a number from 1 to 200")
    entries = ctx.storage.recent_audit(ctx.caller, int(raw))
    if not entries:
        return Reply("No admin actions yet.")
    lines = [f"{when(e.created_at, ctx.zone)} · {escape_md(e.actor or 'recbot')} · {e.action} · "
             f"{escape_md(e.detail)}"
             for e in entries]
    return Reply("**Admin actions, newest first**\n\n" + "\n".join(f"- {line}" for line in lines))
