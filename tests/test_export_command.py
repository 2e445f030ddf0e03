"""/rec export: the caller's visible records (the same filters and visibility as list and find) in a
CSV, JSON Lines or Markdown file, streamed page by page; into the caller's DM with the bot through the
files API, or, without Mattermost, into the current directory."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.app import build_app
from bot.commands import export as export_command
from bot.config import Config, MattermostConfig, ServerConfig
from bot.context import Services
from bot.export_format import spreadsheet_safe
from bot.mattermost.gateway import Gateway
from bot.storage import Filter, Storage, User
from tests.botserver import InProcessClient, SlashClient, free_port
from tests.fakes.mattermost import FakeMattermost
from tests.fakes.mattermost.seed import seed
from tests.helpers import TOKEN, all_pages, config, insert_rows, make_user

ROOT = Path(__file__).resolve().parent.parent
EXPORTED = re.compile(r"Exported ([\d,]+) records? to (.+)\.$")


# ---- the shell way (no Mattermost): the file lands in the current directory ---------------------

@dataclass
class Team:
    storage: Storage
    client: InProcessClient
    folder: Path
    people: dict[str, User]

    def say(self, user: str, text: str) -> str:
        status, body = self.client.send(user, text)
        assert status == 200
        return str(body["text"])

    def export(self, user: str, text: str = "format:json") -> tuple[str, Path | None]:
        """(the reply, the file it names, or None when it names none)."""
        reply = self.say(user, f"export {text}".strip())
        found = EXPORTED.search(reply)
        return reply, Path(found.group(2)) if found else None

    def exported_ids(self, user: str, filters: str = "") -> list[int]:
        reply, path = self.export(user, f"{filters} format:json")
        if path is None:
            assert "no file was made" in reply, reply
            return []
        ids = [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()]
        assert EXPORTED.search(reply).group(1) == str(len(ids)), reply  # type: ignore[union-attr]
        path.unlink()
        return ids


@pytest.fixture
def team(storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Team]:
    monkeypatch.chdir(tmp_path)
    names = ("ada", "li", "bob", "carol", "dave", "eve", "mallory")
    people = {name: make_user(storage, name, "admin" if name == "ada" else "member") for name in names}
    client = InProcessClient("", TOKEN, users={n: f"mm-{n}" for n in names}, services=Services(storage, config()))
    yield Team(storage, client, tmp_path, people)


def _add(team: Team, owner: str, body: str, when: datetime | None = None) -> int:
    if when is not None:
        team.storage.clock = lambda: when
    return team.storage.add_record(team.people[owner], body)


def test_each_viewer_exports_exactly_the_records_list_shows_them(team: Team) -> None:
    p = team.people
    li1, li2 = _add(team, "li", "li restarted nginx"), _add(team, "li", "li rotated logs")
    bob1, bob2 = _add(team, "bob", "bob patched the kernel"), _add(team, "bob", "bob swapped a disk")
    gone = _add(team, "bob", "bob's mistake")
    team.storage.delete_record(p["bob"], gone)
    team.storage.grant(p["ada"], p["carol"].id, [p["bob"].id])  # carol sees all of bob's
    team.storage.share(p["li"], li2, [p["dave"].id])  # dave sees one of li's
    hers = _add(team, "mallory", "mallory's own")
    team.storage.set_role(p["ada"], p["mallory"].id, "disabled")
    expected = {"li": [li2, li1], "bob": [bob2, bob1], "carol": [bob2, bob1], "dave": [li2], "eve": [],
                "ada": [hers, bob2, bob1, li2, li1]}
    for viewer, ids in expected.items():
        shown = all_pages(team.storage, team.storage.user_by_id(p[viewer].id), Filter())  # type: ignore[arg-type]
        assert shown == ids, viewer
        assert team.exported_ids(viewer) == ids, viewer
    # A disabled account reads nothing, as list refuses it too; no file is made.
    assert "disabled" in team.say("mallory", "list")
    reply, path = team.export("mallory")
    assert "disabled" in reply and path is None
    assert not list(team.folder.glob("recbot-export-*"))


def test_filters_by_tag_user_dates_and_words_apply_as_in_find_and_list(team: Team) -> None:
    day = datetime(2026, 11, 10, 12, 0)
    a = _add(team, "li", "deployed web-01 #deploy", day)
    b = _add(team, "bob", "deployed 数据库 db-02 #deploy #db", day + timedelta(days=2))
    c = _add(team, "bob", "cleaned /tmp on db-02", day + timedelta(days=4))
    d = _add(team, "li", "重启 nginx #deploy", day + timedelta(days=6))
    team.storage.grant(team.people["ada"], team.people["li"].id, [team.people["bob"].id])
    assert team.exported_ids("li") == [d, c, b, a]
    assert team.exported_ids("li", "#deploy") == [d, b, a]
    assert team.exported_ids("li", "@bob") == [c, b]
    assert team.exported_ids("li", "#deploy @bob") == [b]
    assert team.exported_ids("li", "since:2026-11-12 until:2026-11-14") == [c, b]
    assert team.exported_ids("li", "db-02") == [c, b]
    assert team.exported_ids("li", "数据") == [b]
    assert team.exported_ids("li", '"deployed web"') == [a]
    assert team.exported_ids("li", "nothing-matches-this") == []
    assert not list(team.folder.glob("recbot-export-*")), "an empty export makes no file"


def test_format_and_filter_mistakes_are_one_sentence_naming_what_is_accepted(team: Team) -> None:
    _add(team, "li", "something")
    wrong = team.say("li", "export format:xyz")
    assert "'format:xyz' is not a format; use format:csv, format:json or format:md" in wrong
    assert "Usage: `/rec export" in wrong
    assert "format: once" in team.say("li", "export format:csv format:md")
    assert "leave out page: and before:" in team.say("li", "export page:2")
    assert "is a channel" in team.say("li", "export ~town-square")
    assert not list(team.folder.glob("recbot-export-*"))
    assert "/rec export" in team.say("li", "help")


TRICKY = [
    "重启了 web-01 上的 nginx，一切正常",
    'comma, "quotes" and\na second line\r\nand a CRLF',
    "=HYPERLINK(\"http://evil.example\",\"click\")",
    "+1 more disk",
    "-rf was not run",
    "@SUM(A1:A2)",
    "\tleading tab",
    "\rleading carriage return",
]


def test_csv_opens_as_utf8_with_bom_quotes_every_oddity_and_guards_formulas(team: Team) -> None:
    ids = [_add(team, "li", body) for body in TRICKY]
    reply, path = team.export("li", "format:csv")
    assert path is not None and path.suffix == ".csv", reply
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert rows[0] == ["id", "owner", "created_at", "updated_at", "tags", "text"]
    by_id = {int(r[0]): r for r in rows[1:]}
    assert sorted(by_id) == sorted(ids)
    for record_id, body in zip(ids, TRICKY, strict=True):
        cell = by_id[record_id][5]
        if body[0] in "=+-@\t\r":
            assert cell == "'" + body
        else:
            assert cell == body
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", by_id[record_id][2])
    assert by_id[ids[0]][5] == "重启了 web-01 上的 nginx，一切正常"
    assert spreadsheet_safe("ok") == "ok" and spreadsheet_safe("=1") == "'=1"


def test_json_lines_parse_one_record_a_line_with_utc_times_and_tags(team: Team) -> None:
    when = datetime(2026, 12, 1, 9, 30, 5)
    first = _add(team, "li", "换了 db-3 的硬盘 #disk #变更", when)
    _add(team, "li", TRICKY[1], when + timedelta(minutes=1))
    reply, path = team.export("li", "format:json")
    assert path is not None and path.suffix == ".jsonl", reply
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    assert records[1] == {"id": first, "owner": "li", "created_at": "2026-12-01T09:30:05Z",
                          "updated_at": "2026-12-01T09:30:05Z", "tags": sorted(["disk", "变更"]),
                          "text": "换了 db-3 的硬盘 #disk #变更"}
    assert records[0]["text"] == TRICKY[1]


def test_markdown_has_a_heading_per_record_in_the_callers_zone_and_every_text(team: Team) -> None:
    bodies = ["# not a heading of the file", "line one\n---\nline three", "重启 nginx #deploy"]
    ids = [_add(team, "li", body, datetime(2026, 12, 1, 23, 30)) for body in bodies]
    reply, path = team.export("li", "format:md")
    assert path is not None and path.suffix == ".md", reply
    text = path.read_text(encoding="utf-8")
    headings = re.findall(r"^## #(\d+) · li · (.+)$", text, re.MULTILINE)
    assert [int(h[0]) for h in headings] == sorted(ids, reverse=True)
    assert all(h[1] == "Dec 1, 2026 23:30 UTC" for h in headings)
    assert "\\# not a heading" in text and "\\---" in text and "重启 nginx #deploy" in text
    assert "Tags: `#deploy`" in text
    assert len(re.findall(r"^#{1,6} ", text, re.MULTILINE)) == 1 + len(ids)  # the title and one per record


def test_a_large_export_is_written_page_by_page_never_all_at_once(team: Team, monkeypatch: pytest.MonkeyPatch) -> None:
    total = 3_200
    start = datetime(2026, 1, 1)
    owner = team.people["li"].id
    insert_rows(team.storage, "T_CONTENT", [
        {"owner_id": owner, "body": f"record {i} 记录", "search_text": f"record {i} 记录",
         "created_at": start + timedelta(minutes=i), "updated_at": start + timedelta(minutes=i)}
        for i in range(total)])
    pages: list[int] = []
    real = export_command.writer_for

    def spy(fmt: str, out: Any, zone: Any, title: str) -> Any:
        writer = real(fmt, out, zone, title)

        class Counting:
            def write(self, records: Any) -> None:
                pages.append(len(records))
                writer.write(records)
        return Counting()

    monkeypatch.setattr(export_command, "writer_for", spy)
    reply, path = team.export("li", "format:csv")
    assert path is not None and "Exported 3,200 records" in reply, reply
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline="")))[1:]
    assert len(rows) == total and len({r[0] for r in rows}) == total
    assert [int(r[0]) for r in rows] == sorted((int(r[0]) for r in rows), reverse=True)
    assert len(pages) >= total // export_command.PAGE and max(pages) <= export_command.PAGE, pages


def test_the_shell_writes_the_export_into_its_current_directory(db_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "REC_DATABASE__URL": db_url, "REC_CONFIG": str(ROOT / "config.yaml"),
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "bot", "shell", "--user", "li"], cwd=tmp_path, env=env,
                          input="add 巡检 web-01 #日常\nadd checked backups\n/rec export format:json\n",
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    files = list(tmp_path.glob("recbot-export-*.jsonl"))
    assert len(files) == 1, done.stdout
    assert re.fullmatch(r"recbot-export-\d{4}-\d\d-\d\d-\d{4}\.jsonl", files[0].name)
    assert f"Exported 2 records to {files[0]}." in done.stdout
    texts = [json.loads(line)["text"] for line in files[0].read_text(encoding="utf-8").splitlines()]
    assert texts == ["checked backups", "巡检 web-01 #日常"]


# ---- through Mattermost: the file in the caller's direct channel with the bot ---------------------

@dataclass
class Chat:
    fake: FakeMattermost
    storage: Storage
    client: SlashClient
    users: dict[str, Any]

    async def say(self, user: str, text: str) -> str:
        status, body = await asyncio.get_running_loop().run_in_executor(None, self.client.send, user, text)
        assert status == 200, body
        return str(body["text"])

    def direct_files(self, user: str) -> list[tuple[dict[str, Any], bytes]]:
        """(the post, the file's bytes) of each file the bot posted in its DM with `user`."""
        dm = self.fake.direct_channel(self.users["recbot"]["id"], self.users[user]["id"])
        if dm is None:
            return []
        return [(post, self.fake.file_contents[fid]) for post in self.fake.posts
                if post["channel_id"] == dm["id"] for fid in post.get("file_ids") or []]


@pytest.fixture
async def chat(storage: Storage) -> AsyncIterator[Chat]:
    fake = FakeMattermost()
    base = await fake.start()
    world = seed(fake, people=("li", "bob", "ada"), channels={"town-square": ("li", "bob", "ada", "recbot")})
    port = free_port()
    cfg = Config(server=ServerConfig(port=port, public_url=f"http://127.0.0.1:{port}"),
                 mattermost=MattermostConfig(url=base, bot_token=world.bot["token"], team="ops",
                                             slash_tokens=(TOKEN,), register_command=False), admins=("ada",))
    gateway = Gateway(cfg)
    await gateway.start()
    storage.clock = lambda: datetime(2026, 12, 1, 9, 30)
    runner = web.AppRunner(build_app(Services(storage, cfg, gateway)))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = SlashClient(f"http://127.0.0.1:{port}", TOKEN, users={n: u["id"] for n, u in world.users.items()})
    try:
        yield Chat(fake, storage, client, world.users)
    finally:
        await runner.cleanup()
        await gateway.close()
        await fake.stop()


async def test_the_export_file_lands_in_the_callers_direct_channel_with_the_bot(chat: Chat) -> None:
    await chat.say("li", "add 重启了 web-01 上的 nginx, \"立即\" #部署")
    shared = re.search(r"#(\d+)", await chat.say("bob", "add bob's fix on db-02")).group(1)  # type: ignore[union-attr]
    await chat.say("bob", "add bob's private note")
    await chat.say("bob", f"share {shared} @li")
    reply = await chat.say("li", "export")
    assert "Exported 2 records: **recbot-export-2026-12-01-0930.csv** is in your direct messages with @recbot" \
        in reply, reply
    [(post, data)] = chat.direct_files("li")
    assert post["user_id"] == chat.users["recbot"]["id"] and "Your export: 2 records" in post["message"]
    info = chat.fake.files[post["file_ids"][0]]
    assert info["name"] == "recbot-export-2026-12-01-0930.csv" and info["channel_id"] == post["channel_id"]
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert [r[5] for r in rows[1:]] == ["bob's fix on db-02", '重启了 web-01 上的 nginx, "立即" #部署']
    assert [r[1] for r in rows[1:]] == ["bob", "li"] and rows[2][4] == "部署"
    assert chat.direct_files("bob") == []  # bob shared but did not export


async def test_an_export_over_mattermosts_file_limit_says_to_narrow_it_and_posts_nothing(
        chat: Chat, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(5):
        await chat.say("li", f"add record number {i} with some text to fill the file")
    monkeypatch.setattr(export_command, "MAX_UPLOAD", 200)
    reply = await chat.say("li", "export format:json")
    assert "more than Mattermost accepts in one file; narrow it with @user, #tag" in reply, reply
    assert chat.direct_files("li") == []
    monkeypatch.setattr(export_command, "MAX_UPLOAD", 100 * 1024 * 1024)
    chat.fake.set_failure("/api/v4/files", 413)  # the server's own limit set lower than the default
    reply = await chat.say("li", "export format:md")
    assert "Mattermost refused the file" in reply and "as too large; narrow the export" in reply, reply
    assert chat.direct_files("li") == []
    assert "Exported 5 records" in await chat.say("li", "export format:md")
    [(_post, data)] = chat.direct_files("li")
    assert data.decode("utf-8").count("\n## #") == 5
