"""People: users keyed by Mattermost id (the username is a cache), roles, grants and shares."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from bot.errors import Conflict, NotFound, UserError
from bot.i18n import _
from bot.store.db import MAX_KNOWN_USERS, Db
from bot.store.legacy import claim_legacy
from bot.store.models import (
    ROLES,
    User,
    user_from_row,
)
from bot.store.retry import retried
from bot.store.visibility import load_visible, visible
from bot.tables import content, grant, setting, share, user


def _with_grants() -> Any:
    """A user's row and the owners their grants name, in one statement: a command's caller is read
    with whom they see, so their searches need no statement of their own to learn it (Db.grants_of)."""
    owners = select(func.group_concat(grant.c.owner_id)).where(grant.c.viewer_id == user.c.id).scalar_subquery()
    return select(user, owners.label("granted"))


def _granted_ids(joined: str | bytes | None) -> tuple[int, ...]:
    """The owner ids of group_concat (MariaDB may hand a concatenation of numbers back as bytes).

    MariaDB cuts group_concat at group_concat_max_len (1024 bytes): a list that long names far more
    than PER_OWNER_MAX owners, which is all a search asks of a list that size."""
    if not joined:
        return ()
    text = joined.decode() if isinstance(joined, bytes) else joined
    return tuple(int(i) for i in text.split(",") if i)


class PeopleMixin(Db):
    def user_by_mm_id(self, mm_user_id: str) -> User | None:
        stmt = self._prepared(("user_by_mm",), lambda: _with_grants().where(user.c.mm_user_id == bindparam("mm")))
        with self.connection() as conn:
            row = conn.execute(stmt, {"mm": mm_user_id}).first()
        return self._caller_from_row(row) if row else None

    def user_by_id(self, user_id: int) -> User | None:
        with self.connection() as conn:
            row = conn.execute(_with_grants().where(user.c.id == user_id)).first()
        return self._caller_from_row(row) if row else None

    def _caller_from_row(self, row: Any) -> User:
        """The user, remembering the owners their grants named as of this read (whoever reads a user's
        row anew reads their grants anew)."""
        self.remember_grants(row.id, _granted_ids(row.granted))
        return user_from_row(row)

    def users_by_username(self, names: Iterable[str]) -> dict[str, User]:
        """Known users by (case-folded) username; a renamed-away name maps to its newest holder."""
        wanted = {n.lower().lstrip("@") for n in names}
        if not wanted:
            return {}
        with self.connection() as conn:
            rows = conn.execute(
                _with_grants().where(func.lower(user.c.username).in_(wanted)).order_by(user.c.updated_at)
            ).all()
        return {row.username.lower(): self._caller_from_row(row) for row in rows}

    def ensure_user(self, mm_user_id: str, username: str, role_if_new: str = "member",
                    max_age: float = 0.0) -> tuple[User, bool]:
        """The user with this Mattermost id, created if new; the username is refreshed. Returns (user, created).

        With max_age, a row this process read at most that many seconds ago may answer (a changed
        username always reads again). A stale role or grant list cannot widen access: every statement
        that reads or writes records, and every admin action, re-reads the role and the grants in SQL.
        This process's own role and grant changes drop the copies at once.
        """
        if role_if_new not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        known = self._known_users.get(mm_user_id)
        if max_age and known and time.monotonic() - known[0] < max_age and known[1].username == username:
            return known[1], False
        found, created = self._ensure_user(mm_user_id, username, role_if_new)
        if len(self._known_users) >= MAX_KNOWN_USERS:
            self._known_users.clear()
        self._known_users[mm_user_id] = (time.monotonic(), found)
        return found, created

    @retried
    def _ensure_user(self, mm_user_id: str, username: str, role_if_new: str) -> tuple[User, bool]:
        now = self.clock()
        existing = self.user_by_mm_id(mm_user_id)
        if existing:
            if existing.username != username:
                with self.transaction() as conn:
                    conn.execute(update(user).where(user.c.id == existing.id)
                                 .values(username=username, updated_at=now))
                return self.user_by_mm_id(mm_user_id) or existing, False
            return existing, False
        created = True
        try:
            with self.transaction() as conn:
                # An imported user of this name not yet bound to an account becomes this account.
                claimed = claim_legacy(conn, mm_user_id, username, now, self._audit)
                if claimed is None:
                    conn.execute(insert(user).values(mm_user_id=mm_user_id, username=username, role=role_if_new,
                                                     created_at=now, updated_at=now))
        except IntegrityError:
            created = False  # another request registered the same user first; theirs is as good as ours
        found = self.user_by_mm_id(mm_user_id)
        assert found is not None
        return found, created

    @retried
    def set_role(self, actor: User, target_id: int, role: str) -> User:
        if role not in ROLES:
            raise UserError(_("'{role}' is not a role; use admin, member or disabled", role=role))
        with self.transaction() as conn:
            self._require_admin(conn, actor)
            target = conn.execute(select(user).where(user.c.id == target_id)).first()
            if target is None:
                raise NotFound(_("that user is not known to recbot yet; they must use recbot once first"))
            if target.role == "admin" and role != "admin":
                admins = conn.execute(select(func.count()).select_from(user).where(user.c.role == "admin")).scalar_one()
                if admins <= 1:
                    raise Conflict(_("that is the last admin; make someone else admin first"))
            conn.execute(update(user).where(user.c.id == target_id).values(role=role, updated_at=self.clock()))
            self._audit(conn, actor, "role", f"@{target.username}: {target.role} -> {role}")
        self._known_users.clear()
        found = self.user_by_id(target_id)
        assert found is not None
        return found

    @retried
    def promote_listed_admin(self, target: User, name: str) -> User:
        """Make a newly registered account named in config `admins` an admin, once per listed name.

        The first account to claim a listed name keeps it (kept in T_SETTING); an account that takes
        the name later stays what registration made it.
        """
        claim = f"admins.claimed.{name.lower()}"
        with self.transaction() as conn:
            holder = conn.execute(select(setting.c.value).where(setting.c.name == claim).with_for_update()).scalar()
            if holder is not None and holder != target.mm_user_id:
                self._audit(conn, None, "role", f"@{target.username} ({target.mm_user_id}) not made admin: "
                                                f"config admins' {name} was claimed by {holder}")
                return target
            if holder is None:
                conn.execute(insert(setting).values(name=claim, value=target.mm_user_id, updated_by=None,
                                                    updated_at=self.clock()))
            self._promote(conn, target, "config admins, at registration")
        self._known_users.pop(target.mm_user_id, None)
        self._settings_cache = None
        return self.user_by_id(target.id) or target

    @retried
    def promote(self, target: User, why: str) -> User:
        """Make a user admin outside a command (the local shell's --admin): one audited call, the
        same one config admins go through, so the user cache and the audit log always see it."""
        with self.transaction() as conn:
            self._promote(conn, target, why)
        self._known_users.pop(target.mm_user_id, None)
        return self.user_by_id(target.id) or target

    def _promote(self, conn: Connection, target: User, why: str) -> None:
        changed = conn.execute(update(user).where(user.c.id == target.id, user.c.role != "admin")
                               .values(role="admin", updated_at=self.clock())).rowcount
        if changed:
            self._audit(conn, None, "role", f"@{target.username}: {target.role} -> admin ({why})")

    @retried
    def save_profile(self, target: User, locale: str, timezone: str) -> User:
        """What Mattermost says of the user's locale and timezone, with when it said it."""
        now = self.clock()
        with self.transaction() as conn:
            conn.execute(update(user).where(user.c.id == target.id)
                         .values(locale=locale[:16] or None, timezone=timezone[:64] or None, profile_at=now))
        self._known_users.pop(target.mm_user_id, None)
        return self.user_by_id(target.id) or target

    def users_with_counts(self, actor: User) -> list[tuple[User, int]]:
        """Every known user and the number of their records not deleted (admins only)."""
        counts = (select(content.c.owner_id, func.count().label("n"))
                  .where(content.c.deleted_at.is_(None)).group_by(content.c.owner_id).subquery())
        with self.connection() as conn:
            self._require_admin(conn, actor)
            rows = conn.execute(
                select(user, func.coalesce(counts.c.n, 0).label("n"))
                .outerjoin(counts, counts.c.owner_id == user.c.id).order_by(func.lower(user.c.username))
            ).all()
        return [(user_from_row(r), int(r.n)) for r in rows]

    @retried
    def grant(self, actor: User, viewer_id: int, owner_ids: Sequence[int]) -> int:
        """Let the viewer see every record of each owner; returns how many grants were new."""
        now = self.clock()
        with self.transaction() as conn:
            self._require_admin(conn, actor)
            new = 0
            for owner_id in dict.fromkeys(owner_ids):
                if owner_id == viewer_id:
                    continue
                new += conn.execute(self._insert_ignore(grant).values(
                    viewer_id=viewer_id, owner_id=owner_id, granted_by=actor.id, created_at=now)).rowcount
            names = self._names(conn, [viewer_id, *owner_ids])
            self._audit(conn, actor, "grant",
                        f"@{names[viewer_id]} may see " + ", ".join(f"@{names[o]}" for o in owner_ids))
        self._known_grants.clear()
        return new

    @retried
    def revoke(self, actor: User, viewer_id: int, owner_ids: Sequence[int]) -> int:
        """Take grants back; returns how many existed."""
        with self.transaction() as conn:
            self._require_admin(conn, actor)
            gone = conn.execute(delete(grant).where(grant.c.viewer_id == viewer_id,
                                                    grant.c.owner_id.in_(list(owner_ids)))).rowcount
            names = self._names(conn, [viewer_id, *owner_ids])
            self._audit(conn, actor, "revoke",
                        f"@{names[viewer_id]} no longer sees " + ", ".join(f"@{names[o]}" for o in owner_ids))
        self._known_grants.clear()
        return gone

    def _names(self, conn: Connection, ids: Sequence[int]) -> dict[int, str]:
        rows = conn.execute(select(user.c.id, user.c.username).where(user.c.id.in_(list(ids)))).all()
        return {r.id: r.username for r in rows}

    def perms(self, actor: User, user_id: int) -> tuple[list[User], list[User]]:
        """(whose records the user may see by grant, who may see the user's records by grant)."""
        with self.connection() as conn:
            self._require_admin(conn, actor)
            sees = conn.execute(select(user).join(grant, grant.c.owner_id == user.c.id)
                                .where(grant.c.viewer_id == user_id).order_by(user.c.username)).all()
            seen = conn.execute(select(user).join(grant, grant.c.viewer_id == user.c.id)
                                .where(grant.c.owner_id == user_id).order_by(user.c.username)).all()
        return [user_from_row(r) for r in sees], [user_from_row(r) for r in seen]

    @retried
    def share(self, actor: User, record_id: int, user_ids: Sequence[int]) -> list[int]:
        """Let each user see this one record (the actor must see it); returns the newly added ids."""
        now = self.clock()
        added: list[int] = []
        with self.transaction() as conn:
            load_visible(conn, actor, record_id)
            for uid in dict.fromkeys(user_ids):
                visible_to_actor = select(literal(uid), literal(record_id), literal(actor.id), literal(now)).where(
                    exists().where(content.c.id == record_id, visible(actor.role)))
                n = conn.execute(self._insert_ignore(share).from_select(
                    ["user_id", "record_id", "shared_by", "created_at"], visible_to_actor),
                    {"viewer_id": actor.id}).rowcount
                if n:
                    added.append(uid)
        return added
