"""Priors over HTTP: the same person's other studies from any hospital the reader may see,
beside the study being read; records that may be the same person, for a radiologist to
confirm (or undo). Every answer and every change is audited."""

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from storage import Archive
from storage.priors import confirm_link, priors, remove_link, suggestions
from viewer_api.auth import Authenticator, actor_of, audit_request, principal_of, require
from viewer_api.dicomweb.http import check_uids

LOOKERS = ("admin", "radiologist", "referring")
"""Who may see a study's priors (each within their scope)."""
CONFIRMERS = ("admin", "radiologist")
"""Who may see suggestions, and confirm or undo that two records are one person."""


def priors_router(archive: Archive, auth: Authenticator) -> APIRouter:
    router = APIRouter(
        prefix="/api/studies", tags=["priors"], dependencies=[Depends(require(auth, LOOKERS))]
    )
    confirmers = [Depends(require(auth, CONFIRMERS))]

    @router.get("/{study}/priors", summary="The same person's other studies, newest first")
    async def study_priors(request: Request, study: str) -> dict[str, Any]:
        """``priors``: studies of the same patient record, of records with the same citizen
        identity number (any hospital) and of records confirmed to be the same person, that
        the reader may see. ``suggestions`` (radiologists and administrators): records with
        the same name, birth date and sex, to confirm or not."""
        check_uids(study=study)
        principal = principal_of(request)
        found = await run_in_threadpool(priors, archive, study, principal.scope)
        offered: list[dict[str, Any]] = []
        if principal.role in CONFIRMERS:
            offered = await run_in_threadpool(suggestions, archive, study, principal.scope)
        audit_request(
            archive,
            request,
            "query",
            f"priors: {len(found)} prior(s), {len(offered)} suggested record(s)",
            study=study,
        )
        return {"priors": found, "suggestions": offered}

    @router.post(
        "/{study}/priors/{other}",
        status_code=204,
        dependencies=confirmers,
        summary="Confirm that the other study's patient is this study's (never merged)",
    )
    async def confirm(request: Request, study: str, other: str) -> Response:
        check_uids(study=study, other=other)
        by = actor_of(request)
        await run_in_threadpool(lambda: confirm_link(archive, study, other, by=by))
        return Response(status_code=204)

    @router.delete(
        "/{study}/priors/{other}",
        status_code=204,
        dependencies=confirmers,
        summary="Undo the confirmation that the other study's patient is this study's",
    )
    async def unlink(request: Request, study: str, other: str) -> Response:
        check_uids(study=study, other=other)
        by = actor_of(request)
        await run_in_threadpool(lambda: remove_link(archive, study, other, by=by))
        return Response(status_code=204)

    return router
