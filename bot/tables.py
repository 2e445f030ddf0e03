"""The tables, as SQLAlchemy Core metadata. The migrations build exactly this (a test checks it).

Original names are kept where the old Tornado page had them (T_USER, T_CONTENT, T_SETTING).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects import mysql

metadata = MetaData()

# SQLite only aliases the rowid for INTEGER PRIMARY KEY, so ids are BIGINT on MariaDB alone.
Id = BigInteger().with_variant(Integer(), "sqlite")
# Microseconds keep "newest first" stable when several records land in one second.
Time = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
Body = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
# The search copy is compared byte for byte: the folding is done once, in Python, on write.
SearchText = Text().with_variant(mysql.MEDIUMTEXT(collation="utf8mb4_bin"), "mysql", "mariadb")

_mysql = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}

user = Table(
    "T_USER", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("mm_user_id", String(64), nullable=False, unique=True),
    Column("username", String(64), nullable=False, index=True),
    Column("role", String(16), nullable=False, server_default="member"),
    Column("created_at", Time, nullable=False),
    Column("updated_at", Time, nullable=False),
    **_mysql,
)

content = Table(
    "T_CONTENT", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("owner_id", Id, ForeignKey("T_USER.id"), nullable=False),
    Column("body", Body, nullable=False),
    Column("search_text", SearchText, nullable=False),
    Column("created_at", Time, nullable=False),
    Column("updated_at", Time, nullable=False),
    Column("deleted_at", Time, nullable=True),
    Column("deleted_by", Id, ForeignKey("T_USER.id"), nullable=True),
    Index("ix_content_owner_id", "owner_id", "id"),
    Index("ix_content_created", "created_at"),
    **_mysql,
)

tag = Table(
    "T_TAG", metadata,
    Column("record_id", Id, ForeignKey("T_CONTENT.id"), primary_key=True),
    Column("tag", String(64), primary_key=True),
    Index("ix_tag_tag_record", "tag", "record_id"),
    **_mysql,
)

grant = Table(
    "T_GRANT", metadata,
    Column("viewer_id", Id, ForeignKey("T_USER.id"), primary_key=True),
    Column("owner_id", Id, ForeignKey("T_USER.id"), primary_key=True),
    Column("granted_by", Id, ForeignKey("T_USER.id"), nullable=True),
    Column("created_at", Time, nullable=False),
    Index("ix_grant_owner", "owner_id"),
    **_mysql,
)

share = Table(
    "T_SHARE", metadata,
    Column("user_id", Id, ForeignKey("T_USER.id"), primary_key=True),
    Column("record_id", Id, ForeignKey("T_CONTENT.id"), primary_key=True),
    Column("shared_by", Id, ForeignKey("T_USER.id"), nullable=False),
    Column("created_at", Time, nullable=False),
    Index("ix_share_record", "record_id"),
    **_mysql,
)

revision = Table(
    "T_REVISION", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("record_id", Id, ForeignKey("T_CONTENT.id"), nullable=False),
    Column("body", Body, nullable=False),
    Column("edited_by", Id, ForeignKey("T_USER.id"), nullable=False),
    Column("edited_at", Time, nullable=False),
    Index("ix_revision_record", "record_id", "id"),
    **_mysql,
)

setting = Table(
    "T_SETTING", metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_by", Id, ForeignKey("T_USER.id"), nullable=True),
    Column("updated_at", Time, nullable=False),
    **_mysql,
)

audit = Table(
    "T_AUDIT", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("actor_id", Id, ForeignKey("T_USER.id"), nullable=True),
    Column("action", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    Column("created_at", Time, nullable=False),
    **_mysql,
)

file = Table(
    "T_FILE", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("record_id", Id, ForeignKey("T_CONTENT.id"), nullable=False),
    Column("mm_file_id", String(64), nullable=False),
    Column("name", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mime_type", String(128), nullable=False),
    Column("created_at", Time, nullable=False),
    Index("ix_file_record", "record_id"),
    **_mysql,
)
