"""schema.sql, the migrations and bot/tables.py describe one and the same schema."""

from __future__ import annotations

from pathlib import Path

import pymysql
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from bot import migrate
from bot.storage import make_engine
from bot.tables import metadata
from tests.conftest import MARIADB_HOST, MARIADB_PASSWORD, MARIADB_PORT, MARIADB_USER

SCHEMA = Path(__file__).resolve().parent.parent / "schema.sql"


def describe(url: str) -> dict:
    """Tables, columns (type, nullability, default, collation) and indexes, as MariaDB reports them."""
    engine = create_engine(url)
    with engine.connect() as conn:
        columns = conn.execute(text(
            "SELECT table_name, column_name, column_type, is_nullable, column_default, collation_name, extra "
            "FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name <> 'T_CONTENT_FT' "
            "ORDER BY table_name, ordinal_position")).all()
        indexes = conn.execute(text(
            "SELECT table_name, index_name, non_unique, GROUP_CONCAT(column_name ORDER BY seq_in_index) "
            "FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name <> 'T_CONTENT_FT' "
            "GROUP BY table_name, index_name, non_unique ORDER BY table_name, index_name")).all()
        foreign = conn.execute(text(
            "SELECT table_name, column_name, referenced_table_name, referenced_column_name "
            "FROM information_schema.key_column_usage WHERE table_schema = DATABASE() "
            "AND referenced_table_name IS NOT NULL ORDER BY table_name, column_name")).all()
    engine.dispose()
    return {"columns": [tuple(r) for r in columns], "indexes": [tuple(r) for r in indexes],
            "foreign": [tuple(r) for r in foreign]}


def load_schema_sql(url_db: str) -> None:
    conn = pymysql.connect(host=MARIADB_HOST, port=MARIADB_PORT, user=MARIADB_USER, password=MARIADB_PASSWORD,
                           database=url_db, autocommit=True)
    with conn.cursor() as cur:
        lines = [line for line in SCHEMA.read_text(encoding="utf-8").splitlines() if not line.startswith("--")]
        for statement in "\n".join(lines).split(";"):
            if statement.strip():
                cur.execute(statement)
    conn.close()


def test_schema_sql_builds_the_same_tables_columns_and_indexes_as_the_migrations(mariadb_url: str) -> None:
    migrated = mariadb_url
    engine = make_engine(migrated)
    migrate.upgrade(engine)
    engine.dispose()

    by_hand = mariadb_url.rsplit("/", 1)[0] + "/" + "by_hand_" + mariadb_url.rsplit("/", 1)[1].split("?")[0][-12:]
    name = by_hand.rsplit("/", 1)[1]
    admin = pymysql.connect(host=MARIADB_HOST, port=MARIADB_PORT, user=MARIADB_USER, password=MARIADB_PASSWORD,
                            autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    try:
        load_schema_sql(name)
        assert describe(by_hand + "?charset=utf8mb4") == describe(migrated)
        # A database made from schema.sql is already at the newest migration: migrate changes nothing.
        engine = make_engine(by_hand + "?charset=utf8mb4")
        assert migrate.current_revision(engine) == migrate.head_revision()
        engine.dispose()
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def test_the_migrations_build_what_the_code_expects(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        # The search indexes are derived tables that the code reaches with plain SQL, not metadata.
        def ours(name: str | None, kind: str, _parent: object) -> bool:
            return not (kind == "table" and name is not None and name.startswith(("T_CONTENT_FT", "sqlite_")))

        opts = {"compare_type": True, "include_name": ours}
        diff = compare_metadata(MigrationContext.configure(conn, opts=opts), metadata)
    engine.dispose()
    assert diff == []


def test_migrate_twice_is_a_no_op(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    engine.dispose()
