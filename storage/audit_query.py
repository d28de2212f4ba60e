"""The audit trail as auditors search it: by time, action, actor, patient, study, outcome."""

from datetime import datetime
from typing import Any

from sqlalchemy import select

from storage.archive import Archive
from storage.errors import InvalidQuery
from storage.index.tables import AuditEvent

MAX_LIMIT = 1000


def find_audit_events(
    archive: Archive,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    action: str | None = None,
    actor: str | None = None,
    patient_id: str | None = None,
    study: str | None = None,
    outcome: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Audit rows matching every filter given (exact values; `since` inclusive, `until`
    exclusive), newest first, a page of `limit` (at most ``MAX_LIMIT``) after `offset`."""
    if not 0 < limit <= MAX_LIMIT or offset < 0:
        raise InvalidQuery(f"limit must be 1 to {MAX_LIMIT} and offset at least 0")
    table = AuditEvent.__table__
    query = select(table)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    for column, value in (
        (AuditEvent.action, action),
        (AuditEvent.actor, actor),
        (AuditEvent.patient_id, patient_id),
        (AuditEvent.study_instance_uid, study),
        (AuditEvent.outcome, outcome),
    ):
        if value is not None:
            query = query.where(column == value)
    query = query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit).offset(offset)
    with archive.read() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]
