"""De-identified export (PS3.15 Annex E basic profile): the logic and `pacs export`."""

import io
import re
import zipfile
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ImplicitVRLittleEndian
from sqlalchemy import select

from storage import Archive, CannotDeidentify, Source, StorageSettings, stage_file
from storage.deidentify import BASIC_PROFILE, Deidentifier
from storage.index.tables import AuditEvent
from tests import factories
from tests.conftest import run_pacs

NAME = "Nguyễn^Thị Hà"
SALT = b"a-test-salt-of-enough-bytes"
UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def _ct_study(patient_id: str = "P001", study_uid: str | None = None) -> list[Dataset]:
    """Two CT instances of one series; the second refers to the first in a sequence."""
    series = factories.ct_series(
        2, name=NAME, patient_id=patient_id, **({"study_uid": study_uid} if study_uid else {})
    )
    for ds in series:
        ds.InstitutionName = "Bệnh viện Đa khoa Lâm Đồng"
        ds.OperatorsName = "Lê^Văn Bình"
        ds.FrameOfReferenceUID = "1.2.3.4.5.6.7"
        ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20261120"
        ds.ContentTime = "101500"
        ds.BurnedInAnnotation = "NO"
        ds.add_new(0x00091010, "LO", "Bệnh viện private name")
        ds.private_block(0x0011, "DALAT TEST", create=True).add_new(0x01, "PN", "Trần^A")
    source = Dataset()
    source.ReferencedSOPClassUID = series[0].SOPClassUID
    source.ReferencedSOPInstanceUID = series[0].SOPInstanceUID
    source.add_new(0x00291001, "LO", "private inside a sequence")
    series[1].SourceImageSequence = [source]
    return series


def _round_trip(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return dcmread(buffer)


def _all_tags(ds: Dataset) -> list[int]:
    tags: list[int] = []
    for element in ds.iterall():
        tags.append(int(element.tag))
    return tags


def test_every_profile_keyword_is_a_dicom_keyword() -> None:
    from pydicom.datadict import tag_for_keyword

    assert [k for k in BASIC_PROFILE if tag_for_keyword(k) is None] == []


def test_identifying_attributes_are_removed_or_replaced() -> None:
    original = _ct_study()[1]
    result = _round_trip(Deidentifier(SALT).deidentify(original))

    assert result.PatientName == result.PatientID
    assert re.fullmatch(r"ANON-[0-9A-F]{12}", result.PatientID)
    assert str(result.PatientName).isascii()
    for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyDate"):
        assert keyword in result, keyword
        assert not result[keyword].value, keyword  # Z: empty
    assert not result.ReferringPhysicianName
    for keyword in (
        "InstitutionName",
        "OperatorsName",
        "StudyDescription",
        "SeriesDescription",
        "SeriesDate",
        "AcquisitionDate",
    ):
        assert keyword not in result, keyword
    assert result.PatientIdentityRemoved == "YES"
    assert "Basic Application Level Confidentiality Profile" in result.DeidentificationMethod
    code = result.DeidentificationMethodCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("113100", "DCM")
    assert result.LongitudinalTemporalInformationModified == "REMOVED"
    assert not any(tag >> 16 & 1 for tag in _all_tags(result)), "a private tag is left"
    text = str(result)
    for word in ("Nguyễn", "Trần", "Lâm Đồng", "Lê^Văn", "P001", "ACC001"):
        assert word not in text
    assert original.PatientName == NAME  # the input is left alone


def test_same_patient_same_pseudonym_across_studies_and_uids_stay_consistent() -> None:
    deidentifier = Deidentifier(SALT)
    first, second = _ct_study(), _ct_study()
    other = _ct_study(patient_id="P002")
    results = [deidentifier.deidentify(ds) for ds in [*first, *second, *other]]

    assert len({r.PatientID for r in results[:4]}) == 1
    assert results[4].PatientID != results[0].PatientID
    a, b = results[0], results[1]
    assert a.SeriesInstanceUID == b.SeriesInstanceUID != first[0].SeriesInstanceUID
    assert a.StudyInstanceUID == b.StudyInstanceUID
    assert a.FrameOfReferenceUID == b.FrameOfReferenceUID != "1.2.3.4.5.6.7"
    assert results[2].StudyInstanceUID != a.StudyInstanceUID
    reference = b.SourceImageSequence[0]
    assert reference.ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert reference.ReferencedSOPClassUID == first[0].SOPClassUID  # a class UID is kept
    assert 0x00291001 not in reference
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID
    for uid in (a.SOPInstanceUID, a.SeriesInstanceUID, a.StudyInstanceUID):
        assert uid.startswith("2.25.")
        assert len(uid) <= 64
        assert UID_PATTERN.match(uid)
        assert UID(uid).is_valid


def test_same_salt_same_output_other_salt_different() -> None:
    ds = _ct_study()[0]
    once = _round_trip(Deidentifier(SALT).deidentify(ds))
    twice = _round_trip(Deidentifier(SALT).deidentify(ds))
    other = _round_trip(Deidentifier(b"another-salt-of-enough-bytes").deidentify(ds))
    assert once == twice
    assert other.PatientID != once.PatientID
    assert other.SOPInstanceUID != once.SOPInstanceUID


def test_pixel_data_is_kept_byte_for_byte() -> None:
    ds = factories.image(seed=3)
    assert Deidentifier(SALT).deidentify(ds).PixelData == ds.PixelData


def test_file_is_streamed_with_pixels_untouched(tmp_path: Path) -> None:
    implicit = factories.image(seed=7, transfer_syntax=ImplicitVRLittleEndian)
    for ds in (factories.image(seed=5), factories.j2k_ct(seed=6), implicit):
        path = factories.write(ds, tmp_path)
        target = io.BytesIO()
        with path.open("rb") as source:
            Deidentifier(SALT).write_file(source, target)
        target.seek(0)
        result = dcmread(target)
        assert result.PixelData == ds.PixelData
        assert result.PatientIdentityRemoved == "YES"


def test_modified_dates_option_shifts_dates_per_patient() -> None:
    first, second = _ct_study()
    deidentifier = Deidentifier(SALT, shift_dates=True)
    a, b = deidentifier.deidentify(first), deidentifier.deidentify(second)
    assert a.StudyDate == b.StudyDate
    assert a.StudyDate not in ("", "20261120")
    assert a.StudyTime == "101010"
    assert not a.PatientBirthDate
    assert a.LongitudinalTemporalInformationModified == "MODIFIED"
    assert [c.CodeValue for c in a.DeidentificationMethodCodeSequence] == ["113100", "113107"]


@pytest.mark.parametrize(
    ("modality", "burned_in", "refused"),
    [("US", None, True), ("US", "NO", False), ("CT", "YES", True), ("SC", "", True)],
)
def test_instances_that_may_show_names_are_refused(
    modality: str, burned_in: str | None, refused: bool
) -> None:
    ds = factories.image(modality=modality)
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    if refused:
        with pytest.raises(CannotDeidentify, match="Burned In Annotation"):
            Deidentifier(SALT).deidentify(ds)
        assert Deidentifier(SALT, allow_burned_in=True).deidentify(ds).PatientIdentityRemoved
    else:
        assert Deidentifier(SALT).deidentify(ds).PatientIdentityRemoved == "YES"


@pytest.mark.parametrize("storage_settings", ["embedded"], indirect=True)
def test_pacs_export_writes_a_deidentified_zip_and_audits_it(
    archive: Archive, storage_settings: StorageSettings, tmp_path: Path
) -> None:
    study_uid = "1.2.826.0.1.3680043.8.498.1"
    instances = _ct_study(study_uid=study_uid)
    other_study = _ct_study()
    ultrasound = factories.image(modality="US", study_uid=study_uid)
    files = factories.write_all([*instances, *other_study, ultrasound], tmp_path / "in")
    for path in files:
        archive.store(stage_file(path, archive.staging_dir), source=Source("dimse", aet="CT1"))
    archive.close()
    out = tmp_path / "out" / "export.zip"

    run = run_pacs(
        "export",
        study_uid,
        "--patient-id",
        "P001",
        "--out",
        out,
        data_dir=storage_settings.data_dir,
    )

    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"instances written\s*│\s*4\b", run.stdout)
    assert re.search(r"instances refused\s*│\s*1\b", run.stdout)
    assert "modality US" in run.stdout
    salt = out.with_name("export.zip.salt")
    assert salt.stat().st_mode & 0o077 == 0
    with zipfile.ZipFile(out) as bundle:
        names = sorted(bundle.namelist())
        read = {name: dcmread(io.BytesIO(bundle.read(name))) for name in names}
    assert len(names) == 4
    assert all(re.fullmatch(r"ANON-[0-9A-F]{12}/[12]/1/[12]\.dcm", name) for name in names)
    assert len({ds.PatientID for ds in read.values()}) == 1
    by_sop = {ds.SOPInstanceUID: ds for ds in read.values()}
    original_pixels = {ds.PixelData for ds in [*instances, *other_study]}
    for ds in read.values():
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.PixelData in original_pixels
        assert "Nguyễn" not in str(ds)
        if "SourceImageSequence" in ds:
            assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID in by_sop

    again = run_pacs(
        "export", study_uid, "--out", tmp_path / "again.zip", "--salt-file", salt,
        data_dir=storage_settings.data_dir,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    with zipfile.ZipFile(tmp_path / "again.zip") as bundle:
        uids = {dcmread(io.BytesIO(bundle.read(n))).SOPInstanceUID for n in bundle.namelist()}
    assert uids <= set(by_sop)

    reopened = Archive.open(storage_settings)
    try:
        with reopened.read() as conn:
            rows = conn.execute(
                select(AuditEvent).where(AuditEvent.action == "export").order_by(AuditEvent.id)
            ).all()
    finally:
        reopened.close()
    first = next(row for row in rows if row.study_instance_uid == study_uid)
    assert first.outcome == "partial"
    assert "1 refused" in first.detail
    assert "modality US" in first.detail
    assert first.actor
    assert {row.study_instance_uid for row in rows} >= {study_uid, other_study[0].StudyInstanceUID}


@pytest.mark.parametrize("storage_settings", ["embedded"], indirect=True)
def test_pacs_export_without_deidentify_gives_the_original_files(
    archive: Archive, storage_settings: StorageSettings, tmp_path: Path
) -> None:
    instances = _ct_study()
    paths = factories.write_all(instances, tmp_path / "in")
    for path in paths:
        archive.store(stage_file(path, archive.staging_dir), source=Source("dimse", aet="CT1"))
    archive.close()
    out = tmp_path / "originals.zip"

    run = run_pacs(
        "export", instances[0].StudyInstanceUID, "--no-deidentify", "--out", out,
        data_dir=storage_settings.data_dir,
    )  # fmt: skip

    assert run.returncode == 0, run.stdout + run.stderr
    assert not out.with_name("originals.zip.salt").exists()
    with zipfile.ZipFile(out) as bundle:
        contents = sorted(bundle.read(name)[128:] for name in bundle.namelist())
    assert contents == sorted(factories.dataset_bytes(path) for path in paths)


def test_what_the_review_found_leaking_is_gone() -> None:
    """Contacts, alternative-calendar birth dates, free-text comments, icons and dates the
    table does not list are removed; a CT secondary capture is refused."""
    from pydicom.dataset import Dataset as Plain

    from storage import CannotDeidentify
    from storage.deidentify import Deidentifier

    ds = factories.image(name="Nguyễn^Thị Hà")
    ds.PatientTelecomInformation = "+84 263 3822 000, ha@example.vn"
    ds.PatientBirthDateInAlternativeCalendar = "19600101"
    ds.RequestedProcedureComments = "Bà Nguyễn Thị Hà, phòng 12"
    ds.DateOfSecondaryCapture = "20261130"
    ds.FrameAcquisitionDateTime = "20261130101010"
    icon = Plain()
    icon.Rows = icon.Columns = 8
    ds.IconImageSequence = [icon]
    out = Deidentifier(salt=b"0123456789abcdef-salt").deidentify(ds)
    for keyword in (
        "PatientTelecomInformation",
        "PatientBirthDateInAlternativeCalendar",
        "RequestedProcedureComments",
        "DateOfSecondaryCapture",
        "FrameAcquisitionDateTime",
        "IconImageSequence",
    ):
        assert keyword not in out, keyword
    capture = factories.image(sop_class="1.2.840.10008.5.1.4.1.1.7", modality="CT")
    with pytest.raises(CannotDeidentify, match="secondary capture"):
        Deidentifier(salt=b"0123456789abcdef-salt").deidentify(capture)
    capture.BurnedInAnnotation = "NO"
    assert "PatientName" in Deidentifier(salt=b"0123456789abcdef-salt").deidentify(capture)


@pytest.mark.parametrize("storage_settings", ["embedded"], indirect=True)
def test_pacs_export_by_a_patient_id_two_hospitals_share_is_refused(
    archive: Archive, storage_settings: StorageSettings, tmp_path: Path
) -> None:
    """Patient 12345 of one hospital is not patient 12345 of another: nothing is written."""
    first = factories.image(patient_id="12345")
    second = factories.image(patient_id="12345")
    for ds, hospital in ((first, "BVDKLD"), (second, "TTYT-DALAT")):
        path = factories.write(ds, tmp_path / hospital)
        source = Source("dimse", aet="CT1", hospital=hospital)
        archive.store(stage_file(path, archive.staging_dir), source=source)
    archive.close()
    out = tmp_path / "out.zip"
    run = run_pacs(
        "export", "--patient-id", "12345", "--out", out, data_dir=storage_settings.data_dir
    )
    assert run.returncode == 2
    assert "belongs to patients of several issuers (BVDKLD, TTYT-DALAT)" in run.stderr
    assert not out.exists()
    pattern = run_pacs(
        "export", "--patient-id", "123*", "--out", out, data_dir=storage_settings.data_dir
    )
    assert pattern.returncode == 2
    assert "must be one ID, not a pattern" in pattern.stderr


@pytest.mark.parametrize("storage_settings", ["embedded"], indirect=True)
def test_pacs_export_to_a_peer_sends_deidentified_instances(
    archive: Archive, storage_settings: StorageSettings, tmp_path: Path
) -> None:
    """`pacs export --to`: a research PACS (a real storage SCP) receives the study
    de-identified, pixels as they were; the export is audited with where it went."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import CTImageStorage

    from storage import PeerRegistry
    from tests.conftest import free_port

    instances = _ct_study()
    for path in factories.write_all(instances, tmp_path / "in"):
        archive.store(stage_file(path, archive.staging_dir), source=Source("dimse", aet="CT1"))
    received: list[Dataset] = []

    def keep(event: evt.Event) -> int:
        received.append(event.dataset)
        return 0

    scp = AE(ae_title="RESEARCH")
    scp.add_supported_context(CTImageStorage)
    port = free_port()
    server = scp.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, keep)]
    )
    PeerRegistry(archive.engine).add(name="research", aet="RESEARCH", host="127.0.0.1", port=port)
    archive.close()
    try:
        salt = tmp_path / "salt"
        salt.write_bytes(SALT)
        run = run_pacs(
            "export", instances[0].StudyInstanceUID, "--to", "research", "--salt-file", salt,
            data_dir=storage_settings.data_dir,
        )  # fmt: skip
        unknown = run_pacs(
            "export", instances[0].StudyInstanceUID, "--to", "nowhere",
            data_dir=storage_settings.data_dir,
        )  # fmt: skip
        by_query = run_pacs(
            "export", "--where", "PatientID=P001", "--where", "ModalitiesInStudy=CT",
            "--out", tmp_path / "query.zip", "--salt-file", salt,
            data_dir=storage_settings.data_dir,
        )  # fmt: skip
    finally:
        server.shutdown()
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"instances written\s*│\s*2\b", run.stdout)
    assert len(received) == 2
    for ds in received:
        assert ds.PatientIdentityRemoved == "YES"
        assert "Nguyễn" not in str(ds)
        assert ds.SOPInstanceUID not in {i.SOPInstanceUID for i in instances}
    assert {ds.PixelData for ds in received} == {ds.PixelData for ds in instances}
    assert unknown.returncode == 2
    assert "No registered peer called nowhere" in unknown.stderr
    assert by_query.returncode == 0, by_query.stdout + by_query.stderr
    with zipfile.ZipFile(tmp_path / "query.zip") as bundle:  # a query's results, same salt
        from_query = {dcmread(io.BytesIO(bundle.read(n))).SOPInstanceUID for n in bundle.namelist()}
    assert from_query == {ds.SOPInstanceUID for ds in received}
    reopened = Archive.open(storage_settings)
    try:
        with reopened.read() as conn:
            row = conn.execute(
                select(AuditEvent).where(
                    AuditEvent.action == "export", AuditEvent.detail.contains("research")
                )
            ).one()
    finally:
        reopened.close()
    assert row.outcome == "success"
    assert "de-identified to research (RESEARCH@127.0.0.1" in row.detail
