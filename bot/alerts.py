"""Disk alerts at run time: sample each path (with a timeout), evaluate, queue, post in order, and
handle the Acknowledge / Snooze buttons.

The rules live in alert_rules (pure); the state in alert_store (database); this module wires them
to the clock, the disk and Mattermost.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil

from bot import alert_rules
from bot import settings as runtime_settings
from bot.alert_rules import AlertMessage, Sample, Thresholds
from bot.alert_store import AlertStore, LeaseLost
from bot.charts import usage_chart
from bot.config import Config
from bot.storage import Storage

log = logging.getLogger(__name__)

SECRET_SETTING = "alerts.action_secret"  # noqa: S105 (the settings key; the secret is generated)
SAMPLE_TIMEOUT = 10.0
MAX_BACKOFF = timedelta(minutes=10)


def now_utc() -> datetime:
    return datetime.now(UTC)


def read_disk(path: str, at: datetime) -> Sample:
    """Space as psutil computes it, inodes from statvfs (0 inodes: nothing to watch)."""
    usage = psutil.disk_usage(path)
    st = os.statvfs(path)
    return Sample(path=path, at=at, used_percent=usage.percent, total_bytes=usage.total, used_bytes=usage.used,
                  free_bytes=usage.free, inodes_total=st.f_files, inodes_used=st.f_files - st.f_ffree)


class Sampler:
    """Reads paths in worker threads; a hung path times out without holding up the others.

    A path whose last read is still stuck (a dead network mount) is not read again until that read
    returns, so hung threads cannot pile up.
    """

    def __init__(self, read: Callable[[str, datetime], Sample] = read_disk, timeout: float = SAMPLE_TIMEOUT) -> None:
        self.read = read
        self.timeout = timeout
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="disk")
        self.stuck: dict[str, asyncio.Future] = {}

    async def sample(self, paths: tuple[str, ...], at: datetime) -> list[Sample]:
        return list(await asyncio.gather(*(self._one(p, at) for p in paths)))

    async def _one(self, path: str, at: datetime) -> Sample:
        previous = self.stuck.get(path)
        if previous is not None and not previous.done():
            return Sample.unreadable(path, at, "still not answering since an earlier check (hung mount?)")
        future = asyncio.get_running_loop().run_in_executor(self.pool, self.read, path, at)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            self.stuck[path] = future
            return Sample.unreadable(path, at, f"timed out after {self.timeout:g} s")
        except OSError as exc:
            return Sample.unreadable(path, at, exc.strerror or str(exc))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def sign(secret: str, context: dict[str, Any]) -> str:
    payload = json.dumps({k: v for k, v in context.items() if k != "sig"}, sort_keys=True, separators=(",", ":"))
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def signature_ok(secret: str, context: dict[str, Any]) -> bool:
    given = context.get("sig")
    return isinstance(given, str) and hmac.compare_digest(given, sign(secret, context))


@dataclass
class Alerts:
    storage: Storage
    config: Config
    gateway: Any = None
    host: str = field(default_factory=socket.gethostname)
    holder: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}")
    clock: Callable[[], datetime] = now_utc
    sampler: Sampler = field(default_factory=Sampler)
    channel_id: str = ""

    def __post_init__(self) -> None:
        self.store = AlertStore(self.storage, self.host)
        self.fencing: int | None = None
        self._secret: str | None = None

    # ---- settings ------------------------------------------------------------------------------

    def current(self) -> dict[str, float]:
        return runtime_settings.effective(self.config, self.storage.settings())

    def thresholds(self, values: dict[str, float]) -> Thresholds:
        return Thresholds(values["alerts.warn_percent"], values["alerts.critical_percent"],
                          values["alerts.hysteresis_percent"], values["alerts.repeat_minutes"])

    def lease_duration(self, interval: float) -> timedelta:
        return timedelta(seconds=max(3 * interval, 30))

    def secret(self) -> str:
        """The HMAC key for button contexts: made once, kept in the database for every process."""
        if self._secret is None:
            stored = self.storage.settings().get(SECRET_SETTING)
            if not stored:
                self.storage.store_internal(SECRET_SETTING, secrets.token_hex(32))
                stored = self.storage.settings()[SECRET_SETTING]
            self._secret = stored
        return self._secret

    # ---- one check -----------------------------------------------------------------------------

    async def check(self) -> list[AlertMessage]:
        """Sample, evaluate and queue, if this process holds the host's lease; then post what is due."""
        loop = asyncio.get_running_loop()
        values = await loop.run_in_executor(None, self.current)
        now = self.clock()
        try:
            self.fencing = await loop.run_in_executor(
                None, self.store.acquire, self.holder, now, self.lease_duration(values["alerts.interval_seconds"]))
        except Exception as exc:  # a deadlock or a lost connection: try again next interval
            log.warning("alerts: could not take the lease: %s", exc)
            self.fencing = None
        if self.fencing is None:
            return []
        samples = await self.sampler.sample(self.config.alerts.paths, now)
        states = await loop.run_in_executor(None, self.store.states)
        history = await loop.run_in_executor(None, self.store.history, self.config.alerts.paths,
                                             now - timedelta(hours=24))
        recent = {p: [(at, v) for at, v in h if at >= now - timedelta(hours=1)] for p, h in history.items()}
        thresholds = self.thresholds(values)
        new_states, messages = alert_rules.evaluate(samples, states, thresholds, now, recent, self.host)
        queued = [(m, self._chart(m, samples, history, thresholds, now)) for m in messages]
        try:
            await loop.run_in_executor(None, self.store.commit_check, self.holder, self.fencing, samples,
                                       new_states, queued, now)
        except LeaseLost as exc:
            log.warning("alerts: %s; this process stops posting", exc)
            self.fencing = None
            return []
        await self.drain()
        return messages

    def _chart(self, message: AlertMessage, samples: list[Sample], history: dict, thresholds: Thresholds,
               now: datetime) -> bytes | None:
        if message.kind == "read":
            return None
        usage = [(s.path, s.used_percent) for s in samples if s.readable]
        usage.sort(key=lambda item: item[0] != message.path)  # the alerting path first
        try:
            return usage_chart(message.text.split(" (")[0], usage, history.get(message.path, []),
                               thresholds.warn_percent, thresholds.critical_percent, now)
        except Exception:  # a chart is a courtesy: the text says it all
            log.exception("alerts: drawing the chart failed")
            return None

    # ---- posting, in order, with backoff -------------------------------------------------------

    def buttons(self, path: str, kind: str, level: str) -> dict[str, Any]:
        url = self.config.server.public_url.rstrip("/") + "/mattermost/action"
        actions = []
        for action, name in (("ack", "Acknowledge"), ("snooze", "Snooze 1 h")):
            context = {"action": action, "host": self.host, "path": path, "kind": kind, "level": level}
            context["sig"] = sign(self.secret(), context)
            actions.append({"id": action, "name": name, "type": "button",
                            "integration": {"url": url, "context": context}})
        return {"attachments": [{"fallback": "Acknowledge or snooze this alert", "actions": actions}]}

    async def drain(self) -> int:
        """Post due messages oldest first; the first failure stops the round (order is kept)."""
        if self.gateway is None or self.fencing is None:
            return 0
        if not self.channel_id:
            # The channel may be created, or the bot connected, after start-up: look again.
            self.channel_id = await self.gateway.alert_channel_id()
            if not self.channel_id:
                return 0
        loop = asyncio.get_running_loop()
        sent = 0
        while True:
            now = self.clock()
            item = await loop.run_in_executor(None, self.store.next_due, now)
            if item is None:
                return sent
            try:
                file_ids = [await self.gateway.upload(self.channel_id, "disk.png", item.chart)] if item.chart else []
                props = self.buttons(item.path, item.kind, item.level) if item.level != "ok" else None
                post = await self.gateway.post(self.channel_id, item.message, props=props, file_ids=file_ids)
            except Exception as exc:
                delay = min(timedelta(seconds=5 * 2 ** min(item.attempts, 10)), MAX_BACKOFF)
                log.warning("alerts: posting failed (attempt %d, next in %s): %s", item.attempts + 1, delay, exc)
                await loop.run_in_executor(None, self.store.mark_failed, item.id, str(exc), now + delay)
                return sent
            await loop.run_in_executor(None, self.store.mark_sent, item.id, post["id"], now)
            sent += 1

    # ---- the buttons ---------------------------------------------------------------------------

    def act(self, context: dict[str, Any], username: str) -> tuple[int, str]:
        """(HTTP status, ephemeral text) for a button click; a bad signature changes nothing."""
        if not signature_ok(self.secret(), context):
            return 403, "This button's signature is not valid, so nothing was changed."
        action, path, kind, level = (context.get(k) for k in ("action", "path", "kind", "level"))
        if context.get("host") != self.host:
            return 200, f"That alert belongs to host {context.get('host')}; its own recbot handles it."
        now = self.clock()
        if action == "ack":
            change = lambda st: alert_rules.acknowledge(st, now, level=level)  # noqa: E731
        elif action == "snooze":
            change = lambda st: alert_rules.snooze(st, now, 1, level=level)  # noqa: E731
        else:
            return 400, "Unknown action; nothing was changed."
        before = {k: v for k, v in self.store.states().items() if k == (path, kind)}
        after = self.store.update_state(path, kind, change, now)
        if after is None or before.get((path, kind)) == after:
            return 200, f"{path} is no longer at {level}; nothing to {'acknowledge' if action == 'ack' else 'snooze'}."
        self.storage.audit_system(f"alert {action}", f"{self.host}:{path} {kind} {level} by @{username}")
        if action == "ack":
            return 200, f"Acknowledged: no repeats for {path} until its level changes."
        return 200, f"Snoozed: no repeats for {path} for 1 hour."
