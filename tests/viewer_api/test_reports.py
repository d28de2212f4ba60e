"""A report's whole life over HTTP, as a radiologist and a referring doctor live it: a
draft saved as it is typed, a preliminary version, a final one signed with the
radiologist's X.509 certificate (checked with openssl), an amendment that keeps the
history; the signed report stored in its study as DICOM (Encapsulated PDF and SR) and
retrieved through WADO-RS and C-MOVE; Vietnamese intact in PDF, SR, FHIR and HL7; the
referring hospital sees the final report once the study is shared with it, never a draft;
readers' verdicts on AI findings and each model's record."""

import io
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import EncapsulatedPDFStorage, EnhancedSRStorage
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as StudyRootMove
from pypdf import PdfReader
from sqlalchemy import insert

from dicom_node.node import DicomNode
from storage import Archive, PeerRegistry, Source, stage_file
from storage.access import Actor, grant
from storage.certificates import add_certificate
from storage.index.tables import InferenceJob
from storage.scope import EVERYTHING
from tests import factories
from tests.auth import ensure_user
from tests.conftest import associate, audit_row, free_port
from tests.dicom_node.test_retrieve import Receiver
from tests.viewer_api.conftest import Web, serve
from viewer_api.reports.signing import LocalCa, Trust, check_pkcs12

A, B = "BV-DALAT", "BV-BAOLOC"
PIN = "2468-1012"
NAME = "Nguyễn^Thị Hồng Nhung"
LUNGS = "Đám mờ thùy dưới phổi phải, bờ không rõ."
IMPRESSION = "Theo dõi viêm phổi thùy dưới phải."
AMENDED = "Viêm phổi thùy dưới phải; đề nghị chụp lại sau điều trị."


@dataclass
class Desk:
    web: Web
    study: Dataset
    users: dict[str, dict[str, str]]
    ca: Path

    @property
    def uid(self) -> str:
        return str(self.study.StudyInstanceUID)

    def url(self, path: str = "") -> str:
        return f"{self.web.url}/api/studies/{self.uid}/report{path}"

    def get(self, who: str, path: str = "") -> httpx.Response:
        return httpx.get(self.url(path), headers=self.users[who])

    def claim(self, who: str) -> None:
        answer = httpx.post(
            f"{self.web.url}/api/worklist/{self.uid}/claim", headers=self.users[who]
        )
        assert answer.status_code == 200, answer.text

    def draft(self, who: str, lungs: str, impression: str, **extra: Any) -> httpx.Response:
        body = {
            "template": "chest-xray",
            "language": "vi",
            "sections": {"lungs": lungs, "heart": "Bóng tim không to."},
            "findings": "So sánh với phim cũ: tổn thương mới.",
            "impression": impression,
            **extra,
        }
        return httpx.put(self.url("/draft"), json=body, headers=self.users[who])

    def sign(self, who: str, status: str, **extra: Any) -> httpx.Response:
        return httpx.post(
            self.url("/sign"), json={"status": status, **extra}, headers=self.users[who]
        )


@pytest.fixture
def desk(archive: Archive, tmp_path: Path) -> Iterator[Desk]:
    study = factories.chest_cr(patient_id="CR-001", name=NAME)
    study.SpecificCharacterSet = "ISO_IR 192"
    study.BodyPartExamined = "CHEST"
    path = factories.write(study, tmp_path / "cr")
    archive.store(
        stage_file(path, archive.staging_dir), source=Source("dimse", aet="CR1", hospital=A)
    )
    users = {
        "lan": ensure_user(archive, "lan", "radiologist", A),
        "minh": ensure_user(archive, "minh", "radiologist", A),
        "tech": ensure_user(archive, "tech", "technologist", A),
        "hoa": ensure_user(archive, "hoa", "referring", B),
        "binh": ensure_user(archive, "binh", "radiologist", B),
        "vy": ensure_user(archive, "vy", "radiologist", "BV-DUCTRONG"),
    }
    ca = LocalCa.open_or_create(tmp_path / "ca")
    kept = check_pkcs12(
        ca.issue("lan", "Trần Thị Lan", PIN),
        PIN,
        Trust.load(ca.certificate_path),
        datetime.now(UTC),
    )
    add_certificate(
        archive,
        "lan",
        certificate_pem=kept.certificate_pem,
        pkcs12=kept.pkcs12,
        subject=kept.subject,
        not_after=kept.not_after,
        actor="tests",
    )
    with serve(archive, report_signing_ca=ca.certificate_path) as web:
        yield Desk(web, study, users, ca.certificate_path)


def _openssl_verify(desk: Desk, version: int, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    content = desk.get("lan", f"/versions/{version}/content")
    signature = desk.get("lan", f"/versions/{version}/signature")
    assert content.status_code == signature.status_code == 200
    assert signature.headers["content-type"] == "application/pkcs7-signature"
    (tmp_path / "report.json").write_bytes(content.content)
    (tmp_path / "report.p7s").write_bytes(signature.content)
    return subprocess.run(
        ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", "report.p7s",
         "-content", "report.json", "-CAfile", str(desk.ca), "-out", "/dev/null"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip


def _pdf_text(data: bytes) -> str:
    return " ".join(
        " ".join(page.extract_text().split()) for page in PdfReader(io.BytesIO(data)).pages
    )


def test_a_report_from_draft_to_amendment(desk: Desk, archive: Archive, tmp_path: Path) -> None:
    assert desk.get("lan").json()["status"] == "none"
    assert desk.get("lan").json()["template"] == "chest-xray"  # suggested by modality and body
    # Writing needs the study held: lan claims it, minh cannot write over her.
    assert desk.draft("lan", LUNGS, IMPRESSION).status_code == 409
    desk.claim("lan")
    saved = desk.draft("lan", LUNGS, IMPRESSION)
    assert saved.status_code == 200, saved.text
    assert desk.draft("minh", "khác", "khác").status_code == 409
    assert desk.draft("tech", "khác", "khác").status_code == 403
    assert desk.draft("vy", "khác", "khác").status_code == 404  # another hospital's study
    assert desk.sign("vy", "final", pin=PIN).status_code == 404
    # Someone who does not hold the study signs nothing of lan's draft, and stores nothing.
    assert desk.sign("minh", "final", pin=PIN).status_code == 409
    assert desk.sign("minh", "preliminary").status_code == 409
    assert len(desk.web.client().search_for_series(desk.uid)) == 1
    assert desk.sign("lan", "final").status_code == 400  # no PIN
    mine = desk.get("lan").json()
    assert mine["status"] == "draft"
    assert mine["draft"]["sections"]["lungs"] == LUNGS
    assert mine["draft_saved_at"] == saved.json()["saved_at"]

    preliminary = desk.sign("lan", "preliminary")
    assert preliminary.status_code == 200, preliminary.text
    assert preliminary.json()["version"] == 1
    assert preliminary.json()["pdf_sop_instance_uid"] is None  # not a DICOM object yet
    assert desk.get("lan", "/versions/1/signature").status_code == 404

    # The preliminary report made final, signed with lan's certificate; a wrong PIN opens
    # nothing.
    wrong = desk.sign("lan", "final", pin="0000-0000")
    assert wrong.status_code == 403, wrong.text
    assert audit_row(archive, action="report-signed", outcome="failure", actor="lan")
    final = desk.sign("lan", "final", pin=PIN)
    assert final.status_code == 200, final.text
    assert final.json()["version"] == 2
    assert "Trần Thị Lan" in final.json()["signer"]
    verified = _openssl_verify(desk, 2, tmp_path)
    assert verified.returncode == 0, verified.stderr
    assert "Verification successful" in verified.stderr
    document = desk.get("lan", "/versions/2").json()["document"]
    assert document["impression"] == IMPRESSION
    assert document["study"]["patient_name"] == NAME
    tampered = tmp_path / "report.json"
    tampered.write_bytes(tampered.read_bytes().replace("viêm".encode(), "VIÊM".encode()))
    again = subprocess.run(
        ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", "report.p7s",
         "-content", "report.json", "-CAfile", str(desk.ca), "-out", "/dev/null"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert again.returncode != 0
    # The study is let go once final; the worklist says so.
    row = httpx.get(f"{desk.web.url}/api/worklist", headers=desk.users["lan"]).json()[0]
    assert (row["status"], row["claimed_by"]) == ("final", None)

    # The PDF, FHIR and HL7 renderings keep the Vietnamese.
    assert IMPRESSION in _pdf_text(desk.get("lan", "/versions/2/pdf").content)
    fhir = desk.get("lan", "/versions/2/fhir")
    assert fhir.headers["content-type"].startswith("application/fhir+json")
    assert fhir.json()["status"] == "final"
    assert fhir.json()["conclusion"] == IMPRESSION
    hl7 = desk.get("lan", "/versions/2/hl7").content.decode()
    assert "Nguyễn^Thị Hồng Nhung" in hl7
    assert IMPRESSION in hl7

    # An amendment needs the study held again, a draft and a reason; the history keeps
    # every version.
    assert desk.sign("lan", "final", pin=PIN, reason="no draft").status_code == 409
    desk.claim("lan")
    assert desk.sign("lan", "final", pin=PIN, reason="no draft").status_code == 409
    assert desk.draft("lan", LUNGS, AMENDED).status_code == 200
    assert desk.sign("lan", "final", pin=PIN).status_code == 409
    assert desk.sign("lan", "preliminary").status_code == 409
    amended = desk.sign("lan", "final", pin=PIN, reason="Bổ sung kết luận sau hội chẩn")
    assert amended.status_code == 200, amended.text
    assert amended.json()["status"] == "amended"
    history = desk.get("lan").json()["versions"]
    assert [(v["version"], v["status"]) for v in history] == [
        (1, "preliminary"),
        (2, "final"),
        (3, "amended"),
    ]
    assert history[2]["reason"] == "Bổ sung kết luận sau hội chẩn"
    assert _openssl_verify(desk, 3, tmp_path).returncode == 0
    assert audit_row(
        archive,
        action="report-signed",
        detail=f"version 3 amended signed by {history[2]['signer']}",
    )

    # The signed report is in the study as DICOM: the SR over WADO-RS, with its text intact.
    client = desk.web.client()
    sr = client.retrieve_instance(
        desk.uid, _series_of(client, desk.uid, "SR"), history[2]["sr_sop_instance_uid"]
    )
    texts = _sr_texts(sr)
    assert AMENDED in texts
    assert str(sr.PatientName) == NAME
    assert sr.VerificationFlag == "VERIFIED"
    predecessors = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence
    assert (
        predecessors[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        == (history[1]["sr_sop_instance_uid"])
    )
    encapsulated = client.retrieve_instance(
        desk.uid, _series_of(client, desk.uid, "DOC"), history[2]["pdf_sop_instance_uid"]
    )
    assert AMENDED in _pdf_text(bytes(encapsulated.EncapsulatedDocument).rstrip(b"\0"))


def _series_of(client: Any, study: str, modality: str) -> str:
    series = [
        s["0020000E"]["Value"][0]
        for s in client.search_for_series(study, search_filters={"Modality": modality})
    ]
    assert series, f"no {modality} series"
    return str(series[-1])


def _sr_texts(ds: Dataset) -> list[str]:
    found: list[str] = []

    def walk(items: Any) -> None:
        for item in items:
            if item.ValueType == "TEXT":
                found.append(item.TextValue)
            walk(item.get("ContentSequence", []))

    walk(ds.ContentSequence)
    return found


def _signed_final(desk: Desk) -> dict[str, Any]:
    desk.claim("lan")
    assert desk.draft("lan", LUNGS, IMPRESSION).status_code == 200
    final = desk.sign("lan", "final", pin=PIN)
    assert final.status_code == 200, final.text
    return dict(final.json())


def test_the_referring_hospital_sees_the_final_report_once_shared(
    desk: Desk, archive: Archive
) -> None:
    desk.claim("lan")
    assert desk.draft("lan", LUNGS, IMPRESSION).status_code == 200
    assert desk.sign("lan", "preliminary").status_code == 200
    assert desk.get("hoa").status_code == 404  # not shared: as if it did not exist
    grant(archive, desk.uid, by=Actor("admin", "admin", None, EVERYTHING), hospital=B)
    seen = desk.get("hoa").json()
    assert (seen["status"], seen["versions"], seen["draft"]) == ("none", [], None)
    assert desk.get("hoa", "/versions/1").status_code == 404  # a preliminary stays inside
    assert desk.draft("hoa", "x", "y").status_code == 403

    assert desk.draft("lan", LUNGS, IMPRESSION).status_code == 200
    assert desk.sign("lan", "final", pin=PIN).status_code == 200
    seen = desk.get("hoa").json()
    assert seen["status"] == "final"
    assert [v["version"] for v in seen["versions"]] == [2]
    assert IMPRESSION in _pdf_text(desk.get("hoa", "/versions/2/pdf").content)
    assert desk.get("hoa", "/versions/2/fhir").json()["conclusion"] == IMPRESSION
    assert desk.get("binh").json()["status"] == "final"  # shared with all of hospital B
    assert desk.get("vy").status_code == 404  # a third hospital's: not shared
    assert audit_row(archive, action="report-read", actor="hoa")


@pytest.fixture
def mover(archive: Archive, peers: PeerRegistry) -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()
    ae = AE(ae_title="VIEWER")
    for sop_class in (EncapsulatedPDFStorage, EnhancedSRStorage):
        ae.add_supported_context(sop_class, [ExplicitVRLittleEndian])
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, receiver.handle)]
    )
    peers.add(name="viewer", aet="VIEWER", host="127.0.0.1", port=port)
    yield receiver, "VIEWER"
    server.shutdown()


def test_the_signed_report_moves_over_dimse(
    desk: Desk, node: DicomNode, mover: tuple[Receiver, str]
) -> None:
    final = _signed_final(desk)
    receiver, destination = mover
    for uid in (final["pdf_sop_instance_uid"], final["sr_sop_instance_uid"]):
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "IMAGE"
        identifier.StudyInstanceUID = desk.uid
        identifier.SeriesInstanceUID = _series_of(
            desk.web.client(), desk.uid, "DOC" if uid == final["pdf_sop_instance_uid"] else "SR"
        )
        identifier.SOPInstanceUID = uid
        assoc = associate(node.port, StudyRootMove, ae_title="VIEWER")
        *_, (status, _) = assoc.send_c_move(identifier, destination, StudyRootMove)
        assoc.release()
        assert status.Status == 0
    assert set(receiver.received) == {final["pdf_sop_instance_uid"], final["sr_sop_instance_uid"]}
    pdf_bytes = receiver.received[final["pdf_sop_instance_uid"]]
    dataset = dcmread(io.BytesIO(pdf_bytes), force=True)
    dataset.file_meta = Dataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    assert str(dataset.PatientName) == NAME
    assert IMPRESSION in _pdf_text(bytes(dataset.EncapsulatedDocument).rstrip(b"\0"))


def _job(archive: Archive, study: str, *, flagged: bool, model: str = "cxr-pneumonia") -> int:
    def write(conn: Any, now: datetime) -> int:
        return int(
            conn.execute(
                insert(InferenceJob)
                .values(
                    study_instance_uid=study,
                    model=model,
                    model_version="1",
                    up_to_seq=0,
                    state="done",
                    score=0.91 if flagged else 0.12,
                    threshold=0.5,
                    flagged=flagged,
                    finding="pneumonia pattern",
                    severity="urgent" if flagged else None,
                    hospital=A,
                    created_at=now,
                    updated_at=now,
                )
                .returning(InferenceJob.id)
            ).scalar_one()
        )

    return archive.run_write(write)


def test_readers_judge_ai_findings_and_each_model_has_a_record(
    desk: Desk, archive: Archive, tmp_path: Path
) -> None:
    flagged = _job(archive, desk.uid, flagged=True)
    other = factories.chest_cr(patient_id="CR-002")
    archive.store(
        stage_file(factories.write(other, tmp_path / "o"), archive.staging_dir),
        source=Source("dimse", aet="CR1", hospital=A),
    )
    unflagged = _job(archive, str(other.StudyInstanceUID), flagged=False)
    url = desk.web.url
    lan = desk.users["lan"]

    def judge(job: int, who: str = "lan", **verdict: str) -> int:
        answer = httpx.put(f"{url}/api/ai/jobs/{job}/review", json=verdict, headers=desk.users[who])
        return answer.status_code

    assert judge(flagged, verdict="agree") == 204
    assert judge(unflagged, verdict="disagree", correct_label="xẹp phổi") == 204
    assert judge(flagged, verdict="maybe") == 422
    hidden = httpx.put(
        f"{url}/api/ai/jobs/{flagged}/review", json={"verdict": "agree"}, headers=desk.users["binh"]
    )
    assert hidden.status_code == 404  # another hospital's study: as if there were no such job
    assert desk.uid not in hidden.text
    assert hidden.json()["detail"] == f"no finished AI job {flagged}"  # as for no job at all
    findings = httpx.get(f"{url}/api/studies/{desk.uid}/ai-findings", headers=lan).json()
    assert [(f["id"], f["reviews"][0]["verdict"]) for f in findings] == [(flagged, "agree")]
    _signed_final(desk)
    record = httpx.get(f"{url}/api/ai/performance", headers=lan).json()
    assert record == [
        {
            "model": "cxr-pneumonia",
            "studies": 2,
            "flags": 1,
            "reviewed": 2,
            "agreed": 1,
            "agreement_rate": 0.5,
            "positive_predictive_value": 1.0,
            "minutes_to_final_flagged": record[0]["minutes_to_final_flagged"],
            "minutes_to_final_unflagged": None,
        }
    ]
    assert record[0]["minutes_to_final_flagged"] >= 0
    assert audit_row(archive, action="ai-review", actor="lan")
    assert httpx.get(f"{url}/api/ai/performance", headers=desk.users["tech"]).status_code == 403
