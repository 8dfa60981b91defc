"""trainings running on each replica, as gateways see them

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 15:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("gateway_load", sa.Column("trainings", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("gateway_load", "trainings")
