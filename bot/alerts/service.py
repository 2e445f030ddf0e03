"""Disk alerts at run time: one check (sample, evaluate, queue, if this process holds the host's
lease), the loop's own health, and the button clicks. Posting is bot.alerts.delivery's."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from bot import settings as runtime_settings
from bot.alerts import rules
from bot.alerts.buttons import button_props, signature_ok
from bot.alerts.charts import usage_chart
from bot.alerts.delivery import Delivery, Notifier, one_line
from bot.alerts.model import AlertMessage, PathState, Sample, Thresholds
from bot.alerts.sampler import Sampler
from bot.alerts.store import AlertStore, Health, LeaseLost, Outgoing
from bot.alerts.text import LEVEL_WORDS, chart_title, plain
from bot.config import Config, zone_or_none
from bot.duties import new_holder
from bot.errors import Forbidden, UserError
from bot.i18n import _, ngettext, number, speaking, when
from bot.metrics import Metrics
from bot.storage import Storage

log = logging.getLogger("bot.alerts")

SECRET_SETTING = "alerts.action_secret"  # noqa: S105 (the settings key; the secret is generated)
FAILING_AFTER = 3  # failed checks in a row before the channel is told
BUTTON_MAX_AGE = timedelta(days=7)


def now_utc() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Overview:
    states: dict[tuple[str, str], PathState]
    poster: tuple[str, datetime] | None  # who holds this host's lease, until when
    health: Health | None
    set_aside: list[Outgoing]
    pending: int


@dataclass
class Alerts:
    storage: Storage
    config: Config
    gateway: Notifier | None = None
    host: str = ""  # empty: config.alerts_host (alerts.host, else the machine's host name)
    holder: str = field(default_factory=new_holder)
    clock: Callable[[], datetime] = now_utc
    sampler: Sampler = field(default_factory=Sampler)
    channel_id: str = ""
    metrics: Metrics | None = None

    def __post_init__(self) -> None:
        self.host = self.host or self.config.alerts_host
        self.store = AlertStore(self.storage, self.host)
        self.fencing: int | None = None
        self._secret: str | None = None
        self._health: Health | None = None
        self._notice_attempts = 0
        self.delivery = Delivery(self.store, self.gateway, self.holder, self.clock, self._buttons, self._count,
                                 self.channel_id)

    @property
    def zone(self) -> tzinfo:
        """Alert posts have a whole channel of readers: alerts.timezone, else the config's timezone."""
        return zone_or_none(self.config.alerts.timezone) or zone_or_none(self.config.timezone) or UTC

    @property
    def language(self) -> str:
        """And they are written in alerts.language, else the config's language."""
        return self.config.alerts.language or self.config.language

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
        new_states, messages = rules.evaluate(samples, states, thresholds, now, recent, self.host)
        # The words are fixed here, in the channel's language (the store writes them from another thread).
        with speaking(self.language):
            texts = [m.text for m in messages]
            queued = [(m, text, self._chart(m, text, samples, history, thresholds, now))
                      for m, text in zip(messages, texts, strict=True)]
        await loop.run_in_executor(None, self.store.commit_check, self.holder, self.fencing, samples,
                                   new_states, queued, now)
        return messages

    def _chart(self, message: AlertMessage, text: str, samples: list[Sample], history: dict,
               thresholds: Thresholds, now: datetime) -> bytes | None:
        if message.kind == "read":
            return None
        usage = [(s.path, s.used_percent) for s in samples if s.readable]
        usage.sort(key=lambda item: item[0] != message.path)  # the alerting path first
        try:
            return usage_chart(chart_title(text), usage, history.get(message.path, []),
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
        if self.gateway is None or not await self.delivery.channel():
            return False
        text = self._failing_text(health)
        seed = f"{self.host}:failing:{health.last_ok_at.isoformat() if health.last_ok_at else '-'}"
        notice = Outgoing(0, "", "health", "failing", text, None, self._notice_attempts, 0,
                          hashlib.sha256(seed.encode()).hexdigest()[:26], None, health.last_check_at)
        self._notice_attempts += 1
        try:
            await self.delivery.deliver(notice, self.clock())
        except Exception as exc:
            log.warning("alerts: telling the channel that checks fail did not work: %s", one_line(exc))
            return False
        self._notice_attempts = 0
        return True

    def _failing_text(self, health: Health) -> str:
        host, reason = plain(self.host), plain(health.last_error or "")
        with speaking(self.language):
            if health.last_ok_at is None:
                return ngettext("Disk alerts on {host} are failing: {reason}. {n} check in a row failed; "
                                "another message follows once a check succeeds.",
                                "Disk alerts on {host} are failing: {reason}. {n} checks in a row failed; "
                                "another message follows once a check succeeds.",
                                health.failures, host=host, reason=reason)
            return ngettext("Disk alerts on {host} are failing: {reason} (last good check {time}). {n} check in a "
                            "row failed; another message follows once a check succeeds.",
                            "Disk alerts on {host} are failing: {reason} (last good check {time}). {n} checks in a "
                            "row failed; another message follows once a check succeeds.",
                            health.failures, host=host, reason=reason, time=when(health.last_ok_at, self.zone))

    async def _succeeded(self, now: datetime) -> None:
        before = await self._load_health()
        notice = None
        if before.failing_posted:
            with speaking(self.language):
                notice = _("Disk alerts on {host} work again: the check at {time} succeeded after {n} failed.",
                           host=plain(self.host), time=when(now, self.zone), n=number(before.failures))
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

    # ---- posting: bot.alerts.delivery ---------------------------------------------------------

    def _buttons(self, item: Outgoing, now: datetime) -> dict[str, Any]:
        url = self.config.server.public_url.rstrip("/") + "/mattermost/action"
        with speaking(self.language):
            return button_props(self.secret(), self.host, url, item, now)

    async def drain(self) -> int:
        """Post what is due, if this process holds the lease."""
        if self.fencing is None:
            return 0
        sent, kept = await self.delivery.drain(self.fencing)
        if not kept:
            self.fencing = None
        return sent

    def overview(self) -> Overview:
        """Everything `admin status` shows about the alerts, read in one place."""
        return Overview(self.store.states(), self.store.holder(), self.store.health(), self.store.set_aside_items(),
                        self.store.pending_count())

    def trend(self, path: str, now: datetime) -> list[tuple[datetime, float]]:
        """The last 24 hours of a path's use, for a chart."""
        return self.store.history([path], now - timedelta(hours=24))[path]

    def retry_set_aside(self) -> int:
        """Give the posts Mattermost refused another try (the drain picks them up within seconds)."""
        return self.store.requeue_set_aside(self.clock())

    # ---- the buttons ---------------------------------------------------------------------------

    def act(self, context: dict[str, Any], user_id: str) -> str:
        """What a button click by Mattermost user `user_id` did, in one sentence. A bad signature raises
        Forbidden, a context recbot no longer makes raises UserError; an old episode or a stale button
        changes nothing and says so."""
        if not signature_ok(self.secret(), context):
            raise Forbidden(_("this button's signature is not valid, so nothing was changed"))
        action, path, kind, level = (context.get(k) for k in ("action", "path", "kind", "level"))
        episode, issued = context.get("episode"), context.get("issued")
        if context.get("host") != self.host:
            return _("That alert belongs to host {host}; its own recbot handles it.", host=context.get("host"))
        if not isinstance(episode, int) or not isinstance(issued, int) or action not in ("ack", "snooze") \
                or not isinstance(path, str) or not isinstance(kind, str):
            raise UserError(_("this button is from an older recbot; use the buttons on the newest alert"))
        now = self.clock()
        age = now - datetime.fromtimestamp(issued, UTC)
        if age > BUTTON_MAX_AGE or age < -timedelta(minutes=5):
            return _("This button is too old to use; use the buttons on the newest alert.")

        def change(state: PathState) -> PathState:
            if state.episode != episode:
                return state
            if action == "ack":
                return rules.acknowledge(state, now, level=level)
            return rules.snooze(state, now, 1, level=level)

        before = self.store.states().get((path, kind))
        after = self.store.update_state(path, kind, change, now)
        if after is None or before == after:
            return self._unchanged(action, path, level, before is not None and before.episode != episode)
        clicker = self.storage.user_by_mm_id(user_id)
        who = f"Mattermost user {user_id}" + (f" (@{clicker.username})" if clicker else "")
        self.storage.audit_system(f"alert {action}", f"{self.host}:{path} {kind} {level} episode {episode} by {who}",
                                  actor=clicker)
        if action == "ack":
            return _("Acknowledged: no repeats for {path} until its level changes.", path=path)
        return _("Snoozed: no repeats for {path} for 1 hour.", path=path)

    @staticmethod
    def _unchanged(action: str, path: str, level: Any, earlier: bool) -> str:
        """Why a click changed nothing, in the clicker's language."""
        if earlier:
            if action == "ack":
                return _("That alert is from an earlier episode of {path}; nothing to acknowledge.", path=path)
            return _("That alert is from an earlier episode of {path}; nothing to snooze.", path=path)
        shown = _(LEVEL_WORDS[level]) if level in LEVEL_WORDS else str(level)
        if action == "ack":
            return _("{path} is no longer at {level}; nothing to acknowledge.", path=path, level=shown)
        return _("{path} is no longer at {level}; nothing to snooze.", path=path, level=shown)
