"""Load config.yaml plus REC_* environment overrides into one frozen, validated Config.

A bad value raises ConfigError naming the dotted key and what it accepts, so the CLI can print one
line and exit non-zero instead of a traceback.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from bot import settings
from bot.i18n import language_or_none

ENV_PREFIX = "REC_"
DEFAULT_PATH = "config.yaml"


class ConfigError(Exception):
    """A config value is wrong; the message names the dotted key and what it accepts."""


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///data/records.db"
    timeout_seconds: float = 10


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8070
    public_url: str = ""
    workers: int = 1


@dataclass(frozen=True)
class MattermostConfig:
    url: str = ""
    bot_token: str = field(default="", repr=False)
    team: str = ""
    register_command: bool = True
    trigger: str = "rec"
    slash_tokens: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class RecordsConfig:
    page_size: int = 10


@dataclass(frozen=True)
class AlertsConfig:
    channel: str = ""
    host: str = ""  # the name this host's disks are reported under, one poster lease each; empty: the host name
    language: str = ""  # the language alert posts are written in; empty: the config's language
    timezone: str = ""  # the zone alert posts show times in; empty: the config's timezone
    interval_seconds: int = 60
    paths: tuple[str, ...] = ("/",)
    warn_percent: float = 80
    critical_percent: float = 90
    hysteresis_percent: float = 2
    repeat_minutes: float = 240


@dataclass(frozen=True)
class DigestsConfig:
    hour: int = 8  # the hour of each subscriber's own day (their timezone) their digest goes out


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    mattermost: MattermostConfig = field(default_factory=MattermostConfig)
    admins: tuple[str, ...] = ()
    registration: str = "open"
    language: str = "en"  # for users whose Mattermost profile names no locale, and without Mattermost
    timezone: str = "UTC"  # for users whose Mattermost profile names no zone, and without Mattermost
    records: RecordsConfig = field(default_factory=RecordsConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    digests: DigestsConfig = field(default_factory=DigestsConfig)
    source: str = field(default="(defaults)", compare=False)

    @property
    def alerts_host(self) -> str:
        """The name this host's disks are reported under: alerts.host, else the machine's host name."""
        return self.alerts.host or socket.gethostname()

    @property
    def newcomer_role(self) -> str:
        """What a first use registers someone as: a member, or (registration closed) disabled until an
        admin admits them."""
        return "member" if self.registration == "open" else "disabled"


# Per-key rules beyond the type: (check, what the key accepts). The runtime settings (page size and
# the alert numbers) are declared once, in bot.settings, and checked from there.
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "database.url": (
        lambda v: v.startswith(("sqlite://", "mysql+pymysql://", "mariadb+pymysql://")),
        "a URL such as sqlite:///data/records.db or mysql+pymysql://user:pw@host:3306/records",
    ),
    "database.timeout_seconds": (lambda v: 1 <= v <= 600, "a number of seconds from 1 to 600"),
    "server.port": (lambda v: 1 <= v <= 65535, "a port number from 1 to 65535"),
    "server.workers": (lambda v: 1 <= v <= 64, "a number of processes from 1 to 64, such as the CPU count"),
    "server.public_url": (lambda v: v == "" or v.startswith(("http://", "https://")),
                          "empty or an http(s):// URL"),
    "mattermost.url": (lambda v: v == "" or (v.startswith(("http://", "https://"))
                                             and urlsplit(v).path in ("", "/")),
                       "empty or an http(s):// URL without a path, such as https://chat.example.com"),
    "mattermost.trigger": (
        lambda v: 1 <= len(v) <= 128 and not v.startswith("/") and " " not in v,
        "a word without a leading slash or spaces, such as rec",
    ),
    "registration": (lambda v: v in ("open", "closed"), "open or closed"),
    "language": (lambda v: language_or_none(v) is not None, "en or zh-CN (the languages recbot speaks)"),
    "alerts.language": (lambda v: v == "" or language_or_none(v) is not None,
                        "empty (the config's language), en or zh-CN"),
    "timezone": (lambda v: zone_or_none(v) is not None, "an IANA time zone such as UTC or Asia/Shanghai"),
    "alerts.timezone": (lambda v: v == "" or zone_or_none(v) is not None,
                        "empty (the config's timezone) or an IANA time zone such as Asia/Shanghai"),
    "alerts.host": (lambda v: len(v) <= 64 and not any(c.isspace() or c == ":" for c in v),
                    "empty (the machine's host name) or a name of at most 64 characters without spaces or ':'"),
    "alerts.paths": (lambda v: all(p.startswith("/") for p in v), "a list of absolute paths"),
    "digests.hour": (lambda v: 0 <= v <= 23, "an hour of the day from 0 to 23"),
}


def zone_or_none(name: str) -> ZoneInfo | None:
    """The IANA zone of that name, or None when there is none (or the name is not a zone name)."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _coerce(key: str, value: Any, annotation: str) -> Any:
    """Turn a YAML or environment value into the declared type, or raise ConfigError."""
    if annotation == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{key}: {value!r} is not allowed; use true or false")
    if annotation.startswith("tuple"):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if value is None:
            value = []
        if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
            raise ConfigError(f"{key}: {value!r} is not allowed; use a list of strings")
        return tuple(str(v) for v in value)
    if annotation == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isascii() and value.strip().lstrip("-").isdigit():
            return int(value)
        raise ConfigError(f"{key}: {value!r} is not allowed; use a whole number")
    if annotation == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: {value!r} is not allowed; use a number") from None
    if annotation == "str":
        if value is None:
            return ""
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: {value!r} is not allowed; use a string")
    raise ConfigError(f"{key}: unsupported value {value!r}")


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    known = {f.name: f for f in fields(cls) if f.name != "source"}
    for name in data:
        if name not in known:
            where = f"{prefix}{name}"
            raise ConfigError(f"{where}: unknown key; known keys here: {', '.join(known)}")
    values: dict[str, Any] = {}
    defaults = cls()
    for name, f in known.items():
        key = f"{prefix}{name}"
        default = getattr(defaults, name)
        if is_dataclass(default):
            sub = data.get(name) or {}
            if not isinstance(sub, Mapping):
                raise ConfigError(f"{key}: must be a mapping of keys ({', '.join(x.name for x in fields(default))})")
            values[name] = _build(type(default), sub, key + ".")
            continue
        value = _coerce(key, data[name], str(f.type)) if name in data else default
        rule = _RULES.get(key)
        if rule and not rule[0](value):
            raise ConfigError(f"{key}: {value!r} is not allowed; use {rule[1]}")
        spec = settings.BY_PATH.get(key)
        if spec is not None:
            try:
                value = spec.check(value, key)
            except settings.SettingError as exc:
                raise ConfigError(str(exc)) from None
        values[name] = value
    return cls(**values)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """REC_SERVER__PORT=9000 becomes {"server": {"port": 9000}}; values are read as YAML scalars."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "REC_CONFIG":
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        # A token or password that YAML would read as a number must stay the text it was.
        if isinstance(value, int | float) and path[-1] in ("bot_token", "url", "public_url", "team"):
            value = raw
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: conflicts with another REC_ variable")
        node[path[-1]] = value
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the file (explicit path, else REC_CONFIG, else ./config.yaml if present) and the environment."""
    environ = os.environ if environ is None else environ
    explicit = path or environ.get("REC_CONFIG")
    chosen = Path(explicit or DEFAULT_PATH)
    data: dict[str, Any] = {}
    source = "(defaults)"
    if chosen.exists():
        try:
            loaded = yaml.safe_load(chosen.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{chosen}: not valid YAML{where}; fix the file or pass another --config") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{chosen}: the top level must be a mapping of keys (database:, server:, ...)")
        data = loaded or {}
        source = str(chosen)
    elif explicit:
        raise ConfigError(f"config file {chosen} does not exist; pass an existing --config or unset REC_CONFIG")
    data = _merge(data, _env_overrides(environ))
    config = _build(Config, data, "")
    try:
        settings.check_values(settings.defaults(config))
    except settings.SettingError as exc:
        raise ConfigError(str(exc)) from None
    if config.mattermost.url and not config.mattermost.bot_token:
        raise ConfigError(
            "mattermost.bot_token: empty while mattermost.url is set; "
            "set REC_MATTERMOST__BOT_TOKEN to the bot account's access token"
        )
    if config.mattermost.url and not config.mattermost.team:
        raise ConfigError("mattermost.team: empty while mattermost.url is set; use the team's name (its URL part)")
    return replace(config, source=source)
