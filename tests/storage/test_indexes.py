"""PostgreSQL answers the real queries from indexes, not by reading every row.

SQLite needs nothing more: with ``case_sensitive_like`` on, its own indexes serve prefixes.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from storage import Archive, StorageSettings

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


@pytest.fixture
def postgres_archive(postgres_url: str, tmp_path: Path) -> Iterator[Archive]:
    settings = StorageSettings(
        data_dir=tmp_path, database_url=postgres_url, min_free_mb=0, _env_file=None
    )
    with Archive.open(settings) as archive:
        yield archive


@pytest.mark.postgres
@pytest.mark.parametrize(("index", "query"), QUERIES.items(), ids=list(QUERIES))
def test_wildcards_and_ranges_use_an_index_on_postgresql(
    postgres_archive: Archive, index: str, query: str
) -> None:
    with postgres_archive.engine.connect() as conn:
        conn.execute(text("SET enable_seqscan = off"))  # as on a table of millions of rows
        plan = "\n".join(row[0] for row in conn.execute(text(f"EXPLAIN {query}")))
    assert index in plan
