"""The radiologists' worklist over HTTP: flagged studies first (critical, then urgent, by
score), then the longest waiting; two radiologists claiming one study; a claim that ran
out; filters; and another hospital's studies nowhere on it."""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset
from sqlalchemy import insert, update

from storage import Archive, Source, stage_file
from storage.index.tables import InferenceJob, Reading
from tests import factories
from tests.auth import ensure_user
from tests.viewer_api.conftest import Web, serve

A, B = "BV-DALAT", "BV-BAOLOC"


@dataclass
class Ward:
    web: Web
    studies: dict[str, Dataset]
    users: dict[str, dict[str, str]]

    def worklist(self, who: str, **params: Any) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.web.url}/api/worklist", headers=self.users[who], params=params)
        assert answer.status_code == 200, answer.text
        return list(answer.json())

    def order(self, who: str, **params: Any) -> list[str]:
        names = {ds.StudyInstanceUID: name for name, ds in self.studies.items()}
        return [names[row["study_instance_uid"]] for row in self.worklist(who, **params)]

    def claim(self, who: str, name: str) -> httpx.Response:
        uid = self.studies[name].StudyInstanceUID
        return httpx.post(f"{self.web.url}/api/worklist/{uid}/claim", headers=self.users[who])


def _store(archive: Archive, ds: Dataset, folder: Path, hospital: str) -> None:
    path = factories.write(ds, folder)
    archive.store(
        stage_file(path, archive.staging_dir), source=Source("dimse", aet="M", hospital=hospital)
    )


def _flag(archive: Archive, ds: Dataset, severity: str, score: float) -> None:
    """A finished, flagged AI job, as the inference service writes one."""

    def write(conn: Any, now: datetime) -> None:
        conn.execute(
            insert(InferenceJob).values(
                study_instance_uid=ds.StudyInstanceUID,
                model="test-model",
                model_version="1",
                up_to_seq=0,
                state="done",
                score=score,
                threshold=0.5,
                flagged=True,
                finding="Pneumonia" if severity == "urgent" else "Haemorrhage",
                severity=severity,
                hospital=A,
                created_at=now,
                updated_at=now,
            )
        )

    archive.run_write(write)


@pytest.fixture
def ward(archive: Archive, tmp_path: Path) -> Iterator[Ward]:
    studies = {
        "old": factories.image(patient_id="P1", name="Nguyễn^Văn An"),
        "new": factories.image(patient_id="P2"),
        "pneumonia": factories.chest_cr(patient_id="P3"),
        "bleed": factories.image(patient_id="P4"),
        "unsure": factories.chest_cr(patient_id="P5"),
    }
    for name, ds in studies.items():  # received in this order: "old" has waited longest
        _store(archive, ds, tmp_path / name, A)
        time.sleep(0.01)
    other = factories.image(patient_id="PB")
    _store(archive, other, tmp_path / "b", B)
    _flag(archive, studies["pneumonia"], "urgent", 0.81)
    _flag(archive, studies["unsure"], "urgent", 0.62)
    _flag(archive, studies["bleed"], "critical", 0.97)
    users = {
        "lan": ensure_user(archive, "lan", "radiologist", A),
        "minh": ensure_user(archive, "minh", "radiologist", A),
        "binh": ensure_user(archive, "binh", "radiologist", B),
    }
    with serve(archive) as web:
        yield Ward(web, {**studies, "other": other}, users)


def test_flagged_studies_come_first_then_the_longest_waiting(ward: Ward) -> None:
    assert ward.order("lan") == ["bleed", "pneumonia", "unsure", "old", "new"]
    top = ward.worklist("lan")[0]
    assert (top["ai_severity"], top["ai_finding"], top["ai_score"]) == (
        "critical",
        "Haemorrhage",
        0.97,
    )
    assert top["status"] == "unread"
    old = next(r for r in ward.worklist("lan") if r["patient_id"] == "P1")
    assert old["patient_name"] == "Nguyễn^Văn An"
    assert old["ai_severity"] is None
    assert ward.order("binh") == ["other"]  # another hospital's list


def test_a_study_read_goes_below_those_still_to_read_and_keeps_its_flag(
    ward: Ward, archive: Archive
) -> None:
    bleed = ward.studies["bleed"].StudyInstanceUID
    assert ward.claim("lan", "bleed").status_code == 200

    def read(conn: Any, now: datetime) -> None:
        conn.execute(
            update(Reading)
            .where(Reading.claimed_by == "lan")
            .values(status="final", claimed_by=None, claimed_until=None)
        )

    archive.run_write(read)
    assert ward.order("lan") == ["pneumonia", "unsure", "old", "new", "bleed"]
    last = ward.worklist("lan")[-1]
    assert last["study_instance_uid"] == bleed
    assert (last["status"], last["ai_severity"], last["ai_score"]) == ("final", "critical", 0.97)


def test_without_flags_the_longest_waiting_comes_first(archive: Archive, tmp_path: Path) -> None:
    first, second = factories.image(patient_id="X1"), factories.image(patient_id="X2")
    _store(archive, first, tmp_path / "1", A)
    time.sleep(0.01)
    _store(archive, second, tmp_path / "2", A)
    headers = ensure_user(archive, "lan", "radiologist", A)
    with serve(archive) as web:
        rows = httpx.get(f"{web.url}/api/worklist", headers=headers).json()
    assert [r["patient_id"] for r in rows] == ["X1", "X2"]


def test_two_radiologists_claiming_one_study(ward: Ward) -> None:
    mine = ward.claim("lan", "bleed")
    assert mine.status_code == 200, mine.text
    assert mine.json()["claimed_by"] == "lan"
    theirs = ward.claim("minh", "bleed")
    assert theirs.status_code == 409
    assert "lan is reading this study" in theirs.json()["detail"]
    row = ward.worklist("minh")[0]
    assert (row["status"], row["claimed_by"]) == ("in-progress", "lan")
    assert ward.claim("lan", "bleed").status_code == 200  # renewing is fine
    uid = ward.studies["bleed"].StudyInstanceUID
    released = httpx.delete(f"{ward.web.url}/api/worklist/{uid}/claim", headers=ward.users["lan"])
    assert released.status_code == 204
    assert ward.claim("minh", "bleed").status_code == 200
    assert ward.order("lan", claimed_by="minh") == ["bleed"]
    assert ward.order("lan", status="unread") == ["pneumonia", "unsure", "old", "new"]


def test_a_claim_that_ran_out_can_be_taken(ward: Ward) -> None:
    assert ward.claim("lan", "old").status_code == 200

    def expire(conn: Any, now: datetime) -> None:
        conn.execute(update(Reading).values(claimed_until=now - timedelta(minutes=1)))

    ward.web.archive.run_write(expire)
    row = next(r for r in ward.worklist("minh") if r["patient_id"] == "P1")
    assert row["claimed_by"] is None
    assert ward.claim("minh", "old").status_code == 200


def test_another_hospitals_study_cannot_be_claimed(ward: Ward) -> None:
    assert ward.claim("binh", "bleed").status_code == 404
    assert ward.claim("lan", "other").status_code == 404


def test_filters(ward: Ward) -> None:
    assert ward.order("lan", modality="CR") == ["pneumonia", "unsure"]
    assert ward.order("lan", body_part="HEAD") == ["bleed", "old", "new"]
    assert ward.order("lan", date_from="20261120", date_to="20261120") == ward.order("lan")
    assert ward.order("lan", date_from="20991231") == []
    bad = httpx.get(
        f"{ward.web.url}/api/worklist", headers=ward.users["lan"], params={"date_from": "2026"}
    )
    assert bad.status_code == 422
