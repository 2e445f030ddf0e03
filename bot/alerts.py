"""Disk alerts at run time: sample each path (with a timeout), evaluate, queue, post each alert exactly
once, report the loop's own health, and handle the Acknowledge / Snooze buttons.

The rules live in alert_rules (pure); the state in alert_store (database); this module wires them
to the clock, the disk and Mattermost.

Exactly once: every queued post has a key. An attempt is counted in the database before it is made;
the post carries the key as Mattermost's `pending_post_id` (the server answers a repeat within 30 s
with the post it already made) and as a prop. An attempt after one whose outcome was not seen (an
error, a lost answer, a kill) first looks for the key in the channel. Only the lease holder posts,
one drain at a time.
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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bot import alert_rules
from bot import settings as runtime_settings
from bot.alert_rules import AlertMessage, Sample, Thresholds
from bot.alert_store import AlertStore, Health, LeaseLost, Outgoing
from bot.charts import usage_chart
from bot.config import Config
from bot.disks import Sampler
from bot.mattermost import permanent
from bot.metrics import Metrics
from bot.storage import Storage

log = logging.getLogger(__name__)

SECRET_SETTING = "alerts.action_secret"  # noqa: S105 (the settings key; the secret is generated)
MAX_BACKOFF = timedelta(minutes=10)
LOOK_BACK = timedelta(minutes=10)  # how far before an item's queueing its post is looked for (clock skew)
FAILING_AFTER = 3  # failed checks in a row before the channel is told
BUTTON_MAX_AGE = timedelta(days=7)


def now_utc() -> datetime:
    return datetime.now(UTC)


def one_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def sign(secret: str, context: dict[str, Any]) -> str:
    payload = json.dumps({k: v for k, v in context.items() if k != "sig"}, sort_keys=True, separators=(",", ":"))
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def signature_ok(secret: str, context: dict[str, Any]) -> bool:
    given = context.get("sig")
    return isinstance(given, str) and given.isascii() and hmac.compare_digest(given, sign(secret, context))


def _backoff(attempts: int) -> timedelta:
    return min(timedelta(seconds=5 * 2 ** min(attempts, 10)), MAX_BACKOFF)


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
    metrics: Metrics | None = None

    def __post_init__(self) -> None:
        self.store = AlertStore(self.storage, self.host)
        self.fencing: int | None = None
        self._secret: str | None = None
        self._drain_lock = asyncio.Lock()
        self._health: Health | None = None
        self._notice_attempts = 0

    def _count(self, event: str) -> None:
        if self.metrics is not None:
            self.metrics.count(event)

    # ---- settings ------------------------------------------------------------------------------

    def current(self) -> dict[str, float]:
        return runtime_settings.effective(self.config, self.storage.settings()).values

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
        """Sample, evaluate and queue, if this process holds the host's lease; then post what is due.

        A failure is counted, logged in one line and kept for /healthz and `admin status`; after
        FAILING_AFTER in a row the alert channel is told, and told again when checks work again.
        """
        now = self.clock()
        try:
            messages = await self._check(now)
        except LeaseLost as exc:
            log.warning("alerts: %s; this process stops posting", exc)
            self.fencing = None
            return []
        except Exception as exc:  # whatever broke, the loop must say so rather than go quiet
            await self._failed(now, exc)
            return []
        if self.fencing is not None:
            await self._succeeded(now)
        try:
            await self.drain()
        except Exception as exc:
            log.warning("alerts: draining the outbox failed: %s", one_line(exc))
        return messages

    async def _check(self, now: datetime) -> list[AlertMessage]:
        loop = asyncio.get_running_loop()
        values = await loop.run_in_executor(None, self.current)
        self.fencing = await loop.run_in_executor(
            None, self.store.acquire, self.holder, now, self.lease_duration(values["alerts.interval_seconds"]))
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
        await loop.run_in_executor(None, self.store.commit_check, self.holder, self.fencing, samples,
                                   new_states, queued, now)
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

    # ---- the loop's own health -----------------------------------------------------------------

    async def _load_health(self) -> Health:
        if self._health is None:
            try:
                self._health = await asyncio.get_running_loop().run_in_executor(None, self.store.health)
            except Exception:  # the database may be what is failing; start counting from here
                self._health = None
        return self._health or Health(self.clock(), None, None, 0, False)

    async def _failed(self, now: datetime, exc: BaseException) -> None:
        reason = one_line(exc)
        self._count("alert_checks_failed")
        before = await self._load_health()
        health = Health(now, before.last_ok_at, reason, before.failures + 1, before.failing_posted)
        log.error("alerts: the check on %s failed (%d in a row): %s", self.host, health.failures, reason)
        if health.failures >= FAILING_AFTER and not health.failing_posted:
            health = replace(health, failing_posted=await self._tell_failing(health))
        self._health = health
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.store.save_health, health)
        except Exception as save_exc:
            log.warning("alerts: could not store the loop's health: %s", one_line(save_exc))

    async def _tell_failing(self, health: Health) -> bool:
        """Post "failing" straight to the channel (the database may be down, so not via the outbox)."""
        if self.gateway is None or not await self._channel():
            return False
        since = f" (last good check {health.last_ok_at:%Y-%m-%d %H:%M} UTC)" if health.last_ok_at else ""
        reason = alert_rules.plain(health.last_error or "")
        text = (f"Disk alerts on {alert_rules.plain(self.host)} are failing: {reason}{since}. "
                f"{health.failures} checks in a row failed; another message follows once a check succeeds.")
        seed = f"{self.host}:failing:{health.last_ok_at.isoformat() if health.last_ok_at else '-'}"
        notice = Outgoing(0, "", "health", "failing", text, None, self._notice_attempts, 0,
                          hashlib.sha256(seed.encode()).hexdigest()[:26], None, health.last_check_at)
        self._notice_attempts += 1
        try:
            await self._deliver(notice, self.clock())
        except Exception as exc:
            log.warning("alerts: telling the channel that checks fail did not work: %s", one_line(exc))
            return False
        self._notice_attempts = 0
        return True

    async def _succeeded(self, now: datetime) -> None:
        before = await self._load_health()
        notice = None
        if before.failing_posted:
            notice = (f"Disk alerts on {alert_rules.plain(self.host)} work again: the check at "
                      f"{now:%Y-%m-%d %H:%M} UTC succeeded after {before.failures} failed.")
        health = Health(now, now, None, 0, False)
        # The "work again" notice goes through the outbox, in one transaction with the health row.
        await asyncio.get_running_loop().run_in_executor(None, self.store.record_ok, health, notice)
        self._health = health

    def health_report(self) -> dict[str, Any]:
        """For /healthz: ok, starting, or failing with the time of the last good check (no details)."""
        health = self.store.health()
        if health is None:
            return {"status": "starting"}
        interval = self.current()["alerts.interval_seconds"]
        late = self.clock() - health.last_check_at > self.lease_duration(interval) + timedelta(seconds=interval)
        last_ok = health.last_ok_at.isoformat() if health.last_ok_at else None
        if health.failures or late:
            return {"status": "failing", "last_ok": last_ok, "last_check": health.last_check_at.isoformat()}
        return {"status": "ok", "last_ok": last_ok}

    # ---- posting, in order, exactly once -------------------------------------------------------

    def buttons(self, item: Outgoing, now: datetime) -> dict[str, Any]:
        url = self.config.server.public_url.rstrip("/") + "/mattermost/action"
        actions = []
        for action, name in (("ack", "Acknowledge"), ("snooze", "Snooze 1 h")):
            context: dict[str, Any] = {"action": action, "host": self.host, "path": item.path, "kind": item.kind,
                                       "level": item.level, "episode": item.episode,
                                       "issued": int(now.timestamp())}
            context["sig"] = sign(self.secret(), context)
            actions.append({"id": action, "name": name, "type": "button",
                            "integration": {"url": url, "context": context}})
        return {"attachments": [{"fallback": "Acknowledge or snooze this alert", "actions": actions}]}

    async def _channel(self) -> str:
        if not self.channel_id and self.gateway is not None:
            # The channel may be created, or the bot connected, after start-up: look again.
            self.channel_id = await self.gateway.alert_channel_id()
        return self.channel_id

    async def drain(self) -> int:
        """Post due messages oldest first. A failure that may pass stops the round (order is kept);
        a permanent refusal sets that post aside and the round goes on."""
        if self.gateway is None or self.fencing is None:
            return 0
        async with self._drain_lock:
            if not await self._channel():
                return 0
            return await self._drain()

    async def _drain(self) -> int:
        loop = asyncio.get_running_loop()
        sent = 0
        while self.fencing is not None:
            now = self.clock()
            item = await loop.run_in_executor(None, self.store.next_due, now)
            if item is None:
                break
            try:
                if not await loop.run_in_executor(None, self.store.begin_attempt, item.id, self.holder,
                                                  self.fencing, now + _backoff(item.attempts)):
                    continue
            except LeaseLost as exc:
                log.warning("alerts: %s; this process stops posting", exc)
                self.fencing = None
                break
            try:
                post = await self._deliver(item, now)
            except Exception as exc:
                reason = one_line(exc)
                if permanent(exc):
                    log.error("alerts: Mattermost refused the %s post for %s for good, set aside: %s",
                              item.level, item.path or item.kind, reason)
                    self._count("alert_posts_set_aside")
                    await loop.run_in_executor(None, self.store.set_aside, item.id, reason, now)
                    continue
                log.warning("alerts: posting failed (attempt %d, next in %s): %s", item.attempts + 1,
                            _backoff(item.attempts), reason)
                self._count("alert_posts_failed")
                await loop.run_in_executor(None, self.store.mark_failed, item.id, reason,
                                           now + _backoff(item.attempts))
                break
            await loop.run_in_executor(None, self.store.mark_sent, item.id, post["id"], now)
            log.info("alerts: posted %s %s %s (post %s)", item.level, item.path or "-", item.kind, post["id"])
            self._count("alert_posts_sent")
            sent += 1
        return sent

    async def _deliver(self, item: Outgoing, now: datetime) -> dict:
        """One attempt at one post; returns Mattermost's post, found or made."""
        if item.attempts > 0:  # an earlier attempt may have made the post without our seeing it
            found = await self.gateway.find_post(self.channel_id, item.key, item.created_at - LOOK_BACK)
            if found is not None:
                return found
        file_ids: list[str] = []
        if item.chart:
            file_id = item.file_id
            if not file_id:
                try:
                    file_id = await self.gateway.upload(self.channel_id, "disk.png", item.chart)
                    await asyncio.get_running_loop().run_in_executor(None, self.store.remember_file, item.id, file_id)
                except Exception as exc:
                    if not permanent(exc):
                        raise
                    log.warning("alerts: the chart was refused, posting without it: %s", one_line(exc))
            file_ids = [file_id] if file_id else []
        props = self.buttons(item, now) if item.level in alert_rules.PROBLEM_LEVELS and item.kind != "health" else {}
        return await self.gateway.post_once(self.channel_id, item.message, key=item.key, props=props,
                                            file_ids=file_ids)

    def retry_set_aside(self) -> int:
        """Give the posts Mattermost refused another try (the drain picks them up within seconds)."""
        return self.store.requeue_set_aside(self.clock())

    # ---- the buttons ---------------------------------------------------------------------------

    def act(self, context: dict[str, Any], user_id: str) -> tuple[int, str]:
        """(HTTP status, ephemeral text) for a button click by Mattermost user `user_id`; a bad signature,
        an old episode or a stale button changes nothing."""
        if not signature_ok(self.secret(), context):
            return 403, "This button's signature is not valid, so nothing was changed."
        action, path, kind, level = (context.get(k) for k in ("action", "path", "kind", "level"))
        episode, issued = context.get("episode"), context.get("issued")
        if context.get("host") != self.host:
            return 200, f"That alert belongs to host {context.get('host')}; its own recbot handles it."
        if not isinstance(episode, int) or not isinstance(issued, int) or action not in ("ack", "snooze"):
            return 400, "This button is from an older recbot; use the buttons on the newest alert."
        now = self.clock()
        age = now - datetime.fromtimestamp(issued, UTC)
        if age > BUTTON_MAX_AGE or age < -timedelta(minutes=5):
            return 200, "This button is too old to use; use the buttons on the newest alert."
        word = "acknowledge" if action == "ack" else "snooze"

        def change(state: alert_rules.PathState) -> alert_rules.PathState:
            if state.episode != episode:
                return state
            if action == "ack":
                return alert_rules.acknowledge(state, now, level=level)
            return alert_rules.snooze(state, now, 1, level=level)

        before = self.store.states().get((path, kind))
        after = self.store.update_state(path, kind, change, now)
        if after is None or before == after:
            if before is not None and before.episode != episode:
                return 200, f"That alert is from an earlier episode of {path}; nothing to {word}."
            return 200, f"{path} is no longer at {level}; nothing to {word}."
        clicker = self.storage.user_by_mm_id(user_id)
        who = f"Mattermost user {user_id}" + (f" (@{clicker.username})" if clicker else "")
        self.storage.audit_system(f"alert {action}", f"{self.host}:{path} {kind} {level} episode {episode} by {who}",
                                  actor=clicker)
        if action == "ack":
            return 200, f"Acknowledged: no repeats for {path} until its level changes."
        return 200, f"Snoozed: no repeats for {path} for 1 hour."
