"""python -m bot shell: type /rec commands as a user against the configured database, no Mattermost."""

from __future__ import annotations

import sys
from typing import TextIO

from bot import migrate
from bot.commands import dispatcher as build_dispatcher
from bot.config import Config
from bot.context import Services
from bot.i18n import _, speaking
from bot.mattermost.slash import SlashRequest
from bot.storage import Storage, make_engine


def run_shell(config: Config, username: str, *, admin: bool = False, stdin: TextIO | None = None,
              stdout: TextIO | None = None) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    engine = make_engine(config.database.url)
    migrate.upgrade(engine)
    storage = Storage(engine)
    name = username.lstrip("@")
    known = storage.users_by_username([name]).get(name.lower())
    # A name Mattermost never sent keeps a shell-local id until that user appears for real.
    mm_id = known.mm_user_id if known else f"shell:{name}"
    if admin:
        user, _created = storage.ensure_user(mm_id, name, "member")
        storage.promote(user, "python -m bot shell --admin")
    services = Services(storage, config)
    dispatcher = build_dispatcher()
    trigger = config.mattermost.trigger
    interactive = stdin.isatty()
    if interactive:
        with speaking(config.language):
            intro = (_("recbot shell as {name} (admin); type /{trigger} help, Ctrl-D to leave", name=name,
                       trigger=trigger) if admin else
                     _("recbot shell as {name}; type /{trigger} help, Ctrl-D to leave", name=name, trigger=trigger))
        stdout.write(intro + "\n")
    while True:
        if interactive:
            stdout.write(f"{name}> ")
            stdout.flush()
        line = stdin.readline()
        if not line:
            break
        text = line.rstrip("\n")
        if not text.strip():
            continue
        stripped = text.lstrip()
        if stripped.startswith(f"/{trigger}"):
            text = stripped[len(trigger) + 1:].lstrip(" ")
        result = dispatcher.handle(services, SlashRequest(user_id=mm_id, user_name=name, text=text))
        prefix = "[in channel] " if result.reply.in_channel else ""
        stdout.write(prefix + result.reply.text + "\n\n")
        stdout.flush()
    engine.dispose()
    return 0
