"""PostgreSQL: indexes that serve prefix wildcards (``NGUYEN*``, ``P00*``) in any collation.

A plain btree index serves ``LIKE 'NGUYEN%'`` only under the C collation; a province's
database is usually created in a language collation (en_US.UTF-8, vi_VN.UTF-8). The
``varchar_pattern_ops`` indexes compare bytes and serve every prefix match. SQLite is left
as it is: with ``case_sensitive_like`` on, its own indexes already serve such prefixes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PATTERN_INDEXES = {
    "ix_patients_patient_name_folded_pattern": ("patients", "patient_name_folded"),
    "ix_patients_patient_name_upper_pattern": ("patients", "patient_name_upper"),
    "ix_patients_patient_id_pattern": ("patients", "patient_id"),
    "ix_studies_accession_number_pattern": ("studies", "accession_number"),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, (table, column) in PATTERN_INDEXES.items():
        op.create_index(name, table, [column], postgresql_ops={column: "varchar_pattern_ops"})


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, (table, _) in PATTERN_INDEXES.items():
        op.drop_index(name, table_name=table)
