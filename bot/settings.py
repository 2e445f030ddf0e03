"""Runtime settings kept in T_SETTING: a stored value overrides config and environment (the defaults)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot.config import Config


@dataclass(frozen=True)
class Spec:
    kind: type
    check: Callable[[float], bool]
    accepts: str


SPECS: dict[str, Spec] = {
    "page_size": Spec(int, lambda v: 1 <= v <= 100, "a whole number from 1 to 100"),
    "alerts.interval_seconds": Spec(int, lambda v: 5 <= v <= 86400, "a whole number of seconds from 5 to 86400"),
    "alerts.warn_percent": Spec(float, lambda v: 0 < v < 100, "a percentage above 0 and below 100"),
    "alerts.critical_percent": Spec(float, lambda v: 0 < v <= 100, "a percentage above 0, at most 100"),
    "alerts.hysteresis_percent": Spec(float, lambda v: 0 <= v < 50, "a percentage from 0 to below 50"),
    "alerts.repeat_minutes": Spec(float, lambda v: v > 0, "a number of minutes above 0"),
}


def defaults(config: Config) -> dict[str, float]:
    a = config.alerts
    return {"page_size": config.records.page_size, "alerts.interval_seconds": a.interval_seconds,
            "alerts.warn_percent": a.warn_percent, "alerts.critical_percent": a.critical_percent,
            "alerts.hysteresis_percent": a.hysteresis_percent, "alerts.repeat_minutes": a.repeat_minutes}


def effective(config: Config, stored: dict[str, str]) -> dict[str, float]:
    """Config defaults with stored values on top; a stored value that no longer parses is ignored."""
    values = defaults(config)
    for key, raw in stored.items():
        if key in SPECS:
            try:
                values[key] = parse(key, raw, values)
            except ValueError:
                continue
    return values


def parse(key: str, raw: str, current: dict[str, float]) -> float:
    """The value for `key`, or ValueError with one sentence naming what is allowed."""
    spec = SPECS.get(key)
    if spec is None:
        raise ValueError(f"'{key}' is not a setting; use one of: {', '.join(SPECS)}")
    try:
        value = spec.kind(raw)
    except ValueError:
        raise ValueError(f"{key}: '{raw}' is not allowed; use {spec.accepts}") from None
    if not spec.check(value):
        raise ValueError(f"{key}: '{raw}' is not allowed; use {spec.accepts}")
    merged = {**current, key: value}
    if merged["alerts.warn_percent"] >= merged["alerts.critical_percent"]:
        raise ValueError(f"{key}: '{raw}' is not allowed; alerts.warn_percent must stay below "
                         f"alerts.critical_percent ({merged['alerts.warn_percent']:g} vs "
                         f"{merged['alerts.critical_percent']:g})")
    if merged["alerts.hysteresis_percent"] >= merged["alerts.warn_percent"]:
        raise ValueError(f"{key}: '{raw}' is not allowed; alerts.hysteresis_percent must stay below "
                         "alerts.warn_percent")
    return value
