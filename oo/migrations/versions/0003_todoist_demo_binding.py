"""users.is_demo and integrations.api_base_url: demo users' fake tokens stay bound to the fake server

Revision ID: 0003_todoist_demo_binding
Revises: 0002_todoist_external_id
Create Date: 2026-12-02 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_todoist_demo_binding"
down_revision: str | None = "0002_todoist_external_id"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("is_demo", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("integrations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("api_base_url", sa.String(length=300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("integrations", schema=None) as batch_op:
        batch_op.drop_column("api_base_url")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("is_demo")
