"""The tables, as SQLAlchemy Core metadata. The migrations build exactly this (a test checks it).

Original names are kept where the old Tornado page had them (T_USER, T_CONTENT, T_SETTING).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
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
# Paths are compared as bytes: /Data and /data are two mounts.
PathStr = String(512).with_variant(mysql.VARCHAR(512, collation="utf8mb4_bin"), "mysql", "mariadb")
# Tags compare exactly on both backends (a case-folded copy is what is stored).
TagStr = String(64).with_variant(mysql.VARCHAR(64, collation="utf8mb4_bin"), "mysql", "mariadb")
Blob = LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb")
SearchText = Text().with_variant(mysql.MEDIUMTEXT(collation="utf8mb4_bin"), "mysql", "mariadb")

_mysql: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}

user = Table(
    "T_USER", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("mm_user_id", String(64), nullable=False, unique=True),
    Column("username", String(64), nullable=False, index=True),
    Column("role", String(16), nullable=False, server_default="member"),
    Column("created_at", Time, nullable=False),
    Column("updated_at", Time, nullable=False),
    Column("locale", String(16), nullable=True),
    Column("timezone", String(64), nullable=True),
    Column("profile_at", Time, nullable=True),
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
    Column("tag", TagStr, primary_key=True),
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

alert_state = Table(
    "T_ALERT_STATE", metadata,
    Column("host", String(128), primary_key=True),
    Column("path", PathStr, primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("level", String(16), nullable=False),
    Column("posted_level", String(16), nullable=True),
    Column("last_post_at", Time, nullable=True),
    Column("acknowledged", Boolean, nullable=False),
    Column("snoozed_until", Time, nullable=True),
    Column("updated_at", Time, nullable=False),
    Column("episode", BigInteger, nullable=False, server_default="0"),
    **_mysql,
)

sample = Table(
    "T_SAMPLE", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("host", String(128), nullable=False),
    Column("path", PathStr, nullable=False),
    Column("at", Time, nullable=False),
    Column("used_percent", Double, nullable=False),
    Column("total_bytes", BigInteger, nullable=False),
    Column("used_bytes", BigInteger, nullable=False),
    Column("free_bytes", BigInteger, nullable=False),
    Column("inodes_total", BigInteger, nullable=False),
    Column("inodes_used", BigInteger, nullable=False),
    Index("ix_sample_host_path_at", "host", "path", "at"),
    **_mysql,
)

outbox = Table(
    "T_OUTBOX", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("host", String(128), nullable=False),
    Column("path", PathStr, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("level", String(16), nullable=False),
    Column("message", Text, nullable=False),
    Column("chart", Blob, nullable=True),
    Column("created_at", Time, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Time, nullable=False),
    Column("sent_at", Time, nullable=True),
    Column("post_id", String(64), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("episode", BigInteger, nullable=False, server_default="0"),
    Column("post_key", String(32), nullable=True),
    Column("file_id", String(64), nullable=True),
    Column("set_aside_at", Time, nullable=True),
    # NULL: the alert channel; else the Mattermost user id whose direct-message channel gets the post.
    Column("target_user", String(64), nullable=True),
    # What makes a queued post one of a kind (a user's digest of one day): a second queueing fails.
    Column("dedup_key", String(128), nullable=True),
    Index("ix_outbox_pending", "host", "sent_at", "id"),
    Index("ux_outbox_dedup", "dedup_key", unique=True),
    **_mysql,
)

alert_health = Table(
    "T_ALERT_HEALTH", metadata,
    Column("host", String(128), primary_key=True),
    Column("last_check_at", Time, nullable=False),
    Column("last_ok_at", Time, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("failures", Integer, nullable=False),
    Column("failing_posted", Boolean, nullable=False),
    **_mysql,
)

lease = Table(
    "T_LEASE", metadata,
    Column("name", String(255), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires_at", Time, nullable=False),
    Column("fencing", BigInteger, nullable=False),
    **_mysql,
)

digest = Table(
    "T_DIGEST", metadata,
    Column("user_id", Id, ForeignKey("T_USER.id"), primary_key=True, autoincrement=False),
    Column("period", String(8), nullable=False),
    Column("tag", TagStr, nullable=True),
    Column("owner_id", Id, ForeignKey("T_USER.id"), nullable=True),
    Column("zone", String(64), nullable=False),
    # Records created up to this moment were covered by the last digest (or predate the subscription).
    Column("sent_until", Time, nullable=False),
    Column("created_at", Time, nullable=False),
    Column("updated_at", Time, nullable=False),
    **_mysql,
)
