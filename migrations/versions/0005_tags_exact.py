"""Tags compare exactly on MariaDB, as on SQLite: `#resume` and `#résumé`, `#strasse` and `#straße`
are different tags (utf8mb4_unicode_ci made them collide, so adding both failed).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        op.alter_column("T_TAG", "tag", existing_type=sa.String(64), existing_nullable=False,
                        type_=mysql.VARCHAR(64, collation="utf8mb4_bin"))


def downgrade() -> None:
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        op.alter_column("T_TAG", "tag", existing_type=mysql.VARCHAR(64, collation="utf8mb4_bin"),
                        existing_nullable=False, type_=sa.String(64))
