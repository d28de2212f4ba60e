"""Reports over HTTP: templates, the draft saved as the radiologist types, signing
(preliminary, final, amendments), each signed version and its renderings (canonical
content, CMS signature, PDF, FHIR R4 DiagnosticReport, HL7 v2 ORU^R01); and the readers'
review of AI findings with each model's record.

Radiologists and administrators see drafts and preliminary versions; everyone else who may
see the study (a referring doctor, another hospital it is shared with, a link) sees the
final and amended versions only."""

import json
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, SecretStr

from storage import Archive
from storage.ai_reviews import findings_of, performance, review
from storage.reports import ReportState, Version, report_state, save_draft, study_context
from viewer_api.auth import (
    RADIOLOGISTS,
    READERS,
    Authenticator,
    Principal,
    audit_request,
    principal_of,
    require,
)
from viewer_api.config import ApiSettings
from viewer_api.dicomweb.http import check_uids
from viewer_api.errors import BadRequest, NotFoundError
from viewer_api.reports.document import ReportDocument
from viewer_api.reports.fhir import diagnostic_report
from viewer_api.reports.hl7 import oru_r01
from viewer_api.reports.pdf import render_pdf
from viewer_api.reports.publish import facts_of, sign_report
from viewer_api.reports.signing import CertificateRefused, Trust, WrongPin
from viewer_api.reports.templates import TEMPLATES, template_for
from viewer_api.rows import MAX_INTEGER, json_row
from viewer_api.urls import base_url, client_address

WRITERS = RADIOLOGISTS
"""Who writes and signs reports, and sees drafts and preliminary versions."""
_TEXT = 20_000


class Draft(BaseModel):
    template: str = Field(max_length=32, description="A key of GET /api/report-templates")
    language: Literal["vi", "en"] = "vi"
    sections: dict[str, Annotated[str, Field(max_length=_TEXT)]] = Field(
        default_factory=dict, description="Section key → text", max_length=32
    )
    findings: str = Field("", max_length=_TEXT, description="Free text")
    impression: str = Field("", max_length=_TEXT)


class Signing(BaseModel):
    status: Literal["preliminary", "final"] = Field(
        description="final on a final report makes an amendment (a reason is needed)"
    )
    pin: SecretStr | None = Field(
        None, max_length=128, description="Opens the radiologist's signing key (final)"
    )
    reason: str | None = Field(None, max_length=2000, description="Why an amendment is made")


class Review(BaseModel):
    verdict: Literal["agree", "disagree"]
    correct_label: str | None = Field(
        None, max_length=128, description="What the reader would call it instead"
    )


def _writer(principal: Principal) -> bool:
    return principal.role in WRITERS


def _shown(principal: Principal, version: Version) -> bool:
    return _writer(principal) or version.status != "preliminary"


def _version_json(version: Version) -> dict[str, Any]:
    return json_row(
        {
            "version": version.version,
            "status": version.status,
            "signed_by": version.signed_by,
            "signed_at": version.signed_at,
            "signer": version.signer,
            "signed": version.signature is not None,
            "reason": version.reason,
            "content_sha256": version.content_sha256,
            "pdf_sop_instance_uid": version.pdf_sop_instance_uid,
            "sr_sop_instance_uid": version.sr_sop_instance_uid,
        }
    )


def reports_router(
    archive: Archive, auth: Authenticator, settings: ApiSettings, trust: Callable[[], Trust]
) -> APIRouter:
    """`trust`: the report-signing trust anchors as they are now (the archive's own CA may
    be made while it runs)."""
    router = APIRouter(prefix="/api", tags=["reports"])
    readers = [Depends(require(auth, READERS))]
    writers = [Depends(require(auth, WRITERS))]

    def audit(request: Request, action: str, study: str, detail: str) -> None:
        audit_request(archive, request, action, detail, study=study)

    def state_of(request: Request, study: str) -> ReportState:
        check_uids(study=study)
        found = report_state(archive, study, principal_of(request).scope)
        if found is None:
            raise NotFoundError("the study has no report")
        return found

    def version_of(request: Request, study: str, number: int) -> Version:
        state = state_of(request, study)
        for version in state.versions:
            if version.version == number and _shown(principal_of(request), version):
                return version
        raise NotFoundError(f"the report has no version {number}")

    @router.get("/report-templates", dependencies=readers, summary="Report templates")
    async def templates() -> list[dict[str, Any]]:
        return [
            {
                "key": t.key,
                "title": t.title,
                "modalities": list(t.modalities),
                "body_parts": list(t.body_parts),
                "fields": [{"key": f.key, "label": f.label, "normal": f.normal} for f in t.fields],
                "impression": t.impression,
            }
            for t in TEMPLATES.values()
        ]

    @router.get("/studies/{study}/report", dependencies=readers, summary="A study's report")
    def report(request: Request, study: str) -> dict[str, Any]:
        check_uids(study=study)
        principal = principal_of(request)
        context = study_context(archive, study, principal.scope)
        state = report_state(archive, study, principal.scope)
        writer = _writer(principal)
        suggested = template_for(facts_of(context).modalities, context.body_parts).key
        body: dict[str, Any] = {
            "study": json_row(context.study),
            "reading_status": context.reading_status,
            "claimed_by": context.claimed_by if writer else None,
            "template": state.template if state else suggested,
            "language": state.language if state else "vi",
            "status": state.status if state else "none",
            "author": state.author if state else None,
            "draft": json.loads(state.draft) if writer and state and state.draft else None,
            "draft_saved_at": (
                state.draft_saved_at.isoformat()
                if writer and state and state.draft_saved_at
                else None
            ),
            "versions": [
                _version_json(v) for v in (state.versions if state else ()) if _shown(principal, v)
            ],
        }
        if not writer:
            shown = body["versions"]
            body["status"] = shown[-1]["status"] if shown else "none"
        audit(request, "report-read", study, f"report ({body['status']})")
        return body

    @router.put("/studies/{study}/report/draft", dependencies=writers, summary="Save the draft")
    def draft(request: Request, study: str, body: Draft) -> dict[str, Any]:
        check_uids(study=study)
        chosen = TEMPLATES.get(body.template)
        if chosen is None:
            raise BadRequest(f"no report template {body.template[:40]!r}")
        unknown = set(body.sections) - set(chosen.labels(body.language))
        if unknown:
            raise BadRequest(f"template {chosen.key} has no section {sorted(unknown)[0]!r}")
        principal = principal_of(request)
        content = json.dumps(
            {"sections": body.sections, "findings": body.findings, "impression": body.impression},
            ensure_ascii=False,
        )
        saved = save_draft(
            archive,
            study,
            principal.scope,
            principal.name,
            template=chosen.key,
            language=body.language,
            draft=content,
        )
        return {"saved_at": saved.isoformat()}

    @router.post("/studies/{study}/report/sign", dependencies=writers, summary="Sign the draft")
    def sign(request: Request, study: str, body: Signing) -> dict[str, Any]:
        check_uids(study=study)
        auth.limits.signing(principal_of(request).name)
        try:
            new = sign_report(
                archive,
                trust(),
                principal_of(request),
                study,
                wanted=body.status,
                pin=body.pin.get_secret_value() if body.pin else None,
                reason=body.reason,
                source_address=client_address(request),
            )
        except (WrongPin, CertificateRefused) as exc:
            audit_request(
                archive, request, "report-signed", exc.reason, study=study, outcome="failure"
            )
            raise
        return _version_json(new)

    number = Annotated[int, Path(ge=1, le=MAX_INTEGER)]

    @router.get("/studies/{study}/report/versions/{n}", dependencies=readers)
    def version(request: Request, study: str, n: number) -> dict[str, Any]:
        found = version_of(request, study, n)
        audit(request, "report-read", study, f"report version {n}")
        return {**_version_json(found), "document": json.loads(found.content)}

    @router.get(
        "/studies/{study}/report/versions/{n}/content",
        dependencies=readers,
        summary="The canonical content: exactly the bytes the signature covers",
    )
    def content(request: Request, study: str, n: number) -> Response:
        found = version_of(request, study, n)
        audit(request, "report-read", study, f"report version {n} content")
        return Response(found.content.encode(), media_type="application/json")

    @router.get(
        "/studies/{study}/report/versions/{n}/signature",
        dependencies=readers,
        summary="The CMS detached signature (DER) over the canonical content",
    )
    def signature(request: Request, study: str, n: number) -> Response:
        found = version_of(request, study, n)
        if found.signature is None:
            raise NotFoundError(f"version {n} is {found.status}: it carries no signature")
        audit(request, "report-read", study, f"report version {n} signature")
        return Response(
            found.signature,
            media_type="application/pkcs7-signature",
            headers={"Content-Disposition": f'attachment; filename="report-v{n}.p7s"'},
        )

    def document(found: Version) -> ReportDocument:
        return ReportDocument.from_canonical(found.content.encode())

    @router.get("/studies/{study}/report/versions/{n}/pdf", dependencies=readers)
    def pdf(request: Request, study: str, n: number) -> Response:
        found = version_of(request, study, n)
        audit(request, "report-read", study, f"report version {n} PDF")
        return Response(render_pdf(document(found)), media_type="application/pdf")

    @router.get(
        "/studies/{study}/report/versions/{n}/fhir",
        dependencies=readers,
        summary="The version as a FHIR R4 DiagnosticReport",
    )
    def fhir(request: Request, study: str, n: number) -> Response:
        found = version_of(request, study, n)
        audit(request, "report-read", study, f"report version {n} FHIR")
        doc = document(found)
        resource = diagnostic_report(
            doc,
            pdf=render_pdf(doc),
            dicomweb_url=f"{base_url(request, settings)}/dicom-web",
            report_uids=(
                (found.pdf_sop_instance_uid, found.sr_sop_instance_uid)
                if found.pdf_sop_instance_uid and found.sr_sop_instance_uid
                else None
            ),
        )
        return Response(
            json.dumps(resource, ensure_ascii=False).encode(), media_type="application/fhir+json"
        )

    @router.get(
        "/studies/{study}/report/versions/{n}/hl7",
        dependencies=readers,
        summary="The version as an HL7 v2.5.1 ORU^R01 message",
    )
    def hl7(request: Request, study: str, n: number) -> Response:
        found = version_of(request, study, n)
        audit(request, "report-read", study, f"report version {n} HL7")
        return Response(oru_r01(document(found)).encode(), media_type="x-application/hl7-v2+er7")

    # -- AI review --------------------------------------------------------------------------

    @router.get(
        "/studies/{study}/ai-findings",
        dependencies=writers,
        summary="The study's AI findings with the readers' verdicts",
    )
    def ai_findings(request: Request, study: str) -> list[dict[str, Any]]:
        check_uids(study=study)
        found = findings_of(archive, study, principal_of(request).scope)
        audit(request, "query", study, f"AI findings: {len(found)}")
        return [
            {**json_row(job), "reviews": [json_row(r) for r in job["reviews"]]} for job in found
        ]

    @router.put(
        "/ai/jobs/{job}/review",
        dependencies=writers,
        status_code=204,
        summary="Agree or disagree with an AI finding",
    )
    async def review_finding(
        request: Request, job: Annotated[int, Path(ge=1, le=MAX_INTEGER)], body: Review
    ) -> Response:
        principal = principal_of(request)
        await run_in_threadpool(
            lambda: review(
                archive,
                job,
                principal.scope,
                principal.name,
                body.verdict,
                body.correct_label,
                role=principal.role,
                source_address=client_address(request),
            )
        )
        return Response(status_code=204)

    @router.get(
        "/ai/performance",
        dependencies=[Depends(require(auth, ("admin", "radiologist", "auditor")))],
        summary="Per model: flags, readers' agreement, positive predictive value, time to read",
    )
    async def model_performance(request: Request) -> list[dict[str, Any]]:
        return await run_in_threadpool(performance, archive, principal_of(request).scope)

    return router
