"""Settings of the archive core, read from the environment and ``.env`` (prefix ``PACS_``)."""

from enum import StrEnum
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DuplicatePolicy(StrEnum):
    """What to do when a SOP Instance UID arrives again with different bytes."""

    KEEP_FIRST = "keep-first"
    OVERWRITE = "overwrite"


class NameMatching(StrEnum):
    """How person names are matched in queries."""

    FOLDED = "folded"  # case- and diacritic-insensitive: NGUYEN* finds Nguyễn
    CASE_INSENSITIVE = "case-insensitive"  # diacritics must match


class StorageSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PACS_", env_file=".env", extra="ignore", use_enum_values=False
    )

    data_dir: Path = Field(
        Path("pacs-data"),
        description="Folder for the embedded index database and blob folder.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the index database; default SQLite in the data folder.",
    )
    blob_url: str | None = Field(
        None, description="Where blobs go: a folder path; default <data-dir>/blobs."
    )
    duplicate_policy: DuplicatePolicy = Field(
        DuplicatePolicy.KEEP_FIRST,
        description="An instance sent again with different bytes: keep-first or overwrite.",
    )
    name_matching: NameMatching = Field(
        NameMatching.FOLDED,
        description="Person-name matching: folded (NGUYEN* finds Nguyễn) or case-insensitive.",
    )
    min_free_mb: int = Field(
        512,
        ge=0,
        description="Refuse new instances (A700 / 507) when the blob store has less free space.",
    )
    accept_deflated: bool = Field(
        False, description="Accept the Deflated Explicit VR Little Endian transfer syntax."
    )
    inflate_limit_mb: int = Field(
        256, ge=1, description="Most bytes a deflated dataset may inflate to, in MiB."
    )

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'index.db').resolve()}"

    @property
    def resolved_blob_url(self) -> str:
        return self.blob_url or str((self.data_dir / "blobs").resolve())
