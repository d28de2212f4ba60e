"""The report's exports for hospital information systems: the FHIR DiagnosticReport as
fhir.resources' models read it, the HL7 v2 ORU^R01 message as python-hl7 parses it."""

import base64
import dataclasses
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import hl7  # type: ignore[import-untyped]
import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from viewer_api.reports.document import ReportDocument, Section, StudyFacts
from viewer_api.reports.fhir import diagnostic_report, issuer_system, report_text
from viewer_api.reports.hl7 import escape, oru_r01

ICT = timezone(timedelta(hours=7))
STUDY_UID = "1.2.826.0.1.3680043.8.498.10473928374610293847561"
IMPRESSION = "Không thấy bất thường trên phim X-quang ngực."
LUNGS = "Hai trường phổi sáng đều.\nKhông thấy tổn thương khu trú."
HEART = "Bóng tim không to, trung thất cân đối."
FINDINGS = "Có nốt vôi hoá nhỏ đỉnh phổi phải, kích thước 3 mm."
# Every HL7 delimiter, a blank line, a CR LF and an MLLP framing byte in one text.
AWKWARD = "Dấu | gạch, ^ mũ, ~ ngã, \\ chéo & và.\n\nDòng CR LF\r\nkết thúc \x1c ở đây."
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def make_doc(**changes: Any) -> ReportDocument:
    study = StudyFacts(
        study_instance_uid=STUDY_UID,
        patient_id="BN-2024-0042",
        patient_name="Nguyễn^Thị Hồng Nhung",
        issuer="BVDK-LAMDONG",
        birth_date="19850314",
        sex="F",
        accession_number="XQ240314-007",
        study_date="20240314",
        study_time="093015.250",
        study_description="X-quang ngực thẳng",
        modalities=("CR", "DX"),
        hospital="Bệnh viện Đa khoa tỉnh Lâm Đồng",
        referring_physician="Phạm^Quốc Huy",
    )
    doc = ReportDocument(
        study=study,
        version=1,
        status="final",
        template="chest-xray",
        title="X-quang ngực thẳng",
        language="vi",
        sections=(Section("lungs", "Phổi", LUNGS), Section("heart", "Tim và trung thất", HEART)),
        findings=FINDINGS,
        impression=IMPRESSION,
        author="bs.an",
        author_display="Trần^An^Văn^BS.",
        signed_at=datetime(2024, 3, 14, 10, 42, 7, tzinfo=ICT),
        signer="CN=Trần Văn An,O=BVDK Lâm Đồng,C=VN",
    )
    return dataclasses.replace(doc, **changes)


def contained(resource: dict[str, Any], reference: str) -> dict[str, Any]:
    """The contained resource that a local reference (``#id``) points to."""
    assert reference.startswith("#")
    found: list[dict[str, Any]] = [
        item for item in resource["contained"] if item["id"] == reference[1:]
    ]
    assert len(found) == 1
    return found[0]


def local_references(value: Any) -> set[str]:
    if isinstance(value, dict):
        own = {value["reference"]} if str(value.get("reference", "")).startswith("#") else set()
        return own.union(*(local_references(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(local_references(item) for item in value))
    return set()


# FHIR R4 DiagnosticReport


def test_diagnostic_report_is_a_valid_resource_that_loses_nothing_when_read() -> None:
    resource = diagnostic_report(
        make_doc(),
        pdf=PDF,
        dicomweb_url="https://pacs.lamdong.example/dicom-web",
        report_uids=("1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"),
    )

    model = DiagnosticReport.model_validate(resource)

    assert json.loads(model.model_dump_json(exclude_none=True)) == resource
    text = json.dumps(resource, ensure_ascii=False)
    assert json.loads(text) == resource
    assert "Nguyễn Thị Hồng Nhung" in text  # UTF-8 as it is, not escaped


def test_report_codes_and_category_are_the_standard_ones() -> None:
    resource = diagnostic_report(make_doc())

    assert resource["resourceType"] == "DiagnosticReport"
    assert resource["code"] == {
        "coding": [
            {"system": "http://loinc.org", "code": "18748-4", "display": "Diagnostic imaging study"}
        ],
        "text": "X-quang ngực thẳng",
    }
    (category,) = resource["category"]
    assert category["coding"][0]["system"] == "http://terminology.hl7.org/CodeSystem/v2-0074"
    assert category["coding"][0]["code"] == "RAD"
    assert resource["language"] == "vi"


@pytest.mark.parametrize("status", ["preliminary", "final", "amended"])
def test_status_is_the_r4_code_of_the_same_name(status: str) -> None:
    resource = diagnostic_report(make_doc(status=status, reason="Sửa kết luận."))

    DiagnosticReport.model_validate(resource)
    assert resource["status"] == status


def test_patient_name_is_written_as_vietnamese_write_it() -> None:
    resource = diagnostic_report(make_doc())

    patient = contained(resource, resource["subject"]["reference"])
    assert patient["resourceType"] == "Patient"
    (name,) = patient["name"]
    assert name["text"] == "Nguyễn Thị Hồng Nhung"
    assert name["family"] == "Nguyễn"
    assert name["given"] == ["Thị Hồng Nhung"]
    assert patient["birthDate"] == "1985-03-14"
    assert patient["gender"] == "female"
    assert patient["identifier"] == [
        {"system": "urn:dalat-pacs:issuer:BVDK-LAMDONG", "value": "BN-2024-0042"}
    ]


def test_middle_name_comes_before_the_given_name() -> None:
    resource = diagnostic_report(make_doc())

    assert resource["resultsInterpreter"] == [{"display": "BS. Trần Văn An"}]
    assert resource["performer"] == [{"display": "BS. Trần Văn An"}]


@pytest.mark.parametrize(
    ("sex", "gender"), [("M", "male"), ("F", "female"), ("O", "other"), ("X", "unknown")]
)
def test_sex_maps_to_administrative_gender(sex: str, gender: str) -> None:
    doc = make_doc(study=dataclasses.replace(make_doc().study, sex=sex))

    patient = contained(diagnostic_report(doc), "#patient")

    assert patient["gender"] == gender


@pytest.mark.parametrize(
    ("issuer", "system"),
    [
        ("1.2.840.113619.6.1", "urn:oid:1.2.840.113619.6.1"),
        ("BV Đà Lạt", "urn:dalat-pacs:issuer:BV%20%C4%90%C3%A0%20L%E1%BA%A1t"),
        ("https://bvdk.lamdong.example/mrn", "https://bvdk.lamdong.example/mrn"),
        ("", None),
    ],
)
def test_patient_identifier_system_comes_from_the_issuer(issuer: str, system: str | None) -> None:
    assert issuer_system(issuer) == system


def test_patient_identifier_has_no_system_without_an_issuer() -> None:
    doc = make_doc(study=dataclasses.replace(make_doc().study, issuer=""))

    patient = contained(diagnostic_report(doc), "#patient")

    assert patient["identifier"] == [{"value": "BN-2024-0042"}]


def test_imaging_study_reference_resolves_to_the_study_with_its_uid() -> None:
    resource = diagnostic_report(make_doc(), dicomweb_url="https://pacs.lamdong.example/dicom-web")

    (reference,) = resource["imagingStudy"]
    study = contained(resource, reference["reference"])
    assert study["resourceType"] == "ImagingStudy"
    assert {"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY_UID}"} in study["identifier"]
    assert study["status"] == "available"
    assert contained(resource, study["subject"]["reference"])["resourceType"] == "Patient"
    assert study["started"] == "2024-03-14T09:30:15+07:00"
    assert resource["effectiveDateTime"] == "2024-03-14T09:30:15+07:00"
    assert [coding["code"] for coding in study["modality"]] == ["CR", "DX"]
    assert {coding["system"] for coding in study["modality"]} == {
        "http://dicom.nema.org/resources/ontology/DCM"
    }
    assert study["description"] == "X-quang ngực thẳng"
    (endpoint_reference,) = study["endpoint"]
    endpoint = contained(resource, endpoint_reference["reference"])
    assert endpoint["resourceType"] == "Endpoint"
    assert endpoint["address"] == "https://pacs.lamdong.example/dicom-web"
    assert endpoint["connectionType"]["code"] == "dicom-wado-rs"
    assert endpoint["connectionType"]["system"] == (
        "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
    )
    assert endpoint["payloadType"]


def test_every_contained_resource_is_referenced_and_every_reference_resolves() -> None:
    for url in (None, "https://pacs.lamdong.example/dicom-web"):
        resource = diagnostic_report(make_doc(), dicomweb_url=url)

        ids = {f"#{item['id']}" for item in resource["contained"]}
        assert local_references(resource) == ids  # FHIR dom-3


def test_without_a_dicomweb_address_there_is_no_endpoint() -> None:
    resource = diagnostic_report(make_doc())

    assert [item["resourceType"] for item in resource["contained"]] == ["Patient", "ImagingStudy"]
    assert "endpoint" not in contained(resource, "#study")


def test_accession_number_is_an_acsn_identifier() -> None:
    resource = diagnostic_report(make_doc())

    (identifier,) = resource["identifier"]
    assert identifier["value"] == "XQ240314-007"
    assert identifier["type"]["coding"][0]["code"] == "ACSN"
    assert identifier["type"]["coding"][0]["system"] == (
        "http://terminology.hl7.org/CodeSystem/v2-0203"
    )


def test_report_uids_are_identifiers_of_the_report() -> None:
    resource = diagnostic_report(make_doc(), report_uids=("1.2.3.4.1", "1.2.3.4.2"))

    values = [(item.get("system"), item["value"]) for item in resource["identifier"]]
    assert ("urn:dicom:uid", "urn:oid:1.2.3.4.1") in values
    assert ("urn:dicom:uid", "urn:oid:1.2.3.4.2") in values


def test_conclusion_is_the_impression_and_issued_the_signing_time() -> None:
    resource = diagnostic_report(make_doc())

    assert resource["conclusion"] == IMPRESSION
    assert resource["issued"] == "2024-03-14T10:42:07+07:00"


def test_text_attachment_is_the_whole_report_in_utf8() -> None:
    resource = diagnostic_report(make_doc())

    (form,) = resource["presentedForm"]
    assert form["contentType"] == "text/plain; charset=utf-8"
    assert form["language"] == "vi"
    assert base64.b64decode(form["data"]).decode("utf-8") == (
        "X-quang ngực thẳng\n\n"
        "Phổi:\nHai trường phổi sáng đều.\nKhông thấy tổn thương khu trú.\n\n"
        "Tim và trung thất:\nBóng tim không to, trung thất cân đối.\n\n"
        "Mô tả:\nCó nốt vôi hoá nhỏ đỉnh phổi phải, kích thước 3 mm.\n\n"
        "Kết luận:\nKhông thấy bất thường trên phim X-quang ngực."
    )


def test_amended_report_text_carries_the_reason() -> None:
    reason = "Bổ sung mô tả nốt vôi hoá."
    doc = make_doc(status="amended", version=2, reason=reason, language="en")

    text = report_text(doc)

    assert text.endswith(f"Impression:\n{IMPRESSION}\n\nReason for amendment:\n{reason}")


def test_pdf_attachment_round_trips() -> None:
    resource = diagnostic_report(make_doc(language="en"), pdf=PDF)

    pdf, text = resource["presentedForm"]
    assert pdf["contentType"] == "application/pdf"
    assert pdf["language"] == "en"
    assert pdf["title"] == "X-quang ngực thẳng"
    assert base64.b64decode(pdf["data"]) == PDF
    assert pdf["size"] == len(PDF)
    assert base64.b64decode(pdf["hash"]) == hashlib.sha1(PDF, usedforsecurity=False).digest()
    assert text["contentType"].startswith("text/plain")


def test_id_is_a_valid_fhir_id_even_for_the_longest_uid() -> None:
    longest = "1." + "2" * 62
    short = diagnostic_report(make_doc())
    long = diagnostic_report(
        make_doc(
            version=12, study=dataclasses.replace(make_doc().study, study_instance_uid=longest)
        )
    )

    assert short["id"] == f"{STUDY_UID}-v1"
    assert re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", long["id"])
    assert long["id"].endswith("-v12")
    DiagnosticReport.model_validate(long)


def test_missing_facts_leave_elements_out_rather_than_empty() -> None:
    bare = StudyFacts(study_instance_uid=STUDY_UID, patient_id="BN-1")
    resource = diagnostic_report(make_doc(study=bare, findings="", sections=()))

    DiagnosticReport.model_validate(resource)
    assert "effectiveDateTime" not in resource
    assert "identifier" not in resource
    patient = contained(resource, "#patient")
    assert set(patient) == {"resourceType", "id", "identifier"}


def test_study_date_without_a_time_is_a_date() -> None:
    doc = make_doc(study=dataclasses.replace(make_doc().study, study_time=None))

    assert diagnostic_report(doc)["effectiveDateTime"] == "2024-03-14"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"signed_at": datetime(2024, 3, 14, 10, 42)}, "timezone"),
        ({"status": "draft"}, "status"),
    ],
)
def test_invalid_documents_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        diagnostic_report(make_doc(**changes))


def test_a_dicomweb_address_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        diagnostic_report(make_doc(), dicomweb_url="pacs.lamdong.example/dicom-web")


# HL7 v2.5.1 ORU^R01


def parse(doc: ReportDocument, **kwargs: Any) -> hl7.Message:
    return hl7.parse(oru_r01(doc, **kwargs))


def report_parts(message: hl7.Message) -> dict[str, str]:
    """Each OBX-3 code's text: its OBX-5 values unescaped and joined by line breaks."""
    lines: dict[str, list[str]] = {}
    for obx in message.segments("OBX"):
        if str(obx(2)) == "TX":
            code = message.unescape(str(obx(3)(1)(1)))
            lines.setdefault(code, []).append(message.unescape(str(obx(5))))
    return {code: "\n".join(text) for code, text in lines.items()}


def test_segments_are_separated_by_carriage_returns() -> None:
    message = oru_r01(make_doc(sections=(Section("lungs", "Phổi", AWKWARD),)))

    assert "\n" not in message
    assert message.endswith("\r")
    names = [segment[:3] for segment in message.split("\r") if segment]
    assert names[:4] == ["MSH", "PID", "ORC", "OBR"]
    assert set(names[4:]) == {"OBX"}
    assert not {"\x0b", "\x1c"} & set(message)  # nothing that would end an MLLP frame


def test_message_header() -> None:
    now = datetime(2024, 3, 14, 3, 45, 0, tzinfo=UTC)
    message = parse(
        make_doc(),
        sending_facility="BVDK-LAMDONG",
        receiving_application="HIS",
        receiving_facility="KHOA-NOI",
        control_id="MSG00001",
        now=now,
    )

    msh = message.segment("MSH")
    assert str(msh(2)) == "^~\\&"
    assert str(msh(3)) == "DALAT-PACS"
    assert str(msh(4)) == "BVDK-LAMDONG"
    assert str(msh(5)) == "HIS"
    assert str(msh(6)) == "KHOA-NOI"
    assert str(msh(7)) == "20240314034500+0000"
    assert str(msh(9)) == "ORU^R01^ORU_R01"
    assert str(msh(10)) == "MSG00001"
    assert str(msh(11)) == "P"
    assert str(msh(12)) == "2.5.1"
    assert str(msh(18)) == "UNICODE UTF-8"


def test_control_ids_differ_when_not_given() -> None:
    first, second = (parse(make_doc()).segment("MSH") for _ in range(2))

    assert str(first(10)) != str(second(10))


def test_patient_identification_keeps_diacritics() -> None:
    message = parse(make_doc())

    pid = message.segment("PID")
    assert message["PID.F5.R1.C1"] == "Nguyễn"
    assert message["PID.F5.R1.C2"] == "Thị Hồng Nhung"
    assert message["PID.F3.R1.C1"] == "BN-2024-0042"
    assert message["PID.F3.R1.C4"] == "BVDK-LAMDONG"
    assert str(pid(7)) == "19850314"
    assert str(pid(8)) == "F"
    assert "Nguyễn^Thị Hồng Nhung" in oru_r01(make_doc())  # UTF-8, no \X..\ escapes


def test_an_oid_issuer_is_a_universal_id() -> None:
    doc = make_doc(study=dataclasses.replace(make_doc().study, issuer="1.2.840.113619.6.1"))

    message = parse(doc)

    assert message["PID.F3.R1.C4.S2"] == "1.2.840.113619.6.1"
    assert message["PID.F3.R1.C4.S3"] == "ISO"


@pytest.mark.parametrize(
    ("status", "code"), [("preliminary", "P"), ("final", "F"), ("amended", "C")]
)
def test_result_status_follows_the_report(status: str, code: str) -> None:
    message = parse(make_doc(status=status, reason="Sửa kết luận."))

    assert str(message.segment("OBR")(25)) == code
    assert {str(obx(11)) for obx in message.segments("OBX")} == {code}


def test_observation_request() -> None:
    message = parse(make_doc())

    obr = message.segment("OBR")
    assert message["OBR.F3"] == "XQ240314-007"
    assert str(obr(4)(1)(1)) == "18748-4"
    assert str(obr(4)(1)(2)) == "Diagnostic imaging study"
    assert str(obr(4)(1)(3)) == "LN"
    assert str(obr(7)) == "20240314093015+0700"
    assert str(obr(22)) == "20240314104207+0700"
    assert message["OBR.F32.R1.C1.S1"] == "bs.an"
    assert message["OBR.F32.R1.C1.S2"] == "Trần"
    assert message["OBR.F32.R1.C1.S3"] == "An"
    assert message["OBR.F32.R1.C1.S4"] == "Văn"


def test_filler_order_is_the_study_uid_without_an_accession_number() -> None:
    doc = make_doc(study=dataclasses.replace(make_doc().study, accession_number=None))

    assert parse(doc)["OBR.F3"] == STUDY_UID


def test_observation_texts_join_back_to_the_report() -> None:
    message = parse(make_doc())

    assert report_parts(message) == {
        "lungs": LUNGS,
        "heart": HEART,
        "59776-5": FINDINGS,
        "19005-8": IMPRESSION,
    }
    lungs = [obx for obx in message.segments("OBX") if str(obx(3)(1)(1)) == "lungs"]
    assert len(lungs) == 2  # one OBX per line
    assert {str(obx(4)) for obx in lungs} == {"1"}
    assert str(lungs[0](3)(1)(2)) == "Phổi"
    assert str(lungs[0](3)(1)(3)) == "99DALAT"


def test_delimiters_in_free_text_are_escaped_and_round_trip() -> None:
    impression = "Kết luận: A|B ^ C~D \\ E&F."
    doc = make_doc(
        sections=(Section("lungs", "Phổi & màng phổi", AWKWARD),),
        findings="x|y\n^~\\&",
        impression=impression,
    )

    message = parse(doc)

    assert report_parts(message) == {
        "lungs": AWKWARD.replace("\r\n", "\n"),  # line breaks come back as LF
        "59776-5": "x|y\n^~\\&",
        "19005-8": impression,
    }
    obx = next(obx for obx in message.segments("OBX") if str(obx(3)(1)(1)) == "lungs")
    assert message.unescape(str(obx(3)(1)(2))) == "Phổi & màng phổi"


def test_escape_uses_the_standard_sequences() -> None:
    assert escape("| ^ ~ \\ &") == "\\F\\ \\S\\ \\R\\ \\E\\ \\T\\"
    assert escape("Đà Lạt\r") == "Đà Lạt\\X0D\\"


def test_study_instance_uid_observation() -> None:
    message = parse(make_doc())

    (obx,) = [obx for obx in message.segments("OBX") if str(obx(2)) == "ST"]
    assert str(obx(3)) == "110180^Study Instance UID^DCM"
    assert str(obx(5)) == STUDY_UID
    assert str(obx(14)) == "20240314093015+0700"


def test_set_ids_count_up() -> None:
    message = parse(make_doc())

    set_ids = [str(obx(1)) for obx in message.segments("OBX")]
    assert set_ids == [str(n) for n in range(1, len(set_ids) + 1)]


def test_amendment_reason_is_a_note_on_the_request() -> None:
    doc = make_doc(status="amended", version=2, reason="Bổ sung mô tả.\nSửa | kết luận.")

    message = parse(doc)

    notes = [message.unescape(str(nte(3))) for nte in message.segments("NTE")]
    assert notes == ["Bổ sung mô tả.", "Sửa | kết luận."]


def test_naive_signing_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        oru_r01(make_doc(signed_at=datetime(2024, 3, 14, 10, 42)))
