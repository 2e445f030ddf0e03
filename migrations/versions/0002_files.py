"""Files attached to records (kept as links to the Mattermost files).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}


def upgrade() -> None:
    op.create_table(
        "T_FILE",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("record_id", Id, sa.ForeignKey("T_CONTENT.id"), nullable=False),
        sa.Column("mm_file_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mime_type", sa.String(128), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Index("ix_file_record", "record_id"),
        **MYSQL,
    )


def downgrade() -> None:
    op.drop_table("T_FILE")
