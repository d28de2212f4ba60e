"""The signed report as a person and another system see it: the PDF's text and pages, the
Encapsulated PDF and the SR read back from their files, and dciodvfy's opinion of both."""

import dataclasses
import io
import re
import subprocess
import unicodedata
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from highdicom.sr import EnhancedSR
from pydicom import config, dcmread, dcmwrite
from pydicom.dataset import Dataset
from pydicom.uid import EncapsulatedPDFStorage, EnhancedSRStorage, ExplicitVRLittleEndian
from pypdf import PdfReader

from tests import factories
from tests.conftest import need
from tests.viewer_api.reports.samples import (
    BONES,
    FINDINGS,
    HOSPITAL,
    IMPRESSION,
    LUNGS,
    PATIENT,
    REASON,
    SIGNER,
    STUDY,
    report,
)
from viewer_api.reports.dicom import encapsulated_pdf, report_sr
from viewer_api.reports.document import ReportDocument
from viewer_api.reports.pdf import render_pdf


@pytest.fixture
def study(tmp_path: Path) -> Dataset:
    """The header of one instance, as the archive reads it: no pixel data."""
    path = factories.write(factories.chest_cr(name=PATIENT), tmp_path / "study")
    header = dcmread(path, stop_before_pixels=True)
    assert "PixelData" not in header
    assert header.SpecificCharacterSet == "ISO_IR 192"
    return header


@pytest.fixture
def strict_writing(monkeypatch: pytest.MonkeyPatch) -> None:
    """What we write is strict: pydicom raises on an invalid value instead of warning."""
    monkeypatch.setattr(config.settings, "writing_validation_mode", config.RAISE)


def make_report(header: Dataset, **changes: object) -> ReportDocument:
    """The sample report of `header`'s study, as its amendment (version 2, with a reason)."""
    study = dataclasses.replace(STUDY, study_instance_uid=header.StudyInstanceUID)
    fields: dict[str, Any] = {"version": 2, "status": "amended", "reason": REASON}
    return report(**{"study": study, **fields, **changes})


def pdf_pages(pdf: bytes) -> list[str]:
    """Each page's text as a reader sees it: NFC, line wrapping and spacing collapsed."""
    reader = PdfReader(io.BytesIO(pdf))
    return [
        re.sub(r"\s+", " ", unicodedata.normalize("NFC", page.extract_text()))
        for page in reader.pages
    ]


def round_trip(ds: Dataset, path: Path) -> Dataset:
    dcmwrite(path, ds, enforce_file_format=True)
    return dcmread(path)


def sr_texts(ds: Dataset) -> dict[tuple[str, str], list[str]]:
    """The TEXT items of the content tree by (code value, coding scheme)."""
    found: dict[tuple[str, str], list[str]] = defaultdict(list)

    def walk(items: list[Dataset]) -> None:
        for item in items:
            code = item.ConceptNameCodeSequence[0]
            key = (code.get("CodeValue") or code.LongCodeValue, code.CodingSchemeDesignator)
            if item.ValueType == "TEXT":
                found[key].append(item.TextValue)
            walk(item.get("ContentSequence", []))

    walk(ds.ContentSequence)
    return found


# The PDF


def test_pdf_shows_the_report_in_vietnamese(study: Dataset) -> None:
    pdf = render_pdf(make_report(study))

    assert pdf.startswith(b"%PDF-")
    [text] = pdf_pages(pdf)
    for expected in (
        HOSPITAL,
        "Kết quả chụp X-quang ngực thẳng",
        "Bệnh nhân Nguyễn Thị Hồng Nhung",
        "Mã bệnh nhân P001 (BVDKLD)",
        "Ngày sinh 15/01/1980",
        "Giới tính Nữ",
        "Ngày chụp 20/11/2026 10:10",
        "ACC001",
        "X-quang ngực thẳng tư thế đứng",
        "Trần Văn Minh",
        "Kết quả Phổi " + LUNGS + " Xương " + BONES + " " + FINDINGS,
        "Kết luận " + IMPRESSION,
        "Trạng thái Đã sửa đổi",
        "Lê Văn An",
        SIGNER,
        "Thời gian ký 20/11/2026 14:30:05 (UTC+07:00)",
        "Phiên bản 2",
        "Lý do sửa đổi " + REASON,
        f"Study Instance UID {study.StudyInstanceUID}",
        "Trang 1/1",
    ):
        assert expected in text
    assert "Nguyễn^" not in text


def test_pdf_in_english_has_english_headings(study: Dataset) -> None:
    doc = make_report(
        study, language="en", status="final", reason=None, title="Chest X-ray", version=1
    )

    [text] = pdf_pages(render_pdf(doc))

    for expected in ("Patient Nguyễn Thị Hồng Nhung", "Sex Female", "Findings", "Impression"):
        assert expected in text
    assert "Status Final" in text
    assert "Page 1 of 1" in text
    assert "Kết luận" not in text
    assert "Reason for amendment" not in text


def test_preliminary_pdf_says_so_under_the_title(study: Dataset) -> None:
    doc = make_report(study, status="preliminary", signer=None, reason=None)

    [text] = pdf_pages(render_pdf(doc))

    assert "Kết quả chụp X-quang ngực thẳng (Sơ bộ)" in text
    assert "Trạng thái Sơ bộ" in text
    assert "Chứng thư số" not in text


def test_decomposed_vietnamese_is_printed_composed(study: Dataset) -> None:
    doc = make_report(study, impression=unicodedata.normalize("NFD", IMPRESSION))

    [text] = pdf_pages(render_pdf(doc))

    assert IMPRESSION in text


def test_long_report_flows_across_pages(study: Dataset) -> None:
    paragraphs = [f"Đoạn {i}. {FINDINGS} {LUNGS}" for i in range(1, 201)]
    doc = make_report(study, findings="\n".join(paragraphs))

    pages = pdf_pages(render_pdf(doc))

    assert len(pages) >= 5
    text = " ".join(pages)
    for paragraph in paragraphs:
        assert paragraph in re.sub(r" Study Instance UID \S+ Trang \d+/\d+ ", " ", text)
    for number, page in enumerate(pages, start=1):
        assert f"Study Instance UID {study.StudyInstanceUID}" in page
        assert f"Trang {number}/{len(pages)}" in page
    assert "Kết luận " + IMPRESSION in pages[-1]
    assert "Lý do sửa đổi " + REASON in pages[-1]


def test_pdf_embeds_its_fonts(study: Dataset) -> None:
    reader = PdfReader(io.BytesIO(render_pdf(make_report(study))))

    resources: Any = reader.pages[0]["/Resources"]
    fonts = [font.get_object() for font in resources["/Font"].values()]
    assert len(fonts) == 2  # regular and bold, nothing from the system
    for font in fonts:
        descriptor = font["/DescendantFonts"][0].get_object()["/FontDescriptor"].get_object()
        assert "DejaVuSans" in font["/BaseFont"]
        assert "/FontFile2" in descriptor  # embedded


def test_signing_time_without_a_zone_is_refused(study: Dataset) -> None:
    doc = make_report(study, signed_at=datetime(2026, 11, 20, 14, 30))

    with pytest.raises(ValueError, match="no time zone"):
        render_pdf(doc)
    with pytest.raises(ValueError, match="no time zone"):
        report_sr(doc, study, series_uid="1.2.3", sop_uid="1.2.3.4")


# Encapsulated PDF


@pytest.mark.usefixtures("strict_writing")
def test_encapsulated_pdf_gives_back_the_same_pdf(study: Dataset, tmp_path: Path) -> None:
    doc = make_report(study)
    pdf = render_pdf(doc)

    ds = round_trip(
        encapsulated_pdf(doc, pdf, study, series_uid="1.2.3.1", sop_uid="1.2.3.1.1"),
        tmp_path / "report.dcm",
    )

    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPClassUID == EncapsulatedPDFStorage
    assert ds.SOPClassUID == EncapsulatedPDFStorage
    assert ds.SOPInstanceUID == "1.2.3.1.1"
    assert ds.SeriesInstanceUID == "1.2.3.1"
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.Modality == "DOC"
    assert ds.EncapsulatedDocument[: ds.EncapsulatedDocumentLength] == pdf
    assert ds.EncapsulatedDocument[len(pdf) :] in (b"", b"\0")
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert ds.DocumentTitle == "Kết quả chụp X-quang ngực thẳng"
    assert ds.BurnedInAnnotation == "YES"
    concept = ds.ConceptNameCodeSequence[0]
    assert (concept.CodeValue, concept.CodingSchemeDesignator) == ("18748-4", "LN")
    assert (ds.ContentDate, ds.ContentTime, ds.TimezoneOffsetFromUTC) == (
        "20261120",
        "143005",
        "+0700",
    )
    assert ds.SeriesDescription == "Report v2 (amended)"
    assert ds.InstanceNumber == 2
    assert ds.InstitutionName == HOSPITAL
    assert "VerificationFlag" not in ds
    assert str(ds.PatientName) == PATIENT
    for keyword in (
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "StudyDescription",
    ):
        assert ds[keyword].value == study[keyword].value, keyword
    assert str(ds.ReferringPhysicianName) == "Trần^Văn Minh"


@pytest.mark.parametrize("pdf", [b"%PDF-1.7\n%%EOF\n", b"%PDF-1.7\n%%EOF"])
def test_encapsulated_document_is_padded_to_even_length(
    study: Dataset, tmp_path: Path, pdf: bytes
) -> None:
    doc = make_report(study)

    ds = round_trip(
        encapsulated_pdf(doc, pdf, study, series_uid="1.2.3", sop_uid="1.2.3.4"),
        tmp_path / "report.dcm",
    )

    assert len(ds.EncapsulatedDocument) % 2 == 0
    assert ds.EncapsulatedDocumentLength == len(pdf)
    assert ds.EncapsulatedDocument.rstrip(b"\0") == pdf.rstrip(b"\0")


def test_encapsulated_pdf_refuses_what_is_not_a_pdf(study: Dataset) -> None:
    with pytest.raises(ValueError, match="not a PDF"):
        encapsulated_pdf(
            make_report(study), b"<html>", study, series_uid="1.2.3", sop_uid="1.2.3.4"
        )


def test_header_of_another_study_is_refused(study: Dataset) -> None:
    doc = make_report(study)
    other = factories.chest_cr()
    del other.PixelData

    with pytest.raises(ValueError, match="the report of study"):
        encapsulated_pdf(doc, b"%PDF-1.7", other, series_uid="1.2.3", sop_uid="1.2.3.4")
    with pytest.raises(ValueError, match="the report of study"):
        report_sr(doc, other, series_uid="1.2.3", sop_uid="1.2.3.4")


def test_latin1_header_of_a_private_class_is_written_again_in_utf8(tmp_path: Path) -> None:
    header = Dataset()
    header.SpecificCharacterSet = "ISO_IR 100"
    header.SOPClassUID = "1.3.46.670589.11.0.0.12.1"  # a vendor's private SOP class
    header.SOPInstanceUID = "1.2.3.4.5"
    header.SeriesInstanceUID = "1.2.3.4"
    header.StudyInstanceUID = "1.2.3"
    header.PatientName = "Müller^Jürgen"
    header.PatientID = "M1"
    header.OtherPatientIDsSequence = [Dataset()]
    header.OtherPatientIDsSequence[0].PatientID = "X1"
    header.OtherPatientIDsSequence[0].IssuerOfPatientID = "Städtisches Klinikum"
    header.OtherPatientIDsSequence[0].TypeOfPatientID = "TEXT"
    dcmwrite(tmp_path / "header.dcm", header, implicit_vr=False, little_endian=True)
    header = dcmread(tmp_path / "header.dcm", force=True)
    doc = make_report(header, language="en", status="final")

    pdf_ds = round_trip(
        encapsulated_pdf(doc, render_pdf(doc), header, series_uid="1.2.9", sop_uid="1.2.9.1"),
        tmp_path / "pdf.dcm",
    )
    sr = round_trip(
        report_sr(doc, header, series_uid="1.2.8", sop_uid="1.2.8.1"), tmp_path / "sr.dcm"
    )

    for ds in (pdf_ds, sr):
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert str(ds.PatientName) == "Müller^Jürgen"
        assert ds.OtherPatientIDsSequence[0].IssuerOfPatientID == "Städtisches Klinikum"
        assert ds.PatientBirthDate == ""  # type 2: present, empty
        assert ds.StudyID == ""
    [series] = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    [instance] = series.ReferencedSOPSequence
    assert instance.ReferencedSOPClassUID == "1.3.46.670589.11.0.0.12.1"
    assert instance.ReferencedSOPInstanceUID == "1.2.3.4.5"


# Enhanced SR


@pytest.mark.usefixtures("strict_writing")
def test_sr_keeps_the_vietnamese_text(study: Dataset, tmp_path: Path) -> None:
    doc = make_report(study)

    ds = round_trip(
        report_sr(doc, study, series_uid="1.2.3.2", sop_uid="1.2.3.2.1"), tmp_path / "sr.dcm"
    )

    assert ds.SOPClassUID == EnhancedSRStorage
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == PATIENT
    assert ds.StudyInstanceUID == study.StudyInstanceUID
    assert ds.StudyDescription == study.StudyDescription
    concept = ds.ConceptNameCodeSequence[0]
    assert (concept.CodeValue, concept.CodingSchemeDesignator) == ("18748-4", "LN")
    texts = sr_texts(ds)
    assert texts[("lungs", "99DALAT")] == [LUNGS]
    assert texts[("bones", "99DALAT")] == [BONES]
    assert texts[("121071", "DCM")] == [FINDINGS]
    assert texts[("121073", "DCM")] == [IMPRESSION]
    assert texts[("amendment-reason", "99DALAT")] == [REASON]
    findings = ds.ContentSequence[-3]
    assert findings.ConceptNameCodeSequence[0].CodeValue == "121070"
    assert [i.ConceptNameCodeSequence[0].CodeMeaning for i in findings.ContentSequence] == [
        "Phổi",
        "Xương",
        "Finding",
    ]
    language = ds.ContentSequence[0]
    assert language.ConceptCodeSequence[0].CodeValue == "vi"
    assert (ds.ContentDate, ds.ContentTime) == ("20261120", "143005")
    assert ds.SeriesDescription == "Report v2 (amended)"
    assert ds.InstanceNumber == 2
    assert EnhancedSR.from_dataset(ds).SOPInstanceUID == "1.2.3.2.1"


@pytest.mark.parametrize(
    ("status", "completion", "verification", "preliminary"),
    [
        ("preliminary", "PARTIAL", "UNVERIFIED", "PRELIMINARY"),
        ("final", "COMPLETE", "VERIFIED", "FINAL"),
        ("amended", "COMPLETE", "VERIFIED", "FINAL"),
    ],
)
def test_sr_flags_follow_the_status(
    study: Dataset,
    tmp_path: Path,
    status: str,
    completion: str,
    verification: str,
    preliminary: str,
) -> None:
    doc = make_report(study, status=status, reason=REASON if status == "amended" else None)

    ds = round_trip(
        report_sr(doc, study, series_uid="1.2.3", sop_uid="1.2.3.4"), tmp_path / "sr.dcm"
    )

    assert ds.CompletionFlag == completion
    assert ds.VerificationFlag == verification
    assert ds.PreliminaryFlag == preliminary
    if verification == "VERIFIED":
        [observer] = ds.VerifyingObserverSequence
        assert str(observer.VerifyingObserverName) == "Lê^Văn An"
        assert observer.VerifyingOrganization == HOSPITAL
        assert observer.VerificationDateTime == "20261120143005+0700"
    else:
        assert "VerifyingObserverSequence" not in ds
    assert (("amendment-reason", "99DALAT") in sr_texts(ds)) == (status == "amended")


def test_preliminary_and_final_sr_differ_in_their_flags(study: Dataset) -> None:
    preliminary = report_sr(
        make_report(study, status="preliminary", reason=None, signer=None),
        study,
        series_uid="1.2.3",
        sop_uid="1.2.3.1",
    )
    final = report_sr(
        make_report(study, status="final", reason=None),
        study,
        series_uid="1.2.3",
        sop_uid="1.2.3.2",
    )

    assert (preliminary.CompletionFlag, final.CompletionFlag) == ("PARTIAL", "COMPLETE")
    assert (preliminary.VerificationFlag, final.VerificationFlag) == ("UNVERIFIED", "VERIFIED")


def test_sr_without_a_hospital_is_verified_for_dalat_pacs(study: Dataset) -> None:
    doc = make_report(
        study,
        study=dataclasses.replace(make_report(study).study, hospital=None),
        author_display="Lê Văn An",
    )

    ds = report_sr(doc, study, series_uid="1.2.3", sop_uid="1.2.3.4")

    [observer] = ds.VerifyingObserverSequence
    assert observer.VerifyingOrganization == "Dalat PACS"
    assert str(observer.VerifyingObserverName) == "Lê Văn An^"
    assert "InstitutionName" not in ds


def test_amended_sr_names_its_predecessor(study: Dataset) -> None:
    first = report_sr(
        make_report(study, version=1, status="final", reason=None),
        study,
        series_uid="1.2.3",
        sop_uid="1.2.3.1",
    )

    second = report_sr(
        make_report(study), study, series_uid="1.2.3", sop_uid="1.2.3.2", previous_versions=[first]
    )

    [predecessor] = second.PredecessorDocumentsSequence
    [series] = predecessor.ReferencedSeriesSequence
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == "1.2.3.1"
    assert series.ReferencedSOPSequence[0].ReferencedSOPClassUID == EnhancedSRStorage


# dicom3tools


@pytest.mark.parametrize("status", ["preliminary", "amended"])
def test_dciodvfy_finds_no_errors(study: Dataset, tmp_path: Path, status: str) -> None:
    dciodvfy = need("dciodvfy", "dicom3tools")
    doc = make_report(study, status=status, reason=REASON if status == "amended" else None)
    objects = {
        "pdf.dcm": encapsulated_pdf(
            doc, render_pdf(doc), study, series_uid="1.2.3.1", sop_uid="1.2.3.1.1"
        ),
        "sr.dcm": report_sr(doc, study, series_uid="1.2.3.2", sop_uid="1.2.3.2.1"),
    }
    for name, ds in objects.items():
        dcmwrite(tmp_path / name, ds, enforce_file_format=True)

        result = subprocess.run(
            [dciodvfy, str(tmp_path / name)], capture_output=True, text=True, check=False
        )

        report = result.stdout + result.stderr
        assert not [line for line in report.splitlines() if line.startswith("Error")], report
        assert ("EnhancedSR" if name == "sr.dcm" else "EncapsulatedPDF") in report
