"""The AI triage state, for a worklist or a dashboard: each study's jobs (queued, running,
done, failed or skipped, with the reason), its finding, score, threshold and model."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool

from storage import Archive
from storage.ai_jobs import list_jobs
from viewer_api.auth import SENDERS, Authenticator, principal_of, require
from viewer_api.dicomweb.http import check_uids
from viewer_api.rows import MAX_INTEGER, json_row

State = Literal["queued", "running", "done", "failed", "skipped"]


def ai_router(archive: Archive, auth: Authenticator) -> APIRouter:
    router = APIRouter(
        prefix="/api/ai", tags=["AI triage"], dependencies=[Depends(require(auth, SENDERS))]
    )

    @router.get("/jobs", summary="AI jobs, newest first")
    async def jobs(
        request: Request,
        study: Annotated[str | None, Query(description="StudyInstanceUID", max_length=64)] = None,
        state: State | None = None,
        model: Annotated[str | None, Query(max_length=64)] = None,
        flagged: bool | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_INTEGER)] = 0,
    ) -> list[dict[str, Any]]:
        check_uids(study=study)
        found = await run_in_threadpool(
            list_jobs,
            archive,
            study=study,
            state=state,
            model=model,
            flagged=flagged,
            limit=limit,
            offset=offset,
            scope=principal_of(request).scope,
        )
        return [json_row(job) for job in found]

    return router
