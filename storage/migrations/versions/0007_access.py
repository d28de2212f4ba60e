"""Patient records per hospital; access beyond a user's own hospital: shares, reading assignments and capability links;
the key the archive signs its access tokens with, and when a user's tokens were voided; the role of whoever an audit row is about;
and which peers the associations we open speak DICOM TLS to.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_AT = sa.DateTime(timezone=True)


def upgrade() -> None:
    # A patient record belongs to a hospital: another hospital naming the same issuer and
    # ID gets a record of its own, never a way into this one.
    with op.batch_alter_table("patients") as batch:
        batch.add_column(
            sa.Column("hospital", sa.String(length=64), nullable=False, server_default="")
        )
    op.execute(
        "UPDATE patients SET hospital = COALESCE((SELECT MIN(studies.hospital) FROM studies "
        "WHERE studies.patient_pk = patients.id), '')"
    )
    with op.batch_alter_table("patients") as batch:
        batch.drop_constraint("uq_patients_issuer_patient_id", type_="unique")
        batch.create_unique_constraint(
            "uq_patients_hospital_issuer_patient_id", ["hospital", "issuer", "patient_id"]
        )
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("role", sa.String(length=32), nullable=True))
    with op.batch_alter_table("remote_nodes") as batch:
        batch.add_column(sa.Column("tls", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("tokens_after", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "signing_keys",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("created_at", _AT, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_signing_keys")),
    )
    op.create_table(
        "links",
        sa.Column("id", _ID, nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=256), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("hospital", sa.String(length=64), nullable=True),
        sa.Column("created_at", _AT, nullable=False),
        sa.Column("expires_at", _AT, nullable=False),
        sa.Column("revoked_at", _AT, nullable=True),
        sa.Column("revoked_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_links")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_links_token_sha256")),
    )
    op.create_table(
        "grants",
        sa.Column("id", _ID, nullable=False),
        sa.Column("study_pk", _ID, nullable=True),
        sa.Column("patient_pk", _ID, nullable=True),
        sa.Column("hospital", sa.String(length=64), nullable=True),
        sa.Column("user_name", sa.String(length=64), nullable=True),
        sa.Column("link_id", _ID, nullable=True),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("expires_at", _AT, nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", _AT, nullable=False),
        sa.Column("revoked_at", _AT, nullable=True),
        sa.Column("revoked_by", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["study_pk"],
            ["studies.id"],
            name=op.f("fk_grants_study_pk_studies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["patient_pk"],
            ["patients.id"],
            name=op.f("fk_grants_patient_pk_patients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["link_id"], ["links.id"], name=op.f("fk_grants_link_id_links"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grants")),
    )
    for column in ("study_pk", "patient_pk", "hospital", "user_name", "link_id"):
        op.create_index(op.f(f"ix_grants_{column}"), "grants", [column])


def downgrade() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.drop_constraint("uq_patients_hospital_issuer_patient_id", type_="unique")
        batch.create_unique_constraint("uq_patients_issuer_patient_id", ["issuer", "patient_id"])
        batch.drop_column("hospital")
    op.drop_table("grants")
    op.drop_table("links")
    op.drop_table("signing_keys")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("tokens_after")
    with op.batch_alter_table("remote_nodes") as batch:
        batch.drop_column("tls")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("role")
