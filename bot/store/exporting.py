"""Reading every visible matching record for an export: one keyset-paged statement per page."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, func, select

from bot import search
from bot.search.execute import SearchMixin, _Shape
from bot.store.models import Filter, Record, User
from bot.store.visibility import visible
from bot.tables import content, tag, user


class ExportMixin(SearchMixin):
    def export_page(self, viewer: User, flt: Filter, *, limit: int, below: int | None = None) -> list[Record]:
        """Newest first, up to `limit` visible records matching every filter with id < below.

        find's rule and filters, without its time box and index plans: an export reads everything
        once, so one statement walking the primary key down from `below` is the cheapest way through.
        Words are matched as substrings of the folded text, as find's always-correct scan does.
        """
        words = [search.fold(w) for w in flt.words if w]
        if any("\x00" in w for w in words):
            return []
        shape, params = _Shape.bind(flt, words, below, None)
        params.update(viewer_id=viewer.id, lim=limit)
        stmt = self._prepared(("export", viewer.role, shape), lambda: self._build_export(viewer.role, shape))
        with self.connection() as conn:
            rows = conn.execute(stmt, params).all()
        return [Record(r[0], r[1], r[2], r[3], tuple(sorted(r[6].split(",") if r[6] else ())), r[4], r[5])
                for r in rows]

    def _build_export(self, role: str, shape: _Shape) -> Any:
        # The owner's name and the tags as scalar subqueries, not joins: with T_CONTENT the only table in
        # FROM, MariaDB walks the primary key down from `below` and stops at the limit (joined to T_USER,
        # it drove from the users and sorted every record on each page: 1-3 s a page at 100k).
        owner_name = select(user.c.username).where(user.c.id == content.c.owner_id).scalar_subquery()
        tags_of = select(func.group_concat(tag.c.tag)).where(tag.c.record_id == content.c.id).scalar_subquery()
        return (select(content.c.id, content.c.owner_id, owner_name, content.c.body, content.c.created_at,
                       content.c.updated_at, tags_of)
                .where(visible(role), *self._conditions(content, shape), *self._bounds(content.c.id, shape))
                .order_by(content.c.id.desc()).limit(bindparam("lim")))
