"""A MariaDB connection that the server kills between two calls is never seen by the caller."""

from __future__ import annotations

from sqlalchemy import text

from bot import migrate
from bot.storage import Filter, Storage, make_engine
from tests.conftest import _admin_connection
from tests.helpers import make_user


def test_a_connection_killed_by_the_server_between_calls_is_replaced_by_pre_ping(mariadb_url: str) -> None:
    engine = make_engine(mariadb_url)
    migrate.upgrade(engine)
    storage = Storage(engine)
    bob = make_user(storage, "bob")
    rid = storage.add_record(bob, "before the kill")
    database = mariadb_url.rsplit("/", 1)[1].split("?")[0]
    with engine.connect() as conn:
        pooled = conn.execute(text("SELECT CONNECTION_ID()")).scalar_one()
    admin = _admin_connection()
    with admin.cursor() as cur:
        cur.execute("SELECT id FROM information_schema.processlist WHERE db = %s", (database,))
        victims = [row[0] for row in cur.fetchall()]
        assert pooled in victims
        for victim in victims:
            cur.execute(f"KILL {int(victim)}")
    admin.close()
    assert [r.id for r in storage.find(bob, Filter(), limit=5).records] == [rid]
    assert storage.add_record(bob, "after the kill") > rid
    with engine.connect() as conn:
        assert conn.execute(text("SELECT CONNECTION_ID()")).scalar_one() != pooled
    engine.dispose()
