"""Records: add (once per retry), find, show, edit with revisions, delete and restore."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError

from bot import search
from bot.errors import Conflict, Forbidden, NotFound, UserError
from bot.i18n import _, ngettext, number
from bot.search.execute import SearchMixin
from bot.store.models import (
    MAX_BODY,
    MAX_TAG,
    MAX_TAGS,
    RETRY_WINDOW,
    Attachment,
    Filter,
    MaybeSaved,
    Page,
    Record,
    Revision,
    User,
    extract_tags,
)
from bot.store.retry import retried
from bot.store.visibility import editable, load_visible, visible
from bot.tables import content, revision, tag, user
from bot.tables import file as file_table

log = logging.getLogger("bot.storage")


class RecordsMixin(SearchMixin):
    @retried
    def add_record(self, owner: User, body: str, files: Sequence[Attachment] = ()) -> int:
        """Save a record owned by `owner` (who must not be disabled); returns its id."""
        body, tags = self._checked(body, files)
        with self.transaction() as conn:
            return self._insert_record(conn, owner, body, tags, files)

    def add_record_once(self, owner: User, body: str, files: Sequence[Attachment] = ()) -> tuple[int, bool]:
        """add_record for a request that may be a retry: (id, True) when saved now, (id, False) when the
        same owner saved the same text within RETRY_WINDOW (a save whose answer was lost). A failure
        after the INSERT was sent raises MaybeSaved, which says so and how to find out."""
        sent: list[bool] = []
        try:
            return self._add_once(owner, body, files, sent)
        except DBAPIError:
            if not sent:
                raise  # nothing was written: the error hook says the database failed
            log.exception("saving a record failed; it may have been saved")
            raise MaybeSaved(ngettext(
                "the database did not confirm the save, so it may have been saved; send the same text again "
                "within {n} minute: if it was saved you get its number, not a second copy",
                "the database did not confirm the save, so it may have been saved; send the same text again "
                "within {n} minutes: if it was saved you get its number, not a second copy",
                RETRY_WINDOW.seconds // 60)) from None

    @retried
    def _add_once(self, owner: User, body: str, files: Sequence[Attachment], sent: list[bool]) -> tuple[int, bool]:
        """The retry check and the INSERT in one transaction: one checkout, and on SQLite the check
        runs under the writer's lock, so two copies of one request cannot both insert."""
        body, tags = self._checked(body, files)
        recent_of = self._prepared(("recent",), lambda: select(content.c.id, content.c.body).where(
            content.c.owner_id == bindparam("owner_id"), content.c.created_at >= bindparam("since"),
            content.c.deleted_at.is_(None)).order_by(content.c.id.desc()).limit(20))
        with self.transaction() as conn:
            recent = conn.execute(recent_of, {"owner_id": owner.id, "since": self.clock() - RETRY_WINDOW}).all()
            same = next((r.id for r in recent if r.body == body), None)  # compared exactly, not by collation
            if same is not None:
                return int(same), False
            sent.append(True)
            return self._insert_record(conn, owner, body, tags, files), True

    def _checked(self, body: str, files: Sequence[Attachment]) -> tuple[str, tuple[str, ...]]:
        """(the text to save, its tags), or UserError saying what to change."""
        if files and not body.strip():
            body = _("Files: {names}", names=", ".join(f.name for f in files))
        return body, self._check_body(body)

    def _insert_record(self, conn: Connection, owner: User, body: str, tags: Sequence[str],
                       files: Sequence[Attachment]) -> int:
        now = self.clock()
        folded = search.fold(body)
        result = conn.execute(self._prepared(("add",), self._build_add),
                              {"owner_id": owner.id, "body": body, "folded": folded, "now": now})
        if result.rowcount != 1:
            raise Forbidden(_("your recbot account is disabled; ask an admin to enable it"))
        record_id = int(result.lastrowid)
        self._set_tags(conn, record_id, tags, replace=False)
        if files:
            conn.execute(insert(file_table), [
                {"record_id": record_id, "mm_file_id": f.mm_file_id, "name": f.name[:255], "size": f.size,
                 "mime_type": f.mime_type[:128], "created_at": now} for f in files])
        search.index_text(conn, self.search_backend, record_id, folded)
        return record_id

    @staticmethod
    def _build_add() -> Any:
        """INSERT ... SELECT that inserts only while the owner is not disabled (checked in the statement)."""
        owner_id = bindparam("owner_id", type_=content.c.owner_id.type)
        now = bindparam("now", type_=content.c.created_at.type)
        allowed = select(owner_id, bindparam("body", type_=content.c.body.type),
                         bindparam("folded", type_=content.c.search_text.type), now, now
                         ).where(exists().where(user.c.id == owner_id,
                                                or_(user.c.role == "admin", user.c.role == "member")))
        return insert(content).from_select(["owner_id", "body", "search_text", "created_at", "updated_at"], allowed)

    def _check_body(self, body: str) -> tuple[str, ...]:
        """The text's tags, once it is a text recbot can save; else UserError saying what to change."""
        if not body.strip():
            raise UserError(_("the record text is empty; type what you did after the command"))
        if "\x00" in body:
            # SQLite's string functions and Groonga's tokenizer stop at NUL: such text could not be found.
            raise UserError(_("the text contains a NUL character (\\0); remove it and send it again"))
        if len(body) > MAX_BODY:
            raise UserError(_("the record is {length} characters long; keep it under {limit}",
                              length=number(len(body)), limit=number(MAX_BODY)))
        tags = extract_tags(body)
        if len(tags) > MAX_TAGS:
            raise UserError(_("the text has {count} different #tags; keep it to {limit}",
                              count=number(len(tags)), limit=number(MAX_TAGS)))
        long = next((t for t in tags if len(t) > MAX_TAG), None)
        if long is not None:
            raise UserError(_("the tag #{tag}… is {length} characters long once lower-cased; keep tags to {limit}",
                              tag=long[:20], length=number(len(long)), limit=number(MAX_TAG)))
        return tags

    def _set_tags(self, conn: Connection, record_id: int, tags: Sequence[str], *, replace: bool) -> None:
        if replace:
            conn.execute(delete(tag).where(tag.c.record_id == record_id))
        if tags:
            conn.execute(self._prepared(("tag_insert",), lambda: insert(tag)),
                         [{"record_id": record_id, "tag": t} for t in tags])

    def _record_select(self) -> Any:
        owner = user.alias("owner")
        return (
            select(content.c.id, content.c.owner_id, owner.c.username.label("owner"), content.c.body,
                   content.c.created_at, content.c.updated_at)
            .join(owner, owner.c.id == content.c.owner_id)
        )

    def _hydrate(self, conn: Connection, rows: Sequence[Any], *, with_revisions: bool = False) -> list[Record]:
        ids = [r.id for r in rows]
        tags: dict[int, list[str]] = {i: [] for i in ids}
        revs: dict[int, int] = {}
        files: dict[int, list[Attachment]] = {}
        if ids:
            tags_of = self._prepared(("tags_of",), lambda: select(tag.c.record_id, tag.c.tag)
                                     .where(tag.c.record_id.in_(bindparam("ids", expanding=True))))
            for rid, t in conn.execute(tags_of, {"ids": ids}):
                tags[rid].append(t)
            if with_revisions:
                revs = dict(conn.execute(
                    select(revision.c.record_id, func.count()).where(revision.c.record_id.in_(ids))
                    .group_by(revision.c.record_id)).all())
                for f in conn.execute(select(file_table).where(file_table.c.record_id.in_(ids))
                                      .order_by(file_table.c.id)):
                    files.setdefault(f.record_id, []).append(Attachment(f.mm_file_id, f.name, f.size, f.mime_type))
        return [
            Record(r.id, r.owner_id, r.owner, r.body, tuple(sorted(tags[r.id])), r.created_at, r.updated_at,
                   revs.get(r.id, 0), tuple(files.get(r.id, ())))
            for r in rows
        ]

    def find(self, viewer: User, flt: Filter, *, limit: int, before: int | None = None, count_up_to: int = 0) -> Page:
        """Newest first, the viewer's visible records matching every filter; keyset paged by id.

        With count_up_to, the same search also counts the matches from `before` on, up to that many
        (Page.matched), so a reply can say "page 2 of 7" without a second search.
        """
        with self.connection() as conn:
            if before is not None:
                # A cursor past the newest record would scan empty id ranges until the time runs out.
                before = min(before, self._top_id(conn) + 1)
            ids, resume = self._search(conn, viewer, flt, limit=max(limit, count_up_to) + 1, below=before)
            page = ids[:limit]
            page_of = self._prepared(("page", viewer.role, len(page)), lambda: self._build_page(viewer.role, len(page)))
            params = {f"p{i}": record_id for i, record_id in enumerate(page)}
            rows = conn.execute(page_of, {**params, "viewer_id": viewer.id}).all() if page else []
            # Tags are \w[\w-]*, so the default "," of group_concat never occurs inside one.
            records = [Record(rid, owner_id, owner, body, tuple(sorted(tags.split(",") if tags else ())),
                              created, updated) for rid, owner_id, owner, body, created, updated, tags in rows]
        complete = resume is None and len(ids) <= max(limit, count_up_to)
        if len(ids) > limit and records:
            return Page(tuple(records), records[-1].id, matched=len(ids), matched_all=complete)
        return Page(tuple(records), resume, partial=resume is not None, matched=len(ids), matched_all=complete)

    def _build_page(self, role: str, size: int) -> Any:
        """The records of a page of `size` ids (p0, p1, ...), still only if visible, with their tags in
        the same statement: on MariaDB every statement is a round trip. One statement per page size,
        rather than an expanding IN, which would be rendered anew on every execution."""
        tags_of = select(func.group_concat(tag.c.tag)).where(tag.c.record_id == content.c.id).scalar_subquery()
        return (self._record_select().add_columns(tags_of.label("tags"))
                .where(content.c.id.in_([bindparam(f"p{i}") for i in range(size)]), visible(role))
                .order_by(content.c.id.desc()))

    def get_record(self, viewer: User, record_id: int) -> Record:
        """One visible record with its revision count; NotFound when missing or not visible."""
        with self.connection() as conn:
            one = self._prepared(("record", viewer.role), lambda: self._record_select().where(
                content.c.id == bindparam("record_id"), visible(viewer.role)))
            row = conn.execute(one, {"record_id": record_id, "viewer_id": viewer.id}).first()
            if row is None:
                raise NotFound(_("record {id} does not exist or you cannot see it; find and list show the ones you can",
                                 id=record_id))
            return self._hydrate(conn, [row], with_revisions=True)[0]

    def revisions(self, viewer: User, record_id: int) -> list[Revision]:
        """Earlier texts of a visible record, oldest first."""
        editor = user.alias("editor")
        with self.connection() as conn:
            seen = conn.execute(select(content.c.id).where(content.c.id == record_id, visible(viewer.role)),
                                {"viewer_id": viewer.id}).first()
            if seen is None:
                raise NotFound(_("record {id} does not exist or you cannot see it", id=record_id))
            rows = conn.execute(
                select(revision.c.id, revision.c.body, editor.c.username, revision.c.edited_at)
                .join(editor, editor.c.id == revision.c.edited_by)
                .where(revision.c.record_id == record_id).order_by(revision.c.id)
            ).all()
        return [Revision(r.id, r.body, r.username, r.edited_at) for r in rows]

    @retried
    def edit_record(self, actor: User, record_id: int, body: str) -> Record:
        """Replace the text (owner or admin); the old text is kept as a revision."""
        tags = self._check_body(body)
        folded = search.fold(body)
        now = self.clock()
        with self.transaction() as conn:
            row = load_visible(conn, actor, record_id)
            if row.body == body:
                raise Conflict(_("record {id} already has exactly that text; nothing changed", id=record_id))
            result = conn.execute(
                update(content)
                .where(content.c.id == record_id, content.c.deleted_at.is_(None), editable(actor))
                .values(body=body, search_text=folded, updated_at=now)
            )
            if result.rowcount != 1:
                raise Forbidden(_("only the owner of record {id} or an admin can edit it", id=record_id))
            conn.execute(insert(revision).values(record_id=record_id, body=row.body, edited_by=actor.id, edited_at=now))
            self._set_tags(conn, record_id, tags, replace=True)
            search.index_text(conn, self.search_backend, record_id, folded)
            if row.owner_id != actor.id:
                self._audit(conn, actor, "edit", f"record {record_id}")
        return self.get_record(actor, record_id)

    @retried
    def delete_record(self, actor: User, record_id: int) -> None:
        """Soft delete (owner or admin); an admin can restore it."""
        now = self.clock()
        with self.transaction() as conn:
            row = load_visible(conn, actor, record_id)
            result = conn.execute(
                update(content)
                .where(content.c.id == record_id, content.c.deleted_at.is_(None), editable(actor))
                .values(deleted_at=now, deleted_by=actor.id, updated_at=now)
            )
            if result.rowcount != 1:
                raise Forbidden(_("only the owner of record {id} or an admin can delete it", id=record_id))
            if row.owner_id != actor.id:
                self._audit(conn, actor, "delete", f"record {record_id}")

    @retried
    def restore_record(self, actor: User, record_id: int) -> None:
        with self.transaction() as conn:
            self._require_admin(conn, actor)
            result = conn.execute(
                update(content).where(content.c.id == record_id, content.c.deleted_at.is_not(None))
                .values(deleted_at=None, deleted_by=None, updated_at=self.clock())
            )
            if result.rowcount != 1:
                exists_at_all = conn.execute(select(content.c.id).where(content.c.id == record_id)).first()
                if exists_at_all:
                    raise Conflict(_("record {id} is not deleted; nothing to restore", id=record_id))
                raise NotFound(_("record {id} does not exist", id=record_id))
            self._audit(conn, actor, "restore", f"record {record_id}")
