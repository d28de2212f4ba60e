"""Sharing: a study (or all its patient's studies) with another hospital or a user, until
an expiry; a study assigned to a radiologist for reading; capability links for a doctor
outside the system. Only the study's own hospital (or an administrator) shares it; a
study the caller does not own is not found."""

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import AwareDatetime, BaseModel, Field

from storage import Archive
from storage.access import create_link, grant, grants_of, revoke_grant, revoke_link
from storage.users import account
from viewer_api.auth import SENDERS, Authenticator, actor_of, require
from viewer_api.config import ApiSettings
from viewer_api.dicomweb.http import check_uids
from viewer_api.errors import BadRequest
from viewer_api.rows import MAX_INTEGER, json_row
from viewer_api.urls import base_url

_UID = Field(max_length=64, pattern=r"^[0-9.]+$")
_ROW_ID = Path(ge=1, le=MAX_INTEGER)


class ShareRequest(BaseModel):
    hospital: str | None = Field(None, max_length=64, description="The hospital shared with")
    user: str | None = Field(None, max_length=64, description="Or the user shared with")
    expires_at: AwareDatetime | None = Field(None, description="Until (ISO 8601, with zone)")
    whole_patient: bool = Field(False, description="Every study of the study's patient")
    purpose: Literal["share", "reading"] = Field(
        "share", description="reading: assigned to a radiologist to read"
    )


class LinkRequest(BaseModel):
    studies: list[Annotated[str, _UID]] = Field(min_length=1, max_length=100)
    label: str = Field(max_length=256, description="Who it is for, for the audit trail")
    expires_at: AwareDatetime


def sharing_router(archive: Archive, auth: Authenticator, settings: ApiSettings) -> APIRouter:
    router = APIRouter(
        prefix="/api", tags=["sharing"], dependencies=[Depends(require(auth, SENDERS))]
    )

    @router.post("/studies/{study}/shares", status_code=201, summary="Share a study")
    async def share(request: Request, study: str, body: ShareRequest) -> dict[str, Any]:
        check_uids(study=study)
        if body.purpose == "reading":
            await run_in_threadpool(_check_reader, archive, body.user)
        grant_id = await run_in_threadpool(
            lambda: grant(
                archive,
                study,
                by=actor_of(request),
                hospital=body.hospital,
                user=body.user,
                purpose=body.purpose,
                expires_at=body.expires_at,
                whole_patient=body.whole_patient,
            )
        )
        return {"id": grant_id}

    @router.get("/studies/{study}/shares", summary="A study's shares and assignments")
    async def shares(request: Request, study: str) -> list[dict[str, Any]]:
        check_uids(study=study)
        scope = request.state.principal.scope
        found = await run_in_threadpool(grants_of, archive, study, scope=scope)
        return [json_row(asdict(row)) for row in found]

    @router.delete("/shares/{grant_id}", status_code=204, summary="Stop a share now")
    async def unshare(request: Request, grant_id: Annotated[int, _ROW_ID]) -> Response:
        await run_in_threadpool(lambda: revoke_grant(archive, grant_id, by=actor_of(request)))
        return Response(status_code=204)

    @router.post("/links", status_code=201, summary="A read-only capability link")
    async def link(request: Request, body: LinkRequest) -> dict[str, Any]:
        """The token is in this answer only; give the URL to the doctor it is for. It
        opens the viewer on the studies, and works as a bearer token for DICOMweb."""
        link_id, token = await run_in_threadpool(
            lambda: create_link(
                archive,
                body.studies,
                label=body.label,
                expires_at=body.expires_at,
                by=actor_of(request),
            )
        )
        root = base_url(request, settings)
        return {
            "id": link_id,
            "token": token,
            "url": f"{root}/share/{token}",
            "dicomweb": f"{root}/dicom-web",
            "expires_at": body.expires_at.isoformat(),
        }

    @router.delete("/links/{link_id}", status_code=204, summary="Revoke a link now")
    async def unlink(request: Request, link_id: Annotated[int, _ROW_ID]) -> Response:
        await run_in_threadpool(lambda: revoke_link(archive, link_id, by=actor_of(request)))
        return Response(status_code=204)

    return router


def _check_reader(archive: Archive, name: str | None) -> None:
    """A reading assignment goes to a radiologist of the built-in store (or, with OIDC, a
    name the provider will give the radiologist role)."""
    if name is None:
        raise BadRequest("a reading assignment names the radiologist (user)")
    found = account(archive, name)
    if found is not None and found.role != "radiologist":
        raise BadRequest("a reading assignment goes to a radiologist")  # (no more said)
