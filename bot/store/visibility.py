"""SPEC section 2's visibility rule as SQL, readable in one screen, and who may change a record.

User U may see record R iff R is not deleted, U is not disabled, and U owns R, or U holds a grant on
R's owner, or R was shared with U, or U is an admin. Every statement that reads records includes
`visible(role)`; nothing filters afterwards.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    exists,
    false,
    or_,
    select,
)

from bot.errors import NotFound
from bot.i18n import _
from bot.store.models import (
    User,
)
from bot.tables import content, grant, share, user


def visible(role: str) -> Any:
    """SPEC section 2's rule as a WHERE clause over `content`, for a viewer of this role whose id
    is bound as `viewer_id` when the statement runs (statements are reused across viewers).

    The viewer's role is re-read inside the same statement, so a User object that went stale
    (demoted, disabled) can never see more than the database says it may.
    """
    me = user.alias("viewer")
    viewer_id: Any = bindparam("viewer_id")
    not_deleted = content.c.deleted_at.is_(None)
    if role == "admin":
        return and_(not_deleted, exists().where(me.c.id == viewer_id, me.c.role == "admin"))
    if role != "member":
        return false()
    active = exists().where(me.c.id == viewer_id, or_(me.c.role == "admin", me.c.role == "member"))
    # "+ 0" keeps the planners from driving the query by this OR (SQLite would gather and sort
    # every visible row); the search decides the order of work, this clause only filters.
    owner, record = content.c.owner_id + 0, content.c.id + 0
    return and_(
        not_deleted,
        active,
        or_(
            owner == viewer_id,
            owner.in_(select(grant.c.owner_id).where(grant.c.viewer_id == viewer_id)),
            record.in_(select(share.c.record_id).where(share.c.user_id == viewer_id)),
        ),
    )


def editable(actor: User) -> Any:
    """Owner or admin, re-read in the statement: who may edit, delete or restore."""
    me = user.alias("actor")
    return or_(
        and_(content.c.owner_id == actor.id,
             exists().where(me.c.id == actor.id, or_(me.c.role == "admin", me.c.role == "member"))),
        exists().where(me.c.id == actor.id, me.c.role == "admin"),
    )


def load_visible(conn: Connection, actor: User, record_id: int) -> Any:
    """The record's row if the actor may see it; else NotFound (a hidden record is as good as absent)."""
    row = conn.execute(
        select(content.c.id, content.c.owner_id, content.c.body)
        .where(content.c.id == record_id, visible(actor.role)), {"viewer_id": actor.id}
    ).first()
    if row is None:
        raise NotFound(_("record {id} does not exist or you cannot see it; find and list show the ones you can",
                         id=record_id))
    return row
