"""The command line: python -m bot [--config PATH] [serve|shell|migrate|check]."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from bot import migrate
from bot.config import Config, ConfigError, load_config
from bot.i18n import language_or_none
from bot.storage import make_engine

log = logging.getLogger("bot")


def _safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _db_problem(exc: Exception, config: Config) -> str:
    reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
    return (f"cannot use {_safe_url(config.database.url)}: {reason}; "
            "check that the server runs and database.url (REC_DATABASE__URL) is right")


def cmd_migrate(config: Config) -> int:
    engine = make_engine(config.database.url)
    try:
        before = migrate.current_revision(engine)
        backend = migrate.upgrade(engine)
    except SQLAlchemyError as exc:
        print(f"migrate: {_db_problem(exc, config)}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    head = migrate.head_revision()
    change = "already current" if before == head else f"{before or 'empty'} -> {head}"
    print(f"migrate: {_safe_url(config.database.url)} schema {head} ({change}); search: {backend}")
    return 0


def check_lines(config: Config) -> list[tuple[str, bool, str]]:
    """(part, ok, detail) for each configured part: what works, or what is wrong and how to fix it."""
    lines: list[tuple[str, bool, str]] = [("config", True, config.source)]
    engine = make_engine(config.database.url, config.database.timeout_seconds)
    try:
        current = migrate.current_revision(engine)
        head = migrate.head_revision()
        if current != head:
            lines.append(("database", False, f"{_safe_url(config.database.url)} is at schema {current or 'none'}, "
                                             f"the code needs {head}: run python -m bot migrate"))
        else:
            from bot import search
            lines.append(("database", True, f"{_safe_url(config.database.url)} schema {head}, "
                                            f"search: {search.detect_backend(engine)}"))
    except SQLAlchemyError as exc:
        lines.append(("database", False, _db_problem(exc, config)))
    finally:
        engine.dispose()
    if not config.mattermost.url:
        lines.append(("mattermost", True, "not configured (mattermost.url is empty): slash endpoint only"))
    else:
        lines += asyncio.run(_check_mattermost(config))
    return lines


async def _check_mattermost(config: Config) -> list[tuple[str, bool, str]]:
    from bot.mattermost.gateway import Gateway

    gateway = Gateway(config)
    try:
        me = await gateway.start()
        if not me.user_id:
            return [("mattermost", False, "; ".join(me.problems))]
        lines = [("mattermost", True, f"{config.mattermost.url} reachable, bot @{me.username}")]
        if not me.team_id:
            lines.append(("team", False, "; ".join(me.problems)))
            return lines
        lines.append(("team", True, config.mattermost.team))
        if config.alerts.channel:
            trouble = [p for p in me.problems if f"~{config.alerts.channel}" in p]
            detail = "; ".join(trouble) or f"~{config.alerts.channel}, bot is a member"
            lines.append(("alert channel", not trouble, detail))
        ok, detail = await gateway.command_status()
        lines.append(("command", ok, detail))
        return lines
    finally:
        await gateway.close()


def cmd_check(config: Config) -> int:
    lines = check_lines(config)
    width = max(len(part) for part, _, _ in lines)
    for part, ok, detail in lines:
        print(f"{part:<{width}}  {'ok  ' if ok else 'FAIL'}  {detail}")
    return 0 if all(ok for _, ok, _ in lines) else 1


def cmd_serve(config: Config) -> int:
    from bot.app import run

    return run(config)


def cmd_shell(config: Config, user: str, admin: bool, language: str | None) -> int:
    from bot.shell import run_shell

    if language is not None:
        if language_or_none(language) is None:
            print(f"--lang {language}: recbot speaks en and zh-CN; use one of them", file=sys.stderr)
            return 2
        # Without Mattermost there is no profile locale: the shell's user speaks the config's language.
        config = replace(config, language=language)
    return run_shell(config, user, admin=admin)


# Moving history in and out: each takes its own options (python -m bot export --help).
TRANSFER = {
    "export": ("bot.transfer.dump", "run_export"),
    "import": ("bot.transfer.dump", "run_import"),
    "copy": ("bot.transfer.copy", "run_copy"),
    "import-legacy": ("bot.transfer.legacy", "run_import_legacy"),
}


def cmd_transfer(config: Config, command: str, options: list[str]) -> int:
    import importlib

    module, function = TRANSFER[command]
    run: Callable[[Config, list[str]], int] = getattr(importlib.import_module(module), function)
    return run(config, options)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description="recbot: operation records in Mattermost")
    parser.add_argument("--config", help="path of config.yaml (default: $REC_CONFIG, else ./config.yaml)")
    parser.add_argument("command", nargs="?", default="serve",
                        choices=["serve", "shell", "migrate", "check", *TRANSFER])
    parser.add_argument("--user", default=None, help="shell: act as this username (registered if new)")
    parser.add_argument("--admin", action="store_true", help="shell: the user is an admin")
    parser.add_argument("--lang", default=None, help="shell: answer in this language (en or zh-CN; default: "
                                                      "the config's language)")
    args, rest = parser.parse_known_args(argv)
    if rest and args.command not in TRANSFER:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        return cmd_migrate(config)
    if args.command == "check":
        return cmd_check(config)
    if args.command in TRANSFER:
        return cmd_transfer(config, args.command, rest)
    if args.command == "shell":
        import getpass

        return cmd_shell(config, args.user or getpass.getuser(), args.admin, args.lang)
    return cmd_serve(config)


if __name__ == "__main__":
    sys.exit(main())
