"""Storage tests run on both index databases: SQLite (embedded) and PostgreSQL (at scale)."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

from storage import StorageSettings
from tests.conftest import CI

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    try:
        engine = sqlalchemy.create_engine(POSTGRES)
        with engine.connect():
            pass
        engine.dispose()
    except sqlalchemy.exc.OperationalError as exc:
        if CI:
            pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is needed in CI: {exc}")
        return False
    return True


@pytest.fixture
def postgres_schema(postgres_available: bool) -> Iterator[str]:
    """A schema of its own in the `test` database, dropped afterwards."""
    if not postgres_available:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = sqlalchemy.create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def storage_settings(request: pytest.FixtureRequest, tmp_path: Path) -> StorageSettings:
    database_url = None
    if request.param == "postgresql":
        database_url = request.getfixturevalue("postgres_schema")
    return StorageSettings(
        data_dir=tmp_path / "archive", database_url=database_url, min_free_mb=0, _env_file=None
    )
