"""The index database can answer the real queries from indexes, not by reading every row."""

import pytest
from sqlalchemy import text

from storage import Archive

QUERIES = {
    "ix_patients_patient_name_folded_pattern": (
        "SELECT id FROM patients WHERE patient_name_folded LIKE 'NGUYEN%' ESCAPE '\\'"
    ),
    "ix_patients_patient_id_pattern": "SELECT id FROM patients WHERE patient_id LIKE 'P00%'",
    "ix_studies_accession_number_pattern": (
        "SELECT id FROM studies WHERE accession_number LIKE 'ACC1%' ESCAPE '\\'"
    ),
    "ix_studies_study_date": (
        "SELECT id FROM studies WHERE study_date BETWEEN '20260101' AND '20260131'"
    ),
}


@pytest.mark.parametrize(("index", "query"), QUERIES.items(), ids=list(QUERIES))
def test_wildcards_and_ranges_use_an_index_on_postgresql(
    archive: Archive, index: str, query: str
) -> None:
    if archive.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's planner; SQLite's indexes serve prefixes as they are")
    with archive.engine.connect() as conn:
        conn.execute(text("SET enable_seqscan = off"))  # as on a table of millions of rows
        plan = "\n".join(row[0] for row in conn.execute(text(f"EXPLAIN {query}")))
    assert index in plan
