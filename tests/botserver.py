"""The bot's real aiohttp server on 127.0.0.1, in a thread, and a client that speaks like Mattermost."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from multidict import MultiDict

from bot.app import build_app, reply_json
from bot.commands import dispatcher as build_dispatcher
from bot.context import Services
from bot.dispatch import Dispatcher
from bot.mattermost.slash import SlashRequest
from bot.metrics import Metrics


class BotServer:
    """Runs build_app(services) on a free port until stop()."""

    def __init__(self, services: Services, dispatcher: Dispatcher | None = None,
                 counters: Metrics | None = None) -> None:
        self.services = services
        self.dispatcher = dispatcher
        self.counters = counters
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(build_app(self.services, self.dispatcher, counters=self.counters))
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    def start(self) -> BotServer:
        self._thread.start()
        assert self._ready.wait(10), "the bot server did not start"
        return self

    def run(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the server's own event loop (where its alerts and gateway live)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)


@dataclass
class SlashClient:
    """Sends slash requests shaped field by field like server/channels/app/command.go does."""

    url: str
    token: str
    team_id: str = "teamid00000000000000000000"
    channel_id: str = "chanid00000000000000000000"
    channel_name: str = "town-square"
    users: dict[str, str] = field(default_factory=dict)  # username -> Mattermost user id
    channels: dict[str, str] = field(default_factory=dict)  # channel name -> id

    def user_id(self, name: str) -> str:
        return self.users.setdefault(name, f"{name:x<26}"[:26])

    def form(self, user: str, text: str, *, token: str | None = None) -> list[tuple[str, str]]:
        fields = [
            ("channel_id", self.channel_id), ("channel_name", self.channel_name), ("command", "/rec"),
            ("response_url", ""), ("team_domain", "ops"), ("team_id", self.team_id), ("text", text),
            ("token", self.token if token is None else token), ("trigger_id", "trig"),
            ("user_id", self.user_id(user)), ("user_name", user),
        ]
        # Mattermost adds the mentions it recognised, as repeated fields in step.
        for word in text.split():
            if word.startswith("@") and word[1:] in self.users:
                fields += [("user_mentions", word[1:]), ("user_mentions_ids", self.users[word[1:]])]
            if word.startswith("~") and word[1:] in self.channels:
                fields += [("channel_mentions", word[1:]), ("channel_mentions_ids", self.channels[word[1:]])]
        return fields

    def send(self, user: str, text: str, *, token: str | None = None, method: str = "POST",
             form: list[tuple[str, str]] | None = None) -> tuple[int, Any]:
        fields = form if form is not None else self.form(user, text, token=token)
        data = urllib.parse.urlencode(fields).encode()
        headers = {"Accept": "application/json",
                   "Authorization": f"Token {self.token if token is None else token}"}
        target = f"{self.url}/mattermost/command"
        if method == "GET":
            request = urllib.request.Request(f"{target}?{data.decode()}", headers=headers, method="GET")
        else:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            request = urllib.request.Request(target, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            body = err.read()
            return err.code, (json.loads(body) if body.startswith(b"{") else body.decode())

    def text(self, user: str, text: str) -> str:
        status, body = self.send(user, text)
        assert status == 200, body
        assert body["response_type"] == "ephemeral", body
        return body["text"]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class InProcessClient(SlashClient):
    """The same requests as SlashClient, handed straight to the dispatcher (no socket, no token check):
    for tests of what commands do. The HTTP door has its own tests (token, formats, response_url)."""

    services: Services | None = None
    dispatcher: Dispatcher | None = None

    def send(self, user: str, text: str, *, token: str | None = None, method: str = "POST",
             form: list[tuple[str, str]] | None = None) -> tuple[int, Any]:
        fields = form if form is not None else self.form(user, text, token=token)
        request = SlashRequest.from_fields(MultiDict(fields))
        assert self.services is not None
        result = (self.dispatcher or build_dispatcher()).handle(self.services, request)
        return 200, reply_json(result.reply)


async def serve_here(services: Services, port: int) -> web.AppRunner:
    """The bot's app on 127.0.0.1:port in the running event loop (where the fake and the gateway live)."""
    runner = web.AppRunner(build_app(services))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def until_connected(services: Services, also: Callable[[], bool] = lambda: True, within: float = 10.0) -> None:
    """Until the bot's WebSocket is authenticated (and `also` holds, say the command is registered)."""
    for _ in range(int(within / 0.02)):
        if services.gateway is not None and services.gateway.connected.is_set() and also():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the bot did not connect within {within:g} s")


ROOT = Path(__file__).resolve().parent.parent


def health(port: int) -> dict | None:
    """/healthz on a new connection, so the kernel picks the worker afresh."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Serving:
    """`python -m bot serve` with REC_* settings, its log in a file, stopped with SIGTERM."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log = tmp_path / "serve.log"
        full = {**os.environ, "REC_CONFIG": str(ROOT / "config.yaml"), "PYTHONPATH": str(ROOT),
                "REC_SERVER__PORT": str(self.port), "REC_SERVER__PUBLIC_URL": f"http://127.0.0.1:{self.port}",
                **env}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "bot", "serve"], cwd=tmp_path, env=full,
                                         stdout=out, stderr=subprocess.STDOUT)

    def workers_seen(self, want: int, tries: int = 300) -> set[int]:
        seen: set[int] = set()
        deadline = time.monotonic() + 60
        while len(seen) < want and tries and time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            body = health(self.port)
            if body is None:
                time.sleep(0.1)
                continue
            seen.add(body["worker"])
            tries -= 1
        return seen

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def text(self) -> str:
        return self.log.read_text(errors="replace")
