"""Reports and their signed versions, radiologists' signing certificates, reviews of AI
findings, citizen identity numbers on patient records and records a person confirmed to be
one person.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("id", _ID, nullable=False),
        sa.Column("study_pk", _ID, nullable=False),
        sa.Column("template", sa.String(length=32), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("author", sa.String(length=128), nullable=False),
        sa.Column("draft", sa.Text(), nullable=True),
        sa.Column("draft_saved_at", _WHEN, nullable=True),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
        sa.ForeignKeyConstraint(
            ["study_pk"],
            ["studies.id"],
            name=op.f("fk_reports_study_pk_studies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reports")),
        sa.UniqueConstraint("study_pk", name=op.f("uq_reports_study_pk")),
    )
    op.create_table(
        "report_versions",
        sa.Column("id", _ID, nullable=False),
        sa.Column("report_id", _ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=True),
        sa.Column("signer", sa.String(length=512), nullable=True),
        sa.Column("signed_by", sa.String(length=128), nullable=False),
        sa.Column("signed_at", _WHEN, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("pdf_sop_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("sr_sop_instance_uid", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["reports.id"],
            name=op.f("fk_report_versions_report_id_reports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_versions")),
        sa.UniqueConstraint(
            "report_id", "version", name=op.f("uq_report_versions_report_id_version")
        ),
    )
    op.create_table(
        "user_certificates",
        sa.Column("id", _ID, nullable=False),
        sa.Column("user_name", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=512), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=False),
        sa.Column("pkcs12", sa.LargeBinary(), nullable=True),
        sa.Column("not_after", _WHEN, nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("revoked_at", _WHEN, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_certificates")),
    )
    op.create_index(op.f("ix_user_certificates_user_name"), "user_certificates", ["user_name"])
    op.create_table(
        "ai_reviews",
        sa.Column("id", _ID, nullable=False),
        sa.Column("job_id", _ID, nullable=False),
        sa.Column("reviewer", sa.String(length=128), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("correct_label", sa.String(length=128), nullable=True),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["inference_jobs.id"],
            name=op.f("fk_ai_reviews_job_id_inference_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_reviews")),
        sa.UniqueConstraint("job_id", "reviewer", name=op.f("uq_ai_reviews_job_id_reviewer")),
    )
    with op.batch_alter_table("patients") as batch:
        batch.add_column(sa.Column("citizen_id", sa.String(length=32), nullable=True))
        batch.create_index(batch.f("ix_patients_citizen_id"), ["citizen_id"])
    op.create_table(
        "patient_links",
        sa.Column("id", _ID, nullable=False),
        sa.Column("patient_a", _ID, nullable=False),
        sa.Column("patient_b", _ID, nullable=False),
        sa.Column("confirmed_by", sa.String(length=128), nullable=False),
        sa.Column("confirmed_at", _WHEN, nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_a"],
            ["patients.id"],
            name=op.f("fk_patient_links_patient_a_patients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["patient_b"],
            ["patients.id"],
            name=op.f("fk_patient_links_patient_b_patients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_links")),
        sa.UniqueConstraint(
            "patient_a", "patient_b", name=op.f("uq_patient_links_patient_a_patient_b")
        ),
    )
    op.create_index(op.f("ix_patient_links_patient_b"), "patient_links", ["patient_b"])


def downgrade() -> None:
    op.drop_table("patient_links")
    with op.batch_alter_table("patients") as batch:
        batch.drop_index(batch.f("ix_patients_citizen_id"))
        batch.drop_column("citizen_id")
    op.drop_table("ai_reviews")
    op.drop_table("user_certificates")
    op.drop_table("report_versions")
    op.drop_table("reports")
