"""Settings of the archive core, read from the environment and ``.env`` (prefix ``PACS_``)."""

from enum import StrEnum
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from storage.citizen_ids import DEFAULT_ISSUERS, parse_tag


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
        None,
        description="Where blobs go: a folder path, or s3://bucket/prefix (endpoint, region "
        "and credentials from the standard AWS settings); default <data-dir>/blobs.",
    )
    s3_multipart_mb: int = Field(
        16, ge=5, le=5120, description="S3: objects from this size up are uploaded in parts of it."
    )
    s3_max_attempts: int = Field(
        5, ge=1, le=20, description="S3: attempts per request (throttling, 5xx), with backoff."
    )
    s3_timeout: float = Field(
        5.0,
        gt=0,
        le=600,
        description="S3: seconds a request waits to connect, or for the next bytes, before it is "
        "tried again. An S3 that stopped answering costs a store about this times "
        "PACS_S3_MAX_ATTEMPTS before it is refused (0xA700 / 503): keep that under the "
        "modalities' DIMSE timeout (30 s is common).",
    )
    index_timeout: float = Field(
        20.0,
        gt=0,
        le=600,
        description="Seconds a store waits for the index database to commit it before it is "
        "refused (0xA700 / 503), when the database stops answering (a network partition, a "
        "hung server). Keep it under the modalities' DIMSE timeout (30 s is common).",
    )
    s3_spool_mb: int = Field(
        0,
        ge=0,
        description="S3: acknowledge instances once fsynced in a local spool (<data-dir>/spool) "
        "and upload them behind, up to this many MiB waiting in the spool; 0: acknowledge only "
        "after S3 confirmed the upload.",
    )
    s3_uploaders: int = Field(
        8, ge=1, le=64, description="S3: concurrent uploads from the spool, per process."
    )
    s3_sse: str | None = Field(
        None, description="S3: server-side encryption, AES256 or aws:kms (default: the bucket's)."
    )
    s3_kms_key_id: str | None = Field(None, description="S3: the KMS key for aws:kms encryption.")
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
    citizen_id_issuers: str = Field(
        DEFAULT_ISSUERS,
        description="Issuer of Patient ID values (comma-separated, any case) under which an "
        "item of Other Patient IDs Sequence (0010,1002) holds the citizen identity number "
        "(CCCD, 12 digits) that finds one person's studies across hospitals; empty: none.",
    )
    citizen_id_tag: str | None = Field(
        None,
        description="A tag whose value is the CCCD, for sites that put it elsewhere: "
        "(0010,1000), 00101000, a keyword (OtherPatientIDs) or a private tag (0011,1010); "
        "it comes before the sequence. None: the sequence only.",
    )
    audit_syslog_url: str | None = Field(
        None,
        description="Send the audit trail as DICOM/IHE ATNA messages to this syslog collector: "
        "tcp://host:port, tls://host:port (RFC 5425) or udp://host:port (RFC 5426); none: off.",
    )
    audit_syslog_ca_file: Path | None = Field(
        None, description="tls://: the CA certificates the collector's certificate is checked with."
    )
    audit_syslog_cert_file: Path | None = Field(
        None, description="tls://: our client certificate, if the collector asks for one."
    )
    audit_syslog_key_file: Path | None = Field(
        None, description="tls://: the private key of the client certificate."
    )

    @field_validator("citizen_id_tag")
    @classmethod
    def _citizen_id_tag(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            parse_tag(value)  # a ValueError names what is wrong with it
            return value
        return None

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'index.db').resolve()}"

    @property
    def resolved_blob_url(self) -> str:
        return self.blob_url or str((self.data_dir / "blobs").resolve())
