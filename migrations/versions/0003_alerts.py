"""Disk alerts: per-path state, samples, the outbox of posts, and the per-host lease.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
PathStr = sa.String(512).with_variant(mysql.VARCHAR(512, collation="utf8mb4_bin"), "mysql", "mariadb")
Blob = sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb")
MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}


def upgrade() -> None:
    op.create_table(
        "T_ALERT_STATE",
        sa.Column("host", sa.String(128), primary_key=True),
        sa.Column("path", PathStr, primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("posted_level", sa.String(16), nullable=True),
        sa.Column("last_post_at", Time, nullable=True),
        sa.Column("acknowledged", sa.Boolean, nullable=False),
        sa.Column("snoozed_until", Time, nullable=True),
        sa.Column("updated_at", Time, nullable=False),
        **MYSQL,
    )
    op.create_table(
        "T_SAMPLE",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("host", sa.String(128), nullable=False),
        sa.Column("path", PathStr, nullable=False),
        sa.Column("at", Time, nullable=False),
        sa.Column("used_percent", sa.Double, nullable=False),
        sa.Column("total_bytes", sa.BigInteger, nullable=False),
        sa.Column("used_bytes", sa.BigInteger, nullable=False),
        sa.Column("free_bytes", sa.BigInteger, nullable=False),
        sa.Column("inodes_total", sa.BigInteger, nullable=False),
        sa.Column("inodes_used", sa.BigInteger, nullable=False),
        sa.Index("ix_sample_host_path_at", "host", "path", "at"),
        **MYSQL,
    )
    op.create_table(
        "T_OUTBOX",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("host", sa.String(128), nullable=False),
        sa.Column("path", PathStr, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("chart", Blob, nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", Time, nullable=False),
        sa.Column("sent_at", Time, nullable=True),
        sa.Column("post_id", sa.String(64), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Index("ix_outbox_pending", "host", "sent_at", "id"),
        **MYSQL,
    )
    op.create_table(
        "T_LEASE",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires_at", Time, nullable=False),
        sa.Column("fencing", sa.BigInteger, nullable=False),
        **MYSQL,
    )


def downgrade() -> None:
    for name in ("T_LEASE", "T_OUTBOX", "T_SAMPLE", "T_ALERT_STATE"):
        op.drop_table(name)
