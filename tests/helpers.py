"""What test files share: the one door under the store, for setting up states no command makes (a
role changed by another process, rows from before a limit existed) and for counting rows."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import Engine, Table, delete, func, insert, select, update

from bot.config import Config, MattermostConfig, ServerConfig
from bot.storage import Filter, Storage, User
from bot.tables import metadata

TOKEN = "slash-token-for-tests"  # the slash token the test servers accept


def config(**changes: object) -> Config:
    """The test bot's config: the test token accepted, ada a config admin."""
    base = Config(mattermost=MattermostConfig(slash_tokens=(TOKEN,)), admins=("ada",))
    return replace(base, **changes)


def fake_mattermost_config(base: str, bot_token: str, port: int) -> Config:
    """The test bot's config against the fake Mattermost at `base`: serving on `port`, the test slash
    token accepted (the command is not registered), ada a config admin."""
    return Config(server=ServerConfig(port=port, public_url=f"http://127.0.0.1:{port}"),
                  mattermost=MattermostConfig(url=base, bot_token=bot_token, team="ops", slash_tokens=(TOKEN,),
                                              register_command=False),
                  admins=("ada",))


def engine_of(storage: Storage) -> Engine:
    """The store's own engine: product code never reaches it from outside the store; tests may,
    through here only."""
    return storage._engine


def _table(name: str) -> Table:
    return metadata.tables[name]


def count_rows(storage: Storage, *tables: str) -> tuple[int, ...]:
    """How many rows each named table (T_CONTENT, T_USER, ...) holds."""
    with engine_of(storage).connect() as conn:
        return tuple(conn.execute(select(func.count()).select_from(_table(t))).scalar_one() for t in tables)


def rows(storage: Storage, table: str, **equal: object) -> list[Any]:
    """The rows of a table whose columns equal the given values."""
    t = _table(table)
    with engine_of(storage).connect() as conn:
        return list(conn.execute(select(t).where(*(t.c[k] == v for k, v in equal.items()))).all())


def insert_rows(storage: Storage, table: str, values: list[dict[str, Any]]) -> None:
    """Rows no command would write now (from before a limit existed, say)."""
    with engine_of(storage).begin() as conn:
        conn.execute(insert(_table(table)), values)


def set_role_directly(storage: Storage, role: str, *, user_id: int | None = None, username: str | None = None) -> None:
    """A role changed behind this process's back (another process, or a DBA), with no audit."""
    t = _table("T_USER")
    where = t.c.id == user_id if user_id is not None else t.c.username == username
    with engine_of(storage).begin() as conn:
        conn.execute(update(t).where(where).values(role=role))


def revoke_directly(storage: Storage, viewer: str) -> None:
    """Every grant of the user named `viewer` taken back behind this process's back (another process)."""
    users, grants = _table("T_USER"), _table("T_GRANT")
    with engine_of(storage).begin() as conn:
        conn.execute(delete(grants).where(grants.c.viewer_id.in_(
            select(users.c.id).where(users.c.username == viewer).scalar_subquery())))


def make_user(storage: Storage, name: str, role: str = "member") -> User:
    """A registered user with this role (no command could make the first admin)."""
    created, _ = storage.ensure_user(f"mm-{name}", name)
    if role != "member":
        # Set directly: tests that read the audit log expect only what they did themselves in it.
        set_role_directly(storage, role, user_id=created.id)
    found = storage.user_by_id(created.id)
    assert found is not None
    return found


def all_pages(storage: Storage, viewer: User, flt: Filter, page: int = 3) -> list[int]:
    """Every id a viewer's search returns, following the cursors page by page."""
    ids: list[int] = []
    before = None
    while True:
        result = storage.find(viewer, flt, limit=page, before=before)
        ids.extend(r.id for r in result.records)
        if result.next_before is None:
            return ids
        before = result.next_before
