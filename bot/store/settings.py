"""Runtime settings kept in T_SETTING, the bot's own internal values, and the audit log."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import (
    insert,
    select,
    update,
)

from bot.store.db import Db
from bot.store.models import (
    AuditEntry,
    User,
)
from bot.store.retry import retried
from bot.tables import audit, setting, user


class SettingsMixin(Db):
    def settings(self, max_age: float = 0.0) -> dict[str, str]:
        """Stored settings; with max_age, a copy read at most that many seconds ago may answer.

        Commands read them on every request; another process's change shows within max_age, this
        process's own at once (a write drops the copy).
        """
        cached = self._settings_cache
        if max_age and cached and time.monotonic() - cached[0] < max_age:
            return dict(cached[1])
        with self.connection() as conn:
            values = {r.name: r.value for r in conn.execute(select(setting.c.name, setting.c.value))}
        self._settings_cache = (time.monotonic(), values)
        return dict(values)

    @retried
    def set_setting(self, actor: User, name: str, value: str | Callable[[dict[str, str]], str]) -> str:
        """Store a setting as `actor`; `value` may be a function of every stored row, read under a lock
        in this transaction, that returns the text to store or raises to store nothing."""
        now = self.clock()
        with self.transaction() as conn:
            self._require_admin(conn, actor)
            rows = {r.name: r.value for r in conn.execute(select(setting.c.name, setting.c.value).with_for_update())}
            if callable(value):
                value = value(rows)
            old = rows.get(name)
            if old is None:
                conn.execute(insert(setting).values(name=name, value=value, updated_by=actor.id, updated_at=now))
            else:
                conn.execute(update(setting).where(setting.c.name == name)
                             .values(value=value, updated_by=actor.id, updated_at=now))
            self._audit(conn, actor, "set", f"{name}: {old if old is not None else '(default)'} -> {value}")
        self._settings_cache = None
        return value

    @retried
    def store_internal(self, name: str, value: str) -> None:
        """A value the bot itself keeps (the registered command's token), with no actor and no audit."""
        now = self.clock()
        with self.transaction() as conn:
            done = conn.execute(update(setting).where(setting.c.name == name).values(value=value, updated_at=now))
            if done.rowcount == 0:
                conn.execute(insert(setting).values(name=name, value=value, updated_by=None, updated_at=now))
        self._settings_cache = None

    @retried
    def audit_system(self, action: str, detail: str, actor: User | None = None) -> None:
        """An audit entry for something done outside a command (an alert button, start-up); `actor`
        when the one who did it is a known user."""
        with self.transaction() as conn:
            self._audit(conn, actor, action, detail)

    def recent_audit(self, actor: User, limit: int = 20) -> list[AuditEntry]:
        who = user.alias("who")
        with self.connection() as conn:
            self._require_admin(conn, actor)
            rows = conn.execute(
                select(audit.c.id, who.c.username, audit.c.action, audit.c.detail, audit.c.created_at)
                .outerjoin(who, who.c.id == audit.c.actor_id).order_by(audit.c.id.desc()).limit(limit)
            ).all()
        return [AuditEntry(r.id, r.username, r.action, r.detail, r.created_at) for r in rows]
