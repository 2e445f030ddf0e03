"""Alerts posted exactly once and a loop that reports its own health: each alert state counts its
episodes (a button names the one it belongs to), each queued post has a key Mattermost sees again on
a retry, an uploaded chart is kept for the retry, a post Mattermost refuses for good is set aside,
and the last check of each host is kept for /healthz and `admin status`.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Time = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}


def upgrade() -> None:
    with op.batch_alter_table("T_ALERT_STATE") as batch:
        batch.add_column(sa.Column("episode", sa.BigInteger, nullable=False, server_default="0"))
    with op.batch_alter_table("T_OUTBOX") as batch:
        batch.add_column(sa.Column("episode", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("post_key", sa.String(32), nullable=True))
        batch.add_column(sa.Column("file_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("set_aside_at", Time, nullable=True))
    op.create_table(
        "T_ALERT_HEALTH",
        sa.Column("host", sa.String(128), primary_key=True),
        sa.Column("last_check_at", Time, nullable=False),
        sa.Column("last_ok_at", Time, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("failing_posted", sa.Boolean, nullable=False),
        **MYSQL,
    )


def downgrade() -> None:
    op.drop_table("T_ALERT_HEALTH")
    with op.batch_alter_table("T_OUTBOX") as batch:
        for name in ("set_aside_at", "file_id", "post_key", "episode"):
            batch.drop_column(name)
    with op.batch_alter_table("T_ALERT_STATE") as batch:
        batch.drop_column("episode")
