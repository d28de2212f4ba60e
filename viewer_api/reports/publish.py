"""Signing a report: the draft becomes a ReportDocument; a final or amended one is signed
with the radiologist's certificate (their PIN opens its key) and stored in its study as
DICOM (an Encapsulated PDF and an Enhanced SR), so any PACS or viewer shows it; then the
version is recorded in the index."""

import json
import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from pydicom import Dataset
from pydicom.uid import generate_uid

from storage import Archive
from storage.attributes import Level
from storage.certificates import current_certificate
from storage.index.records import Source
from storage.query import build_query
from storage.reports import (
    StudyContext,
    Version,
    add_version,
    check_holder,
    next_status,
    report_state,
)
from storage.reports import study_context as load_context
from storage.scope import Scope
from storage.staging import stage_file
from viewer_api.auth import Principal
from viewer_api.errors import BadRequest, Conflict
from viewer_api.reports.dicom import encapsulated_pdf, report_sr
from viewer_api.reports.document import Language, ReportDocument, Section, StudyFacts
from viewer_api.reports.pdf import render_pdf
from viewer_api.reports.signing import NoCertificate, Trust, sign
from viewer_api.reports.templates import TEMPLATES

log = logging.getLogger(__name__)


def facts_of(context: StudyContext) -> StudyFacts:
    study = context.study
    return StudyFacts(
        study_instance_uid=study["study_instance_uid"],
        patient_id=study["patient_id"] or "",
        patient_name=study["patient_name"],
        issuer=study["issuer"] or "",
        birth_date=study["birth_date"],
        sex=study["sex"],
        accession_number=study["accession_number"],
        study_date=study["study_date"],
        study_time=study["study_time"],
        study_description=study["study_description"],
        modalities=tuple(m for m in (study["modalities_in_study"] or "").split("\\") if m),
        hospital=study["hospital"],
        referring_physician=study["referring_physician_name"],
    )


def document_of(
    facts: StudyFacts,
    draft: dict[str, Any],
    *,
    template: str,
    language: str,
    version: int,
    status: str,
    author: str,
    author_display: str,
    signed_at: datetime,
    signer: str | None,
    reason: str | None,
) -> ReportDocument:
    chosen = TEMPLATES[template]
    lang: Language = "en" if language == "en" else "vi"
    texts: dict[str, str] = draft.get("sections") or {}
    sections = tuple(
        Section(field.key, field.label[lang], texts[field.key].strip())
        for field in chosen.fields
        if texts.get(field.key, "").strip()
    )
    return ReportDocument(
        study=facts,
        version=version,
        status=status,  # type: ignore[arg-type]
        template=template,
        title=chosen.title[lang],
        language=lang,
        sections=sections,
        findings=(draft.get("findings") or "").strip(),
        impression=(draft.get("impression") or "").strip(),
        author=author,
        author_display=author_display,
        signed_at=signed_at,
        signer=signer,
        reason=reason.strip() if reason else None,
    )


def sign_report(
    archive: Archive,
    trust: Trust,
    principal: Principal,
    study_uid: str,
    *,
    wanted: str,
    pin: str | None,
    reason: str | None,
    source_address: str | None,
) -> Version:
    """Sign the study's draft as `wanted` (preliminary or final; final on a final report
    makes an amendment).

    Raises:
        NotFound, ReportConflict (storage), Conflict (nothing to sign), and the signing
        errors (NoCertificate, WrongPin, CertificateRefused).
    """
    scope: Scope = principal.scope
    context = load_context(archive, study_uid, scope)
    check_holder(context, principal.name)  # before anything is signed or stored
    state = report_state(archive, study_uid, scope)
    if state is None:
        raise Conflict("there is no draft to sign: write the report first")
    if state.draft is not None:
        draft = json.loads(state.draft)
    elif state.versions and state.versions[-1].status == "preliminary":
        draft = _draft_of(state.versions[-1].content)  # the preliminary report, made final
    else:
        raise Conflict("there is no draft to sign: write the report first")
    status = next_status(state.status, wanted, reason)
    now = datetime.now(UTC)
    facts = facts_of(context)
    common: dict[str, Any] = {
        "template": state.template,
        "language": state.language,
        "version": len(state.versions) + 1,
        "status": status,
        "author": principal.name,
        "signed_at": now,
        "reason": reason if status == "amended" else None,
    }
    if status == "preliminary":
        doc = document_of(facts, draft, author_display=principal.name, signer=None, **common)
        content, signature_der, signer, pdf_uid, sr_uid = doc.canonical(), None, None, None, None
    else:
        if pin is None:
            raise BadRequest("a final report is signed with the PIN of your signing certificate")
        certificate = current_certificate(archive, principal.name)
        if certificate is None or certificate.pkcs12 is None:
            raise NoCertificate(
                f"{principal.name} has no signing certificate: an administrator issues or "
                "imports one with `pacs user certificate`"
            )
        subject = x509.load_pem_x509_certificate(certificate.certificate.encode()).subject
        names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        display = str(names[0].value) if names else principal.name
        doc = document_of(
            facts, draft, author_display=display, signer=subject.rfc4514_string(), **common
        )
        content = doc.canonical()
        signature = sign(content, certificate.pkcs12, pin, trust, now)
        earlier = tuple(v.sr_sop_instance_uid for v in state.versions if v.sr_sop_instance_uid)
        pdf_uid, sr_uid = _store_dicom(archive, doc, context, earlier)
        signature_der, signer = signature.der, signature.subject
    new = Version(
        version=doc.version,
        status=status,
        content=content.decode(),
        content_sha256=doc.content_sha256,
        signature=signature_der,
        signer=signer,
        signed_by=principal.name,
        signed_at=now,
        reason=doc.reason,
        pdf_sop_instance_uid=pdf_uid,
        sr_sop_instance_uid=sr_uid,
    )
    add_version(archive, study_uid, scope, new, role=principal.role, source_address=source_address)
    return new


def _draft_of(content: str) -> dict[str, Any]:
    doc = ReportDocument.from_canonical(content.encode())
    return {
        "sections": {section.key: section.text for section in doc.sections},
        "findings": doc.findings,
        "impression": doc.impression,
    }


def _store_dicom(
    archive: Archive, doc: ReportDocument, context: StudyContext, earlier: tuple[str, ...]
) -> tuple[str, str]:
    """Store the report in its study as an Encapsulated PDF and an Enhanced SR (naming the
    `earlier` versions' SRs as its predecessors); their SOP Instance UIDs."""
    header = _study_header(archive, doc.study.study_instance_uid)
    predecessors = [
        archive.header_of(instance)
        for uid in earlier
        for instance in archive.instance_details(
            build_query(
                Level.IMAGE,
                {"StudyInstanceUID": doc.study.study_instance_uid, "SOPInstanceUID": uid},
            )
        )
    ]
    pdf = render_pdf(doc)
    pdf_uid, sr_uid = generate_uid(), generate_uid()
    objects: list[Dataset] = [
        encapsulated_pdf(doc, pdf, header, series_uid=generate_uid(), sop_uid=pdf_uid),
        report_sr(
            doc,
            header,
            series_uid=generate_uid(),
            sop_uid=sr_uid,
            previous_versions=predecessors,
        ),
    ]
    source = Source(
        "report",
        hospital=context.study["hospital"],
        issuer=context.study["issuer"] or None,
        user=doc.author,
    )
    with tempfile.TemporaryDirectory(dir=str(archive.staging_dir)) as folder:
        for index, dataset in enumerate(objects):
            path = Path(folder) / f"{index}.dcm"
            dataset.save_as(path, enforce_file_format=True)
            archive.store(stage_file(path, archive.staging_dir), source=source)
    log.info(
        "Report v%d (%s) of study %s stored as DICOM (PDF %s, SR %s)",
        doc.version,
        doc.status,
        doc.study.study_instance_uid,
        pdf_uid,
        sr_uid,
    )
    return pdf_uid, sr_uid


def _study_header(archive: Archive, study_uid: str) -> Dataset:
    """One instance's header, for the patient and study attributes the report repeats."""
    instances = archive.instance_details(
        build_query(Level.IMAGE, {"StudyInstanceUID": study_uid}, limit=1)
    )
    if not instances:
        raise Conflict("the study has no instances to report on")
    return archive.header_of(instances[0])
