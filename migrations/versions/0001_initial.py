"""The first schema: users, records, tags, grants, shares, revisions, settings, audit; SQLite's FTS5 index.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the column types of this revision (bot/tables.py may move on; this file may not).
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
Body = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
SearchText = sa.Text().with_variant(mysql.MEDIUMTEXT(collation="utf8mb4_bin"), "mysql", "mariadb")
MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}

SQLITE_FTS = [
    # Contentless and without positions: it only proposes candidates, storage re-checks each one.
    "CREATE VIRTUAL TABLE T_CONTENT_FTS USING fts5("
    "search_text, content='', tokenize='trigram case_sensitive 1', detail='none')",
    "CREATE VIRTUAL TABLE T_CONTENT_FTS_VOCAB USING fts5vocab(T_CONTENT_FTS, 'row')",
    # The two sentinel characters make every 1- and 2-character occurrence start a trigram.
    "CREATE TRIGGER T_CONTENT_FTS_AI AFTER INSERT ON T_CONTENT BEGIN "
    "INSERT INTO T_CONTENT_FTS(rowid, search_text) VALUES (new.id, new.search_text || char(1, 1)); END",
    "CREATE TRIGGER T_CONTENT_FTS_AU AFTER UPDATE OF search_text ON T_CONTENT BEGIN "
    "INSERT INTO T_CONTENT_FTS(T_CONTENT_FTS, rowid, search_text) "
    "VALUES ('delete', old.id, old.search_text || char(1, 1)); "
    "INSERT INTO T_CONTENT_FTS(rowid, search_text) VALUES (new.id, new.search_text || char(1, 1)); END",
    "CREATE TRIGGER T_CONTENT_FTS_AD AFTER DELETE ON T_CONTENT BEGIN "
    "INSERT INTO T_CONTENT_FTS(T_CONTENT_FTS, rowid, search_text) "
    "VALUES ('delete', old.id, old.search_text || char(1, 1)); END",
]


def upgrade() -> None:
    op.create_table(
        "T_USER",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("mm_user_id", sa.String(64), nullable=False, unique=True),
        sa.Column("username", sa.String(64), nullable=False, index=True),
        sa.Column("role", sa.String(16), nullable=False, server_default="member"),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("updated_at", Time, nullable=False),
        **MYSQL,
    )
    op.create_table(
        "T_CONTENT",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("owner_id", Id, sa.ForeignKey("T_USER.id"), nullable=False),
        sa.Column("body", Body, nullable=False),
        sa.Column("search_text", SearchText, nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("updated_at", Time, nullable=False),
        sa.Column("deleted_at", Time, nullable=True),
        sa.Column("deleted_by", Id, sa.ForeignKey("T_USER.id"), nullable=True),
        sa.Index("ix_content_owner_id", "owner_id", "id"),
        sa.Index("ix_content_created", "created_at"),
        **MYSQL,
    )
    op.create_table(
        "T_TAG",
        sa.Column("record_id", Id, sa.ForeignKey("T_CONTENT.id"), primary_key=True),
        sa.Column("tag", sa.String(64), primary_key=True),
        sa.Index("ix_tag_tag_record", "tag", "record_id"),
        **MYSQL,
    )
    op.create_table(
        "T_GRANT",
        sa.Column("viewer_id", Id, sa.ForeignKey("T_USER.id"), primary_key=True),
        sa.Column("owner_id", Id, sa.ForeignKey("T_USER.id"), primary_key=True),
        sa.Column("granted_by", Id, sa.ForeignKey("T_USER.id"), nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.Index("ix_grant_owner", "owner_id"),
        **MYSQL,
    )
    op.create_table(
        "T_SHARE",
        sa.Column("user_id", Id, sa.ForeignKey("T_USER.id"), primary_key=True),
        sa.Column("record_id", Id, sa.ForeignKey("T_CONTENT.id"), primary_key=True),
        sa.Column("shared_by", Id, sa.ForeignKey("T_USER.id"), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Index("ix_share_record", "record_id"),
        **MYSQL,
    )
    op.create_table(
        "T_REVISION",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("record_id", Id, sa.ForeignKey("T_CONTENT.id"), nullable=False),
        sa.Column("body", Body, nullable=False),
        sa.Column("edited_by", Id, sa.ForeignKey("T_USER.id"), nullable=False),
        sa.Column("edited_at", Time, nullable=False),
        sa.Index("ix_revision_record", "record_id", "id"),
        **MYSQL,
    )
    op.create_table(
        "T_SETTING",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_by", Id, sa.ForeignKey("T_USER.id"), nullable=True),
        sa.Column("updated_at", Time, nullable=False),
        **MYSQL,
    )
    op.create_table(
        "T_AUDIT",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("actor_id", Id, sa.ForeignKey("T_USER.id"), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("created_at", Time, nullable=False),
        **MYSQL,
    )
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_FTS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("T_CONTENT_FTS_AI", "T_CONTENT_FTS_AU", "T_CONTENT_FTS_AD"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS T_CONTENT_FTS_VOCAB")
        op.execute("DROP TABLE IF EXISTS T_CONTENT_FTS")
    for name in ("T_AUDIT", "T_SETTING", "T_REVISION", "T_SHARE", "T_GRANT", "T_TAG", "T_CONTENT", "T_USER"):
        op.drop_table(name)
