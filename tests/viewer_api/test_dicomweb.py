"""DICOMweb against a running server, with dicomweb-client (another author's client) and
with raw HTTP where the exact bytes matter (what OHIF sends and reads)."""

import io
import time
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from storage import Archive, Source, StorageSettings, stage_file
from tests import factories
from tests.auth import ADMIN, http
from tests.conftest import audit_row
from tests.reliability.faults import FaultProxy
from tests.viewer_api.conftest import Web, serve
from viewer_api.app import HEALTH_TIMEOUT
from viewer_api.errors import UNAVAILABLE

OHIF_FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"


def _store(archive: Archive, datasets: list[Dataset], tmp_path: Path) -> list[Path]:
    paths = factories.write_all(datasets, tmp_path / "src")
    for path in paths:
        archive.store(stage_file(path, archive.staging_dir), source=Source("dimse", aet="CT1"))
    return paths


def _parts(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart/related response, keeping each part's headers as sent."""
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    body = response.content
    parts = []
    for chunk in body.split(f"--{boundary}".encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().strip().splitlines():
            name, _, value = line.partition(":")
            headers[name.strip()] = value.strip()
        parts.append((headers, data.removesuffix(b"\r\n")))
    return parts


# -- STOW-RS ---------------------------------------------------------------------------------


def test_stow_then_search_and_retrieve_with_dicomweb_client(web: Web, tmp_path: Path) -> None:
    series = factories.ct_series(3)
    web_client = web.client()
    response = web_client.store_instances(series)
    referenced = response.ReferencedSOPSequence
    assert sorted(item.ReferencedSOPInstanceUID for item in referenced) == sorted(
        ds.SOPInstanceUID for ds in series
    )
    assert "FailedSOPSequence" not in response
    study_uid = series[0].StudyInstanceUID

    (study,) = web_client.search_for_studies(search_filters={"PatientName": "NGUYEN*"})
    found = Dataset.from_json(study)
    assert found.StudyInstanceUID == study_uid
    assert str(found.PatientName) == factories.VIETNAMESE_NAME  # diacritics survive
    assert found.NumberOfStudyRelatedInstances == 3
    assert found.ModalitiesInStudy == "CT"
    # dicomweb-client sends Host without the port; PACS_PUBLIC_URL is for such clients
    assert found.RetrieveURL.endswith(f"/dicom-web/studies/{study_uid}")

    instances = web_client.retrieve_study(study_uid)
    assert sorted(ds.SOPInstanceUID for ds in instances) == sorted(
        ds.SOPInstanceUID for ds in series
    )
    assert {ds.PixelData for ds in instances} == {ds.PixelData for ds in series}
    audit_row(web.archive, action="store")
    audit_row(web.archive, action="query", actor=ADMIN, role="admin")
    audit_row(web.archive, action="retrieve", actor=ADMIN, study_instance_uid=study_uid)


def test_stow_answers_per_instance_200_202_409(web: Web, tmp_path: Path) -> None:
    good = factories.image()
    garbage = b"this is not DICOM at all" * 10
    boundary = "b0undary"

    def body(*parts: bytes) -> bytes:
        out = b""
        for part in parts:
            out += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            out += part + b"\r\n"
        return out + f"--{boundary}--\r\n".encode()

    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}
    good_bytes = factories.write(good, tmp_path).read_bytes()
    mixed = http.post(f"{web.dicomweb}/studies", content=body(good_bytes, garbage), headers=headers)
    assert mixed.status_code == 202
    answer = Dataset.from_json(mixed.json())
    assert answer.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == good.SOPInstanceUID
    assert answer.FailedSOPSequence[0].FailureReason == 0xC000

    failed = http.post(f"{web.dicomweb}/studies", content=body(garbage), headers=headers)
    assert failed.status_code == 409

    other_study = http.post(
        f"{web.dicomweb}/studies/{generate_uid()}", content=body(good_bytes), headers=headers
    )
    assert other_study.status_code == 409
    answer = Dataset.from_json(other_study.json())
    assert answer.FailedSOPSequence[0].ReferencedSOPInstanceUID == good.SOPInstanceUID

    again = http.post(f"{web.dicomweb}/studies", content=body(good_bytes), headers=headers)
    assert again.status_code == 200  # already stored: still a success

    good.StudyDescription = "changed"  # the same UIDs with other bytes: the first is kept
    changed = factories.write(good, tmp_path / "changed").read_bytes()
    kept = http.post(f"{web.dicomweb}/studies", content=body(changed), headers=headers)
    assert kept.status_code == 202
    warning = Dataset.from_json(kept.json()).ReferencedSOPSequence[0].WarningReason
    assert warning == 0xB000


@pytest.mark.parametrize(
    ("content_type", "body", "status", "reason"),
    [
        ("application/json", b"{}", 415, "multipart/related"),
        ('multipart/related; type="application/dicom+json"; boundary=x', b"", 415, "only"),
        ('multipart/related; type="application/dicom"', b"--x\r\n", 400, "boundary"),
        (
            'multipart/related; type="application/dicom"; boundary=x',
            b"--x\r\nContent-Type: application/dicom\r\n\r\nabc",
            400,
            "closing boundary",
        ),
        (
            'multipart/related; type="application/dicom"; boundary=x',
            b"--x\r\nContent-Type: text/plain\r\n\r\nabc\r\n--x--\r\n",
            415,
            "text/plain",
        ),
        ('multipart/related; type="application/dicom"; boundary=x', b"--x--\r\n", 400, "no parts"),
        (
            'multipart/related; type="application/dicom"; boundary=x',
            b"--x\r\nX-Padding: " + b"a" * 10000 + b"\r\n\r\nabc\r\n--x--\r\n",
            400,
            "header size",
        ),
    ],
    ids=["not-multipart", "json-parts", "no-boundary", "truncated", "text-part", "empty", "header"],
)
def test_broken_stow_requests_get_a_4xx_with_a_reason(
    web: Web,
    content_type: str,
    body: bytes,
    status: int,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    response = http.post(
        f"{web.dicomweb}/studies", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == status
    assert reason in response.json()["detail"]
    assert f"with {status}" in caplog.text
    assert list(web.archive.staging_dir.iterdir()) == []  # nothing left behind


def test_an_oversized_stow_body_is_refused(archive: Archive, tmp_path: Path) -> None:
    data = b"x" * (2 * 1024 * 1024)

    def chunks() -> object:
        yield b"--x\r\nContent-Type: application/dicom\r\n\r\n"
        for start in range(0, len(data), 65536):
            yield data[start : start + 65536]
        yield b"\r\n--x--\r\n"

    with serve(archive, stow_max_mb=1) as web:
        response = http.post(
            f"{web.dicomweb}/studies",
            content=chunks(),  # type: ignore[arg-type]
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=x'},
        )
        assert response.status_code == 413
        assert list(archive.staging_dir.iterdir()) == []


@pytest.mark.parametrize("storage_settings", ["embedded"], indirect=True)
def test_parts_refused_while_storage_is_full_are_named(
    storage_settings: StorageSettings, tmp_path: Path
) -> None:
    """The first part meets the full disk; the rest are refused without being stored, and
    each item of FailedSOPSequence still says which instance it was (PS3.18 10.5.3)."""
    series = factories.ct_series(3)
    body = b"".join(
        b"--x\r\nContent-Type: application/dicom\r\n\r\n"
        + factories.write(instance, tmp_path / str(number)).read_bytes()
        + b"\r\n"
        for number, instance in enumerate(series)
    )
    full = storage_settings.model_copy(update={"min_free_mb": 2**40})  # more than any disk
    with Archive.open(full) as archive, serve(archive) as web:
        response = http.post(
            f"{web.dicomweb}/studies",
            content=body + b"--x--\r\n",
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=x'},
        )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "30"
    failed = Dataset.from_json(response.json()).FailedSOPSequence
    assert [item.ReferencedSOPInstanceUID for item in failed] == [
        instance.SOPInstanceUID for instance in series
    ]
    assert {item.ReferencedSOPClassUID for item in failed} == {series[0].SOPClassUID}
    assert {item.FailureReason for item in failed} == {0xA700}


@pytest.mark.postgres
def test_a_query_while_the_database_is_down_gets_503_without_its_address(
    postgres_url: str, tmp_path: Path
) -> None:
    """The administrator's log says which database failed and how; the client hears only
    that it may retry."""
    with FaultProxy(5432) as proxy:
        proxied = postgres_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
        settings = StorageSettings(
            data_dir=tmp_path / "archive", database_url=proxied, min_free_mb=0, _env_file=None
        )
        with Archive.open(settings) as archive, serve(archive) as web:
            proxy.down()
            response = http.get(f"{web.dicomweb}/studies")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "30"
    assert response.json() == {"detail": UNAVAILABLE}


@pytest.mark.postgres
def test_health_answers_503_in_time_when_the_database_stops_answering(
    postgres_url: str, tmp_path: Path
) -> None:
    """A partition refuses nothing: the query waits. A load balancer's check gets its 503
    within HEALTH_TIMEOUT all the same, and 200 again once the database answers."""
    with FaultProxy(5432) as proxy:
        proxied = postgres_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
        settings = StorageSettings(
            data_dir=tmp_path / "archive", database_url=proxied, min_free_mb=0, _env_file=None
        )
        with Archive.open(settings) as archive, serve(archive) as web:
            assert http.get(f"{web.url}/health").status_code == 200
            proxy.blackhole()
            started = time.monotonic()
            silent = http.get(f"{web.url}/health", timeout=HEALTH_TIMEOUT + 10)
            waited = time.monotonic() - started
            proxy.restore()
            assert silent.status_code == 503
            assert waited < HEALTH_TIMEOUT + 2
            assert http.get(f"{web.url}/health").status_code == 200


# -- QIDO-RS ---------------------------------------------------------------------------------


@pytest.fixture
def two_studies(archive: Archive, tmp_path: Path) -> tuple[list[Dataset], Dataset]:
    ct = factories.ct_series(3, accession="ACC-CT")
    cr = factories.chest_cr(
        name="Trần^Văn Bình", patient_id="P002", accession="ACC-CR", study_date="20261001"
    )
    _store(archive, [*ct, cr], tmp_path)
    return ct, cr


def _search(web: Web, path: str, params: object = None) -> httpx.Response:
    return http.get(f"{web.dicomweb}{path}", params=params)  # type: ignore[arg-type]


def test_qido_matching_keys_and_paging(
    web: Web, two_studies: tuple[list[Dataset], Dataset]
) -> None:
    ct, cr = two_studies
    ct_study, cr_study = ct[0].StudyInstanceUID, cr.StudyInstanceUID

    def studies(params: object) -> list[str]:
        response = _search(web, "/studies", params)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/dicom+json")
        return [item["0020000D"]["Value"][0] for item in response.json()]

    assert sorted(studies({})) == sorted([ct_study, cr_study])
    assert studies({"00100020": "P002"}) == [cr_study]  # a tag as the key, as OHIF sends
    assert studies({"PatientID": "*001*"}) == [ct_study]
    assert studies({"PatientName": "tran*"}) == [cr_study]
    assert studies({"StudyDate": "20261101-"}) == [ct_study]
    assert studies({"ModalitiesInStudy": "CR,MR"}) == [cr_study]  # OHIF's comma list
    assert studies({"AccessionNumber": "ACC-CT"}) == [ct_study]
    assert sorted(studies({"StudyInstanceUID": f"{ct_study}\\{cr_study}"})) == sorted(
        [ct_study, cr_study]
    )
    assert studies({"PatientID": "nobody"}) == []
    assert studies({"fuzzymatching": "true", "PatientName": "nguyen"}) == []
    first = studies({"limit": "1"})
    second = studies({"limit": "1", "offset": "1"})
    assert len(first) == len(second) == 1
    assert first != second


def test_qido_levels_includefield_and_computed_attributes(
    web: Web, two_studies: tuple[list[Dataset], Dataset]
) -> None:
    ct, _ = two_studies
    study = ct[0].StudyInstanceUID
    (series,) = _search(
        web, f"/studies/{study}/series", {"includefield": "0008103E,00080021"}
    ).json()
    assert series["00201209"] == {"vr": "IS", "Value": [3]}  # a JSON number
    assert series["0008103E"]["Value"] == ["Axial"]
    instances = _search(
        web,
        f"/studies/{study}/series/{ct[0].SeriesInstanceUID}/instances",
        [("includefield", "PixelSpacing"), ("includefield", "ImagePositionPatient")],
    ).json()
    assert len(instances) == 3
    assert {i["00280030"]["Value"][0] for i in instances} == {0.5}
    assert all(i["00080056"]["Value"] == ["ONLINE"] for i in instances)
    everything = _search(
        web, "/instances", {"SOPInstanceUID": ct[0].SOPInstanceUID, "includefield": "all"}
    ).json()
    assert everything[0]["00200037"]["Value"] == [1, 0, 0, 0, 1, 0]


def test_qido_paging_warns_when_more_results_exist(archive: Archive, tmp_path: Path) -> None:
    _store(archive, [factories.image() for _ in range(3)], tmp_path)
    with serve(archive, qido_max_results=2) as web:
        response = _search(web, "/studies")
        assert len(response.json()) == 2
        assert "additional results" in response.headers["warning"]


@pytest.mark.parametrize(
    ("path", "params", "status", "reason"),
    [
        ("/studies", {"NoSuchKey": "1"}, 400, "not a DICOM attribute"),
        ("/studies", {"limit": "-1"}, 400, "whole number"),
        ("/studies", {"limit": "²"}, 400, "whole number"),  # isdigit, but not for int()
        ("/studies", {"limit": "9" * 5000}, 400, "whole number"),  # too long for int()
        ("/studies", {"offset": str(2**63)}, 400, "whole number"),  # too big for the index
        ("/instances", {"SeriesNumber": str(2**63)}, 400, "out of range"),
        ("/studies", {"StudyInstanceUID": "1.2.abc"}, 400, "characters other than digits"),
        ("/studies", {"SeriesDescription": "Axial"}, 400, "SERIES-level key"),
        ("/studies", {"PixelSpacing": "0.5"}, 400, "cannot be matched"),
        ("/studies/1..2/series", {}, 400, "empty component"),
        ("/studies/1.2.3", {}, 404, "no such study"),
    ],
)
def test_bad_queries_get_a_4xx_with_a_reason(
    web: Web, path: str, params: dict[str, str], status: int, reason: str
) -> None:
    response = _search(web, path, params)
    assert response.status_code == status
    assert reason in response.json()["detail"]


# -- WADO-RS ---------------------------------------------------------------------------------


def test_instances_as_stored_or_in_explicit_vr_little_endian(
    web: Web, archive: Archive, tmp_path: Path
) -> None:
    implicit = factories.image(transfer_syntax=ImplicitVRLittleEndian)
    (path,) = _store(archive, [implicit], tmp_path)
    study, series, sop = (
        implicit.StudyInstanceUID,
        implicit.SeriesInstanceUID,
        implicit.SOPInstanceUID,
    )
    url = f"{web.dicomweb}/studies/{study}/series/{series}/instances/{sop}"
    for accept in (
        'multipart/related; type="application/dicom"; transfer-syntax=*',
        "multipart/related; type=application/dicom; transfer-syntax=*",
    ):
        ((headers, data),) = _parts(http.get(url, headers={"Accept": accept}))
        assert data == path.read_bytes()  # byte for byte as the modality sent it
        assert dcmread(io.BytesIO(data)).SOPInstanceUID == sop
        assert (
            headers["Content-Type"]
            == f"application/dicom; transfer-syntax={ImplicitVRLittleEndian}"
        )
    # dicomweb-client asks with no transfer syntax: Explicit VR Little Endian, pixels intact
    (ds,) = web.client().retrieve_series(study, series)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.PixelData == implicit.PixelData
    assert str(ds.PatientName) == factories.VIETNAMESE_NAME


def test_unknown_accept_parts_are_ignored_and_nothing_acceptable_is_406(
    web: Web, archive: Archive, tmp_path: Path
) -> None:
    j2k = factories.j2k_ct()
    _store(archive, [j2k], tmp_path)
    url = f"{web.dicomweb}/studies/{j2k.StudyInstanceUID}"
    mixed = 'text/html, multipart/related; type="application/dicom"; transfer-syntax=*'
    assert http.get(url, headers={"Accept": mixed}).status_code == 200
    assert http.get(url, headers={"Accept": "text/html"}).status_code == 406
    refused = http.get(url, headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert refused.status_code == 406  # stored as JPEG 2000: not decoded to send it native
    assert "transfer-syntax=*" in refused.json()["detail"]


def test_metadata_from_the_index_with_bulk_data_links_for_the_proxy(
    web: Web, archive: Archive, tmp_path: Path
) -> None:
    series = factories.ct_series(2)
    _store(archive, series, tmp_path)
    study, uid = series[0].StudyInstanceUID, series[0].SeriesInstanceUID
    url = f"{web.dicomweb}/studies/{study}/series/{uid}/metadata"
    response = http.get(url, headers={"Accept": "application/dicom+json"})
    assert response.status_code == 200
    body = response.json()
    assert len(body) == 2
    first = body[0]
    assert first["00280010"] == {"vr": "US", "Value": [16]}
    assert first["00100010"]["Value"] == [{"Alphabetic": factories.VIETNAMESE_NAME}]
    assert first["00083002"]["Value"] == [ExplicitVRLittleEndian]
    assert first["7FE00010"]["BulkDataURI"].startswith(f"{web.dicomweb}/studies/{study}/")
    behind = http.get(
        url,
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "pacs.lamdong.vn"},
    ).json()
    bulk = behind[0]["7FE00010"]["BulkDataURI"]
    assert bulk.startswith("https://pacs.lamdong.vn/dicom-web/studies/")
    local = bulk.replace("https://pacs.lamdong.vn", web.url)
    single = http.get(local)  # OHIF's "singlepart" bulk data: the bytes alone
    assert single.headers["content-type"] == "application/octet-stream"
    assert single.content in (series[0].PixelData, series[1].PixelData)
    multipart = 'multipart/related; type="application/octet-stream"'
    ((_, pixels),) = _parts(http.get(local, headers={"Accept": multipart}))
    assert pixels == single.content


def test_frames_are_cut_from_the_blob_as_ohif_asks(
    web: Web, archive: Archive, tmp_path: Path
) -> None:
    multi = factories.image(rows=4, columns=4)
    multi.NumberOfFrames = 3
    frames = [bytes([n]) * 32 for n in (1, 2, 3)]
    multi.PixelData = b"".join(frames)
    j2k = factories.j2k_ct()
    _store(archive, [multi, j2k], tmp_path)
    base = f"{web.dicomweb}/studies/{multi.StudyInstanceUID}/series/{multi.SeriesInstanceUID}"
    response = http.get(
        f"{base}/instances/{multi.SOPInstanceUID}/frames/3,1", headers={"Accept": OHIF_FRAMES}
    )
    assert response.status_code == 200
    parts = _parts(response)
    assert [data for _, data in parts] == [frames[2], frames[0]]
    assert parts[0][0]["Content-Type"] == (
        f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    )
    missing = http.get(f"{base}/instances/{multi.SOPInstanceUID}/frames/4")
    assert missing.status_code == 404
    assert http.get(f"{base}/instances/{multi.SOPInstanceUID}/frames/x").status_code == 400

    j2k_url = (
        f"{web.dicomweb}/studies/{j2k.StudyInstanceUID}/series/{j2k.SeriesInstanceUID}"
        f"/instances/{j2k.SOPInstanceUID}/frames/1"
    )
    ((headers, data),) = _parts(http.get(j2k_url, headers={"Accept": OHIF_FRAMES}))
    assert headers["Content-Type"] == "image/jp2; transfer-syntax=1.2.840.10008.1.2.4.90"
    assert data.startswith(b"\xff\x4f\xff\x51")
    native_only = 'multipart/related; type="application/octet-stream"'
    assert http.get(j2k_url, headers={"Accept": native_only}).status_code == 406
    frames_client = web.client().retrieve_instance_frames(
        multi.StudyInstanceUID, multi.SeriesInstanceUID, multi.SOPInstanceUID, [2]
    )
    assert frames_client == [frames[1]]


def test_wado_uri_sends_the_file(web: Web, archive: Archive, tmp_path: Path) -> None:
    ds = factories.image()
    _store(archive, [ds], tmp_path)
    params = {
        "requestType": "WADO",
        "studyUID": ds.StudyInstanceUID,
        "seriesUID": ds.SeriesInstanceUID,
        "objectUID": ds.SOPInstanceUID,
        "contentType": "application/dicom",
        "transferSyntax": "*",
    }
    response = http.get(f"{web.url}/wado", params=params)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom"
    assert dcmread(io.BytesIO(response.content)).PixelData == ds.PixelData
    assert http.get(f"{web.url}/wado", params={**params, "requestType": "X"}).status_code == 400


def test_every_dicomweb_client_operation(archive: Archive) -> None:
    """dicomweb-client's whole API against the archive, as another author's client uses it.

    dicomweb-client sends Host without the port, so the server is told its public URL, as
    the README asks of servers behind such clients."""
    from tests.conftest import free_port

    port = free_port()
    with serve(archive, port=port, public_url=f"http://127.0.0.1:{port}") as web:
        _every_operation(web)


def _every_operation(web: Web) -> None:
    from tests.viewer_api.test_renditions import disc

    first = disc()
    second = disc()
    second.StudyInstanceUID, second.SeriesInstanceUID = (
        first.StudyInstanceUID,
        first.SeriesInstanceUID,
    )
    second.InstanceNumber = 2
    client = web.client()
    stored = client.store_instances([first, second], study_instance_uid=first.StudyInstanceUID)
    assert len(stored.ReferencedSOPSequence) == 2
    study, series, sop = first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID

    assert len(client.search_for_studies(fuzzymatching=True, search_filters={"PatientID": "P001"}))
    assert len(client.search_for_series(study)) == 1
    assert len(client.search_for_series(search_filters={"Modality": "CT"})) == 1
    assert len(client.search_for_instances(study, series, fields=["PixelSpacing"])) == 2
    everything = client.search_for_instances(get_remaining=True, limit=1)
    assert len(everything) == 2  # paged one by one, following the limit

    assert client.retrieve_instance(study, series, sop).PixelData == first.PixelData
    assert len(client.retrieve_study(study)) == 2
    assert [i.SOPInstanceUID for i in client.iter_series(study, series)] != []
    (metadata,) = client.retrieve_instance_metadata(study, series, sop)["00080018"]["Value"]
    assert metadata == sop
    assert len(client.retrieve_series_metadata(study, series)) == 2
    assert len(client.retrieve_study_metadata(study)) == 2
    instance_metadata = client.retrieve_instance_metadata(study, series, sop)
    pixels = client.retrieve_bulkdata(instance_metadata["7FE00010"]["BulkDataURI"])
    assert pixels == [first.PixelData]
    assert client.retrieve_instance_frames(study, series, sop, [1]) == [first.PixelData]
    jpeg = client.retrieve_instance_rendered(study, series, sop, media_types=("image/jpeg",))
    assert jpeg[:2] == b"\xff\xd8"
    png = client.retrieve_instance_frames_rendered(
        study, series, sop, [1], media_types=("image/png",)
    )
    assert png[:4] == b"\x89PNG"
