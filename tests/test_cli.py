"""python -m bot migrate and check, run as a user would, on a SQLite file and on MariaDB."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bot import migrate

ROOT = Path(__file__).resolve().parent.parent


def run_bot(*args: str, url: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "REC_DATABASE__URL": url, "REC_CONFIG": str(ROOT / "config.yaml"), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def test_check_says_to_migrate_then_migrate_then_check_is_all_ok(db_url: str, tmp_path: Path) -> None:
    before = run_bot("check", url=db_url, tmp_path=tmp_path)
    assert before.returncode == 1
    assert "FAIL" in before.stdout and "run python -m bot migrate" in before.stdout
    first = run_bot("migrate", url=db_url, tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"empty -> {migrate.head_revision()}" in first.stdout
    again = run_bot("migrate", url=db_url, tmp_path=tmp_path)
    assert "already current" in again.stdout
    after = run_bot("check", url=db_url, tmp_path=tmp_path)
    assert after.returncode == 0, after.stdout
    assert [line.split()[:2] for line in after.stdout.splitlines()] == [
        ["config", "ok"], ["database", "ok"], ["mattermost", "ok"]]


def test_check_names_an_unreachable_database_and_how_to_fix_it(tmp_path: Path) -> None:
    url = "mysql+pymysql://recbot:secret@127.0.0.1:1/records"
    done = run_bot("check", url=url, tmp_path=tmp_path)
    assert done.returncode == 1
    line = next(line for line in done.stdout.splitlines() if line.startswith("database"))
    assert "FAIL" in line and "REC_DATABASE__URL" in line
    assert "secret" not in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
