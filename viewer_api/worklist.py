"""The radiologists' worklist over HTTP: the studies the reader may see, AI-flagged ones
first; claiming a study to read it (others see it locked) and letting it go."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from storage import Archive
from storage.worklist import Filters, claim, release, worklist
from viewer_api.auth import RADIOLOGISTS, SENDERS, Authenticator, principal_of, require
from viewer_api.dicomweb.http import check_uids
from viewer_api.rows import MAX_INTEGER, json_row

Status = Literal["unread", "in-progress", "preliminary", "final", "amended"]
_DATE = Query(pattern=r"^\d{8}$", description="YYYYMMDD")


def worklist_router(archive: Archive, auth: Authenticator) -> APIRouter:
    router = APIRouter(
        prefix="/api/worklist", tags=["worklist"], dependencies=[Depends(require(auth, SENDERS))]
    )

    @router.get("", summary="Studies to read, AI-flagged first, then the longest waiting")
    async def studies(
        request: Request,
        hospital: Annotated[str | None, Query(max_length=64)] = None,
        modality: Annotated[str | None, Query(max_length=16, pattern=r"^[A-Za-z]+$")] = None,
        body_part: Annotated[str | None, Query(max_length=64)] = None,
        date_from: Annotated[str | None, _DATE] = None,
        date_to: Annotated[str | None, _DATE] = None,
        status: Status | None = None,
        claimed_by: Annotated[str | None, Query(max_length=128)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_INTEGER)] = 0,
    ) -> list[dict[str, Any]]:
        filters = Filters(hospital, modality, body_part, date_from, date_to, status, claimed_by)
        scope = principal_of(request).scope
        found = await run_in_threadpool(
            lambda: worklist(archive, scope, filters, limit=limit, offset=offset)
        )
        return [json_row(row) for row in found]

    readers = [Depends(require(auth, RADIOLOGISTS))]

    @router.post(
        "/{study}/claim", dependencies=readers, summary="Hold a study to read it (renews a hold)"
    )
    async def take(request: Request, study: str) -> dict[str, Any]:
        check_uids(study=study)
        principal = principal_of(request)
        until = await run_in_threadpool(claim, archive, study, principal.name, principal.scope)
        return {"claimed_by": principal.name, "claimed_until": until.isoformat()}

    @router.delete(
        "/{study}/claim", dependencies=readers, status_code=204, summary="Let go of a study"
    )
    async def let_go(request: Request, study: str) -> Response:
        check_uids(study=study)
        principal = principal_of(request)
        await run_in_threadpool(release, archive, study, principal.name, principal.scope)
        return Response(status_code=204)

    return router
