"""Merge the two 0003 heads (the app API's tables and Todoist demo binding) into one line.

Both branches were written in parallel from 0002; neither touches the other's tables, so the
merge has no operations of its own.

Revision ID: 0004_merge_0003_heads
Revises: 0003_app_api, 0003_todoist_demo_binding
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0004_merge_0003_heads"
down_revision: str | Sequence[str] | None = ("0003_app_api", "0003_todoist_demo_binding")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
