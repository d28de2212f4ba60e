"""The audit trail, for auditors: who did what to which patient's data, when, from where,
with what outcome; newest first, filtered and paged. For auditors and administrators only."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool

from storage import Archive
from storage.audit_query import MAX_LIMIT, find_audit_events
from viewer_api.auth import AUDITORS, Authenticator, require
from viewer_api.dicomweb.http import check_uids
from viewer_api.rows import MAX_INTEGER, json_row


def audit_router(archive: Archive, auth: Authenticator) -> APIRouter:
    router = APIRouter(
        prefix="/api", tags=["audit"], dependencies=[Depends(require(auth, AUDITORS))]
    )

    @router.get("/audit", summary="Audit events, newest first")
    async def events(
        since: Annotated[datetime | None, Query(description="From (inclusive), ISO 8601")] = None,
        until: Annotated[datetime | None, Query(description="To (exclusive), ISO 8601")] = None,
        action: Annotated[str | None, Query(max_length=32)] = None,
        actor: Annotated[str | None, Query(max_length=64)] = None,
        patient_id: Annotated[str | None, Query(max_length=256)] = None,
        study: Annotated[str | None, Query(description="StudyInstanceUID", max_length=64)] = None,
        outcome: Annotated[str | None, Query(max_length=16)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_INTEGER)] = 0,
    ) -> list[dict[str, Any]]:
        check_uids(study=study)
        found = await run_in_threadpool(
            find_audit_events,
            archive,
            since=since,
            until=until,
            action=action,
            actor=actor,
            patient_id=patient_id,
            study=study,
            outcome=outcome,
            limit=limit,
            offset=offset,
        )
        return [json_row(row) for row in found]

    return router
