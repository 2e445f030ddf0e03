"""One way in for every event: a slash command, a direct message to the bot, a click on an alert button.

Each door (the HTTP endpoints, the WebSocket, the shell) verifies what it must (the token, the JSON)
and hands an Event in. Then, as in Bolt: identify -> role gate -> settings (the middleware chain, in
that order) -> route -> handle -> reply, with one error hook, `on_error`, that gives every failure one
reply and one log line with a ref. As in aiogram, each commands module owns a Router; the admin
commands are a sub-router behind an admin guard, and the one table both routes and generates help.
What an outcome means in HTTP is the door's business, not the handler's.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bot import i18n
from bot import settings as runtime_settings
from bot.context import Context, Reply, Services
from bot.errors import Forbidden, NotFound, UserError
from bot.i18n import _
from bot.mattermost.slash import SlashRequest
from bot.metrics import UNKNOWN_COMMAND
from bot.parse import ParseError, split_first
from bot.storage import IDENTITY_MAX_AGE, Attachment, User

log = logging.getLogger(__name__)

Handler = Callable[[Context, str], Reply]
PROFILE_MAX_AGE = timedelta(minutes=5)  # how stale a user's Mattermost locale and timezone may get

SLASH, DIRECT, BUTTON = "slash", "direct", "button"
MENTION = "mention"  # "@recbot save ..." in a channel's thread
DIALOG = "dialog"  # the submission of the /rec add dialog
MEMBER, ADMIN, ANYONE = "member", "admin", "anyone"  # who a route lets through


@dataclass(frozen=True)
class Command:
    name: str  # "find", "admin grant", or an event route's name
    usage: str  # arguments after the name, e.g. "<words> [@user] [#tag]"; marked with N_, shown translated
    summary: str  # marked with N_ where declared, translated when help is written
    handler: Handler
    role: str = MEMBER
    details: str = ""
    source: str = SLASH  # the kind of event this route takes
    failure: str = ""  # put before an error's sentence (a DM that was not saved says so first)

    @property
    def admin(self) -> bool:
        return self.role == ADMIN

    @property
    def listed(self) -> bool:
        """Typed after /rec, so in help; event routes (DMs, buttons) are not."""
        return self.source == SLASH

    @property
    def told(self) -> bool:
        """Started by a member without /rec (a DM, an @mention), so help tells of it too."""
        return self.source in (DIRECT, MENTION) and self.role == MEMBER

    def usage_line(self, trigger: str) -> str:
        """The command as typed, its argument placeholders in the current language."""
        return f"/{trigger} {self.name}" + (f" {_(self.usage)}" if self.usage else "")


class Router:
    """A group of routes declared next to their handlers; a named group ("admin") is a sub-router
    whose commands are "admin <name>" and whose guard is its role."""

    def __init__(self, group: str = "", role: str = MEMBER) -> None:
        self.group = group
        self.role = role
        self.commands: list[Command] = []

    def command(self, name: str, usage: str, summary: str, *, details: str = "") -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            full = f"{self.group} {name}" if self.group else name
            self.commands.append(Command(full, usage, summary, handler, self.role, details))
            return handler
        return register

    def event(self, source: str, name: str, summary: str, *, role: str = MEMBER,
              failure: str = "") -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.commands.append(Command(name, "", summary, handler, role, source=source, failure=failure))
            return handler
        return register


class Outcome:
    OK = "ok"
    USER_ERROR = "user_error"
    ERROR = "error"
    REFUSED = "refused"


@dataclass(frozen=True)
class Event:
    """What a user did, whatever door it came in by. `request` says who (the Mattermost id) and what
    (the text: a command, or a DM's message)."""

    request: SlashRequest
    source: str = SLASH
    context: Mapping[str, Any] = field(default_factory=dict)  # a button's signed context
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True)
class Result:
    reply: Reply
    command: str  # the metrics label: a route's name, never text of the caller's choosing
    outcome: str
    error: type[Exception] | None = None  # what kind of failure, for the door to translate


@dataclass
class Call:
    """What the middleware chain builds up for one event."""

    services: Services
    event: Event
    command: Command
    caller: User | None = None
    created: bool = False
    settings: dict[str, float] = field(default_factory=dict)


def identify(call: Call) -> None:
    """The caller's row, by Mattermost id: registered on first use, username refreshed.

    Config `admins` apply once, when an account is first registered: a later demotion sticks, and a
    listed username is bound to the first account that registers with it.
    """
    config, storage, request = call.services.config, call.services.storage, call.event.request
    role = config.newcomer_role
    # Member commands may use a row this process read a moment ago; admin commands read afresh.
    max_age = IDENTITY_MAX_AGE if call.command.role == MEMBER and call.command.name else 0.0
    # A button click may come without a name: keep the one recbot has rather than rename anyone.
    name = request.user_name or _known_name(storage, request.user_id)
    user, created = storage.ensure_user(request.user_id, name, role, max_age=max_age)
    listed = {a.lower().lstrip("@") for a in config.admins}
    if created and (request.user_name.lower() in listed or request.user_id.lower() in listed):
        user = storage.promote_listed_admin(user, request.user_name.lower())
    call.caller, call.created = _with_profile(call.services, user), created
    # From here on every reply and error is in the caller's language (Mattermost's locale, else config).
    i18n.switch(i18n.language_of(call.caller.locale, config.language))


def _known_name(storage: Any, user_id: str) -> str:
    known = storage.user_by_mm_id(user_id)
    return known.username if known is not None else user_id


def _with_profile(services: Services, user: User) -> User:
    """The user with their Mattermost locale and timezone, read again at most every PROFILE_MAX_AGE."""
    gateway = services.gateway
    if gateway is None:
        return user
    read_at = user.profile_at
    if read_at is not None and services.storage.clock() - read_at < PROFILE_MAX_AGE:
        return user
    try:
        locale, zone = gateway.user_profile(user.mm_user_id)
    except UserError as exc:
        # Mattermost slow or down: answer with what is known, and wait the usual time before asking
        # again, so an outage does not slow every command.
        log.warning("reading the profile of %s failed: %s", user.username, exc)
        locale, zone = user.locale or "", user.timezone or ""
    return services.storage.save_profile(user, locale, zone)


def role_gate(call: Call) -> None:
    """A disabled account does nothing, an admin route is for admins; `anyone` routes (a button in a
    channel Mattermost let the user see) let every account through."""
    user, trigger = call.caller, call.services.config.mattermost.trigger
    assert user is not None
    if call.command.role == ANYONE:
        return
    if user.role == "disabled":
        if call.created:
            raise Forbidden(_("recbot registration is closed; ask a recbot admin to let you in "
                          "(they type /{trigger} admin role @{name} member)", trigger=trigger, name=user.username))
        raise Forbidden(_("your recbot account is disabled; ask a recbot admin to enable it"))
    if call.command.role == ADMIN and not user.is_admin:
        raise Forbidden(_("/{trigger} {command} is for recbot admins; ask one of them",
                          trigger=trigger, command=call.command.name))


def load_settings(call: Call) -> None:
    stored = call.services.storage.settings(max_age=2.0)
    call.settings = runtime_settings.effective(call.services.config, stored).values


MIDDLEWARE: tuple[Callable[[Call], None], ...] = (identify, role_gate, load_settings)


class Dispatcher:
    def __init__(self, routers: Iterable[Router],
                 middleware: Sequence[Callable[[Call], None]] = MIDDLEWARE) -> None:
        self.table: dict[str, Command] = {}
        self.events: dict[str, Command] = {}
        self.groups: set[str] = set()
        self.middleware = tuple(middleware)
        for router in routers:
            if router.group:
                self.groups.add(router.group)
            for cmd in router.commands:
                if cmd.name in self.table:
                    raise ValueError(f"command {cmd.name!r} declared twice")
                self.table[cmd.name] = cmd
                if cmd.source != SLASH:
                    self.events[cmd.source] = cmd

    def route(self, text: str) -> tuple[Command | None, str, str]:
        """(command, its name, the rest of the text verbatim); a group's word takes the next word too."""
        first, rest = split_first(text)
        first = first.lower()
        if first in self.groups:
            second, after = split_first(rest)
            name = f"{first} {second.lower()}" if second else first
            cmd = self.table.get(name)
            return (cmd if cmd and cmd.listed else None), name, after
        cmd = self.table.get(first)
        return (cmd if cmd and cmd.listed else None), first, rest

    def handle(self, services: Services, event: Event | SlashRequest) -> Result:
        """Run one event through the chain and its route; every failure becomes one reply (on_error).
        Until the caller is known, replies are in the config's language."""
        if isinstance(event, SlashRequest):
            event = Event(event)
        with i18n.speaking(services.config.language):
            return self._handle(services, event)

    def _handle(self, services: Services, event: Event) -> Result:
        if event.source == SLASH:
            cmd, name, rest = self.route(event.request.text)
        else:
            cmd, name, rest = self.events.get(event.source), event.source, event.request.text
        label = cmd.name if cmd else UNKNOWN_COMMAND
        try:
            if cmd is None:
                # Unknown text still registers the caller (and says whether they may use recbot at all).
                probe = Call(services, event, Command("", "", "", _nothing))
                for step in self.middleware[:2]:
                    step(probe)
                return Result(Reply(self._unknown(name, services.config.mattermost.trigger)), label,
                              Outcome.USER_ERROR, ParseError)
            call = Call(services, event, cmd)
            for step in self.middleware:
                step(call)
            assert call.caller is not None
            ctx = Context(services, event.request, call.caller, call.settings, tuple(self.table.values()), event)
            return Result(cmd.handler(ctx, rest), label, Outcome.OK)
        except Exception as exc:
            return self.on_error(exc, services, event, cmd, label)

    def on_error(self, exc: Exception, services: Services, event: Event, cmd: Command | None,
                 label: str) -> Result:
        """The one error hook: a domain error is one sentence (a parse error adds the usage); anything
        else is "something broke" with a ref, logged once with that ref."""
        prefix = cmd.failure if cmd else ""
        if isinstance(exc, ParseError):
            trigger = services.config.mattermost.trigger
            usage = "\n" + _("Usage: `{usage}`", usage=cmd.usage_line(trigger)) if cmd and cmd.listed else ""
            return Result(Reply(_sentence(prefix, exc) + usage), label, Outcome.USER_ERROR, ParseError)
        if isinstance(exc, UserError):
            kind = Forbidden if isinstance(exc, Forbidden) else NotFound if isinstance(exc, NotFound) else UserError
            return Result(Reply(_sentence(prefix, exc)), label, Outcome.USER_ERROR, kind)
        ref = uuid.uuid4().hex[:8]
        request = event.request
        log.exception("%s failed (ref %s): user=%s text=%r", label, ref, request.user_name, request.text[:200])
        text = (_(prefix) + _("something broke on our side (ref {ref}); send it again in a moment.", ref=ref)
                if prefix else
                _("Something broke on our side (ref {ref}); it was logged. "
                  "Try again in a moment, or tell a recbot admin the ref.", ref=ref))
        return Result(Reply(text), label, Outcome.ERROR, type(exc))

    def _unknown(self, name: str, trigger: str) -> str:
        if not name:
            return _("Type a command after /{trigger}, e.g. `/{trigger} add restarted nginx on web-01`; "
                     "`/{trigger} help` lists them all.", trigger=trigger)
        return _("'{name}' is not a /{trigger} command; `/{trigger} help` lists them all.",
                 name=name[:40], trigger=trigger)


def _sentence(prefix: str, exc: Exception) -> str:
    """An error's sentence, ended as the language ends one, after the route's prefix ("Not saved: ")."""
    text = f"{_(prefix) if prefix else ''}{exc}"
    return text if text.endswith((".", "。", "！", "？")) else text + _(".")


def _nothing(ctx: Context, rest: str) -> Reply:
    return Reply("")
