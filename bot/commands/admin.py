"""admin ...: who sees whose records, roles, restore, runtime settings, host status, the audit log."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

import psutil

from bot import settings as runtime_settings
from bot.alerts.charts import usage_chart
from bot.alerts.text import human_bytes
from bot.context import Context, Reply
from bot.dispatch import ADMIN, Router
from bot.errors import UserError
from bot.i18n import N_, _, ngettext, number
from bot.parse import ParseError, is_number, parse_filters, parse_id, split, split_first
from bot.render import escape_md, when

router = Router("admin", role=ADMIN)
_ROLES = {"admin": N_("admin"), "member": N_("member"), "disabled": N_("disabled")}
_LEVELS = {"ok": N_("ok"), "warning": N_("warning"), "critical": N_("critical"), "unreadable": N_("unreadable")}
_KINDS = {"space": N_("space"), "inodes": N_("inodes")}


def role_name(role: str) -> str:
    """A role as the reader's language calls it."""
    return _(_ROLES[role]) if role in _ROLES else role


def _viewer_and_owners(ctx: Context, rest: str) -> tuple:
    args = parse_filters(rest, words_allowed=False)
    if args.tags or args.channels or args.since or args.until or args.page or args.before:
        raise ParseError(_("name only @users: first the viewer, then one or more owners"))
    if len(args.users) < 2:
        raise ParseError(_("name the viewer and at least one owner, e.g. @alice @bob"))
    users = ctx.users(args.users)
    return users[0], users[1:]


@router.command("grant", N_("@viewer @owner [@owner ...]"), N_("the viewer may see every record of each owner"))
def grant(ctx: Context, rest: str) -> Reply:
    viewer, owners = _viewer_and_owners(ctx, rest)
    new = ctx.storage.grant(ctx.caller, viewer.id, [o.id for o in owners if o.id != viewer.id])
    names = ", ".join(o.username for o in owners)
    return Reply(_("{viewer} may now see every record of {names} ({new} new).",
                   viewer=viewer.username, names=names, new=number(new)))


@router.command("revoke", N_("@viewer @owner [@owner ...]"), N_("take a grant back"))
def revoke(ctx: Context, rest: str) -> Reply:
    viewer, owners = _viewer_and_owners(ctx, rest)
    gone = ctx.storage.revoke(ctx.caller, viewer.id, [o.id for o in owners])
    names = ", ".join(o.username for o in owners)
    return Reply(_("{viewer} no longer sees the records of {names} ({gone} removed).",
                   viewer=viewer.username, names=names, gone=number(gone)))


@router.command("perms", N_("@user"), N_("whom the user can see, and who can see the user"))
def perms(ctx: Context, rest: str) -> Reply:
    args = parse_filters(rest, words_allowed=False)
    if len(args.users) != 1:
        raise ParseError(_("name exactly one @user"))
    target = ctx.users(args.users)[0]
    sees, seen_by = ctx.storage.perms(ctx.caller, target.id)
    name = target.username
    sees_text = ", ".join(u.username for u in sees) or _("nobody else")
    seen_text = ", ".join(u.username for u in seen_by) or _("nobody (besides admins)")
    extra = " " + _("As an admin they see every record.") if target.is_admin else ""
    return Reply(_("**{name}** ({role}) sees the records of: {names}.", name=name, role=role_name(target.role),
                   names=sees_text) + extra + "\n"
                 + _("Who sees {name}'s records by grant: {names}.", name=name, names=seen_text))


@router.command("role", N_("@user admin|member|disabled"),
                N_("set a role; a disabled user can neither read nor write (with closed registration, "
                   "this admits a newcomer)"))
def role(ctx: Context, rest: str) -> Reply:
    tokens = split(rest)
    if len(tokens) != 2 or not tokens[0].startswith("@"):
        raise ParseError(_("write the @user and then admin, member or disabled"))
    target = ctx.users([tokens[0][1:]])[0]
    updated = ctx.storage.set_role(ctx.caller, target.id, tokens[1].lower())
    return Reply(_("{name} is now **{role}**.", name=updated.username, role=role_name(updated.role)))


@router.command("users", "", N_("known users, their role and count of records"))
def users(ctx: Context, rest: str) -> Reply:
    if rest.strip():
        raise ParseError(_("'{text}' is not expected; this command takes nothing", text=rest.strip()[:40]))
    rows = ctx.storage.users_with_counts(ctx.caller)
    lines = [_("| user | role | records |"), "|---|---|---:|"]
    lines += [f"| {u.username} | {role_name(u.role)} | {number(n)} |" for u, n in rows]
    return Reply(ngettext("**{n} user**", "**{n} users**", len(rows)) + "\n\n" + "\n".join(lines))


@router.command("restore", N_("<id>"), N_("undo a delete"))
def restore(ctx: Context, rest: str) -> Reply:
    head, tail = split_first(rest)
    if not head or tail.strip():
        raise ParseError(_("give one record id"))
    record_id = parse_id(head)
    ctx.storage.restore_record(ctx.caller, record_id)
    return Reply(_("Restored record **#{id}**.", id=record_id))


@router.command("settings", "", N_("runtime settings and where each value comes from"))
def show_settings(ctx: Context, rest: str) -> Reply:
    now = runtime_settings.effective(ctx.config, ctx.storage.settings())
    lines = [_("| setting | value | from | accepts |"), "|---|---|---|---|"]
    for spec in runtime_settings.SCHEMA:
        source = _("set at run time") if spec.key in now.stored else _("config")
        lines.append(f"| {spec.key} | {now.values[spec.key]:g} | {source} | {spec.accepts_text} |")
    problems = "".join(f"\n- {line}" for line in now.problem_lines())
    return Reply("\n".join(lines) + ("\n\n" + _("**Not in use:**") + problems if problems else "")
                 + "\n\n" + _("Change one with `/{trigger} admin set <key> <value>`.",
                                trigger=ctx.config.mattermost.trigger))


@router.command("set", N_("<key> <value>"), N_("change a runtime setting (page_size, alerts.*)"))
def set_setting(ctx: Context, rest: str) -> Reply:
    tokens = split(rest)
    if len(tokens) != 2:
        raise ParseError(_("write the key and one value, e.g. page_size 20"))
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
    return Reply(_("{key} is now {value} (was {before}); it takes effect from the next use.",
                   key=key, value=format(value, "g"), before=format(before[key], "g")))


@router.command("status", "", N_("now: watched disks, CPU, memory, load, uptime, the alert loop"))
def status(ctx: Context, rest: str) -> Reply:
    alerts = ctx.services.alerts
    sampler = alerts.sampler if alerts is not None else ctx.services.sampler
    now = alerts.clock() if alerts is not None else datetime.now(UTC)
    # Through the sampler and its timeout: a dead network mount costs this command seconds, not a thread.
    samples = sampler.sample_blocking(ctx.config.alerts.paths, now)
    lines = [_("| path | used | free | inodes |"), "|---|---:|---:|---:|"]
    for s in samples:
        if not s.readable:
            lines.append(f"| {escape_md(s.path)} | " + _("cannot read: {error}", error=escape_md(s.error or ""))
                         + " | | |")
            continue
        inodes = number(s.inodes_percent, 1) + "%" if s.inodes_percent is not None else _("n/a")
        lines.append(f"| {escape_md(s.path)} | {number(s.used_percent, 1)}% | {human_bytes(s.free_bytes)} | {inodes} |")
    mem = psutil.virtual_memory()
    up = int(time.time() - psutil.boot_time())
    lines.append("")
    lines.append(_("CPU {cpu}% of {cores} cores · memory {memory}% used ({free} free) · load {load} · "
                   "up {days}d {hours}h {minutes}m", cpu=number(psutil.cpu_percent(interval=0.1)),
                   cores=psutil.cpu_count(), memory=number(mem.percent), free=human_bytes(mem.available),
                   load=", ".join(number(x, 2) for x in os.getloadavg()),
                   days=up // 86400, hours=up % 86400 // 3600, minutes=up % 3600 // 60))
    lines += _alert_lines(ctx)
    text = _("**Host status**") + "\n\n" + "\n".join(lines)
    return Reply(text + _send_chart(ctx, [(s.path, s.used_percent) for s in samples if s.readable]))


def _alert_lines(ctx: Context) -> list[str]:
    alerts = ctx.services.alerts
    if alerts is None:
        return ["", _("Disk alerts are off (alerts.channel is empty).")]
    seen = alerts.overview()
    problems = [f"- {escape_md(path)} " + _problem(ctx, kind, st) for (path, kind), st in sorted(seen.states.items())
                if st.level != "ok"]
    health = seen.health
    if health is None:
        checked = _("- no check has run yet")
    elif health.failures:
        checked = _("- last check {at} **failed** ({count} in a row): {error}; last good check {good}",
                    at=when(health.last_check_at, ctx.zone), count=number(health.failures),
                    error=escape_md(health.last_error or ""),
                    good=when(health.last_ok_at, ctx.zone) if health.last_ok_at else _("never"))
    else:
        checked = _("- last check {at}: ok", at=when(health.last_check_at, ctx.zone))
    aside = [_("- set aside: {message} ({error})", message=escape_md(item.message[:120]),
               error=escape_md(item.last_error or "")) for item in seen.set_aside]
    if aside:
        aside.append(_("- fix the cause, then `/{trigger} admin resend` tries them again",
                       trigger=ctx.config.mattermost.trigger))
    heading = (_("**Alerts** (poster: {host}, {pending} waiting to be posted)", host=seen.poster[0],
                 pending=number(seen.pending)) if seen.poster else
               _("**Alerts** (no poster yet, {pending} waiting to be posted)", pending=number(seen.pending)))
    return ["", heading, checked, *aside, *(problems or [_("- every watched path is ok")])]


def _problem(ctx: Context, kind: str, state: Any) -> str:
    """"space: **warning** (acknowledged) (snoozed until ...)" in the reader's words."""
    text = _("{kind}: **{level}**", kind=_(_KINDS[kind]) if kind in _KINDS else kind,
             level=_(_LEVELS[state.level]) if state.level in _LEVELS else state.level)
    if state.acknowledged:
        text += " " + _("(acknowledged)")
    if state.snoozed_until:
        text += " " + _("(snoozed until {at})", at=when(state.snoozed_until, ctx.zone))
    return text


@router.command("resend", "", N_("post again the alerts Mattermost refused (after fixing why)"))
def resend(ctx: Context, rest: str) -> Reply:
    if rest.strip():
        raise ParseError(_("'{text}' is not expected; this command takes nothing", text=rest.strip()[:40]))
    alerts = ctx.services.alerts
    if alerts is None:
        raise ParseError(_("disk alerts are off (alerts.channel is empty), so there is nothing to resend"))
    count = alerts.retry_set_aside()
    ctx.storage.audit_system("alerts resend", f"{count} set-aside alert post(s) queued again", actor=ctx.caller)
    if not count:
        return Reply(_("No alert post is set aside; nothing to resend."))
    return Reply(ngettext("{n} alert post will be tried again within seconds; `admin status` shows whether it "
                          "went out.",
                          "{n} alert posts will be tried again within seconds; `admin status` shows whether they "
                          "went out.", count))


def _send_chart(ctx: Context, usage: list[tuple[str, float]]) -> str:
    gateway, alerts = ctx.services.gateway, ctx.services.alerts
    if gateway is None or alerts is None or not usage:
        return ""
    now = alerts.clock()
    trend = alerts.trend(usage[0][0], now)
    png = usage_chart(_("Disk use on {host}", host=alerts.host), usage, trend, ctx.settings["alerts.warn_percent"],
                      ctx.settings["alerts.critical_percent"], now)
    try:
        gateway.send_direct_file(ctx.caller.mm_user_id,
                                 _("Disk use on {host} (status of {at})", host=alerts.host, at=when(now, ctx.zone)),
                                 "disk-status.png", png)
    except UserError as exc:
        return "\n\n" + _("_The chart could not be sent: {error}._", error=exc)
    return "\n\n" + _("_The chart is in your direct messages with the bot._")


@router.command("audit", "[N]", N_("the newest admin actions: who, what, when"))
def audit(ctx: Context, rest: str) -> Reply:
    raw = rest.strip() or "20"
    if not is_number(raw) or not 1 <= int(raw) <= 200:
        raise ParseError(_("'{text}' is not a count; give a number from 1 to 200", text=raw[:40]))
    entries = ctx.storage.recent_audit(ctx.caller, int(raw))
    if not entries:
        return Reply(_("No admin actions yet."))
    lines = [f"{when(e.created_at, ctx.zone)} · {escape_md(e.actor or 'recbot')} · {e.action} · "
             f"{escape_md(e.detail)}"
             for e in entries]
    return Reply(_("**Admin actions, newest first**") + "\n\n" + "\n".join(f"- {line}" for line in lines))
