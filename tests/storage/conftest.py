"""Storage tests run on both index databases and both blob stores (S3 with and without
the local spool)."""

from pathlib import Path

import pytest

from storage import StorageSettings


@pytest.fixture(
    params=[
        pytest.param("sqlite+folder"),
        pytest.param("postgresql+folder", marks=pytest.mark.postgres),
        pytest.param("postgresql+s3", marks=[pytest.mark.postgres, pytest.mark.s3]),
        pytest.param("postgresql+s3-spool", marks=[pytest.mark.postgres, pytest.mark.s3]),
    ]
)
def storage_settings(request: pytest.FixtureRequest, tmp_path: Path) -> StorageSettings:
    database, blobs = request.param.split("+")
    spool = blobs == "s3-spool"
    return StorageSettings(
        data_dir=tmp_path / "archive",
        database_url=request.getfixturevalue("postgres_url") if database == "postgresql" else None,
        blob_url=request.getfixturevalue("s3_url") if blobs.startswith("s3") else None,
        s3_spool_mb=64 if spool else 0,
        min_free_mb=0,
        _env_file=None,
    )
