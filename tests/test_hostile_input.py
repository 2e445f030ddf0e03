"""Hostile and unlucky input, through the bot's real HTTP server on SQLite and MariaDB: oversized
queries, odd digits and dates, tags that differ only in case or accent, unreadable requests, Markdown
in names, cursors past the end, a lost COMMIT, and the registered command's token."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import OperationalError

from bot.app import COMMAND_TOKEN_SETTING
from bot.config import DatabaseConfig, MattermostConfig
from bot.context import Services
from bot.storage import Attachment, Filter, Storage, make_engine
from tests.botserver import BotServer, SlashClient, get
from tests.conftest import wipe
from tests.helpers import TOKEN, config, count_rows, engine_of, insert_rows


@pytest.fixture
def bot(storage: Storage) -> Iterator[BotServer]:
    server = BotServer(Services(storage, config())).start()
    yield server
    server.stop()


@pytest.fixture
def mm(bot: BotServer) -> SlashClient:
    return SlashClient(bot.url, TOKEN)


def records(storage: Storage) -> int:
    return count_rows(storage, "T_CONTENT")[0]


def ok_reply(mm: SlashClient, user: str, text: str) -> str:
    status, body = mm.send(user, text)
    assert status == 200, body
    assert "Something broke" not in body["text"], (text, body["text"])
    assert 0 < len(body["text"]) <= 16_383
    return body["text"]


# ---- finding 2: query size ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, why", [
    ("find " + " ".join(f"w{i}" for i in range(50_000)), "characters long"),
    ("find " + " ".join(f"w{i}" for i in range(21)), "21 different words"),
    ("list " + " ".join(f"#t{i}" for i in range(3600)), "characters long"),
    ("list " + " ".join(f"#t{i}" for i in range(11)), "11 #tags"),
    ("find " + "x" * 201, "keep words under 200"),
    ("admin grant " + " ".join(f"@u{i}" for i in range(30)), "30 @users"),
])
def test_an_oversized_query_is_refused_before_any_sql(mm: SlashClient, storage: Storage, text: str,
                                                       why: str) -> None:
    started = time.perf_counter()
    reply = ok_reply(mm, "ada", text)
    assert why in reply and time.perf_counter() - started < 3  # the old code took about 40 s


def test_repeated_words_and_tags_count_once(mm: SlashClient) -> None:
    ok_reply(mm, "bob", "add restarted nginx #web")
    words = " ".join(["nginx", "NGINX", "Nginx"] * 10 + ["#web"] * 20)
    assert "1 record" in ok_reply(mm, "bob", f"find {words}")


def test_another_users_list_answers_while_two_maximal_finds_run(mm: SlashClient, storage: Storage) -> None:
    owner, _ = storage.ensure_user("mm-bob", "bob", "member")
    for i in range(300):
        storage.add_record(owner, f"note {i} about host-{i % 17} and service-{i % 5}")
    biggest = "find " + " ".join(f"zz{i:03d}{'q' * 150}" for i in range(20)) + " " + " ".join(
        f"#t{i}" for i in range(10))
    assert len(biggest) < 4000
    done: list[float] = []

    def hog() -> None:
        started = time.perf_counter()
        ok_reply(mm, "bob", biggest)
        done.append(time.perf_counter() - started)

    hogs = [threading.Thread(target=hog) for _ in range(2)]
    for t in hogs:
        t.start()
    started = time.perf_counter()
    reply = ok_reply(mm, "carol", "list")
    elapsed = time.perf_counter() - started
    for t in hogs:
        t.join(30)
    assert "No records you can see" in reply
    assert elapsed < 3.0, f"list took {elapsed:.2f} s next to two maximal finds ({done})"


# ---- finding 4: tags ---------------------------------------------------------------------------------

TAG_LETTERS = st.sampled_from(list("aeiouscdAEIOUSCDéèÉßẞıİｒｅＡ"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.text(TAG_LETTERS, min_size=1, max_size=6), second=st.text(TAG_LETTERS, min_size=1, max_size=6))
def test_tags_that_differ_in_case_accent_or_width_save_and_match_exactly(storage: Storage, first: str,
                                                                         second: str) -> None:
    wipe(storage)
    owner, _ = storage.ensure_user("mm-bob", "bob", "member")
    rid = storage.add_record(owner, f"two tags #{first} #{second}")
    only = storage.add_record(owner, f"one tag #{second}")
    for asked in (first, second):
        found = {r.id for r in storage.find(owner, Filter(tags=(asked.lower(),)), limit=10).records}
        expected = {rid} | ({only} if asked.lower() == second.lower() else set())
        assert found == expected, (first, second, asked)


def test_a_tag_that_grows_past_64_characters_when_lowered_is_refused_with_a_sentence(mm: SlashClient,
                                                                                   storage: Storage) -> None:
    before = records(storage)
    reply = ok_reply(mm, "bob", "add fixed #" + "İ" * 40)  # 'İ'.lower() is two characters
    assert "80 characters long once lower-cased" in reply and records(storage) == before
    assert "different #tags" in ok_reply(mm, "bob", "add " + " ".join(f"#t{i}" for i in range(51)))
    assert records(storage) == before


# ---- finding 5: digits and dates ---------------------------------------------------------------------

DIGITS = st.text(st.sampled_from([*list("0123456789²³¹٣٤۵०१๒௫１２３"), "٠", "۹"]), min_size=1, max_size=20)
DATES = st.one_of(st.dates().map(str), st.sampled_from(["9999-12-31", "0001-01-01", "1970-01-01", "9998-12-31",
                                                        "２０２６-01-01", "2026-1-1", "2026-02-30", "+2026-01-01"]))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(number=DIGITS, day=DATES, which=st.sampled_from(["show {n}", "delete {n}", "edit {n} x", "list page:{n}",
                                                        "list before:{n}", "admin restore {n}", "admin audit {n}",
                                                        "find x since:{d}", "list until:{d}",
                                                        "list since:{d} until:{d}", "share {n} @bob"]))
def test_any_digits_and_any_date_get_a_sentence_never_a_crash(mm: SlashClient, number: str, day: str,
                                                             which: str) -> None:
    ok_reply(mm, "ada", which.format(n=number, d=day))


# ---- finding 6: requests that cannot be read -----------------------------------------------------------

def raw_post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.mark.parametrize("body, headers", [
    (b"token=" + TOKEN.encode() + b"&text=help", {"Content-Type": "application/x-www-form-urlencoded; charset=bogus"}),
    (b"token=" + TOKEN.encode() + b"&text=\xff\xfe", {"Content-Type": "application/x-www-form-urlencoded"}),
    (b"token=" + TOKEN.encode() + b"&text=help", {"Content-Type": "application/x-www-form-urlencoded",
                                                  "Content-Encoding": "gzip"}),
    (b"--x\r\nnot multipart", {"Content-Type": "multipart/form-data; boundary=x"}),
])
def test_a_body_that_cannot_be_read_gets_a_400_saying_so(bot: BotServer, body: bytes, headers: dict) -> None:
    status, answer = raw_post(bot.url + "/mattermost/command", body, headers)
    assert status == 400 and b"could not be read" in answer


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"user_id": "u", "context": {"sig": "\xc3\xa9\xc3\xa9", "action": "ack"}}',
    b'{"user_id": "u", "context": {"sig": "\\u00e9", "action": "ack"}}',
    b"\xff\xfe", b"null", b"[]", b'{"context": []}',
])
def test_a_button_request_that_is_not_a_click_gets_a_4xx(storage: Storage, body: bytes) -> None:
    from bot.alerts.service import Alerts

    cfg = replace(config(), alerts=replace(config().alerts, channel="ops-alerts"))
    server = BotServer(Services(storage, cfg, None, Alerts(storage, cfg, None, host="h"))).start()
    try:
        status, _ = raw_post(server.url + "/mattermost/action", body, {"Content-Type": "application/json"})
        assert 400 <= status < 500
    finally:
        server.stop()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=300), content_type=st.sampled_from([
    "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=latin-1",
    "application/x-www-form-urlencoded; charset=nope", "multipart/form-data", "multipart/form-data; boundary=b",
    "application/json", "text/plain", "", "application/x-www-form-urlencoded; charset=utf-16"]),
    encoding=st.sampled_from(["", "gzip", "deflate", "br", "identity"]))
def test_any_bytes_to_the_command_endpoint_get_an_answer_below_500(bot: BotServer, body: bytes, content_type: str,
                                                                  encoding: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    if encoding:
        headers["Content-Encoding"] = encoding
    status, _ = raw_post(bot.url + "/mattermost/command", b"token=" + TOKEN.encode() + b"&" + body, headers)
    assert status < 500


def test_with_the_database_down_a_bad_token_is_still_a_401() -> None:
    broken = Storage(make_engine("mysql+pymysql://root@127.0.0.1:1/none", timeout=2))
    server = BotServer(Services(broken, config())).start()
    try:
        status, _ = SlashClient(server.url, TOKEN).send("bob", "help", token="forged")
        assert status == 401
        status, body = get(server.url + "/healthz")
        assert status == 503 and "127.0.0.1" not in body and ":1" not in body
    finally:
        server.stop()


# ---- finding 7: a database that stops answering ----------------------------------------------------

class FreezingProxy:
    """A TCP proxy to MariaDB that can stop forwarding (a frozen proxy or network) without closing."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.frozen = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                while self.frozen.is_set():
                    time.sleep(0.05)
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()


def test_a_frozen_database_fails_commands_and_healthz_within_the_timeout(mariadb_url: str) -> None:
    from bot import migrate
    from tests.conftest import MARIADB_PORT

    migrate.upgrade(make_engine(mariadb_url))
    proxy = FreezingProxy(MARIADB_PORT)
    via_proxy = mariadb_url.replace(f":{MARIADB_PORT}/", f":{proxy.port}/")
    storage = Storage(make_engine(via_proxy, timeout=2))
    cfg = replace(config(), database=DatabaseConfig(url=via_proxy, timeout_seconds=2))
    server = BotServer(Services(storage, cfg)).start()
    try:
        mm = SlashClient(server.url, TOKEN)
        assert "Saved record" in mm.text("bob", "add before the freeze")
        proxy.frozen.set()
        started = time.perf_counter()
        status, body = get(server.url + "/healthz")
        assert status == 503 and str(proxy.port) not in body and "127.0.0.1" not in body
        _, reply = mm.send("carol", "list")
        assert time.perf_counter() - started < 15
        assert "Something broke" in reply["text"] or "may have been saved" in reply["text"]
    finally:
        proxy.frozen.clear()
        server.stop()
        proxy.close()


# ---- finding 8: a lost COMMIT ---------------------------------------------------------------------------

def test_an_add_whose_commit_answer_was_lost_is_not_saved_twice_on_retry(mm: SlashClient, storage: Storage,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    real = Storage.transaction
    lost = {"once": True}

    @contextmanager
    def commit_then_lose_the_answer(self: Storage):  # type: ignore[no-untyped-def]
        with real(self) as conn:
            yield conn
        if lost.pop("once", False):
            raise OperationalError("COMMIT", {}, Exception("Lost connection to MySQL server during query"))

    ok_reply(mm, "bob", "help")
    monkeypatch.setattr(Storage, "transaction", commit_then_lose_the_answer)
    first = ok_reply(mm, "bob", "add rotated the TLS cert on lb-02")
    assert "may have been saved" in first and records(storage) == 1
    again = ok_reply(mm, "bob", "add rotated the TLS cert on lb-02")
    assert "Already saved as record" in again and records(storage) == 1


def test_an_add_that_fails_before_its_insert_is_not_called_maybe_saved(mm: SlashClient, storage: Storage,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # "May have been saved" sends the user looking for a record; it is only true once the INSERT went out.
    ok_reply(mm, "bob", "help")

    @contextmanager
    def refused(self: Storage):  # type: ignore[no-untyped-def]
        raise OperationalError("BEGIN", {}, Exception("Can't connect to MySQL server"))
        yield

    monkeypatch.setattr(Storage, "transaction", refused)
    reply = mm.text("bob", "add rotated the TLS cert on lb-03")
    assert "Something broke" in reply and "may have been saved" not in reply and records(storage) == 0


def test_two_copies_of_one_add_arriving_together_save_one_record(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # On SQLite the retry check and the INSERT share one write transaction, so copies of one request
    # (a client that resent it) queue on the writer's lock and the later ones find the first.
    storage = Storage(make_engine(f"sqlite:///{tmp_path / 'race.db'}"))
    from bot import migrate

    migrate.upgrade(engine_of(storage))
    bob, _ = storage.ensure_user("mm-bob", "bob")
    copies = 8
    start, results = threading.Barrier(copies), []

    def send() -> None:
        start.wait()
        results.append(storage.add_record_once(bob, "failed over db-07 to the replica #db"))

    threads = [threading.Thread(target=send) for _ in range(copies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(new for _, new in results) == [False] * (copies - 1) + [True]
    assert len({record_id for record_id, _ in results}) == 1 and records(storage) == 1


# ---- finding 10: Markdown in names, images in records ------------------------------------------------

def test_a_file_name_cannot_make_a_link_and_an_image_is_not_loaded(mm: SlashClient, storage: Storage) -> None:
    owner, _ = storage.ensure_user(mm.user_id("bob"), "bob", "member")
    rid = storage.add_record(owner, "see ![pixel](https://evil.example/p.png) and `![kept](x)`", [
        Attachment("f" * 26, "report.pdf](https://evil.example/login) [x", 10, "application/pdf")])
    shown = ok_reply(mm, "bob", f"show {rid}")
    assert "Files: report.pdf\\](https://evil.example/login) \\[x (10 B)" in shown  # no bracket left to pair
    assert "x](https://evil" not in shown
    assert "!\\[pixel](https://evil.example/p.png)" in shown and "`![kept](x)`" in shown


# ---- finding 11: mentions neutralised only where they could ping ---------------------------------------

def test_an_ephemeral_reply_keeps_text_exactly_and_a_channel_post_pings_no_one(mm: SlashClient) -> None:
    mm.channels["ops"] = "opschannel0000000000000000"
    rid = int(ok_reply(mm, "bob", "add ssh deploy@web-01 then told @here and `@all in code`").split("#")[1]
              .split("*")[0])
    shown = ok_reply(mm, "bob", f"show {rid}")
    assert "ssh deploy@web-01 then told @here and `@all in code`" in shown
    status, body = mm.send("bob", f"share {rid} ~ops")
    assert status == 200 and body["response_type"] == "in_channel"
    assert "ssh deploy@web-01" in body["text"] and "`@all in code`" in body["text"]
    assert "@here" not in body["text"] and "@\u200bhere" in body["text"]


# ---- finding 12: cursors -------------------------------------------------------------------------------

def test_a_cursor_past_the_newest_record_starts_from_the_newest(mm: SlashClient) -> None:
    ok_reply(mm, "bob", "add the only record")
    started = time.perf_counter()
    reply = ok_reply(mm, "bob", "list before:999999999999999999")
    assert "the only record" in reply and time.perf_counter() - started < 2.0


# ---- finding 13: the registered command's token -----------------------------------------------------

def test_the_stored_token_is_refused_once_self_registration_is_off(storage: Storage) -> None:
    storage.store_internal(COMMAND_TOKEN_SETTING, "registered-token")
    on = config(mattermost=MattermostConfig(url="http://127.0.0.1:9", bot_token="x", team="ops",
                                            register_command=True))
    off = replace(on, mattermost=replace(on.mattermost, register_command=False))
    for cfg, expected in ((on, 200), (off, 401)):
        server = BotServer(Services(storage, cfg)).start()
        try:
            status, _ = SlashClient(server.url, "registered-token").send("bob", "help")
            assert status == expected, cfg.mattermost.register_command
        finally:
            server.stop()


def test_tags_of_an_old_record_beyond_the_cap_still_fit_in_a_reply(mm: SlashClient, storage: Storage) -> None:
    owner, _ = storage.ensure_user(mm.user_id("bob"), "bob", "member")
    rid = storage.add_record(owner, "an old record from before the tag cap")
    insert_rows(storage, "T_TAG", [{"record_id": rid, "tag": f"tag-{i:04d}-" + "x" * 40} for i in range(3000)])
    shown = ok_reply(mm, "bob", f"show {rid}")
    assert "and 2,970 more" in shown


def test_healthz_is_503_when_the_database_reads_but_cannot_write(tmp_path) -> None:
    from sqlalchemy import event

    from bot import migrate

    url = f"sqlite:///{tmp_path}/records.db"
    migrate.upgrade(make_engine(url))
    engine = make_engine(url)
    # Reads work, writes fail: what a full disk or a read-only replica looks like to the bot.
    event.listen(engine, "connect", lambda dbapi_conn, _: dbapi_conn.execute("PRAGMA query_only=ON"))
    server = BotServer(Services(Storage(engine), config())).start()
    try:
        status, body = get(server.url + "/healthz")
        assert status == 503 and "read and a write" in body
    finally:
        server.stop()
