"""How far the audit trail has been sent to each syslog collector (IHE ATNA), shared by nodes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_forwarding",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("claimed_by", sa.String(length=128), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_audit_forwarding")),
    )


def downgrade() -> None:
    op.drop_table("audit_forwarding")
