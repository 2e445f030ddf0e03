"""A command slower than Mattermost's advised 3 s is acknowledged at once and answered via response_url."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from aiohttp import web

from bot import app as app_module
from bot.commands import admin, help, records, share
from bot.context import Context, Reply, Services
from bot.dispatch import Dispatcher, Router
from bot.storage import Storage
from tests.botserver import BotServer, SlashClient
from tests.helpers import TOKEN, config


class Receiver:
    """A response_url endpoint (what Mattermost's /hooks/commands/<id> is) on a real socket."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.got = threading.Event()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def hook(request: web.Request) -> web.Response:
            self.bodies.append(await request.json())
            self.got.set()
            return web.Response(text="ok")

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            app = web.Application()
            app.router.add_post("/hooks/commands/abc", hook)
            self.runner = web.AppRunner(app)
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hooks/commands/abc"
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def test_a_slow_command_is_acknowledged_fast_then_answered_at_response_url(
        storage: Storage, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_module, "ANSWER_WITHIN", 0.3)
    slow = Router()

    @slow.command("slow", "", "takes its time")
    def _slow(ctx: Context, rest: str) -> Reply:
        time.sleep(1.0)
        return Reply(f"done slowly for {ctx.caller.username}")

    dispatcher = Dispatcher([records.router, share.router, help.router, admin.router, slow])
    bot = BotServer(Services(storage, config()), dispatcher).start()
    try:
        mm = SlashClient(bot.url, TOKEN)
        form = [(k, receiver.url if k == "response_url" else v) for k, v in mm.form("bob", "slow")]
        started = time.perf_counter()
        status, body = mm.send("bob", "", form=form)
        elapsed = time.perf_counter() - started
        assert status == 200 and "Working on it" in body["text"]
        assert elapsed < 1.0
        assert receiver.got.wait(10)
        assert receiver.bodies == [{"response_type": "ephemeral", "text": "done slowly for bob"}]
        # A fast command still answers in the response itself.
        assert mm.text("bob", "help").startswith("**recbot")
    finally:
        bot.stop()


def test_the_bare_request_parser_reads_repeated_mentions_in_order() -> None:
    from multidict import MultiDict

    from bot.mattermost.slash import SlashRequest

    form = MultiDict([("user_id", "u"), ("user_name", "bob"), ("text", "admin grant @Ann @carl"),
                      ("user_mentions", "Ann"), ("user_mentions", "carl"),
                      ("user_mentions_ids", "id-ann"), ("user_mentions_ids", "id-carl"),
                      ("channel_mentions", "ops"), ("channel_mentions_ids", "id-ops")])
    req = SlashRequest.from_fields(form, "Token abc")
    assert req.user_mentions == {"ann": "id-ann", "carl": "id-carl"}
    assert req.channel_mentions == {"ops": "id-ops"}
    assert req.token == "abc"


def slow_dispatcher(seconds: float) -> Dispatcher:
    slow = Router()

    @slow.command("slow", "", "takes its time")
    def _slow(ctx: Context, rest: str) -> Reply:
        time.sleep(seconds)
        return Reply(f"done slowly for {ctx.caller.username}")

    return Dispatcher([records.router, share.router, help.router, admin.router, slow])


def test_a_response_url_outside_the_configured_mattermost_is_never_called(
        storage: Storage, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from bot.config import MattermostConfig

    monkeypatch.setattr(app_module, "ANSWER_WITHIN", 0.3)
    elsewhere = replace(config(), mattermost=MattermostConfig(url="http://chat.invalid:8065", bot_token="x",
                                                               team="ops", slash_tokens=(TOKEN,)))
    bot = BotServer(Services(storage, elsewhere), slow_dispatcher(1.0)).start()
    try:
        mm = SlashClient(bot.url, TOKEN)
        form = [(k, receiver.url if k == "response_url" else v) for k, v in mm.form("bob", "slow")]
        status, body = mm.send("bob", "", form=form)
        # Not Mattermost's own hook: the bot answers in the response itself, however long it takes.
        assert status == 200 and body["text"] == "done slowly for bob"
        assert not receiver.got.wait(1.5)
    finally:
        bot.stop()


def test_a_hanging_response_url_does_not_hold_the_stop(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_module, "ANSWER_WITHIN", 0.2)
    hanging = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    url = f"http://127.0.0.1:{hanging.getsockname()[1]}/hooks/commands/abc"
    bot = BotServer(Services(storage, config()), slow_dispatcher(0.5)).start()
    try:
        mm = SlashClient(bot.url, TOKEN)
        form = [(k, url if k == "response_url" else v) for k, v in mm.form("bob", "slow")]
        status, body = mm.send("bob", "", form=form)
        assert status == 200 and "Working on it" in body["text"]
        time.sleep(1.0)  # the late answer is now waiting on the hanging hook
    finally:
        started = time.perf_counter()
        bot.stop()
        hanging.close()
    assert time.perf_counter() - started < app_module.LATE_ANSWER_GRACE + 3
