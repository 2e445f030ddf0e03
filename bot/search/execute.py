"""Running a search: the plan bot.search chose, turned into statements that carry the visibility
rule, newest first and keyset-paged; scans in time-boxed chunks where no index helps."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    bindparam,
    exists,
    func,
    literal_column,
    select,
    text,
)

from bot import search
from bot.store.db import Db
from bot.store.models import (
    PER_OWNER_MAX,
    Filter,
    User,
    day_start,
)
from bot.store.visibility import visible
from bot.tables import content, grant, share, tag


@dataclass(frozen=True)
class _Shape:
    """What the text of a search statement depends on; the values themselves are bound by name."""

    words: int = 0
    tags: int = 0
    owner: bool = False
    since: bool = False
    until: bool = False
    below: bool = False
    floor: bool = False

    @staticmethod
    def bind(flt: Filter, words: Sequence[str], below: int | None, floor: int | None) -> tuple[_Shape, dict[str, Any]]:
        params: dict[str, Any] = {f"w{i}": w for i, w in enumerate(words)}
        params.update({f"t{i}": t.lower().lstrip("#") for i, t in enumerate(flt.tags)})
        for name, value in (("owner", flt.owner_id), ("below", below), ("floor", floor),
                            ("since", day_start(flt.since, flt.zone) if flt.since else None),
                            ("until", day_start(flt.until + timedelta(days=1), flt.zone) if flt.until else None)):
            if value is not None:
                params[name] = value
        shape = _Shape(len(words), len(flt.tags), flt.owner_id is not None, flt.since is not None,
                       flt.until is not None, below is not None, floor is not None)
        return shape, params


class SearchMixin(Db):
    """The search half of the store: ids of visible matching records, newest first."""

    def _contains(self, table: Any, word: Any) -> Any:
        if self.dialect == "sqlite":
            return func.instr(table.c.search_text, word) > 0
        return func.locate(word, table.c.search_text) > 0

    def _conditions(self, table: Any, shape: _Shape) -> list[Any]:
        """Every filter but visibility, over `table` (T_CONTENT or an alias of it), for a filter of
        this shape; the values are bound by name at execution (see _Shape.params)."""
        conds = [table.c.deleted_at.is_(None)]
        conds += [self._contains(table, bindparam(f"w{i}")) for i in range(shape.words)]
        if shape.owner:
            conds.append(table.c.owner_id == bindparam("owner"))
        for i in range(shape.tags):
            conds.append(exists().where(tag.c.record_id == table.c.id, tag.c.tag == bindparam(f"t{i}")))
        if shape.since:
            conds.append(table.c.created_at >= bindparam("since"))
        if shape.until:
            conds.append(table.c.created_at < bindparam("until"))
        return conds

    @staticmethod
    def _bounds(key: Any, shape: _Shape) -> list[Any]:
        """floor < key < below, as far as the shape has them."""
        return ([key < bindparam("below")] if shape.below else []) + ([key > bindparam("floor")] if shape.floor else [])

    def _owner_candidates(self, conn: Connection, owners: Sequence[int], shape: _Shape,
                          params: dict[str, Any]) -> list[int]:
        """For a member: the newest `lim` matching ids of each owner they may see, and of their shares.

        Each branch walks the (owner_id, id) index newest first and stops after `lim`, so the work is
        bounded by what the viewer can see, never by the size of the table. These are candidates only:
        the caller re-applies the visibility rule in SQL.
        """
        def build_per_owner() -> Any:
            c = content.alias("cand")
            return (select(c.c.id).where(c.c.owner_id == bindparam("each_owner"), *self._conditions(c, shape),
                                         *self._bounds(c.c.id, shape))
                    .order_by(c.c.id.desc()).limit(bindparam("lim")))

        def build_shared() -> Any:
            c = content.alias("cand")
            return (select(c.c.id).join(share, share.c.record_id == c.c.id)
                    .where(share.c.user_id == bindparam("viewer_id"), *self._conditions(c, shape),
                           *self._bounds(c.c.id, shape))
                    .order_by(c.c.id.desc()).limit(bindparam("lim")))

        per_owner = self._prepared(("per_owner", shape), build_per_owner)
        found: set[int] = set()
        for owner in owners:
            found.update(conn.execute(per_owner, {**params, "each_owner": owner}).scalars().all())
        found.update(conn.execute(self._prepared(("shared", shape), build_shared), params).scalars().all())
        return sorted(found, reverse=True)

    def _build_ids(self, role: str, shape: _Shape, how: str) -> Any:
        """Visible matching ids newest first, at most `lim`; `how` the accelerator drives it:
        fts (SQLite's trigram index), in (given candidates), walk (the primary key, newest first), plain."""
        stmt = select(content.c.id).where(visible(role), *self._conditions(content, shape))
        key: Any = content.c.id
        if how == "fts":
            # Ordered and bounded by FTS5's own rowid, it streams newest first and stops after one page.
            key = literal_column(f"{search.FTS_TABLE}.rowid")
            stmt = stmt.join(text(search.FTS_TABLE), text(f"{search.FTS_TABLE}.rowid = T_CONTENT.id")).where(
                text(f"{search.FTS_TABLE} MATCH :fts_q"))
        elif how == "in":
            stmt = stmt.where(content.c.id.in_(bindparam("cands", expanding=True)))
        elif how == "walk":
            stmt = (stmt.with_hint(content, "FORCE INDEX (PRIMARY)", dialect_name="mysql")
                    .with_hint(content, "FORCE INDEX (PRIMARY)", dialect_name="mariadb"))
        return stmt.where(*self._bounds(key, shape)).order_by(key.desc()).limit(bindparam("lim"))

    def _ids(self, conn: Connection, viewer: User, flt: Filter, words: Sequence[str], plan: search.Plan, *,
             limit: int, below: int | None = None, floor: int | None = None) -> list[int]:
        """Newest first, at most `limit` ids of visible matching records with floor < id < below."""
        shape, params = _Shape.bind(flt, words, below, floor)
        params.update(viewer_id=viewer.id, lim=limit)
        owners = self._visible_owners(conn, viewer) if viewer.role == "member" and flt.owner_id is None else []
        if owners and len(owners) <= PER_OWNER_MAX and plan.kind in ("fts", "ids"):
            # An index walks every match, hidden ones too, so its time would tell a member how common a
            # word is in records they cannot see. A member who sees few owners is searched owner by owner.
            plan = search.SCAN
        if plan.kind == "fts":
            how = "fts"
            params["fts_q"] = plan.match
        elif plan.kind == "ids":
            how = "in"
            params["cands"] = list(plan.ids)
        elif owners:
            if len(owners) <= PER_OWNER_MAX:
                candidates = self._owner_candidates(conn, owners, shape, params)
                if not candidates:
                    return []
                how = "in"
                params["cands"] = candidates
            else:
                # Many owners: their records are a fair share of all, so the newest-first walk of the
                # table fills a page soonest.
                how = "walk"
        else:
            how = "walk" if plan.kind == "scan" and flt.owner_id is None else "plain"
        stmt = self._prepared(("ids", viewer.role, how, shape), lambda: self._build_ids(viewer.role, shape, how))
        # all() fetches in one call; iterating would cost a Python round per row of up to 101.
        return list(conn.execute(stmt, params).scalars().all())

    def _visible_owners(self, conn: Connection, viewer: User) -> list[int]:
        """The viewer and the owners their grants name. This only picks how to search, so the list read
        with the caller's row a moment ago serves (Db.known_grants): it can miss a grant made in another
        process for IDENTITY_MAX_AGE, never show a revoked one, since the statement that returns ids
        applies the grants again."""
        known = self.known_grants(viewer.id)
        if known is None:
            grants_of = self._prepared(("grants_of",), lambda: select(grant.c.owner_id)
                                       .where(grant.c.viewer_id == bindparam("viewer_id")))
            known = tuple(conn.execute(grants_of, {"viewer_id": viewer.id}).scalars().all())
            self.remember_grants(viewer.id, known)
        return [viewer.id, *known]

    def _top_id(self, conn: Connection) -> int:
        return conn.execute(self._prepared(("top_id",), lambda: select(func.max(content.c.id)))).scalar() or 0

    def _search(self, conn: Connection, viewer: User, flt: Filter, *, limit: int,
                below: int | None) -> tuple[list[int], int | None]:
        """(newest-first matching ids, at most `limit`; the id to resume below if time ran out)."""
        words = [search.fold(w) for w in flt.words if w]
        if any("\x00" in w for w in words):
            return [], None  # no record holds a NUL (add and edit refuse it)
        plan = search.plan_search(conn, self.search_backend, words)
        if plan.kind == "none":
            return [], None
        if plan.kind in ("fts", "ids"):
            return self._ids(conn, viewer, flt, words, plan, limit=limit, below=below), None
        if plan.kind == "scan":
            return self._scan(conn, viewer, flt, words, limit=limit, below=below)
        # "window": an index is there but costs more than it saves for common words, which the newest
        # records usually hold a page of. Only when they do not is the index asked, for older records.
        top = self._top_id(conn)
        floor = (below - 1 if below is not None else top) - search.WINDOW
        ids = self._ids(conn, viewer, flt, words, search.SCAN, limit=limit, below=below, floor=floor)
        if len(ids) >= limit or floor <= 0:
            return ids, None
        older = search.older_plan(conn, self.search_backend, words, floor)
        if older.kind == "none":
            return ids, None
        if older.kind == "scan":
            more, resume = self._scan(conn, viewer, flt, words, limit=limit - len(ids), below=floor + 1)
            return ids + more, resume
        return ids + self._ids(conn, viewer, flt, words, older, limit=limit - len(ids), below=floor + 1), None

    def _scan(self, conn: Connection, viewer: User, flt: Filter, words: Sequence[str], *, limit: int,
              below: int | None) -> tuple[list[int], int | None]:
        """Newest first through id ranges of SCAN_CHUNK, until the page is full or SCAN_SECONDS pass.

        A scan without an index reads every row; bounding it by time keeps the worst case of one
        request bounded, and the returned resume point lets the next request go on from there.
        """
        deadline = time.monotonic() + search.SCAN_SECONDS
        high = below if below is not None else self._top_id(conn) + 1
        ids: list[int] = []
        while high > 1 and len(ids) < limit:
            low = max(1, high - search.SCAN_CHUNK)  # this chunk is low <= id < high
            ids += self._ids(conn, viewer, flt, words, search.SCAN, limit=limit - len(ids), below=high,
                             floor=low - 1)
            high = low
            if len(ids) < limit and high > 1 and time.monotonic() > deadline:
                return ids, high
        return ids, None
