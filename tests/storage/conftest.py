"""Storage tests run on both index databases and both blob stores."""

from pathlib import Path

import pytest

from storage import StorageSettings


@pytest.fixture(
    params=[
        pytest.param("sqlite+folder"),
        pytest.param("postgresql+folder", marks=pytest.mark.postgres),
        pytest.param("postgresql+s3", marks=[pytest.mark.postgres, pytest.mark.s3]),
    ]
)
def storage_settings(request: pytest.FixtureRequest, tmp_path: Path) -> StorageSettings:
    database, blobs = request.param.split("+")
    return StorageSettings(
        data_dir=tmp_path / "archive",
        database_url=request.getfixturevalue("postgres_url") if database == "postgresql" else None,
        blob_url=request.getfixturevalue("s3_url") if blobs == "s3" else None,
        min_free_mb=0,
        _env_file=None,
    )
