"""AI results indexed for the worklist (hospital, finding, severity, webhook delivery) and
per-hospital model settings (on/off, threshold, who set it and on what evidence).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inference_jobs") as batch:
        batch.add_column(sa.Column("hospital", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("finding", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("severity", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("notify_attempts", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_index(
        "ix_inference_jobs_study_instance_uid", "inference_jobs", ["study_instance_uid"]
    )
    op.create_table(
        "ai_model_settings",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("hospital", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_model_settings")),
        sa.UniqueConstraint("hospital", "model", name=op.f("uq_ai_model_settings_hospital_model")),
    )


def downgrade() -> None:
    op.drop_table("ai_model_settings")
    op.drop_index("ix_inference_jobs_study_instance_uid", table_name="inference_jobs")
    with op.batch_alter_table("inference_jobs") as batch:
        for column in ("notify_attempts", "notified_at", "severity", "finding", "hospital"):
            batch.drop_column(column)
