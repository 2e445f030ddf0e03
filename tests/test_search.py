"""Search equals plain substring matching, whatever plan the accelerator chooses, on both backends."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot import search
from bot.errors import UserError
from bot.storage import Filter, Storage
from tests.conftest import wipe
from tests.helpers import all_pages, engine_of, make_user

# Small alphabets so that words of every length both match and miss; letters whose case folding
# is not ASCII, and full-width forms, are there on purpose.
CHINESE = "服务器重启数据库备份日志清理鑫磊"
LATIN = "abcABCxyzÉéßİΣσ"
OTHER = " -_#%'\"\\0１\t\x1f"
ALPHABET = CHINESE + LATIN + OTHER

texts = st.text(alphabet=ALPHABET, min_size=1, max_size=40).filter(lambda t: t.strip())
words = st.text(alphabet=CHINESE + LATIN + "-_%'\\0\x00\t\x1f", min_size=1, max_size=5)


def reference(bodies: list[tuple[int, str]], query: list[str]) -> list[int]:
    folded = [w.lower() for w in query]
    return sorted((rid for rid, body in bodies if all(w in body.lower() for w in folded)), reverse=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(corpus=st.lists(texts, min_size=1, max_size=25), query=st.lists(words, min_size=1, max_size=2),
       picks=st.lists(st.tuples(st.integers(0, 24), st.integers(0, 40), st.integers(1, 5)), max_size=2))
def test_find_equals_python_substring_matching(storage: Storage, corpus: list[str], query: list[str],
                                               picks: list[tuple[int, int, int]]) -> None:
    wipe(storage)
    admin = make_user(storage, "ada", "admin")
    bodies = [(storage.add_record(admin, body), body) for body in corpus]
    # Words cut out of the stored texts make sure matches are exercised, not only misses.
    for index, start, length in picks:
        body = corpus[index % len(corpus)]
        cut = body[start % len(body):][:length].strip()
        if cut:
            query = [*query[:1], cut]
    got = all_pages(storage, admin, Filter(words=tuple(query)), page=4)
    assert got == reference(bodies, query), f"plan: {storage.search_backend}"


SAMPLES = [
    "服务器重启完成 deploy web-01",
    "数据库备份 ok",
    "清理日志 /var/log",
    "Restarted NGINX after config change",
    "鑫磊 joined the on-call rota",
    "ab",
    "x",
]


@pytest.mark.parametrize("word, expected", [
    ("重启", [0]), ("服", [0]), ("鑫磊", [4]), ("nginx", [3]), ("NgInX", [3]), ("ab", [5]), ("x", [6, 3]),
    ("log", [2]), ("备份 ok", [1]), ("absent", []), ("库备", [1]), ("启完成 d", [0]),
])
def test_short_long_chinese_and_latin_words(storage: Storage, word: str, expected: list[int]) -> None:
    admin = make_user(storage, "ada", "admin")
    ids = [storage.add_record(admin, body) for body in SAMPLES]
    got = all_pages(storage, admin, Filter(words=(word,)))
    assert got == [ids[i] for i in expected]


def test_sqlite_plans_use_the_trigram_index_for_long_words_and_a_prefix_or_for_short_ones(tmp_path) -> None:
    from bot import migrate
    from bot.storage import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    migrate.upgrade(engine)
    storage = Storage(engine)
    admin = make_user(storage, "ada", "admin")
    for body in SAMPLES:
        storage.add_record(admin, body)
    with engine.connect() as conn:
        assert search.plan_search(conn, "sqlite-fts5", ["nginx"]).match == '"gin" AND "inx" AND "ngi"'
        assert search.plan_search(conn, "sqlite-fts5", ["鑫磊", "x"]).kind == "window"
        assert search.short_plan(conn, ["鑫磊"]).kind == "fts"
        assert search.short_plan(conn, ["鑫x"]).kind == "none"


def test_mariadb_uses_mroonga_when_the_engine_is_installed(mariadb_url: str) -> None:
    from sqlalchemy import text

    from bot import migrate
    from bot.storage import make_engine

    engine = make_engine(mariadb_url)
    with engine.connect() as conn:
        installed = search.mroonga_available(conn)
        conn.execute(text("SELECT 1"))
    assert migrate.upgrade(engine) == ("mroonga" if installed else "like")
    storage = Storage(engine)
    admin = make_user(storage, "ada", "admin")
    ids = [storage.add_record(admin, body) for body in SAMPLES]
    with engine.connect() as conn:
        assert search.plan_search(conn, storage.search_backend, ["鑫磊"]).kind == ("window" if installed else "scan")
        older = search.older_plan(conn, storage.search_backend, ["鑫磊"], ids[-1] + 1)
        assert older == (search.Plan("ids", ids=(ids[4],)) if installed else search.SCAN)
        if installed:
            assert search.older_plan(conn, "mroonga", ["zzzz"], ids[-1] + 1).kind == "none"
    assert all_pages(storage, admin, Filter(words=("鑫磊",))) == [ids[4]]
    engine.dispose()


@pytest.mark.parametrize("word", ["\t", 'a"b', "\\", "+-*()~<>", "\x1f"])
def test_control_characters_and_query_syntax_in_words_are_plain_text(storage: Storage, word: str) -> None:
    admin = make_user(storage, "ada", "admin")
    hit = storage.add_record(admin, f"disk{word}full")
    storage.add_record(admin, "nothing here")
    assert all_pages(storage, admin, Filter(words=(word,))) == [hit]
    assert all_pages(storage, admin, Filter(words=(f"k{word}f",))) == [hit]


def test_a_nul_character_is_refused_in_text_and_matches_nothing_in_words(storage: Storage) -> None:
    admin = make_user(storage, "ada", "admin")
    storage.add_record(admin, "disk full")
    with pytest.raises(UserError, match="NUL"):
        storage.add_record(admin, "disk\x00full")
    assert all_pages(storage, admin, Filter(words=("\x00",))) == []
    assert all_pages(storage, admin, Filter(words=("k\x00f",))) == []


def test_short_words_scan_the_newest_records_then_use_the_index_for_older_ones(
        storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search, "WINDOW", 4)
    admin = make_user(storage, "ada", "admin")
    bob = make_user(storage, "bob")
    vocab = ["restart nginx", "restart db", "deploy web", "服务器重启", "备份数据库", "restart 服务器"]
    bodies = [(storage.add_record(admin if i % 3 else bob, vocab[(i * 7) % len(vocab)] + f" n{i}"),
               vocab[(i * 7) % len(vocab)] + f" n{i}", i % 3 != 0) for i in range(40)]
    for word in ["restart", "服务器", "deploy", "n1", "re", "数据", "启", "b", "zz"]:
        expected = sorted((rid for rid, body, _ in bodies if word in body), reverse=True)
        assert all_pages(storage, admin, Filter(words=(word,)), page=3) == expected, word
        own = sorted((rid for rid, body, by_admin in bodies if word in body and not by_admin), reverse=True)
        assert all_pages(storage, bob, Filter(words=(word,)), page=3) == own, word
    with engine_of(storage).connect() as conn:
        if storage.search_backend == "sqlite-fts5":
            assert search.plan_search(conn, "sqlite-fts5", ["数据"]).kind == "window"
            assert search.short_plan(conn, ["数据"]).kind == "fts"
            assert search.short_plan(conn, ["zz"]).kind == "none"


def test_a_scan_out_of_time_returns_a_resume_point_and_going_on_finds_everything(
        storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search, "SCAN_CHUNK", 3)
    monkeypatch.setattr(search, "SCAN_SECONDS", 0.0)
    monkeypatch.setattr(storage, "_backend", "like")  # no accelerator: every search scans
    admin = make_user(storage, "ada", "admin")
    ids = [storage.add_record(admin, f"{'needle ' if i % 4 == 0 else ''}hay {i}") for i in range(20)]
    first = storage.find(admin, Filter(words=("needle",)), limit=5)
    assert first.partial and first.next_before is not None
    assert all_pages(storage, admin, Filter(words=("needle",)), page=5) == [i for i in reversed(ids[::4])]
    assert storage.find(admin, Filter(words=("needle",)), limit=1, count_up_to=50).matched_all is False


def test_long_words_match_whole_even_where_the_index_looks_only_at_their_ends(storage: Storage) -> None:
    admin = make_user(storage, "ada", "admin")
    hit = storage.add_record(admin, "ticket zq-rare-7731 closed")
    storage.add_record(admin, "ticket zq-rXXX-7731 and zq-rare-7730 are other ones")
    assert all_pages(storage, admin, Filter(words=("zq-rare-7731",))) == [hit]
    assert all_pages(storage, admin, Filter(words=("ZQ-RARE-7731 CLOSED",))) == [hit]
    assert all_pages(storage, admin, Filter(words=("zq-rYYY-7731",))) == []


def _steps_of_a_member_search(tmp_path, hidden_word: str) -> int:
    """SQLite VM steps of one member's search, on a database where another owner's hidden records
    do or do not hold the word."""
    from sqlalchemy import event

    from bot import migrate
    from bot.storage import make_engine

    engine = make_engine(f"sqlite:///{tmp_path}/{hidden_word}.db")
    migrate.upgrade(engine)
    storage = Storage(engine)
    member, other = make_user(storage, "bob", "member"), make_user(storage, "zed", "member")
    for i in range(40):
        storage.add_record(member, f"bob's note {i} on host-{i}")
    for i in range(3000):
        storage.add_record(other, f"zed's secret {i} {hidden_word}")
    steps = [0]

    def count(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        def tick() -> int:
            steps[0] += 1
            return 0
        dbapi_conn.set_progress_handler(tick, 100)

    engine.dispose()
    event.listen(engine, "connect", count)
    storage.find(member, Filter(words=("zebracorn",)), limit=10, count_up_to=100)
    engine.dispose()
    return steps[0]


def test_a_members_search_costs_the_same_whatever_hidden_records_hold(tmp_path) -> None:
    # Its time must not tell a member how common a word is in records they cannot see.
    without = _steps_of_a_member_search(tmp_path, "plain")
    with_hidden = _steps_of_a_member_search(tmp_path, "zebracorn")
    assert with_hidden <= without * 1.2 + 5, (without, with_hidden)
