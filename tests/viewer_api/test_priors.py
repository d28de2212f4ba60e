"""Priors across hospitals: one person's studies at two hospitals, matched by the citizen
identity number (CCCD) both carry; shown to a reader of the other hospital only once
shared; a record with the same name, birth date and sex only suggested until a radiologist
confirms it, and gone again when they undo it; a contradicting number never suggested nor
linked; the number read from a configured tag; a malformed one ignored."""

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from sqlalchemy import func, select, update

from storage import Archive, Source, StorageSettings, stage_file
from storage.attributes import Level
from storage.elements import scan
from storage.headers import _WANTED, _read_with_pydicom, read_header
from storage.index.tables import Patient, PatientLink
from storage.priors import priors
from storage.scope import EVERYTHING
from tests import factories
from tests.auth import ensure_user
from tests.conftest import audit_row, run_pacs
from tests.viewer_api.conftest import Web, serve

A, B, C = "BV-DALAT", "BV-BAOLOC", "TTYT-DUCTRONG"
CCCD = "079203001234"
PERSON = {"name": "Nguyễn^Văn An", "birth_date": "19790315", "sex": "M"}


def _person(
    patient_id: str,
    *,
    cccd: str | None = None,
    issuer: str = "CCCD",
    study_date: str = "20261120",
    name: str = PERSON["name"],
) -> Dataset:
    ds = factories.image(
        patient_id=patient_id,
        name=name,
        birth_date=PERSON["birth_date"],
        sex=PERSON["sex"],
        study_date=study_date,
    )
    if cccd is not None:
        other = Dataset()
        other.PatientID = cccd
        other.IssuerOfPatientID = issuer
        other.TypeOfPatientID = "TEXT"
        ds.OtherPatientIDsSequence = Sequence([other])
    return ds


def _store(archive: Archive, ds: Dataset, folder: Path, hospital: str) -> None:
    path = factories.write(ds, folder)
    source = Source("dimse", aet=f"CT-{hospital[-3:]}", hospital=hospital)
    archive.store(stage_file(path, archive.staging_dir), source=source)


@dataclass
class Province:
    web: Web
    studies: dict[str, Dataset]
    """a: A's study with the CCCD; b: B's older one with the same CCCD; c: C's record with
    the same name (no diacritics), birth date and sex but no CCCD; d: the same again at C
    with another CCCD (another person)."""
    users: dict[str, dict[str, str]]

    def uid(self, name: str) -> str:
        return str(self.studies[name].StudyInstanceUID)

    def names(self, found: list[dict[str, Any]]) -> list[str]:
        by_uid = {str(ds.StudyInstanceUID): name for name, ds in self.studies.items()}
        return [by_uid[s["study_instance_uid"]] for s in found]

    def get(self, who: str, study: str) -> httpx.Response:
        return httpx.get(
            f"{self.web.url}/api/studies/{self.uid(study)}/priors", headers=self.users[who]
        )

    def look(self, who: str, study: str) -> dict[str, Any]:
        answer = self.get(who, study)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def link(self, who: str, study: str, other: str, *, undo: bool = False) -> httpx.Response:
        method = httpx.delete if undo else httpx.post
        return method(
            f"{self.web.url}/api/studies/{self.uid(study)}/priors/{self.uid(other)}",
            headers=self.users[who],
        )


@pytest.fixture
def province(archive: Archive, tmp_path: Path) -> Iterator[Province]:
    studies = {
        "a": _person("A-0001", cccd=CCCD),
        "b": _person("B-77", cccd=CCCD, issuer="VNM-CCCD", study_date="20250601"),
        "c": _person("C-5", name="NGUYEN^VAN AN", study_date="20240210"),
        "d": _person("C-6", cccd="079203009999", study_date="20230101"),
    }
    for (name, ds), hospital in zip(studies.items(), (A, B, C, C), strict=True):
        _store(archive, ds, tmp_path / name, hospital)
    users = {
        "rad-a": ensure_user(archive, "rad-a", "radiologist", A),
        "rad-b": ensure_user(archive, "rad-b", "radiologist", B),
        "ref-b": ensure_user(archive, "ref-b", "referring", B),
        "tech-b": ensure_user(archive, "tech-b", "technologist", B),
    }
    with serve(archive) as web:
        users["admin"] = ensure_user(archive)
        yield Province(web, studies, users)


def test_the_other_hospitals_study_is_a_citizen_id_prior(province: Province) -> None:
    seen = province.look("admin", "a")
    assert province.names(seen["priors"]) == ["b"]
    prior = seen["priors"][0]
    assert prior["match"] == "citizen-id"
    assert (prior["hospital"], prior["study_date"], prior["modalities"]) == (
        B,
        "20250601",
        ["CT"],
    )
    assert prior["study_description"] == "Chụp CT sọ não"
    row = audit_row(province.web.archive, action="query", actor="test-admin")
    assert row.study_instance_uid == province.uid("a")
    assert row.detail.startswith("priors: 1 prior(s)")
    assert province.names(province.look("admin", "b")["priors"]) == ["a"]


def test_another_hospital_sees_the_prior_only_once_shared(province: Province) -> None:
    assert province.get("rad-b", "a").status_code == 404  # A's study is not there for B
    assert province.look("rad-b", "b")["priors"] == []
    shared = httpx.post(
        f"{province.web.url}/api/studies/{province.uid('a')}/shares",
        headers=province.users["rad-a"],
        json={"hospital": B},
    )
    assert shared.status_code == 201, shared.text
    seen = province.look("rad-b", "b")
    assert province.names(seen["priors"]) == ["a"]
    assert seen["priors"][0]["match"] == "citizen-id"
    assert province.names(province.look("rad-b", "a")["priors"]) == ["b"]
    referring = province.look("ref-b", "b")  # the priors they may see; nothing to confirm
    assert province.names(referring["priors"]) == ["a"]
    assert referring["suggestions"] == []
    assert province.get("tech-b", "b").status_code == 403


def test_a_name_match_is_a_suggestion_until_confirmed(province: Province) -> None:
    seen = province.look("admin", "a")
    assert "c" not in province.names(seen["priors"])
    [suggested] = seen["suggestions"]
    assert (suggested["hospital"], suggested["patient_id"], suggested["match"]) == (
        C,
        "C-5",
        "suggested",
    )
    assert suggested["patient_name"] == "NGUYEN^VAN AN"
    assert province.names(suggested["studies"]) == ["c"]

    assert province.link("ref-b", "b", "c").status_code == 403  # referring doctors look only
    assert province.link("admin", "a", "c").status_code == 204
    assert province.link("admin", "a", "c").status_code == 204  # again: still one link
    with province.web.archive.read() as conn:
        assert conn.scalar(select(func.count()).select_from(PatientLink)) == 1
    seen = province.look("admin", "a")
    assert province.names(seen["priors"]) == ["b", "c"]  # newest first
    assert [p["match"] for p in seen["priors"]] == ["citizen-id", "confirmed"]
    assert seen["suggestions"] == []
    from_b = province.look("admin", "b")["priors"]  # B's record reaches C through A's
    assert [p["match"] for p in from_b] == ["citizen-id", "confirmed"]
    assert province.names(from_b) == ["a", "c"]
    row = audit_row(province.web.archive, action="patient-link", actor="test-admin")
    assert row.study_instance_uid == province.uid("a")
    assert province.uid("c") in row.detail

    assert province.link("admin", "c", "a", undo=True).status_code == 204
    seen = province.look("admin", "a")
    assert province.names(seen["priors"]) == ["b"]
    assert [s["patient_id"] for s in seen["suggestions"]] == ["C-5"]
    assert province.link("admin", "a", "c", undo=True).status_code == 204  # nothing left


def test_a_radiologist_links_only_what_they_may_see(province: Province) -> None:
    assert province.link("rad-a", "a", "c").status_code == 404  # C's study is not theirs
    assert province.look("rad-a", "a")["suggestions"] == []  # nor is C's record shown
    shared = httpx.post(
        f"{province.web.url}/api/studies/{province.uid('c')}/shares",
        headers=province.users["admin"],
        json={"hospital": A},
    )
    assert shared.status_code == 201, shared.text
    assert [s["patient_id"] for s in province.look("rad-a", "a")["suggestions"]] == ["C-5"]
    assert province.link("rad-a", "a", "c").status_code == 204
    assert province.names(province.look("rad-a", "a")["priors"]) == ["c"]  # B's is not shared
    assert province.link("rad-a", "a", "a").status_code == 400  # one record already
    bad = httpx.get(
        f"{province.web.url}/api/studies/1.2.3.a/priors", headers=province.users["rad-a"]
    )
    assert bad.status_code == 400


def test_a_contradicting_citizen_id_is_no_suggestion_nor_a_link(province: Province) -> None:
    suggested = province.look("admin", "a")["suggestions"]
    assert "C-6" not in [s["patient_id"] for s in suggested]
    refused = province.link("admin", "a", "d")
    assert refused.status_code == 400
    assert "different citizen identity numbers" in refused.json()["detail"]
    assert "C-6" not in [s["patient_id"] for s in province.look("admin", "b")["suggestions"]]
    # C's record carries no number: linked to A, it may not be linked to D's person too
    assert province.link("admin", "c", "a").status_code == 204
    assert province.link("admin", "c", "d").status_code == 400


def _citizen_ids(archive: Archive) -> dict[str, str | None]:
    with archive.read() as conn:
        return {row.patient_id: row.citizen_id for row in conn.execute(select(Patient))}


def test_a_citizen_id_in_a_configured_tag(
    storage_settings: StorageSettings, tmp_path: Path
) -> None:
    settings = StorageSettings(
        **storage_settings.model_dump() | {"citizen_id_tag": "(0011,1010)"}, _env_file=None
    )
    with Archive.open(settings) as archive:
        here = _person("A-0001", cccd=CCCD)
        there = _person("B-9")  # no sequence: the number in a private element instead
        there.add_new(0x00110010, "LO", "DALAT HIS")
        there.add_new(0x00111010, "LO", CCCD)
        _store(archive, here, tmp_path / "a", A)
        _store(archive, there, tmp_path / "b", B)
        assert _citizen_ids(archive) == {"A-0001": CCCD, "B-9": CCCD}
        [prior] = priors(archive, str(there.StudyInstanceUID), EVERYTHING)
        assert (prior["study_instance_uid"], prior["match"]) == (
            here.StudyInstanceUID,
            "citizen-id",
        )


@pytest.mark.parametrize("tag", ["00101000", "(0010,1000)", "0010,1000", "OtherPatientIDs"])
def test_the_tag_is_written_as_staff_write_it(tag: str) -> None:
    assert StorageSettings(citizen_id_tag=tag, _env_file=None).citizen_id_tag == tag


@pytest.mark.parametrize("tag", ["(0002,0010)", "7FE00010", "NoSuchKeyword", "0010-1000"])
def test_a_tag_that_cannot_hold_it_is_refused_at_start(tag: str) -> None:
    with pytest.raises(ValidationError, match="citizen_id_tag"):
        StorageSettings(citizen_id_tag=tag, _env_file=None)


def test_a_malformed_citizen_id_is_ignored(
    archive: Archive, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    short, letters = "07920300123", "07920300123A"
    with caplog.at_level(logging.DEBUG, logger="storage.citizen_ids"):
        _store(archive, _person("A-1", cccd=short), tmp_path / "1", A)
        _store(archive, _person("B-1", cccd=letters), tmp_path / "2", B)
        _store(archive, _person("B-2", cccd=CCCD, issuer="BHYT"), tmp_path / "3", B)
    assert _citizen_ids(archive) == {"A-1": None, "B-1": None, "B-2": None}
    assert "not a citizen identity number (12 digits; 11 characters)" in caplog.text
    assert short not in caplog.text  # personal data stays out of the log
    assert letters not in caplog.text


def test_a_later_instance_brings_the_citizen_id(archive: Archive, tmp_path: Path) -> None:
    first = _person("B-1", study_date="20240101")
    _store(archive, first, tmp_path / "1", B)
    assert _citizen_ids(archive) == {"B-1": None}
    later = _person("B-1", cccd=CCCD)
    _store(archive, later, tmp_path / "2", B)
    assert _citizen_ids(archive) == {"B-1": CCCD}
    other = _person("A-1", cccd=CCCD, study_date="20260101")
    _store(archive, other, tmp_path / "3", A)
    found = priors(archive, str(other.StudyInstanceUID), EVERYTHING)
    assert [(p["study_date"], p["match"]) for p in found] == [
        ("20261120", "citizen-id"),
        ("20240101", "citizen-id"),
    ]


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize("undefined_length", [False, True])
def test_the_fast_reader_finds_the_number_as_pydicom_does(
    tmp_path: Path, syntax: str, undefined_length: bool
) -> None:
    ds = _person("A-1", cccd=CCCD, issuer="cccd ")  # issuers match in any case
    ds.file_meta.TransferSyntaxUID = syntax
    ds.OtherPatientIDsSequence.is_undefined_length = undefined_length
    path = stage_file(factories.write(ds, tmp_path / "src", "x.dcm"), tmp_path).path
    data = path.read_bytes()
    assert scan(data, len(data), _WANTED) is not None, "the fast path should take this file"
    fast, slow = read_header(path), _read_with_pydicom(path, None)
    assert fast.values[Level.PATIENT]["citizen_id"] == CCCD
    assert fast == slow


@pytest.mark.parametrize("storage_settings", ["embedded"], indirect=True)
def test_records_stored_before_the_cccd_was_read_get_it_from_their_headers(
    archive: Archive, storage_settings: StorageSettings, tmp_path: Path
) -> None:
    a, b = _person("A-0001", cccd=CCCD), _person("B-77", cccd=CCCD, issuer="VNM-CCCD")
    _store(archive, a, tmp_path / "a", A)
    _store(archive, b, tmp_path / "b", B)
    _store(archive, _person("C-5", name="NGUYEN^VAN AN"), tmp_path / "c", C)
    archive.run_write(lambda conn, _: conn.execute(update(Patient).values(citizen_id=None)))
    assert priors(archive, str(a.StudyInstanceUID), EVERYTHING) == []  # as before this version

    done = run_pacs("backfill-citizen-ids", data_dir=storage_settings.data_dir)
    assert done.returncode == 0, done.stderr
    assert "Records without a CCCD: 3 read, 2 given one" in done.stdout
    found = priors(archive, str(a.StudyInstanceUID), EVERYTHING)
    assert [(p["study_instance_uid"], p["match"]) for p in found] == [
        (str(b.StudyInstanceUID), "citizen-id")
    ]
    again = run_pacs("backfill-citizen-ids", data_dir=storage_settings.data_dir)
    assert "Records without a CCCD: 1 read, 0 given one" in again.stdout
