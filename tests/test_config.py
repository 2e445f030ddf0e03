"""config.yaml plus REC_ overrides, validated: a bad value names its dotted key and what it accepts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, body: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(body, encoding="utf-8")
    return str(path)


def test_the_shipped_config_yaml_equals_the_built_in_defaults() -> None:
    assert load_config(str(ROOT / "config.yaml"), environ={}) == Config()
    assert Config().database.url == "sqlite:///data/records.db"


def test_environment_overrides_the_file_with_typed_values(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: 9000\nadmins: [alice]\n")
    config = load_config(path, environ={"REC_SERVER__PORT": "9100", "REC_ADMINS": "alice, bob",
                                        "REC_MATTERMOST__SLASH_TOKENS": "[t1, t2]",
                                        "REC_MATTERMOST__REGISTER_COMMAND": "false",
                                        "REC_ALERTS__WARN_PERCENT": "75.5"})
    assert config.server.port == 9100
    assert config.admins == ("alice", "bob")
    assert config.mattermost.slash_tokens == ("t1", "t2")
    assert config.mattermost.register_command is False
    assert config.alerts.warn_percent == 75.5


def test_a_numeric_looking_token_stays_text(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), environ={
        "REC_MATTERMOST__URL": "http://chat", "REC_MATTERMOST__TEAM": "ops", "REC_MATTERMOST__BOT_TOKEN": "0012"})
    assert config.mattermost.bot_token == "0012"


@pytest.mark.parametrize("body, env, message", [
    ("server:\n  port: 70000\n", {}, "server.port: 70000 is not allowed; use a port number from 1 to 65535"),
    ("server:\n  port: eighty\n", {}, "server.port: 'eighty' is not allowed; use a whole number"),
    ("", {"REC_SERVER__PORT": "0"}, "server.port: 0 is not allowed"),
    ("registration: maybe\n", {}, "registration: 'maybe' is not allowed; use open or closed"),
    ("server:\n  prot: 1\n", {}, "server.prot: unknown key; known keys here: host, port, public_url, workers"),
    ("records:\n  page_size: 0\n", {}, "records.page_size: 0 is not allowed"),
    ("alerts:\n  warn_percent: 95\n", {},
     "alerts.warn_percent: 95 is not allowed; alerts.warn_percent (95) must stay below alerts.critical_percent (90)"),
    # Two keys that pass alone and cannot work together: refused at start, not at every check.
    ("alerts:\n  warn_percent: 1\n", {}, "alerts.hysteresis_percent: 2 is not allowed; alerts.hysteresis_percent (2) "
                                          "must stay below alerts.warn_percent (1)"),
    ("", {"REC_ALERTS__WARN_PERCENT": "40", "REC_ALERTS__HYSTERESIS_PERCENT": "45"},
     "alerts.hysteresis_percent: 45 is not allowed"),
    ("alerts:\n  repeat_minutes: .inf\n", {}, "alerts.repeat_minutes: inf is not allowed; use a number of minutes"),
    ("", {"REC_ALERTS__REPEAT_MINUTES": "1e300"}, "alerts.repeat_minutes: 1e+300 is not allowed"),
    ("", {"REC_ALERTS__CRITICAL_PERCENT": "nan"}, "alerts.critical_percent: nan is not allowed"),
    ("database:\n  url: postgres://x\n", {}, "database.url: 'postgres://x' is not allowed"),
    ("mattermost:\n  url: https://chat\n  team: ops\n", {}, "mattermost.bot_token: empty while mattermost.url"),
    ("server: 5\n", {}, "server: must be a mapping"),
    ("- a\n- b\n", {}, "the top level must be a mapping"),
    ("server: [\n", {}, "not valid YAML at line"),
])
def test_a_bad_value_is_refused_with_its_dotted_key_and_what_it_accepts(tmp_path: Path, body: str, env: dict,
                                                                        message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, body), environ=env)
    assert message in str(caught.value)


def test_an_explicit_config_path_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"), environ={})


def test_a_bad_config_stops_the_cli_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: 70000\n")
    done = subprocess.run([sys.executable, "-m", "bot", "--config", path, "check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == ("config error: server.port: 70000 is not allowed; "
                                   "use a port number from 1 to 65535")
    assert "Traceback" not in done.stderr + done.stdout
