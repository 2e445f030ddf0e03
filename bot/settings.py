"""The one declaration of every runtime setting: its type, its range, and the rules between keys.

Config loading, `check`, `/rec admin set`, `/rec admin settings` and the alert rules all read this
module, so a value one of them accepts is a value every other one can use. Stored values (T_SETTING)
override the config's, and are judged as one set together with it: never one key at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.i18n import N_, _

if TYPE_CHECKING:
    from bot.config import Config


class SettingError(ValueError):
    """A value or a combination the bot cannot use; the message names the key and what it accepts."""


@dataclass(frozen=True)
class Setting:
    key: str  # the name `/rec admin set` takes
    path: str  # the dotted config key
    kind: type  # int or float
    low: float
    high: float
    low_open: bool  # the low end itself is not allowed
    accepts: str  # marked with N_: what the setting accepts, in English

    @property
    def accepts_text(self) -> str:
        """What the setting accepts, in the current language (`/rec admin settings`, error messages)."""
        return _(self.accepts)

    def check(self, value: float, name: str = "") -> float:
        """The value itself when it is finite and in range; else SettingError naming the key
        (`name`, the dotted config key, where the value came from the config)."""
        name = name or self.key
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise SettingError(_("{name}: {value} is not allowed; use {accepts}",
                                 name=name, value=repr(value), accepts=self.accepts_text))
        if self.kind is int and value != int(value):
            raise SettingError(_("{name}: {value} is not allowed; use {accepts}",
                                 name=name, value=format(value, "g"), accepts=self.accepts_text))
        below = value <= self.low if self.low_open else value < self.low
        if below or value > self.high:
            raise SettingError(_("{name}: {value} is not allowed; use {accepts}",
                                 name=name, value=format(value, "g"), accepts=self.accepts_text))
        return self.kind(value)

    def parse(self, raw: str) -> float:
        """A typed value read from text (admin set, a stored row)."""
        try:
            value: float = int(raw, 10) if self.kind is int else float(raw)
        except (TypeError, ValueError):
            raise SettingError(_("{name}: '{raw}' is not allowed; use {accepts}",
                                 name=self.key, raw=raw, accepts=self.accepts_text)) from None
        return self.check(value)


SCHEMA: tuple[Setting, ...] = (
    Setting("page_size", "records.page_size", int, 1, 100, False, N_("a whole number from 1 to 100")),
    Setting("alerts.interval_seconds", "alerts.interval_seconds", int, 5, 86400, False,
            N_("a whole number of seconds from 5 to 86400")),
    Setting("alerts.warn_percent", "alerts.warn_percent", float, 0, 99.9, True,
            N_("a percentage above 0 and at most 99.9")),
    Setting("alerts.critical_percent", "alerts.critical_percent", float, 0, 100, True,
            N_("a percentage above 0, at most 100")),
    Setting("alerts.hysteresis_percent", "alerts.hysteresis_percent", float, 0, 49.9, False,
            N_("a percentage from 0 to 49.9")),
    Setting("alerts.repeat_minutes", "alerts.repeat_minutes", float, 1, 525600, False,
            N_("a number of minutes from 1 to 525600 (a year)")),
)
BY_KEY: dict[str, Setting] = {s.key: s for s in SCHEMA}
BY_PATH: dict[str, Setting] = {s.path: s for s in SCHEMA}


@dataclass(frozen=True)
class Relation:
    """A rule between keys; checked only when every key it names is in the set being judged."""

    keys: tuple[str, ...]
    holds: Callable[[Mapping[str, float]], bool]
    says: Callable[[Mapping[str, float]], str]


RELATIONS: tuple[Relation, ...] = (
    Relation(("alerts.warn_percent", "alerts.critical_percent"),
             lambda v: v["alerts.warn_percent"] < v["alerts.critical_percent"],
             lambda v: _("alerts.warn_percent ({warn}) must stay below alerts.critical_percent ({critical})",
                         warn=format(v["alerts.warn_percent"], "g"),
                         critical=format(v["alerts.critical_percent"], "g"))),
    # A level clears only hysteresis below its threshold: at or above warn, a warning could never clear.
    Relation(("alerts.hysteresis_percent", "alerts.warn_percent"),
             lambda v: v["alerts.hysteresis_percent"] < v["alerts.warn_percent"],
             lambda v: _("alerts.hysteresis_percent ({hysteresis}) must stay below alerts.warn_percent ({warn}), "
                         "or a warning could never clear",
                         hysteresis=format(v["alerts.hysteresis_percent"], "g"),
                         warn=format(v["alerts.warn_percent"], "g"))),
)


def broken_relations(values: Mapping[str, float]) -> list[Relation]:
    return [r for r in RELATIONS if all(k in values for k in r.keys) and not r.holds(values)]


def check_values(values: Mapping[str, float]) -> None:
    """Every key in range and every rule between the keys present; else SettingError for the first."""
    for key, value in values.items():
        BY_KEY[key].check(value)
    broken = broken_relations(values)
    if broken:
        key = broken[0].keys[0]
        raise SettingError(_("{name}: {value} is not allowed; {why}",
                             name=key, value=format(values[key], "g"), why=broken[0].says(values)))


def defaults(config: Config) -> dict[str, float]:
    """The config's value of every setting (already checked as a set when the config was loaded)."""
    out: dict[str, float] = {}
    for s in SCHEMA:
        section, name = s.path.split(".")
        out[s.key] = getattr(getattr(config, section), name)
    return out


@dataclass(frozen=True)
class Effective:
    values: dict[str, float]
    stored: frozenset[str]  # the keys whose value in use comes from the database
    problems: dict[str, str]  # stored values that are not used: key -> why

    def problem_lines(self) -> list[str]:
        return [_("the stored {key} is not used ({why}); the config's {value} is",
                  key=key, why=why, value=format(self.values[key], "g"))
                for key, why in sorted(self.problems.items())]


def effective(config: Config, stored: Mapping[str, str]) -> Effective:
    """Config values with the stored ones on top, judged as one set.

    A stored value that no longer parses, or that breaks a rule together with the rest (the config
    changed under it), is not used, and `problems` says so; the order rows come back in never matters.
    """
    values = defaults(config)
    problems: dict[str, str] = {}
    used: dict[str, float] = {}
    for s in SCHEMA:
        if s.key in stored:
            try:
                used[s.key] = s.parse(stored[s.key])
            except SettingError as exc:
                problems[s.key] = str(exc)
    merged = {**values, **used}
    for relation in broken_relations(merged):
        # Drop this rule's stored keys: the config's own values satisfy every rule.
        for key in relation.keys:
            if key in used:
                problems[key] = relation.says(merged)
                del used[key]
        merged = {**values, **used}
    return Effective(merged, frozenset(used), problems)


def change(config: Config, stored: Mapping[str, str], key: str, raw: str) -> str:
    """The text `admin set key raw` stores, or SettingError with one sentence.

    The new value is judged with every value that will be in use beside it, so what the reply
    reports is what the bot then uses. Call it with the stored rows read in the writing transaction.
    """
    spec = BY_KEY.get(key)
    if spec is None:
        raise SettingError(_("'{key}' is not a setting; use one of: {keys}", key=key, keys=", ".join(BY_KEY)))
    text = repr(spec.parse(raw))
    after = effective(config, {**stored, key: text})
    if key not in after.stored:
        raise SettingError(_("{name}: '{raw}' is not allowed; {why}", name=key, raw=raw, why=after.problems[key]))
    return text
