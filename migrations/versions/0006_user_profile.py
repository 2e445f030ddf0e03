"""What Mattermost says about each user that replies depend on: their locale and their timezone (an
IANA name), and when recbot last asked, so it asks again at most every few minutes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

Time = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("T_USER") as batch:
        batch.add_column(sa.Column("locale", sa.String(16), nullable=True))
        batch.add_column(sa.Column("timezone", sa.String(64), nullable=True))
        batch.add_column(sa.Column("profile_at", Time, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("T_USER") as batch:
        for name in ("profile_at", "timezone", "locale"):
            batch.drop_column(name)
