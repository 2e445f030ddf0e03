"""python -m bot shell: the same dispatcher, typed or piped, against the configured database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def shell(db_url: str, tmp_path: Path, lines: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "REC_DATABASE__URL": db_url, "REC_CONFIG": str(ROOT / "config.yaml"),
           "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "bot", "shell", *args], input=lines, cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_piped_shell_session_adds_finds_and_exits_zero_at_end_of_input(db_url: str, tmp_path: Path) -> None:
    done = shell(db_url, tmp_path, "/rec add restarted nginx #deploy\nfind NGINX\n/rec admin users\n",
                 "--user", "alice")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Saved record **#1**. Tags: `#deploy`." in out
    assert "**#1** · alice" in out
    assert "is for recbot admins" in out


def test_the_shell_acts_as_the_known_user_of_that_name_and_admin_when_asked(db_url: str, tmp_path: Path) -> None:
    shell(db_url, tmp_path, "add bob's record\n", "--user", "bob")
    done = shell(db_url, tmp_path, "admin users\nlist @bob\n", "--user", "root", "--admin")
    assert "| bob | member | 1 |" in done.stdout
    assert "bob's record" in done.stdout
    again = shell(db_url, tmp_path, "list\n", "--user", "bob")
    assert "bob's record" in again.stdout


def test_the_shell_answers_in_the_language_of_lang(db_url: str, tmp_path: Path) -> None:
    from tests.test_language import CJK, english_leak

    chinese = shell(db_url, tmp_path, "help\nadd 巡检 #日常\nshow 999\n", "--user", "li", "--lang", "zh-CN")
    assert chinese.returncode == 0, chinese.stderr
    assert CJK.search(chinese.stdout) and english_leak(chinese.stdout) is None, chinese.stdout
    assert "your team's operation records" in shell(db_url, tmp_path, "help\n", "--user", "li").stdout
    refused = shell(db_url, tmp_path, "", "--user", "li", "--lang", "fr")
    assert refused.returncode == 2 and "--lang fr" in refused.stderr
