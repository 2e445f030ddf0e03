"""Every /rec command through the bot's real HTTP server, as Mattermost sends it, on SQLite and MariaDB."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.context import Services
from bot.render import ZWSP
from bot.storage import Storage
from tests.botserver import BotServer, InProcessClient, SlashClient, get
from tests.helpers import TOKEN, config, count_rows, revoke_directly, set_role_directly


@pytest.fixture
def server(storage: Storage) -> Iterator[BotServer]:
    bot = BotServer(Services(storage, config())).start()
    yield bot
    bot.stop()


@pytest.fixture
def http(server: BotServer) -> SlashClient:
    """Requests over the real HTTP server, for what the door does: the token, formats, status codes."""
    client = SlashClient(server.url, TOKEN, channels={"ops": "opschannel0000000000000000"})
    for name in ("ada", "bob", "carol", "dave", "eve"):
        client.user_id(name)
    return client


@pytest.fixture
def mm(storage: Storage) -> SlashClient:
    """The same requests handed to the dispatcher in-process, for what commands do."""
    client = InProcessClient("", TOKEN, channels={"ops": "opschannel0000000000000000"},
                             services=Services(storage, config()))
    for name in ("ada", "bob", "carol", "dave", "eve"):
        client.user_id(name)
    return client


def counts(storage: Storage) -> tuple[int, ...]:
    return count_rows(storage, "T_USER", "T_CONTENT", "T_GRANT", "T_SHARE", "T_SETTING", "T_AUDIT")


def record_id(reply: str) -> int:
    match = re.search(r"#(\d+)", reply)
    assert match, reply
    return int(match.group(1))


# ---- the token check -----------------------------------------------------------------------------

@pytest.mark.parametrize("token", ["forged", "", TOKEN + "x", TOKEN[:-1]])
def test_a_wrong_missing_or_empty_token_gets_401_and_changes_nothing(http: SlashClient, storage: Storage,
                                                                     token: str) -> None:
    http.text("bob", "add first")
    before = counts(storage)
    status, _ = http.send("carol", "add sneaky", token=token)
    assert status == 401
    assert counts(storage) == before


def test_a_request_without_any_token_field_gets_401(http: SlashClient, storage: Storage) -> None:
    form = [f for f in http.form("bob", "add x") if f[0] != "token"]
    before = counts(storage)
    http.token = ""  # no Authorization header either
    status, _ = http.send("bob", "", form=form)
    assert status == 401 and counts(storage) == before


def test_get_requests_work_like_post(http: SlashClient) -> None:
    status, body = http.send("bob", "add via GET", method="GET")
    assert status == 200 and body["text"].startswith("Saved record")


# ---- records ------------------------------------------------------------------------------------

ODD = "it's \"quoted\" \\ back\\slash\n'); DROP TABLE T_CONTENT; --\n😀 emoji and 中文 \t tab  double  space"


def test_show_returns_text_byte_identical_after_add(mm: SlashClient) -> None:
    rid = record_id(mm.text("bob", "add " + ODD))
    shown = mm.text("bob", f"show {rid}")
    assert shown.endswith("\n\n" + ODD)


def test_add_replies_with_the_id_and_tags(mm: SlashClient) -> None:
    reply = mm.text("bob", "add restarted nginx #deploy #Web")
    assert re.fullmatch(r"Saved record \*\*#\d+\*\*\. Tags: `#deploy` `#web`\.", reply)


def test_add_with_no_text_is_refused(mm: SlashClient, storage: Storage) -> None:
    before = counts(storage)
    reply = mm.text("bob", "add    ")
    assert "empty" in reply
    assert counts(storage)[1:] == before[1:]


def test_find_pages_with_a_working_next_page_command(mm: SlashClient, storage: Storage) -> None:
    ids = [record_id(mm.text("bob", f"add deploy number {i}")) for i in range(12)]
    first = mm.text("bob", "find deploy")
    assert "**12 records** · page 1 of 2" in first
    next_cmd = re.search(r"Next page: `/rec (.+?)`", first).group(1)
    second = mm.text("bob", next_cmd)
    assert "page 2 of 2" in second and "That is all" in second
    shown = [int(x) for x in re.findall(r"\*\*#(\d+)\*\*", first + second)]
    assert shown == sorted(ids, reverse=True)
    assert mm.text("bob", "find deploy page:2") == second


def test_find_errors_name_the_bad_part_and_show_usage(mm: SlashClient) -> None:
    assert "give at least one word" in mm.text("bob", "find")
    reply = mm.text("bob", "find x since:2026-13-01")
    assert "'since:2026-13-01' is not a date" in reply and "Usage: `/rec find" in reply
    assert "is not a page" in mm.text("bob", "find x page:0")
    assert "is after" in mm.text("bob", "find x since:2026-02-01 until:2026-01-01")
    assert "@nobody is not a user recbot knows" in mm.text("bob", "find x @nobody")


def test_list_filters_by_user_and_tag(mm: SlashClient) -> None:
    mm.text("ada", "add admin note #infra")
    b = record_id(mm.text("bob", "add bob note #infra"))
    mm.text("bob", "add bob other #misc")
    reply = mm.text("ada", "list @bob #infra")
    assert re.findall(r"\*\*#(\d+)\*\*", reply) == [str(b)]
    assert "No records you can see" in mm.text("carol", "list")


def test_show_edit_delete_errors(mm: SlashClient) -> None:
    rid = record_id(mm.text("bob", "add bob's"))
    assert "'abc' is not a record id" in mm.text("bob", "show abc")
    assert f"record {rid + 50} does not exist or you cannot see it" in mm.text("bob", f"show {rid + 50}")
    assert "does not exist or you cannot see it" in mm.text("carol", f"show {rid}")
    assert "does not exist or you cannot see it" in mm.text("carol", f"edit {rid} hijack")
    assert "give the record id" in mm.text("bob", "delete")
    assert "1 earlier version is kept" in mm.text("bob", f"edit {rid} bob's, fixed")
    assert "1 earlier version" in mm.text("bob", f"show {rid}")
    assert "Deleted record" in mm.text("bob", f"delete {rid}")
    assert "does not exist" in mm.text("bob", f"show {rid}")
    assert f"Restored record **#{rid}**" in mm.text("ada", f"admin restore {rid}")
    assert "bob's, fixed" in mm.text("bob", f"show {rid}")


def test_unknown_and_empty_commands_point_to_help(mm: SlashClient) -> None:
    assert "'frob' is not a /rec command" in mm.text("bob", "frob")
    assert "/rec help" in mm.text("bob", "")
    assert "'admin nope' is not a /rec command" in mm.text("ada", "admin nope")


def test_help_is_generated_from_the_table_and_hides_admin_commands_from_members(mm: SlashClient) -> None:
    member = mm.text("bob", "help")
    admin = mm.text("ada", "help")
    assert "/rec find" in member and "/rec admin grant" not in member
    assert "/rec admin grant" in admin
    detail = mm.text("bob", "help find")
    assert detail.startswith("`/rec find <words>")
    assert "'zap' is not a /rec command" in mm.text("bob", "help zap")
    assert "For recbot admins" in mm.text("bob", "help grant")


# ---- visibility through HTTP -------------------------------------------------------------------

def test_visibility_owner_grantee_shared_stranger_disabled_admin(mm: SlashClient) -> None:
    for name in ("ada", "bob", "carol", "dave", "eve"):
        mm.text(name, "help")
    rid = record_id(mm.text("bob", "add bob secret"))
    other = record_id(mm.text("bob", "add bob other"))
    assert "Shared record" in mm.text("bob", f"share {rid} @dave")
    assert "may now see every record of bob" in mm.text("ada", "admin grant @carol @bob")
    assert "is now **disabled**" in mm.text("ada", "admin role @eve disabled")

    def visible(name: str) -> set[int]:
        status, body = mm.send(name, "list")
        return {int(x) for x in re.findall(r"\*\*#(\d+)\*\*", body["text"])} if status == 200 else set()

    assert visible("bob") == {rid, other}
    assert visible("carol") == {rid, other}
    assert visible("dave") == {rid}
    assert visible("ada") == {rid, other}
    assert "account is disabled" in mm.text("eve", "list")
    assert "account is disabled" in mm.text("eve", f"show {rid}")
    mm.text("ada", "admin revoke @carol @bob")
    assert visible("carol") == set()


def test_share_into_a_channel_answers_in_channel_with_that_channel_id_and_no_pings(http: SlashClient) -> None:
    rid = record_id(http.text("bob", "add paged @channel and @here about @carol"))
    status, body = http.send("bob", f"share {rid} ~ops")
    assert status == 200
    assert body["response_type"] == "in_channel" and body["channel_id"] == "opschannel0000000000000000"
    assert "@channel" not in body["text"] and f"@{ZWSP}channel" in body["text"]
    assert "@carol" not in body["text"] and "@here" not in body["text"]
    assert "not a channel Mattermost recognised" in http.text("bob", f"share {rid} ~unknown")
    assert "not both" in http.text("bob", f"share {rid} @carol ~ops")


def test_share_needs_the_caller_to_see_the_record(mm: SlashClient, storage: Storage) -> None:
    rid = record_id(mm.text("bob", "add private"))
    mm.text("dave", "help")
    before = counts(storage)
    assert "does not exist or you cannot see it" in mm.text("carol", f"share {rid} @dave")
    assert counts(storage)[3] == before[3]


# ---- admin ----------------------------------------------------------------------------------------

def test_members_are_refused_admin_commands_and_nothing_changes(mm: SlashClient, storage: Storage) -> None:
    mm.text("carol", "help")
    mm.text("bob", "help")
    before = counts(storage)
    for command in ("admin grant @bob @carol", "admin role @carol admin", "admin users", "admin set page_size 3",
                    "admin audit", "admin restore 1", "admin status", "admin settings", "admin perms @bob"):
        assert "is for recbot admins" in mm.text("bob", command), command
    assert counts(storage) == before


def test_a_role_changed_by_another_process_never_widens_access_while_the_caller_is_remembered(
        mm: SlashClient, storage: Storage) -> None:
    # Another server.workers process (here: a direct UPDATE) changes roles while this process still
    # remembers the callers for IDENTITY_MAX_AGE: the SQL and the admin gate must read them afresh.

    mm.text("eve", "help")
    assert "now **admin**" in mm.text("ada", "admin role @eve admin")
    bob_record = record_id(mm.text("bob", "add bob's note"))
    assert "1 record" in mm.text("eve", "find bob's")
    set_role_directly(storage, "disabled", username="bob")
    set_role_directly(storage, "member", username="eve")
    assert "No matches" in mm.text("bob", "find bob's")
    assert "disabled" in mm.text("bob", "add one more")
    assert "does not exist or you cannot see it" in mm.text("bob", f"show {bob_record}")
    assert "No matches" in mm.text("eve", "find bob's")  # a remembered admin sees only what a member may
    before = counts(storage)
    assert "is for recbot admins" in mm.text("eve", "admin settings")
    assert "is for recbot admins" in mm.text("eve", "admin role @bob member")
    assert counts(storage) == before


def test_a_grant_taken_back_by_another_process_never_shows_while_the_caller_is_remembered(
        mm: SlashClient, storage: Storage) -> None:
    # The caller is remembered with the owners their grants name (IDENTITY_MAX_AGE), which only picks
    # how to search: a grant deleted behind this process's back must hide those records at once.
    mm.text("bob", "help")
    mm.text("carol", "add rollout notes for the payments cluster")
    assert "may now see every record of carol" in mm.text("ada", "admin grant @bob @carol")
    assert "1 record" in mm.text("bob", "find rollout")
    assert "rollout notes" in mm.text("bob", "list")
    revoke_directly(storage, viewer="bob")
    assert "No matches" in mm.text("bob", "find rollout")
    assert "No records you can see" in mm.text("bob", "list")
    assert "No records you can see" in mm.text("bob", "list @carol")


def test_admin_settings_set_and_audit(mm: SlashClient, storage: Storage) -> None:
    mm.text("ada", "help")
    assert "| page_size | 10 | config |" in mm.text("ada", "admin settings")
    assert "page_size is now 2 (was 10)" in mm.text("ada", "admin set page_size 2")
    before = counts(storage)
    for bad, why in [("page_size 0", "a whole number from 1 to 100"), ("page_size x", "not allowed"),
                     ("alerts.warn_percent 95", "must stay below"), ("nope 1", "is not a setting"),
                     ("page_size", "write the key and one value")]:
        assert why in mm.text("ada", f"admin set {bad}"), bad
    assert counts(storage) == before
    for i in range(3):
        mm.text("ada", f"add note {i}")
    assert "page 1 of 2" in mm.text("ada", "list")
    log = mm.text("ada", "admin audit")
    assert "set · page_size: (default) -> 2" in log
    assert "is not a count" in mm.text("ada", "admin audit lots")


def test_admin_users_perms_role_and_status(mm: SlashClient) -> None:
    mm.text("bob", "add one")
    mm.text("carol", "help")
    users = mm.text("ada", "admin users")
    assert "| bob | member | 1 |" in users and "| ada | admin | 0 |" in users
    mm.text("ada", "admin grant @bob @carol")
    perms = mm.text("ada", "admin perms @bob")
    assert "sees the records of: carol" in perms
    assert "'boss' is not a role" in mm.text("ada", "admin role @bob boss")
    assert "last admin" in mm.text("ada", "admin role @ada member")
    status = mm.text("ada", "admin status")
    assert "| / |" in status and "CPU" in status and "load" in status


def test_closed_registration_turns_newcomers_away_until_an_admin_admits_them(storage: Storage) -> None:
    bot = BotServer(Services(storage, config(registration="closed"))).start()
    try:
        mm = SlashClient(bot.url, TOKEN)
        mm.user_id("newbie")
        assert "registration is closed" in mm.text("newbie", "add hello")
        assert counts(storage)[1] == 0
        mm.text("ada", "help")
        assert "is now **member**" in mm.text("ada", "admin role @newbie member")
        assert "Saved record" in mm.text("newbie", "add hello")
    finally:
        bot.stop()


# ---- health and metrics ------------------------------------------------------------------------

def test_healthz_and_metrics(http: SlashClient, server: BotServer) -> None:
    http.text("bob", "add x")
    http.text("bob", "frob")
    http.send("bob", "add y", token="bad")
    status, body = get(server.url + "/healthz")
    assert status == 200 and '"ok"' in body
    status, text = get(server.url + "/metrics")
    assert status == 200
    assert 'recbot_commands_total{command="add",outcome="ok"} 1' in text
    assert 'recbot_commands_total{command="unknown",outcome="user_error"} 1' in text
    assert 'recbot_commands_total{command="-",outcome="refused"} 1' in text
    assert re.search(r"recbot_command_seconds_count [1-9]", text)


def test_metrics_labels_come_from_the_command_table_whatever_the_caller_types(http: SlashClient,
                                                                            server: BotServer) -> None:
    for text in ('a"}', 'x"} 9\\n', "💥", "ADMIN frob", ""):
        http.text("bob", text)
    http.text("bob", "add ok")
    status, text = get(server.url + "/metrics")
    assert status == 200
    sample = re.compile(r'^[a-z_]+(\{([a-z]+="[A-Za-z0-9_.+ -]*",?)*\})? [0-9.]+$')
    bad = [line for line in text.splitlines() if not line.startswith("#") and not sample.match(line)]
    assert bad == []
    assert 'recbot_commands_total{command="unknown",outcome="user_error"} 5' in text
    assert 'recbot_commands_total{command="add",outcome="ok"} 1' in text


# ---- arbitrary input ---------------------------------------------------------------------------

SUBCOMMANDS = ["add", "find", "list", "show", "edit", "delete", "share", "help", "admin grant", "admin revoke",
               "admin perms", "admin role", "admin users", "admin restore", "admin settings", "admin set",
               "admin audit", "", "admin"]
TEXT = st.one_of(
    st.text(max_size=200),
    st.text(alphabet='"\\\'@~#:  \n0123456789abc中文😀', max_size=60),
    st.sampled_from(["x" * 70_000, "\x00", '"', "\\", "@", "~", "#", "since:", "page:99999999999999999999"]),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sub=st.sampled_from(SUBCOMMANDS), text=TEXT, as_admin=st.booleans())
def test_arbitrary_text_never_gives_a_5xx_and_always_a_valid_command_response(http: SlashClient, sub: str, text: str,
                                                                             as_admin: bool) -> None:
    status, body = http.send("ada" if as_admin else "bob", f"{sub} {text}")
    assert status == 200, body
    assert body["response_type"] in ("ephemeral", "in_channel")
    assert isinstance(body["text"], str) and body["text"].strip()
    assert len(body["text"]) <= 16_383
    assert "Something broke" not in body["text"], body["text"]


def test_a_long_result_counts_ten_pages_ahead_and_says_more_than(mm: SlashClient) -> None:
    mm.text("ada", "admin set page_size 2")
    for i in range(25):
        mm.text("ada", f"add many {i}")
    first = mm.text("ada", "list")
    assert "**more than 20 records** · page 1 of more than 10" in first
    last = mm.text("ada", "list page:13")
    assert "**25 records** · page 13 of 13" in last and "That is all" in last


def test_a_search_that_runs_out_of_time_says_so_and_offers_to_go_on(mm: SlashClient, storage: Storage,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from bot import search

    for i in range(8):
        mm.text("ada", f"add {'needle' if i == 0 else 'hay'} {i}")
    monkeypatch.setattr(storage, "_backend", "like")
    monkeypatch.setattr(search, "SCAN_CHUNK", 2)
    monkeypatch.setattr(search, "SCAN_SECONDS", 0.0)
    reply = mm.text("ada", "find needle")
    assert reply.startswith("No matches among the records newer than #")
    command = re.search(r"`/rec (find needle before:\d+)`", reply).group(1)
    for _ in range(10):
        reply = mm.text("ada", command)
        if "needle 0" in reply:
            break
        command = re.search(r"`/rec (find needle before:\d+)`", reply).group(1)
    assert "needle 0" in reply
