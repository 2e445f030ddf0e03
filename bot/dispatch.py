"""The command table, routing, identity and the one error hook.

Modelled on Bolt's flow (verify -> parse -> route -> handle -> reply) and aiogram's explicit routers:
each commands module owns a Router; the table built from them both routes and generates /rec help.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bot import settings as runtime_settings
from bot.context import Context, Reply, Services
from bot.errors import Forbidden, UserError
from bot.mattermost.slash import SlashRequest
from bot.metrics import UNKNOWN_COMMAND
from bot.parse import ParseError
from bot.storage import User

log = logging.getLogger(__name__)

Handler = Callable[[Context, str], Reply]
# Seconds a caller's row read by this process may answer a member command (a role change made in
# another server.workers process shows within this; one made here shows at once).
IDENTITY_MAX_AGE = 2.0


@dataclass(frozen=True)
class Command:
    name: str  # "find" or "admin grant"
    usage: str  # arguments after the name, e.g. "<words> [@user] [#tag]"
    summary: str
    handler: Handler
    admin: bool = False
    details: str = ""

    def usage_line(self, trigger: str) -> str:
        return f"/{trigger} {self.name}" + (f" {self.usage}" if self.usage else "")


class Router:
    """A group of commands declared next to their handlers."""

    def __init__(self) -> None:
        self.commands: list[Command] = []

    def command(self, name: str, usage: str, summary: str, *, admin: bool = False,
                details: str = "") -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.commands.append(Command(name, usage, summary, handler, admin, details))
            return handler
        return register


class Outcome:
    OK = "ok"
    USER_ERROR = "user_error"
    ERROR = "error"
    REFUSED = "refused"


@dataclass(frozen=True)
class Result:
    reply: Reply
    command: str
    outcome: str


class Dispatcher:
    def __init__(self, routers: Iterable[Router]) -> None:
        self.table: dict[str, Command] = {}
        for router in routers:
            for cmd in router.commands:
                if cmd.name in self.table:
                    raise ValueError(f"command {cmd.name!r} declared twice")
                self.table[cmd.name] = cmd

    def route(self, text: str) -> tuple[Command | None, str, str]:
        """(command, its name, the rest of the text verbatim); two-word names first."""
        from bot.parse import split_first

        first, rest = split_first(text)
        first = first.lower()
        if first in ("admin",):
            second, rest2 = split_first(rest)
            name = f"admin {second.lower()}"
            return self.table.get(name), name if second else "admin", rest2
        return self.table.get(first), first, rest

    def identify(self, services: Services, request: SlashRequest, max_age: float = 0.0) -> User:
        """The caller's row: registered on first use (by Mattermost id), username refreshed.

        Config `admins` apply once, when an account is first registered: a later demotion sticks, and a
        listed username is bound to the first account that registers with it, so a new account that
        takes the name later is not an admin. max_age lets a row read that recently answer (see
        Storage.ensure_user).
        """
        config = services.config
        storage = services.storage
        role = "member" if config.registration == "open" else "disabled"
        user, created = storage.ensure_user(request.user_id, request.user_name, role, max_age=max_age)
        listed = {a.lower().lstrip("@") for a in config.admins}
        if created and (request.user_name.lower() in listed or request.user_id.lower() in listed):
            user = storage.promote_listed_admin(user, request.user_name.lower())
        if user.role == "disabled":
            if created:
                raise Forbidden("recbot registration is closed; ask a recbot admin to let you in "
                                f"(they type /{config.mattermost.trigger} admin role @{request.user_name} member)")
            raise Forbidden("your recbot account is disabled; ask a recbot admin to enable it")
        return user

    def handle(self, services: Services, request: SlashRequest) -> Result:
        """Route and run one command; every failure becomes one clear reply (the one error hook)."""
        trigger = services.config.mattermost.trigger
        cmd, name, rest = self.route(request.text)
        # The metrics label: a command of the table, never text of the caller's choosing.
        label = cmd.name if cmd else UNKNOWN_COMMAND
        try:
            # Admin commands, and any text that is not a command, read the caller's role afresh.
            caller = self.identify(services, request, max_age=IDENTITY_MAX_AGE if cmd and not cmd.admin else 0.0)
            if cmd is None:
                return Result(Reply(self._unknown(name, trigger)), label, Outcome.USER_ERROR)
            if cmd.admin and not caller.is_admin:
                raise Forbidden(f"/{trigger} {cmd.name} is for recbot admins; ask one of them")
            ctx = Context(services, request, caller,
                          runtime_settings.effective(services.config, services.storage.settings(max_age=2.0)).values,
                          tuple(self.table.values()))
            return Result(cmd.handler(ctx, rest), cmd.name, Outcome.OK)
        except ParseError as exc:
            usage = f"\nUsage: `{cmd.usage_line(trigger)}`" if cmd else ""
            return Result(Reply(f"{exc}.{usage}"), label, Outcome.USER_ERROR)
        except UserError as exc:
            return Result(Reply(f"{exc}."), label, Outcome.USER_ERROR)
        except Exception:
            ref = uuid.uuid4().hex[:8]
            log.exception("command failed (ref %s): user=%s text=%r", ref, request.user_name, request.text[:200])
            return Result(Reply(f"Something broke on our side (ref {ref}); it was logged. "
                                "Try again in a moment, or tell a recbot admin the ref."), label, Outcome.ERROR)

    def _unknown(self, name: str, trigger: str) -> str:
        if not name:
            return f"Type a command after /{trigger}, e.g. `/{trigger} add restarted nginx on web-01`; " \
                   f"`/{trigger} help` lists them all."
        return f"'{name[:40]}' is not a /{trigger} command; `/{trigger} help` lists them all."
