"""The record store and the visibility rule, on a SQLite file and on MariaDB."""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from bot.errors import Conflict, Forbidden, NotFound, UserError
from bot.storage import IDENTITY_MAX_AGE, Filter, Storage, User, extract_tags
from tests.conftest import wipe
from tests.helpers import all_pages, engine_of, insert_rows, make_user, set_role_directly


def test_add_then_get_returns_text_owner_tags_and_no_revisions(storage: Storage) -> None:
    bob = make_user(storage, "bob")
    rid = storage.add_record(bob, "Restarted nginx on web-01 #deploy #Web-01 and #deploy again")
    record = storage.get_record(bob, rid)
    assert (record.owner, record.body, record.tags, record.revisions) == (
        "bob", "Restarted nginx on web-01 #deploy #Web-01 and #deploy again", ("deploy", "web-01"), 0)


def test_tags_ignore_anchors_entities_and_hashes_inside_words() -> None:
    assert extract_tags("see page#top &#39; C# #ok #中文标签 ##x") == ("ok", "中文标签")


def test_text_with_quotes_backslashes_and_sql_round_trips_byte_identical(storage: Storage) -> None:
    bob = make_user(storage, "bob")
    body = "it's \"quoted\" \\ back\\slash '); DROP TABLE T_CONTENT; -- 😀\nline2\t%_"
    rid = storage.add_record(bob, body)
    assert storage.get_record(bob, rid).body == body
    assert [r.id for r in storage.find(bob, Filter(words=("drop table",)), limit=5).records] == [rid]
    assert [r.id for r in storage.find(bob, Filter(words=("%_",)), limit=5).records] == [rid]


def test_empty_or_huge_text_is_refused_and_stores_nothing(storage: Storage) -> None:
    bob = make_user(storage, "bob")
    for body in ("", "   \n", "x" * 60_001):
        with pytest.raises(UserError):
            storage.add_record(bob, body)
    assert storage.find(bob, Filter(), limit=10).records == ()


def test_edit_keeps_the_old_text_as_a_revision_and_search_follows_the_new_text(storage: Storage) -> None:
    bob = make_user(storage, "bob")
    rid = storage.add_record(bob, "restarted nginx #web")
    record = storage.edit_record(bob, rid, "restarted apache #ops")
    assert (record.body, record.tags, record.revisions) == ("restarted apache #ops", ("ops",), 1)
    assert [r.body for r in storage.revisions(bob, rid)] == ["restarted nginx #web"]
    assert storage.find(bob, Filter(words=("nginx",)), limit=5).records == ()
    assert [r.id for r in storage.find(bob, Filter(words=("apache",)), limit=5).records] == [rid]
    assert storage.find(bob, Filter(tags=("web",)), limit=5).records == ()


def test_only_the_owner_or_an_admin_may_edit_or_delete(storage: Storage) -> None:
    bob, carol, admin = make_user(storage, "bob"), make_user(storage, "carol"), make_user(storage, "ada", "admin")
    rid = storage.add_record(bob, "bob's record")
    storage.share(bob, rid, [carol.id])
    with pytest.raises(Forbidden):
        storage.edit_record(carol, rid, "carol was here")
    with pytest.raises(Forbidden):
        storage.delete_record(carol, rid)
    assert storage.get_record(bob, rid).body == "bob's record"
    storage.edit_record(admin, rid, "fixed by admin")
    assert storage.get_record(bob, rid).body == "fixed by admin"
    assert storage.recent_audit(admin)[0].action == "edit"


def test_soft_delete_hides_the_record_until_an_admin_restores_it(storage: Storage) -> None:
    bob, admin = make_user(storage, "bob"), make_user(storage, "ada", "admin")
    rid = storage.add_record(bob, "to be deleted")
    storage.delete_record(bob, rid)
    with pytest.raises(NotFound):
        storage.get_record(bob, rid)
    with pytest.raises(NotFound):
        storage.get_record(admin, rid)
    with pytest.raises(Forbidden):
        storage.restore_record(bob, rid)
    storage.restore_record(admin, rid)
    assert storage.get_record(bob, rid).body == "to be deleted"
    with pytest.raises(Conflict):
        storage.restore_record(admin, rid)
    with pytest.raises(NotFound):
        storage.restore_record(admin, rid + 1000)


def test_a_disabled_user_can_neither_read_nor_write(storage: Storage) -> None:
    bob = make_user(storage, "bob")
    rid = storage.add_record(bob, "mine")
    disabled = make_user(storage, "bob", "disabled")
    with pytest.raises(NotFound):
        storage.get_record(disabled, rid)
    with pytest.raises(Forbidden):
        storage.add_record(disabled, "more")
    assert storage.find(disabled, Filter(), limit=5).records == ()


def test_a_stale_admin_object_sees_nothing_once_the_database_says_otherwise(storage: Storage) -> None:
    bob = make_user(storage, "bob")
    rid = storage.add_record(bob, "bob only")
    stale = make_user(storage, "eve", "admin")
    set_role_directly(storage, "member", user_id=stale.id)
    assert stale.role == "admin"
    with pytest.raises(NotFound):
        storage.get_record(stale, rid)
    assert storage.find(stale, Filter(), limit=5).records == ()
    with pytest.raises(NotFound):
        storage.delete_record(stale, rid)


def test_grant_shows_past_and_future_records_and_revoke_takes_it_back(storage: Storage) -> None:
    admin, bob, carol = make_user(storage, "ada", "admin"), make_user(storage, "bob"), make_user(storage, "carol")
    old = storage.add_record(carol, "carol old")
    assert storage.grant(admin, bob.id, [carol.id, carol.id]) == 1
    new = storage.add_record(carol, "carol new")
    assert all_pages(storage, bob, Filter()) == [new, old]
    assert all_pages(storage, bob, Filter(words=("carol",))) == [new, old]  # the FTS path too
    sees, seen_by = storage.perms(admin, bob.id)
    assert [u.username for u in sees] == ["carol"] and seen_by == []
    assert storage.revoke(admin, bob.id, [carol.id]) == 1
    assert all_pages(storage, bob, Filter()) == []
    assert all_pages(storage, bob, Filter(words=("carol",))) == []
    with pytest.raises(Forbidden):
        storage.grant(bob, bob.id, [carol.id])
    assert [e.action for e in storage.recent_audit(admin)] == ["revoke", "grant"]


def test_a_grant_made_by_another_process_shows_within_the_identity_age(storage: Storage) -> None:
    # The owners a caller's grants name are read with the caller and only steer the search; a grant
    # made elsewhere (another server.workers process) must show once that reading is IDENTITY_MAX_AGE old.
    admin, bob, carol = make_user(storage, "ada", "admin"), make_user(storage, "bob"), make_user(storage, "carol")
    runbook = storage.add_record(carol, "carol's failover runbook")
    assert all_pages(storage, bob, Filter()) == []
    insert_rows(storage, "T_GRANT", [{"viewer_id": bob.id, "owner_id": carol.id, "granted_by": admin.id,
                                      "created_at": datetime(2026, 12, 1)}])
    time.sleep(IDENTITY_MAX_AGE + 0.1)
    assert all_pages(storage, bob, Filter()) == [runbook]
    assert all_pages(storage, bob, Filter(words=("runbook",))) == [runbook]


def test_share_needs_the_sharer_to_see_the_record_and_shows_only_that_record(storage: Storage) -> None:
    bob, carol, dave = make_user(storage, "bob"), make_user(storage, "carol"), make_user(storage, "dave")
    shared = storage.add_record(carol, "shared one")
    storage.add_record(carol, "private one")
    with pytest.raises(NotFound):
        storage.share(bob, shared, [dave.id])
    assert storage.share(carol, shared, [bob.id, bob.id]) == [bob.id]
    assert storage.share(carol, shared, [bob.id]) == []
    assert all_pages(storage, bob, Filter()) == [shared]
    # Who was shared a record may pass it on: the rule is "must see the record".
    assert storage.share(bob, shared, [dave.id]) == [dave.id]
    assert all_pages(storage, dave, Filter()) == [shared]


def test_keyset_pages_do_not_repeat_or_skip_when_records_arrive_between_pages(storage: Storage) -> None:
    bob = make_user(storage, "bob")
    ids = [storage.add_record(bob, f"entry {i}") for i in range(7)]
    first = storage.find(bob, Filter(), limit=3)
    storage.add_record(bob, "arrived late")
    second = storage.find(bob, Filter(), limit=3, before=first.next_before)
    third = storage.find(bob, Filter(), limit=3, before=second.next_before)
    seen = [r.id for p in (first, second, third) for r in p.records]
    assert seen == sorted(ids, reverse=True)
    assert third.next_before is None


def test_owner_tag_and_date_filters_combine(storage: Storage) -> None:
    bob, carol, admin = make_user(storage, "bob"), make_user(storage, "carol"), make_user(storage, "ada", "admin")
    now = datetime(2026, 3, 10, 12, 0)
    storage.clock = lambda: now
    a = storage.add_record(bob, "deploy #web")
    storage.clock = lambda: now + timedelta(days=2)
    b = storage.add_record(bob, "deploy #db")
    c = storage.add_record(carol, "deploy #web")
    assert all_pages(storage, admin, Filter(owner_id=bob.id)) == [b, a]
    assert all_pages(storage, admin, Filter(tags=("#WEB",))) == [c, a]
    assert all_pages(storage, admin, Filter(since=date(2026, 3, 11))) == [c, b]
    assert all_pages(storage, admin, Filter(until=date(2026, 3, 10))) == [a]
    assert all_pages(storage, admin, Filter(words=("deploy",), owner_id=bob.id, tags=("web",))) == [a]
    counted = storage.find(admin, Filter(words=("deploy",)), limit=1, count_up_to=10)
    assert (counted.matched, counted.matched_all, len(counted.records)) == (3, True, 1)
    capped = storage.find(admin, Filter(words=("deploy",)), limit=1, count_up_to=2)
    assert (capped.matched, capped.matched_all) == (3, False)


def test_statements_reused_across_viewers_bind_each_viewers_own_id(storage: Storage) -> None:
    # Search statements are built once per shape and reused; alternating viewers of the same shape
    # must each get their own visibility, never the previous caller's.
    bob, carol, dave = make_user(storage, "bob"), make_user(storage, "carol"), make_user(storage, "dave")
    admin = make_user(storage, "ada", "admin")
    mine = {u.username: storage.add_record(u, f"nightly backup by {u.username} #ops") for u in (bob, carol, dave)}
    storage.grant(admin, dave.id, [carol.id])
    expected = {"bob": [mine["bob"]], "carol": [mine["carol"]], "dave": [mine["dave"], mine["carol"]]}
    for _ in range(2):
        for viewer in (bob, carol, dave, bob):
            for flt in (Filter(words=("backup",)), Filter(tags=("ops",)), Filter(words=("ni",)), Filter()):
                assert all_pages(storage, viewer, flt) == expected[viewer.username], (viewer.username, flt)
            assert storage.get_record(viewer, expected[viewer.username][0]).owner in expected
            with pytest.raises(NotFound):
                storage.get_record(viewer, mine["bob" if viewer.username != "bob" else "carol"])
    assert len(all_pages(storage, admin, Filter(words=("backup",)))) == 3


def test_usernames_are_refreshed_and_users_counted(storage: Storage) -> None:
    admin = make_user(storage, "ada", "admin")
    bob = make_user(storage, "bob")
    storage.add_record(bob, "one")
    gone = storage.add_record(bob, "two")
    storage.delete_record(bob, gone)
    renamed, created = storage.ensure_user("mm-bob", "robert")
    assert (renamed.id, renamed.username, created) == (bob.id, "robert", False)
    assert storage.users_by_username(["@Robert"])["robert"].id == bob.id
    counts = {u.username: n for u, n in storage.users_with_counts(admin)}
    assert counts == {"ada": 0, "robert": 1}


def test_the_last_admin_cannot_be_demoted_and_role_changes_are_audited(storage: Storage) -> None:
    admin, bob = make_user(storage, "ada", "admin"), make_user(storage, "bob")
    with pytest.raises(Conflict):
        storage.set_role(admin, admin.id, "member")
    assert storage.set_role(admin, bob.id, "admin").role == "admin"
    assert storage.set_role(admin, admin.id, "member").role == "member"
    with pytest.raises(UserError):
        storage.set_role(bob, admin.id, "boss")
    assert [e.detail for e in storage.recent_audit(bob)] == ["@ada: admin -> member", "@bob: member -> admin"]


def test_settings_are_kept_and_audited(storage: Storage) -> None:
    admin, bob = make_user(storage, "ada", "admin"), make_user(storage, "bob")
    storage.set_setting(admin, "page_size", "20")
    storage.set_setting(admin, "page_size", "25")
    assert storage.settings() == {"page_size": "25"}
    with pytest.raises(Forbidden):
        storage.set_setting(bob, "page_size", "5")
    assert storage.settings() == {"page_size": "25"}
    assert storage.recent_audit(admin)[0].detail == "page_size: 20 -> 25"


# ---- the visibility rule as a property --------------------------------------------------------

ROLE = st.sampled_from(["member", "member", "admin", "disabled"])


@st.composite
def worlds(draw: st.DrawFn) -> dict:
    n_users = draw(st.integers(2, 5))
    roles = [draw(ROLE) for _ in range(n_users)]
    records = draw(st.lists(st.tuples(st.integers(0, n_users - 1), st.sampled_from(["alpha", "beta", "alpha beta"]),
                                      st.booleans()), max_size=12))
    pairs = st.tuples(st.integers(0, n_users - 1), st.integers(0, n_users - 1))
    grants = draw(st.lists(pairs, max_size=6))
    shares = draw(st.lists(st.tuples(st.integers(0, n_users - 1), st.integers(0, 11)), max_size=6))
    return {"roles": roles, "records": records, "grants": grants, "shares": shares}


def build_world(storage: Storage, world: dict) -> tuple[list[User], list[tuple[int, int, str, bool]]]:
    """Create the world with every user a member, then apply roles, so that any role can own records."""
    users = [make_user(storage, f"u{i}") for i in range(len(world["roles"]))]
    records = []
    for owner, body, deleted in world["records"]:
        rid = storage.add_record(users[owner], body)
        records.append((rid, owner, body, deleted))
    with engine_of(storage).begin() as conn:
        for viewer, owner in set(world["grants"]):
            if viewer != owner:
                conn.execute(text("INSERT INTO T_GRANT (viewer_id, owner_id, created_at) VALUES (:v, :o, :t)"),
                             {"v": users[viewer].id, "o": users[owner].id, "t": datetime(2026, 1, 1)})
        for viewer, index in set(world["shares"]):
            if index < len(records):
                conn.execute(text("INSERT INTO T_SHARE (user_id, record_id, shared_by, created_at) "
                                  "VALUES (:u, :r, :u, :t)"),
                             {"u": users[viewer].id, "r": records[index][0], "t": datetime(2026, 1, 1)})
        for rid, _, _, deleted in records:
            if deleted:
                conn.execute(text("UPDATE T_CONTENT SET deleted_at = :t WHERE id = :r"),
                             {"t": datetime(2026, 1, 2), "r": rid})
    for u, role in zip(users, world["roles"], strict=True):
        set_role_directly(storage, role, user_id=u.id)
    return [storage.user_by_id(u.id) for u in users], records  # type: ignore[misc]


def may_see(world: dict, users: list[User], records: list, viewer: int, index: int) -> bool:
    """SPEC section 2, stated plainly."""
    _, owner, _, deleted = records[index]
    role = world["roles"][viewer]
    if deleted or role == "disabled":
        return False
    return (
        owner == viewer
        or role == "admin"
        or (viewer, owner) in set(world["grants"])
        or (viewer, index) in set(world["shares"])
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(world=worlds())
def test_find_list_and_show_return_exactly_what_the_visibility_rule_allows(storage: Storage, world: dict) -> None:
    wipe(storage)
    users, records = build_world(storage, world)
    for v, viewer in enumerate(users):
        allowed = [records[i][0] for i in range(len(records)) if may_see(world, users, records, v, i)]
        assert all_pages(storage, viewer, Filter()) == sorted(allowed, reverse=True)
        with_alpha = [records[i][0] for i in range(len(records))
                      if "alpha" in records[i][2] and records[i][0] in allowed]
        assert all_pages(storage, viewer, Filter(words=("ALPHA",))) == sorted(with_alpha, reverse=True)
        for rid, *_ in records:
            if rid in allowed:
                assert storage.get_record(viewer, rid).id == rid
            else:
                with pytest.raises(NotFound):
                    storage.get_record(viewer, rid)


def test_sqlite_writers_in_two_processes_take_turns_on_the_lock_file(tmp_path) -> None:
    # With server.workers > 1, a writer in another process must be waited for in line (flock), not
    # in SQLite's busy handler with its sleeping back-off.
    import fcntl
    import subprocess
    import sys
    import threading

    from bot import migrate
    from bot.storage import make_engine

    url = f"sqlite:///{tmp_path / 'records.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    storage = Storage(engine)
    bob = make_user(storage, "bob")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom bot.storage import Storage, make_engine\n"
         f"s = Storage(make_engine({url!r}))\n"
         "with s.transaction():\n    print('holding', flush=True)\n    sys.stdin.readline()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "holding"
        with open(tmp_path / "records.db.writer-lock", "w") as probe, pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        done: list[int] = []
        writer = threading.Thread(target=lambda: done.append(storage.add_record(bob, "waited my turn")))
        writer.start()
        writer.join(0.5)
        assert not done, "the second process wrote while the first held the turn"
        holder.stdin.write("\n")
        holder.stdin.flush()
        writer.join(10)
        assert len(done) == 1 and storage.get_record(bob, done[0]).body == "waited my turn"
        assert holder.wait(10) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
        engine.dispose()
