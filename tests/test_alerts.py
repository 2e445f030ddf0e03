"""Disk alerts at run time, on SQLite and MariaDB, posting to the fake Mattermost through the real client."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest
from aiohttp import web

from bot.alerts.buttons import sign
from bot.alerts.sampler import Sampler
from bot.alerts.service import Alerts
from bot.app import build_app
from bot.config import AlertsConfig, Config, MattermostConfig, ServerConfig
from bot.context import Services
from bot.errors import UserError
from bot.mattermost.gateway import Gateway
from bot.storage import Storage, make_engine
from tests.alerting import Clock, Disk, Ops
from tests.botserver import free_port, get
from tests.fakes.mattermost import FakeMattermost
from tests.fakes.mattermost.seed import seed


async def test_a_warning_is_posted_once_with_chart_and_buttons_and_a_restart_reposts_nothing(
        storage: Storage, ops: Ops) -> None:
    disk, clock = Disk(var=85.0, data=40.0), Clock()
    first = ops.alerts(storage, disk, clock)
    messages = await first.check()
    assert [(m.path, m.level) for m in messages] == [("/var", "warning")]
    [post] = ops.posts()
    assert post["message"].startswith("WARNING disk space on web-01:/var is 85.0% used")
    assert len(post["file_ids"]) == 1
    assert ops.fake.file_contents[post["file_ids"][0]].startswith(b"\x89PNG")
    names = [a["name"] for att in post["props"]["attachments"] for a in att["actions"]]
    assert names == ["Acknowledge", "Snooze 1 h"]
    # A new process (a restart) on the same database, a minute later, same level: nothing new.
    clock.advance(minutes=1)
    await ops.alerts(storage, disk, clock).check()
    assert len(ops.posts()) == 1


def has_cjk(text: str) -> bool:
    return any("\u4e00" <= char <= "\u9fff" for char in text)


async def test_alert_posts_are_written_in_alerts_language_and_in_english_by_default(storage: Storage,
                                                                                    ops: Ops) -> None:
    from dataclasses import replace

    disk, clock = Disk(var=85.0, data=40.0), Clock()
    await ops.alerts(storage, disk, clock, holder="p1").check()
    [english] = ops.posts()
    assert english["message"].startswith("WARNING disk space on web-01:/var is 85.0% used")
    assert not has_cjk(english["message"])
    # The same alert on another host, its config asking for Chinese posts.
    chinese_config = replace(ops.config, alerts=replace(ops.config.alerts, language="zh-CN"))
    chinese = Alerts(storage, chinese_config, ops.gateway, host="web-02", holder="p2", clock=clock,
                     sampler=Sampler(disk.read, timeout=0.3), channel_id=ops.channel["id"])
    await chinese.check()
    post = ops.posts()[-1]
    assert len(ops.posts()) == 2 and "web-02:/var" in post["message"]
    assert has_cjk(post["message"]) and "disk space on" not in post["message"]
    names = [a["name"] for att in post["props"]["attachments"] for a in att["actions"]]
    assert all(has_cjk(name) for name in names) and "Acknowledge" not in names


async def test_levels_repeat_and_resolve_through_the_outbox_in_order(storage: Storage, ops: Ops) -> None:
    disk, clock = Disk(var=85.0, data=40.0), Clock()
    alerts = ops.alerts(storage, disk, clock)
    await alerts.check()
    disk.percent["/var"] = 95.0
    clock.advance(minutes=1)
    await alerts.check()
    clock.advance(minutes=240)
    await alerts.check()
    disk.percent["/var"] = 50.0
    clock.advance(minutes=1)
    await alerts.check()
    assert [p["message"].split(" ")[0] for p in ops.posts()] == ["WARNING", "CRITICAL", "CRITICAL", "RESOLVED"]
    assert "still" in ops.posts()[2]["message"]
    assert "props" not in ops.posts()[3] or not ops.posts()[3].get("props", {}).get("attachments")


async def test_mattermost_failing_for_a_while_loses_nothing_and_posts_in_order_once(storage: Storage,
                                                                                   ops: Ops) -> None:
    disk, clock = Disk(var=85.0, data=40.0), Clock()
    alerts = ops.alerts(storage, disk, clock)
    ops.fake.set_failure("/api/v4/posts", 503, count=50)
    await alerts.check()
    disk.percent["/var"] = 95.0
    clock.advance(minutes=1)
    await alerts.check()
    disk.percent["/data"] = 99.0
    clock.advance(minutes=1)
    await alerts.check()
    assert ops.posts() == []
    assert alerts.store.pending_count() == 3
    ops.fake._failures.clear()  # Mattermost heals
    for _ in range(20):
        clock.advance(minutes=10)
        await alerts.drain()
    got = [(p["message"].split(" ")[0], p["message"].split(" ")[4]) for p in ops.posts()]
    assert got == [("WARNING", "web-01:/var"), ("CRITICAL", "web-01:/var"), ("CRITICAL", "web-01:/data")]
    assert alerts.store.pending_count() == 0


async def test_a_hung_path_times_out_and_the_other_paths_are_still_reported(storage: Storage, ops: Ops) -> None:
    disk, clock = Disk(var=None, data=95.0), Clock()
    try:
        messages = await ops.alerts(storage, disk, clock).check()
        kinds = {(m.path, m.kind, m.level) for m in messages}
        assert ("/data", "space", "critical") in kinds
        assert ("/var", "read", "unreadable") in kinds
        assert any("timed out" in p["message"] for p in ops.posts())
    finally:
        disk.release.set()


async def test_two_processes_on_one_database_one_posts_and_the_other_takes_over_after_the_lease(
        mariadb_url: str, ops: Ops) -> None:
    from bot import migrate

    engine_a, engine_b = make_engine(mariadb_url), make_engine(mariadb_url)
    migrate.upgrade(engine_a)
    disk, clock = Disk(var=85.0, data=40.0), Clock()
    a = ops.alerts(Storage(engine_a), disk, clock, holder="process-a")
    b = ops.alerts(Storage(engine_b), disk, clock, holder="process-b")
    await asyncio.gather(a.check(), b.check())
    assert len(ops.posts()) == 1
    assert {a.fencing is not None, b.fencing is not None} == {True, False}
    leader, other = (a, b) if a.fencing is not None else (b, a)
    # The leader dies (no more checks); within the lease the other still may not post.
    disk.percent["/var"] = 95.0
    clock.advance(seconds=60)
    await other.check()
    assert len(ops.posts()) == 1
    clock.advance(seconds=180)  # past the lease (3 intervals of 60 s)
    await other.check()
    assert [p["message"].split(" ")[0] for p in ops.posts()] == ["WARNING", "CRITICAL"]
    # The old leader coming back finds the lease gone and posts nothing.
    clock.advance(seconds=1)
    await leader.check()
    assert len(ops.posts()) == 2
    engine_a.dispose()
    engine_b.dispose()


async def test_thresholds_changed_at_run_time_take_effect_at_the_next_check(storage: Storage, ops: Ops) -> None:
    admin, _ = storage.ensure_user("mm-ada", "ada", "admin")
    disk, clock = Disk(var=70.0, data=40.0), Clock()
    alerts = ops.alerts(storage, disk, clock)
    assert await alerts.check() == []
    storage.set_setting(admin, "alerts.warn_percent", "65")
    clock.advance(minutes=1)
    assert [(m.path, m.level) for m in await alerts.check()] == [("/var", "warning")]
    assert "alerts.warn_percent: (default) -> 65" in storage.recent_audit(admin)[0].detail


def post_json(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def test_end_to_end_a_real_directory_over_threshold_alerts_within_two_intervals_and_buttons_work(
        storage: Storage, tmp_path: Path) -> None:
    fake = FakeMattermost()
    base = await fake.start()
    world = seed(fake, people=("oncall",), channels={"ops-alerts": ("recbot", "oncall")})
    bot, oncall, channel = world.bot, world.users["oncall"], world.channels["ops-alerts"]
    used = psutil.disk_usage(str(tmp_path)).percent
    port = free_port()
    config = Config(server=ServerConfig(port=port, public_url=f"http://127.0.0.1:{port}"),
                    mattermost=MattermostConfig(url=base, bot_token=bot["token"], team="ops"),
                    alerts=AlertsConfig(channel="ops-alerts", paths=(str(tmp_path),), interval_seconds=5,
                                        warn_percent=max(0.5, used - 1), critical_percent=99.99))
    services = Services(storage, config, Gateway(config))
    services.alerts = Alerts(storage, config, services.gateway)
    runner = web.AppRunner(build_app(services))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        post = await fake.wait_for_post(lambda p: p["channel_id"] == channel["id"] and "WARNING" in p["message"],
                                        timeout=12)
        assert str(tmp_path) in post["message"] and post["file_ids"]
        status, _ = await fake.click(oncall, post["id"], "ack")
        assert status == 200
        ack = await fake.wait_for_post(lambda p: p.get("ephemeral") and p["user_id"] == oncall["id"])
        assert ack["message"].startswith("Acknowledged")
        state = services.alerts.store.states()[(str(tmp_path), "space")]
        assert state.acknowledged
        # A forged click: the context changed after signing.
        context = post["props"]["attachments"][0]["actions"][1]["integration"]["context"]
        forged = {**context, "path": "/"}
        loop = asyncio.get_running_loop()
        status, body = await loop.run_in_executor(None, post_json, f"http://127.0.0.1:{port}/mattermost/action",
                                                  {"user_id": oncall["id"], "context": forged})
        assert status == 403 and "signature is not valid" in body["ephemeral_text"]
        unsigned = {k: v for k, v in context.items() if k != "sig"}
        status, _ = await loop.run_in_executor(None, post_json, f"http://127.0.0.1:{port}/mattermost/action",
                                               {"user_id": oncall["id"], "context": unsigned})
        assert status == 403
        assert services.alerts.store.states()[(str(tmp_path), "space")].snoozed_until is None
        assert sign(services.alerts.secret(), unsigned) == context["sig"]
        # Clicks go the one way every event goes, so /metrics counts them like commands.
        _, metrics = await loop.run_in_executor(None, get, f"http://127.0.0.1:{port}/metrics")
        assert 'recbot_commands_total{command="alert button",outcome="ok"} 1' in metrics
        assert 'recbot_commands_total{command="alert button",outcome="user_error"} 2' in metrics
    finally:
        await runner.cleanup()
        await fake.stop()


def test_sampler_reads_a_real_directory(tmp_path: Path) -> None:
    sample = asyncio.run(Sampler().sample((str(tmp_path),), datetime.now(UTC)))[0]
    assert sample.readable and 0 < sample.used_percent < 100 and sample.total_bytes > 0
    missing = asyncio.run(Sampler().sample((str(tmp_path / "missing"),), datetime.now(UTC)))[0]
    assert not missing.readable and "No such file" in missing.error



async def test_an_alert_channel_created_after_start_up_still_gets_the_queued_alerts(storage: Storage,
                                                                                   ops: Ops) -> None:
    from dataclasses import replace

    late = replace(ops.config, alerts=replace(ops.config.alerts, channel="late-alerts"))
    gateway = Gateway(late)
    await gateway.start()
    try:
        disk, clock = Disk(var=85.0, data=40.0), Clock()
        alerts = Alerts(storage, late, gateway, host="web-01", holder="p1", clock=clock,
                        sampler=Sampler(disk.read, timeout=0.3))
        await alerts.check()
        assert alerts.store.pending_count() == 1
        channel = ops.fake.add_channel(ops.fake.find_team("ops"), "late-alerts")
        ops.fake.add_member(channel, ops.bot)
        assert await alerts.drain() == 1
        assert [p["message"][:7] for p in ops.fake.posts if p["channel_id"] == channel["id"]] == ["WARNING"]
    finally:
        await gateway.close()


def context_of(post: dict, action: str) -> dict:
    actions = post["props"]["attachments"][0]["actions"]
    return next(a for a in actions if a["id"] == action)["integration"]["context"]


async def test_a_replayed_click_from_an_earlier_episode_changes_nothing(storage: Storage, ops: Ops) -> None:
    oncall = ops.fake.add_user("oncall")
    known, _ = storage.ensure_user(oncall["id"], "oncall", "member")
    disk, clock = Disk(var=85.0, data=40.0), Clock()
    alerts = ops.alerts(storage, disk, clock)
    await alerts.check()
    old_ack, old_snooze = context_of(ops.posts()[0], "ack"), context_of(ops.posts()[0], "snooze")
    disk.percent["/var"] = 50.0  # resolved
    clock.advance(minutes=1)
    await alerts.check()
    disk.percent["/var"] = 86.0  # a new warning episode at the same level, same path
    clock.advance(minutes=1)
    await alerts.check()
    for old in (old_ack, old_snooze):
        assert "earlier episode" in alerts.act(old, oncall["id"])
    state = alerts.store.states()[("/var", "space")]
    assert not state.acknowledged and state.snoozed_until is None
    # A context without the episode and time (as signed by an older recbot) is refused too.
    bare = {k: v for k, v in old_ack.items() if k not in ("episode", "issued", "sig")}
    bare["sig"] = sign(alerts.secret(), bare)
    with pytest.raises(UserError, match="older recbot"):
        alerts.act(bare, oncall["id"])
    text = alerts.act(context_of(ops.posts()[-1], "ack"), oncall["id"])
    assert text.startswith("Acknowledged") and alerts.store.states()[("/var", "space")].acknowledged
    [entry] = storage.recent_audit(storage.ensure_user("mm-ada", "ada", "admin")[0], 1)
    assert entry.actor == known.username and oncall["id"] in entry.detail and "episode" in entry.detail


async def test_a_button_older_than_a_week_is_refused(storage: Storage, ops: Ops) -> None:
    disk, clock = Disk(var=85.0, data=40.0), Clock()
    alerts = ops.alerts(storage, disk, clock)
    await alerts.check()
    clock.advance(days=8)
    text = alerts.act(context_of(ops.posts()[0], "snooze"), "someone")
    assert "too old" in text and alerts.store.states()[("/var", "space")].snoozed_until is None


def test_admin_status_answers_despite_a_hung_path(storage: Storage) -> None:
    from bot.config import MattermostConfig
    from tests.botserver import BotServer, SlashClient

    disk = Disk(var=None, data=40.0)
    config = Config(mattermost=MattermostConfig(slash_tokens=("t",)), admins=("ada",),
                    alerts=AlertsConfig(paths=("/var", "/data")))
    bot = BotServer(Services(storage, config, sampler=Sampler(disk.read, timeout=0.5))).start()
    try:
        mm = SlashClient(bot.url, "t")
        first = mm.text("ada", "admin status")
        assert "| /var | cannot read: timed out after 0.5 s |" in first and "| /data | 40.0% |" in first
        # The stuck read is not started again: the next status says so at once.
        assert "still not answering" in mm.text("ada", "admin status")
    finally:
        disk.release.set()
        bot.stop()


def test_a_click_that_comes_without_a_name_renames_no_one(storage: Storage) -> None:
    from bot.commands import dispatcher
    from bot.dispatch import BUTTON, Event
    from bot.mattermost.slash import SlashRequest

    known, _ = storage.ensure_user("mm-oncall", "oncall", "member")
    config = Config(alerts=AlertsConfig(channel="ops-alerts", paths=("/var",)))
    services = Services(storage, config, None, Alerts(storage, config, None, host="web-01", holder="p1"))
    event = Event(SlashRequest(user_id="mm-oncall", user_name="", text=""), source=BUTTON,
                  context={"action": "ack", "sig": "not-a-signature"})
    result = dispatcher().handle(services, event)
    assert "signature is not valid" in result.reply.text
    assert storage.user_by_mm_id("mm-oncall") == known
