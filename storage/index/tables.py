"""The index schema: patient / study / series / instance, peers, outbox, audit, commitments.

Written for SQLite and PostgreSQL alike: integer surrogate keys, text dates (``YYYYMMDD``)
and times (``HHMMSS.FFFFFF``) that sort as they compare, person names stored with an upper
case key and a diacritic-folded key for matching. Derived query attributes
(``NumberOfStudyRelatedInstances``, ``ModalitiesInStudy``, ...) are kept as columns,
updated in the same transaction as the instance rows.
"""

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

ID = BigInteger().with_variant(Integer, "sqlite")
"""64-bit keys on PostgreSQL; SQLite needs INTEGER for its rowid alias."""

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Timestamp(TypeDecorator[datetime]):
    """A moment in UTC, read back as an aware datetime from SQLite (which keeps no zone) and
    PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        if value is not None and value.tzinfo is not None:
            return value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Patient(Base):
    """A patient as one hospital knows them: two hospitals' records are never merged (a
    person confirms that two records are one), whatever issuer their instances name."""

    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("hospital", "issuer", "patient_id"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    hospital: Mapped[str] = mapped_column(String(64), default="", server_default="")
    """The hospital whose record it is; empty for senders of no hospital."""
    issuer: Mapped[str] = mapped_column(String(256), default="")
    patient_id: Mapped[str] = mapped_column(String(256), default="", index=True)
    patient_name: Mapped[str | None] = mapped_column(String(256))
    patient_name_upper: Mapped[str | None] = mapped_column(String(256), index=True)
    patient_name_folded: Mapped[str | None] = mapped_column(String(256), index=True)
    birth_date: Mapped[str | None] = mapped_column(String(8), index=True)
    sex: Mapped[str | None] = mapped_column(String(16))
    other_patient_ids: Mapped[str | None] = mapped_column(String(256))
    citizen_id: Mapped[str | None] = mapped_column(String(32), index=True)
    """The national citizen identity number (CCCD, 12 digits), from OtherPatientIDsSequence
    under its issuer or a configured tag: the key that finds one person's studies across
    hospitals."""
    num_studies: Mapped[int] = mapped_column(Integer, default=0)
    num_series: Mapped[int] = mapped_column(Integer, default=0)
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    patient_pk: Mapped[int] = mapped_column(
        ID, ForeignKey("patients.id", ondelete="CASCADE"), index=True
    )
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_date: Mapped[str | None] = mapped_column(String(8), index=True)
    study_time: Mapped[str | None] = mapped_column(String(13))
    accession_number: Mapped[str | None] = mapped_column(String(256), index=True)
    study_id: Mapped[str | None] = mapped_column(String(256))
    study_description: Mapped[str | None] = mapped_column(String(256))
    referring_physician_name: Mapped[str | None] = mapped_column(String(256))
    referring_physician_name_upper: Mapped[str | None] = mapped_column(String(256))
    referring_physician_name_folded: Mapped[str | None] = mapped_column(String(256))
    patient_age: Mapped[str | None] = mapped_column(String(16))
    patient_size: Mapped[float | None] = mapped_column(Float)
    patient_weight: Mapped[float | None] = mapped_column(Float)
    modalities_in_study: Mapped[str | None] = mapped_column(String(256))
    sop_classes_in_study: Mapped[str | None] = mapped_column(Text)
    num_series: Mapped[int] = mapped_column(Integer, default=0)
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    hospital: Mapped[str | None] = mapped_column(String(64), index=True)
    """The hospital that sent the study (from its registered peer, or the importer)."""
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, index=True)
    """When the study last received an instance (the AI trigger waits for it to go quiet)."""


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    study_pk: Mapped[int] = mapped_column(
        ID, ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str | None] = mapped_column(String(16), index=True)
    series_number: Mapped[int | None] = mapped_column(Integer)
    series_description: Mapped[str | None] = mapped_column(String(256))
    body_part_examined: Mapped[str | None] = mapped_column(String(64))
    series_date: Mapped[str | None] = mapped_column(String(8))
    series_time: Mapped[str | None] = mapped_column(String(13))
    laterality: Mapped[str | None] = mapped_column(String(16))
    view_position: Mapped[str | None] = mapped_column(String(16))
    protocol_name: Mapped[str | None] = mapped_column(String(256))
    station_name: Mapped[str | None] = mapped_column(String(256))
    institution_name: Mapped[str | None] = mapped_column(String(256))
    manufacturer: Mapped[str | None] = mapped_column(String(256))
    manufacturer_model_name: Mapped[str | None] = mapped_column(String(256))
    pps_start_date: Mapped[str | None] = mapped_column(String(8))
    pps_start_time: Mapped[str | None] = mapped_column(String(13))
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    series_pk: Mapped[int] = mapped_column(
        ID, ForeignKey("series.id", ondelete="CASCADE"), index=True
    )
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    content_date: Mapped[str | None] = mapped_column(String(8))
    content_time: Mapped[str | None] = mapped_column(String(13))
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    number_of_frames: Mapped[int | None] = mapped_column(Integer)
    image_type: Mapped[str | None] = mapped_column(String(256))
    slice_thickness: Mapped[float | None] = mapped_column(Float)
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(64), unique=True)
    header: Mapped[bytes | None] = mapped_column(LargeBinary)
    """zlib-compressed file bytes after the preamble up to the pixel data."""
    pixel_data_offset: Mapped[int | None] = mapped_column(BigInteger)
    pixel_data_length: Mapped[int | None] = mapped_column(BigInteger)
    source_aet: Mapped[str | None] = mapped_column(String(16))
    source_address: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class RemoteNode(Base):
    """A known DICOM peer: a modality, another PACS, a viewer."""

    __tablename__ = "remote_nodes"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    aet: Mapped[str] = mapped_column(String(16), unique=True)
    host: Mapped[str] = mapped_column(String(256))
    port: Mapped[int] = mapped_column(Integer)
    hospital: Mapped[str | None] = mapped_column(String(64))
    check_host: Mapped[bool] = mapped_column(Boolean, default=False)
    """Accept associations from this AE title only from `host`'s address."""
    tls: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Associations we open to it (C-MOVE, commitment reports, exports) use DICOM TLS."""
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class Change(Base):
    """The outbox: one row per stored instance, in commit order, for later consumers (AI)."""

    __tablename__ = "changes"
    __table_args__ = (Index("ix_changes_study_seq", "study_instance_uid", "seq"),)

    seq: Mapped[int] = mapped_column(ID, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str | None] = mapped_column(String(64))
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class AuditEvent(Base):
    """An append-only record of an access to patient data."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(32), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str | None] = mapped_column(String(64))
    role: Mapped[str | None] = mapped_column(String(32))
    source_address: Mapped[str | None] = mapped_column(String(64))
    hospital: Mapped[str | None] = mapped_column(String(64))
    patient_id: Mapped[str | None] = mapped_column(String(256))
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    detail: Mapped[str | None] = mapped_column(Text)


class CommitmentRequest(Base):
    """A Storage Commitment request (PS3.4 J), kept until its N-EVENT-REPORT is delivered."""

    __tablename__ = "commitment_requests"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    transaction_uid: Mapped[str] = mapped_column(String(64), unique=True)
    calling_aet: Mapped[str] = mapped_column(String(16))
    address: Mapped[str | None] = mapped_column(String(64))
    items: Mapped[str] = mapped_column(Text)
    """JSON list of [SOP Class UID, SOP Instance UID]."""
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    """The process delivering the report (host:pid); another takes over when its lease ends."""
    claimed_until: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    received_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(Timestamp)


class InferenceJob(Base):
    """One model run over one study, as far as the outbox had reached (``up_to_seq``): new
    instances arriving later make a new job; the same study and model version never two
    results for the same instances."""

    __tablename__ = "inference_jobs"
    __table_args__ = (
        UniqueConstraint("study_instance_uid", "model", "model_version", "up_to_seq"),
        Index("ix_inference_jobs_state", "state", "id"),
        Index("ix_inference_jobs_study_instance_uid", "study_instance_uid"),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(32))
    up_to_seq: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    """queued, running, done, failed or skipped."""
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_until: Mapped[datetime | None] = mapped_column(Timestamp)
    series_instance_uid: Mapped[str | None] = mapped_column(String(64))
    """The series the model ran on."""
    score: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    flagged: Mapped[bool | None] = mapped_column(Boolean)
    weights_sha256: Mapped[str | None] = mapped_column(String(64))
    result_sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    hospital: Mapped[str | None] = mapped_column(String(64))
    """The hospital the study belongs to, whose model settings applied."""
    finding: Mapped[str | None] = mapped_column(String(64))
    """What the model looks for, as a reader would say it (``pneumonia pattern``)."""
    severity: Mapped[str | None] = mapped_column(String(16))
    """For a flagged study: ``critical`` or ``urgent`` (the worklist sorts by it)."""
    notified_at: Mapped[datetime | None] = mapped_column(Timestamp)
    """When the webhook accepted the notice of this flag."""
    notify_attempts: Mapped[int] = mapped_column(Integer, default=0)


class AiModelSetting(Base):
    """A hospital's choice for a model: on or off, and its decision threshold. The
    hospital ``*`` is the site's default; who set it and on what evidence is kept here and
    in the audit trail."""

    __tablename__ = "ai_model_settings"
    __table_args__ = (UniqueConstraint("hospital", "model"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    hospital: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool | None] = mapped_column(Boolean)
    threshold: Mapped[float | None] = mapped_column(Float)
    updated_by: Mapped[str] = mapped_column(String(128))
    evidence: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class AuditForwarding(Base):
    """How far the audit trail has been sent to a syslog collector (one row per collector),
    and which process sends it now (a lease, so several nodes never send it twice)."""

    __tablename__ = "audit_forwarding"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger, default=0)
    """The last audit row the collector accepted; the next send starts after it."""
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_until: Mapped[datetime | None] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class User(Base):
    """A person of the built-in user store: a role, a hospital, an argon2 password hash."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    hospital: Mapped[str | None] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    tokens_after: Mapped[datetime | None] = mapped_column(Timestamp)
    """Tokens issued before this moment are void: set by signing out, a new password,
    being disabled."""
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class SigningKey(Base):
    """A secret the archive signs with (its own access tokens), made on first use and shared
    by every node of the archive through the index."""

    __tablename__ = "signing_keys"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class Link(Base):
    """A read-only capability link for someone outside the system: whoever holds its token
    sees the studies granted to it, until it expires or is revoked. Only the token's
    SHA-256 is kept."""

    __tablename__ = "links"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(256))
    created_by: Mapped[str] = mapped_column(String(128))
    hospital: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(Timestamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)
    revoked_by: Mapped[str | None] = mapped_column(String(128))


class Grant(Base):
    """Access to a study, or to every study of a patient, beyond a user's own hospital: a
    share with a hospital or a user, a reading assignment, or a capability link's studies;
    until it expires or is revoked. Exactly one of study_pk / patient_pk and one of
    hospital / user_name / link_id is set."""

    __tablename__ = "grants"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    study_pk: Mapped[int | None] = mapped_column(
        ID, ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    patient_pk: Mapped[int | None] = mapped_column(
        ID, ForeignKey("patients.id", ondelete="CASCADE"), index=True
    )
    hospital: Mapped[str | None] = mapped_column(String(64), index=True)
    user_name: Mapped[str | None] = mapped_column(String(64), index=True)
    link_id: Mapped[int | None] = mapped_column(
        ID, ForeignKey("links.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[str] = mapped_column(String(16))
    """share, reading (an assignment to a radiologist) or link."""
    expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)
    revoked_by: Mapped[str | None] = mapped_column(String(128))


class Reading(Base):
    """Where a study stands in the radiologists' work: unread (no row), in progress,
    preliminary, final, amended; and who holds it now (a claim that times out)."""

    __tablename__ = "readings"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    study_pk: Mapped[int] = mapped_column(
        ID, ForeignKey("studies.id", ondelete="CASCADE"), unique=True
    )
    status: Mapped[str] = mapped_column(String(16), default="unread", index=True)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_until: Mapped[datetime | None] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class Report(Base):
    """The radiologist's report on a study: its template and language, where it stands
    (draft, preliminary, final, amended), and the draft being typed (saved as the reader
    types). Each signed state is a ReportVersion, never changed afterwards."""

    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    study_pk: Mapped[int] = mapped_column(
        ID, ForeignKey("studies.id", ondelete="CASCADE"), unique=True
    )
    template: Mapped[str] = mapped_column(String(32))
    language: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default="draft")
    author: Mapped[str] = mapped_column(String(128))
    draft: Mapped[str | None] = mapped_column(Text)
    """The content being written (JSON), until it is signed."""
    draft_saved_at: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class ReportVersion(Base):
    """One signed state of a report (preliminary, final, an amendment): its canonical
    content, the CMS signature over it, and the DICOM objects it was stored as."""

    __tablename__ = "report_versions"
    __table_args__ = (UniqueConstraint("report_id", "version"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    report_id: Mapped[int] = mapped_column(ID, ForeignKey("reports.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    """The canonical form (JSON, sorted keys, UTF-8): exactly the bytes signed."""
    content_sha256: Mapped[str] = mapped_column(String(64))
    signature: Mapped[bytes | None] = mapped_column(LargeBinary)
    """CMS detached signature (DER) over the content; none for a preliminary report."""
    signer: Mapped[str | None] = mapped_column(String(512))
    """The signing certificate's subject."""
    signed_by: Mapped[str] = mapped_column(String(128))
    signed_at: Mapped[datetime] = mapped_column(Timestamp)
    reason: Mapped[str | None] = mapped_column(Text)
    """Why an amendment was made."""
    pdf_sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    sr_sop_instance_uid: Mapped[str | None] = mapped_column(String(64))


class UserCertificate(Base):
    """A radiologist's X.509 signing certificate, with its private key as a PKCS#12 file
    encrypted under the radiologist's PIN (the archive cannot sign without the PIN)."""

    __tablename__ = "user_certificates"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    user_name: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(512))
    certificate: Mapped[str] = mapped_column(Text)
    """PEM."""
    pkcs12: Mapped[bytes | None] = mapped_column(LargeBinary)
    not_after: Mapped[datetime] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)


class AiReview(Base):
    """A radiologist's verdict on one AI finding: agree or disagree, and the label they
    would give instead."""

    __tablename__ = "ai_reviews"
    __table_args__ = (UniqueConstraint("job_id", "reviewer"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    job_id: Mapped[int] = mapped_column(ID, ForeignKey("inference_jobs.id", ondelete="CASCADE"))
    reviewer: Mapped[str] = mapped_column(String(128))
    verdict: Mapped[str] = mapped_column(String(16))
    """agree or disagree."""
    correct_label: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class PatientLink(Base):
    """Two hospitals' records that a person confirmed to be one person (records are never
    merged automatically); patient_a < patient_b."""

    __tablename__ = "patient_links"
    __table_args__ = (UniqueConstraint("patient_a", "patient_b"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    patient_a: Mapped[int] = mapped_column(ID, ForeignKey("patients.id", ondelete="CASCADE"))
    patient_b: Mapped[int] = mapped_column(
        ID, ForeignKey("patients.id", ondelete="CASCADE"), index=True
    )
    confirmed_by: Mapped[str] = mapped_column(String(128))
    confirmed_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
