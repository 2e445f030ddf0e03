"""Personal digests: one subscription per user (T_DIGEST), and an outbox that can post into a user's
direct-message channel (target_user) and refuses a second copy of a one-of-a-kind post (dedup_key).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
TagStr = sa.String(64).with_variant(mysql.VARCHAR(64, collation="utf8mb4_bin"), "mysql", "mariadb")
MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}


def upgrade() -> None:
    with op.batch_alter_table("T_OUTBOX") as batch:
        batch.add_column(sa.Column("target_user", sa.String(64), nullable=True))
        batch.add_column(sa.Column("dedup_key", sa.String(128), nullable=True))
    op.create_index("ux_outbox_dedup", "T_OUTBOX", ["dedup_key"], unique=True)
    op.create_table(
        "T_DIGEST",
        sa.Column("user_id", Id, sa.ForeignKey("T_USER.id"), primary_key=True, autoincrement=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("tag", TagStr, nullable=True),
        sa.Column("owner_id", Id, sa.ForeignKey("T_USER.id"), nullable=True),
        sa.Column("zone", sa.String(64), nullable=False),
        sa.Column("sent_until", Time, nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("updated_at", Time, nullable=False),
        **MYSQL,
    )


def downgrade() -> None:
    op.drop_table("T_DIGEST")
    op.drop_index("ux_outbox_dedup", table_name="T_OUTBOX")
    with op.batch_alter_table("T_OUTBOX") as batch:
        batch.drop_column("dedup_key")
        batch.drop_column("target_user")
