"""One declaration per setting: config loading, `admin set`, `admin settings` and the alert rules agree,
and stored values are judged as one set with the config (on SQLite and MariaDB)."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot import settings as runtime_settings
from bot.alerts.model import Sample, Thresholds
from bot.alerts.rules import evaluate
from bot.config import AlertsConfig, Config, ConfigError, MattermostConfig, load_config
from bot.context import Services
from bot.storage import Storage
from tests.botserver import BotServer, SlashClient
from tests.conftest import wipe

TOKEN = "settings-test-token"
ALERT_KEYS = ("alerts.warn_percent", "alerts.critical_percent", "alerts.hysteresis_percent", "alerts.repeat_minutes")
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def run_rules(values: dict[str, float]) -> None:
    """Drive the alert rules through rise, escalation, repeats and clearing with these values."""
    thresholds = Thresholds(*(values[k] for k in ALERT_KEYS))
    states: dict = {}
    now = T0
    for percent in (10, 99.5, 100, 100, 0.5, 0):
        for _ in range(2):
            sample = Sample(path="/", at=now, used_percent=percent, total_bytes=100, used_bytes=int(percent),
                            free_bytes=100 - int(percent), inodes_total=10, inodes_used=1)
            states, _ = evaluate([sample], states, thresholds, now, {}, "host")
            now += timedelta(minutes=values["alerts.repeat_minutes"])


numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**6),
                    st.sampled_from([0, 1, 2, 40, 45, 49.9, 50, 80, 90, 99.9, 100, 101, 525600, 525601]))
raw_values = st.one_of(numbers.map(str), st.sampled_from(["inf", "-inf", "nan", ".inf", "1e300", "x", "", "0x10"]))


@settings(max_examples=300, deadline=None)
@given(values=st.dictionaries(st.sampled_from((*ALERT_KEYS, "alerts.interval_seconds", "records.page_size")),
                              raw_values))
def test_any_config_either_is_refused_naming_a_key_or_the_rules_run_with_it(values: dict[str, str]) -> None:
    environ = {"REC_" + key.upper().replace(".", "__"): raw for key, raw in values.items()}
    try:
        config = load_config(None, environ=environ)
    except ConfigError as exc:
        named = str(exc).split(":")[0]
        assert named in {s.path for s in runtime_settings.SCHEMA}, exc
        return
    run_rules(runtime_settings.defaults(config))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.sampled_from(ALERT_KEYS), raw_values), min_size=1, max_size=8))
def test_admin_set_in_any_order_reports_exactly_what_is_used(storage: Storage, steps: list) -> None:
    wipe(storage)
    config = Config()
    admin, _ = storage.ensure_user("mm-ada", "ada", "admin")
    for key, raw in steps:
        def decide(rows: dict[str, str], key: str = key, raw: str = raw) -> str:
            return runtime_settings.change(config, rows, key, raw)
        try:
            stored = storage.set_setting(admin, key, decide)
        except runtime_settings.SettingError:
            continue
        now = runtime_settings.effective(config, storage.settings())
        assert now.values[key] == runtime_settings.BY_KEY[key].parse(stored)
        assert not now.problems
        run_rules(now.values)


def test_the_reported_sequence_critical_95_warn_85_warn_40_critical_50_is_what_alerts_use(
        storage: Storage) -> None:
    bot = BotServer(Services(storage, Config(mattermost=MattermostConfig(slash_tokens=(TOKEN,)),
                                             admins=("ada",)))).start()
    try:
        mm = SlashClient(bot.url, TOKEN)
        for key, value in [("critical_percent", 95), ("warn_percent", 85), ("warn_percent", 40),
                           ("critical_percent", 50)]:
            assert f"alerts.{key} is now {value}" in mm.text("ada", f"admin set alerts.{key} {value}")
        table = mm.text("ada", "admin settings")
        assert "| alerts.warn_percent | 40 | set at run time |" in table
        assert "| alerts.critical_percent | 50 | set at run time |" in table
        used = runtime_settings.effective(bot.services.config, storage.settings())
        assert (used.values["alerts.warn_percent"], used.values["alerts.critical_percent"]) == (40, 50)
        # Each of these passes alone against the config but not with what is stored now.
        assert "must stay below" in mm.text("ada", "admin set alerts.warn_percent 60")
        assert "must stay below" in mm.text("ada", "admin set alerts.hysteresis_percent 45")
        assert "not allowed" in mm.text("ada", "admin set alerts.repeat_minutes inf")
        assert "not allowed" in mm.text("ada", "admin set alerts.repeat_minutes 1e300")
    finally:
        bot.stop()


def test_a_stored_value_the_config_no_longer_allows_is_not_used_and_said_so(storage: Storage) -> None:
    admin, _ = storage.ensure_user("mm-ada", "ada", "admin")
    storage.set_setting(admin, "alerts.warn_percent", "85.0")
    lowered = Config(alerts=AlertsConfig(warn_percent=70, critical_percent=80))  # the config changed since
    now = runtime_settings.effective(lowered, storage.settings())
    assert now.values["alerts.warn_percent"] == 70 and "alerts.warn_percent" not in now.stored
    [line] = now.problem_lines()
    assert "alerts.warn_percent" in line and "must stay below alerts.critical_percent (80)" in line
    run_rules(now.values)
    # A change that would bring the stale value back into a broken pair is refused, not half-applied.
    with pytest.raises(runtime_settings.SettingError, match="must stay below"):
        runtime_settings.change(lowered, storage.settings(), "alerts.critical_percent", "84")
    assert runtime_settings.change(lowered, storage.settings(), "alerts.critical_percent", "90") == "90.0"


def test_two_admins_setting_two_keys_at_once_cannot_break_a_rule_together(storage: Storage) -> None:
    config = Config()
    ada, _ = storage.ensure_user("mm-ada", "ada", "admin")
    bea, _ = storage.ensure_user("mm-bea", "bea", "admin")
    def set_one(who, key: str, raw: str, start: threading.Barrier, outcomes: list[str]) -> None:
        start.wait()
        try:
            storage.set_setting(who, key, lambda rows: runtime_settings.change(config, rows, key, raw))
            outcomes.append("stored")
        except runtime_settings.SettingError:
            outcomes.append("refused")

    for round_ in range(5):
        for key in ALERT_KEYS:  # back to the config's values
            storage.set_setting(ada, key, repr(runtime_settings.defaults(config)[key]))
        start, outcomes = threading.Barrier(2), []
        # Alone, each passes: critical 82 is above warn 80, warn 85 is below critical 90.
        threads = [threading.Thread(target=set_one, args=(ada, "alerts.critical_percent", "82", start, outcomes)),
                   threading.Thread(target=set_one, args=(bea, "alerts.warn_percent", "85", start, outcomes))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(outcomes) == ["refused", "stored"], round_
        now = runtime_settings.effective(config, storage.settings())
        assert not now.problems and now.values["alerts.warn_percent"] < now.values["alerts.critical_percent"]


def test_check_refuses_a_config_that_could_never_alert(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "bot", "check"], cwd=root, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "REC_CONFIG": "", "REC_ALERTS__WARN_PERCENT": "1",
                               "REC_DATABASE__URL": f"sqlite:///{tmp_path / 'r.db'}"}, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("config error: alerts.hysteresis_percent: 2 is not allowed")


def test_config_yaml_and_the_schema_agree_on_every_runtime_setting() -> None:
    shipped = load_config(str(Path(__file__).resolve().parent.parent / "config.yaml"), environ={})
    assert runtime_settings.defaults(shipped) == runtime_settings.defaults(replace(Config()))
