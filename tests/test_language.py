"""Each user's language: replies in the caller's Mattermost locale (zh-CN and its variants in Chinese,
any other locale in English, no locale known: the config's `language`), through the real HTTP door
with the fake Mattermost and the real client; the zh_CN catalog complete and faithful to every
message in the source."""

from __future__ import annotations

import ast
import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from bot import i18n
from bot.context import Services
from bot.mattermost.gateway import Gateway
from bot.render import POST_LIMIT
from bot.storage import Storage
from tests.botserver import SlashClient, free_port, serve_here
from tests.fakes.mattermost import FakeMattermost
from tests.fakes.mattermost.seed import seed
from tests.helpers import TOKEN, fake_mattermost_config

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "bot" / "locales" / "zh_CN" / "LC_MESSAGES" / "messages.po"
CJK = re.compile(r"[\u4e00-\u9fff]")
# Three English words in a row, outside code: a sentence (or a label) that was not translated.
ENGLISH_RUN = re.compile(r"(?<![\w.@#/-])[A-Za-z]{2,}(?:[ ,']+[A-Za-z]{2,}){2,}")


def english_leak(text: str) -> str | None:
    """The first untranslated English phrase in a reply, ignoring what is meant to stay as typed:
    code spans (commands), @names, #tags, ~channels and the record text the test wrote in Chinese."""
    bare = re.sub(r"```.*?```|`[^`]*`", " ", text, flags=re.DOTALL)
    bare = re.sub(r"[@#~][\w.-]+", " ", bare)
    found = ENGLISH_RUN.search(bare)
    return found.group(0) if found else None


def _messages_in_source() -> dict[str, Any]:
    """Every message id the source marks, as pybabel extract sees it (singular -> plural or None)."""
    found: dict[str, Any] = {}
    for _file, _line, message, _comments, _context in extract_from_dir(
            str(ROOT / "bot"), method_map=[("**.py", "python")]):
        if isinstance(message, tuple):
            found[message[0]] = message
        else:
            found[message] = None
    return found


def _catalog() -> Any:
    with CATALOG.open("rb") as fh:
        return read_po(fh, locale="zh_CN")


def test_every_message_in_the_source_has_a_checked_chinese_translation_with_the_same_placeholders() -> None:
    catalog = _catalog()
    wanted = _messages_in_source()
    assert len(wanted) > 200, "extraction found too few messages: is the source marked?"
    problems: list[str] = []
    for msgid, plural in wanted.items():
        entry = catalog.get(msgid)
        if entry is None or not entry.string or (isinstance(entry.string, tuple) and not all(entry.string)):
            problems.append(f"untranslated: {msgid!r}")
            continue
        if entry.fuzzy:
            problems.append(f"fuzzy (check it, then drop the flag): {msgid!r}")
        english = i18n.placeholders(msgid) | (i18n.placeholders(plural[1]) if plural else set())
        forms = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        for form in forms:
            if i18n.placeholders(form) != english:
                problems.append(f"placeholders differ: {msgid!r} has {sorted(english)}, "
                                f"the translation {sorted(i18n.placeholders(form))}")
            words = re.findall(r"[A-Za-z]{3,}", re.sub(r"\{\w+\}|`[^`]*`", "", msgid))
            if form == msgid and words:
                problems.append(f"left in English: {msgid!r}")
    assert not problems, "\n".join(problems)


def test_chinese_has_one_plural_form_from_the_catalog_and_english_two() -> None:
    with i18n.speaking("zh-CN"):
        one, many = (i18n.ngettext("{n} earlier version", "{n} earlier versions", n) for n in (1, 1234))
    assert CJK.search(one) and many.startswith("1,234")
    with i18n.speaking("en"):
        assert i18n.ngettext("{n} earlier version", "{n} earlier versions", 1) == "1 earlier version"
        assert i18n.ngettext("{n} earlier version", "{n} earlier versions", 2) == "2 earlier versions"


def test_every_translated_call_names_its_message_as_a_literal_so_extraction_sees_it() -> None:
    """_("..." + x) or _(f"...") would be looked up as text no catalog holds: always English."""
    bad: list[str] = []
    for path in (ROOT / "bot").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    node.func.id in ("_", "N_", "ngettext") and node.args:
                args = node.args[:2] if node.func.id == "ngettext" else node.args[:1]
                for arg in args:
                    literal = isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                    # _(name) translates a message marked N_ where it was declared.
                    marked_earlier = node.func.id == "_" and isinstance(arg, ast.Name | ast.Attribute | ast.Subscript)
                    if not (literal or marked_earlier):
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bad, bad


@pytest.mark.parametrize(("locale", "fallback", "language"), [
    ("zh-CN", "en", "zh_CN"), ("zh-TW", "en", "zh_CN"), ("zh_HK", "en", "zh_CN"), ("en", "zh-CN", "en"),
    ("fr", "zh-CN", "en"), ("", "zh-CN", "zh_CN"), ("", "en", "en"), (None, "zh", "zh_CN"),
])
def test_a_mattermost_locale_picks_the_reply_language(locale: str | None, fallback: str, language: str) -> None:
    assert i18n.language_of(locale, fallback) == language


@dataclass
class Chat:
    fake: FakeMattermost
    storage: Storage
    client: SlashClient
    users: dict[str, Any]  # by username, the bot as "recbot"
    now: list[datetime]
    ids: dict[str, str] = field(default_factory=dict)  # record ids the commands of a test name

    async def send(self, user: str, text: str) -> dict[str, Any]:
        """One slash command over HTTP; the answer must be a valid CommandResponse under the post limit."""
        status, body = await asyncio.get_running_loop().run_in_executor(None, self.client.send, user, text)
        assert status == 200, (text, body)
        assert set(body) <= {"text", "response_type", "channel_id", "props", "attachments", "skip_slack_parsing"}
        assert body["response_type"] in ("ephemeral", "in_channel") and isinstance(body["text"], str)
        assert 0 < len(body["text"]) <= POST_LIMIT
        return body

    async def say(self, user: str, text: str) -> str:
        return str((await self.send(user, text))["text"])


@pytest.fixture
async def chat(storage: Storage) -> AsyncIterator[Chat]:
    fake = FakeMattermost()
    base = await fake.start()
    world = seed(fake, people=("li", "wang", "bob", "ada"),
                 channels={"town-square": ("li", "wang", "bob", "ada", "recbot")})
    for name in ("li", "ada"):
        fake.users[world.users[name]["id"]]["locale"] = "zh-CN"
    fake.users[world.users["wang"]["id"]]["locale"] = "zh-TW"
    port = free_port()
    config = fake_mattermost_config(base, world.bot["token"], port)
    gateway = Gateway(config)
    await gateway.start()
    now = [datetime(2026, 12, 1, 9, 0)]
    storage.clock = lambda: now[0]
    runner = await serve_here(Services(storage, config, gateway), port)
    client = SlashClient(f"http://127.0.0.1:{port}", TOKEN,
                         users={name: user["id"] for name, user in world.users.items()},
                         channels={"town-square": world.channels["town-square"]["id"]})
    try:
        yield Chat(fake, storage, client, world.users, now)
    finally:
        await runner.cleanup()
        await gateway.close()
        await fake.stop()


async def _chinese_everywhere(chat: Chat, user: str, commands: list[str]) -> None:
    for text in commands:
        reply = await chat.say(user, text.format(**chat.ids))
        assert CJK.search(reply), (text, reply)
        assert english_leak(reply) is None, (text, english_leak(reply), reply)


async def test_a_chinese_user_does_every_member_command_in_chinese_success_and_error(chat: Chat) -> None:
    first = await chat.say("li", "add 重启了 web-01 上的 nginx #部署 #nginx")
    assert first.startswith("已保存") or CJK.search(first), first
    rid = re.search(r"#(\d+)", first).group(1)  # type: ignore[union-attr]
    other = re.search(r"#(\d+)", await chat.say("bob", "add bob 的记录")).group(1)  # type: ignore[union-attr]
    chat.ids = {"id": rid, "other": other}
    await _chinese_everywhere(chat, "li", [
        # (`add` alone opens a dialog: tests/test_add_dialog.py shows it to a Chinese user.)
        "help", "help find", "help share", "help nothing-like-this", "", "frobnicate",
        "add 重启了 web-01 上的 nginx #部署 #nginx",  # the same text again: no second copy
        "find nginx", "find 重启", "find", "find 没有这个词", "find nginx page:9", "find nginx since:2026-13-01",
        "find nginx since:2026-12-02 until:2026-12-01", "find nginx @nobody-here", "find nginx ~town-square",
        "find \"unclosed", "list", "list #部署", "list page:0",
        "show {id}", "show {other}", "show 99999", "show abc", "show", "show {id} extra",
        "edit {id} 重启了 web-01 和 web-02 上的 nginx", "edit {other} 改别人的", "edit",
        "share {id} @bob", "share {id}", "share {id} ~no-such-channel", "share {id} @bob ~town-square",
        "share", "delete {other}", "delete {id}", "show {id}", "admin users", "admin set page_size 5",
    ])


async def test_a_chinese_admin_does_every_admin_command_in_chinese_success_and_error(chat: Chat) -> None:
    rid = re.search(r"#(\d+)", await chat.say("li", "add 换了 db-3 的硬盘 #disk")).group(1)  # type: ignore[union-attr]
    await chat.say("bob", "help")  # bob is known to recbot
    await chat.say("li", f"delete {rid}")
    chat.ids = {"id": rid}
    await _chinese_everywhere(chat, "ada", [
        "help", "help admin set", "admin", "admin grant @li @bob", "admin grant @li", "admin revoke @li @bob",
        "admin perms @li", "admin perms @li @bob", "admin role @bob admin", "admin role @bob member",
        "admin role @bob king", "admin users", "admin users now", "admin restore {id}", "admin restore {id}",
        "admin restore", "admin settings", "admin set page_size 20", "admin set page_size 0",
        "admin set alerts.warn_percent 95", "admin set no.such 1", "admin set page_size",
        "admin status", "admin resend", "admin audit abc", "admin role @bob disabled",
    ])
    # The audit log shows each action as it was recorded (like a log line, in English); its frame is Chinese.
    audit = await chat.say("ada", "admin audit 5")
    assert CJK.search(audit.splitlines()[0]) and re.search(r"2026年12月1日 09:00 UTC · ada · role", audit)


async def test_other_chinese_variants_read_chinese_and_other_locales_english(chat: Chat) -> None:
    assert CJK.search(await chat.say("wang", "help"))  # zh-TW
    chat.fake.users[chat.users["bob"]["id"]]["locale"] = "fr"
    reply = await chat.say("bob", "help")
    assert not CJK.search(reply) and "your team's operation records" in reply


async def test_a_locale_changed_in_mattermost_shows_within_the_cache_time(chat: Chat) -> None:
    assert CJK.search(await chat.say("li", "list"))
    chat.fake.users[chat.users["li"]["id"]]["locale"] = "en"
    # Read at most every few minutes: a minute later the cached locale still answers...
    chat.now[0] += timedelta(minutes=1)
    assert CJK.search(await chat.say("li", "list"))
    # ...and past the cache time the new one does.
    chat.now[0] += timedelta(minutes=5)
    reply = await chat.say("li", "list")
    assert not CJK.search(reply) and "No records you can see" in reply


async def test_a_share_dm_is_written_in_the_readers_language_not_the_senders(chat: Chat) -> None:
    rid = re.search(r"#(\d+)", await chat.say("bob", "add rotated the logs on web-01")).group(1)  # type: ignore
    await chat.say("li", "help")  # li registered, with her zh-CN profile read
    await chat.say("bob", f"share {rid} @li")
    dm = chat.fake.direct_channel(chat.users["recbot"]["id"], chat.users["li"]["id"])
    post = await chat.fake.wait_for_post(lambda p: p["channel_id"] == dm["id"])
    assert CJK.search(post["message"].split("\n")[0]) and "rotated the logs" in post["message"]


async def test_a_chinese_user_in_shanghai_sees_0730_of_their_next_day_in_their_date_format(chat: Chat) -> None:
    chat.fake.users[chat.users["li"]["id"]]["timezone"] = {
        "useAutomaticTimezone": "false", "automaticTimezone": "", "manualTimezone": "Asia/Shanghai"}
    chat.now[0] = datetime(2026, 12, 1, 23, 30)
    rid = re.search(r"#(\d+)", await chat.say("li", "add 换了 db-3 的硬盘")).group(1)  # type: ignore[union-attr]
    found = await chat.say("li", "find 硬盘 since:2026-12-02")
    assert f"#{rid}" in found and "2026年12月2日 07:30 UTC+8" in found
    assert "2026年12月2日 07:30 UTC+8" in await chat.say("li", f"show {rid}")
