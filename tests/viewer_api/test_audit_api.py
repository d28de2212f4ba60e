"""The audit trail as an auditor reads it over HTTP: a retrieval leaves its row, found by
study and action, newest first; bad filters are refused."""

import time
from pathlib import Path

from storage import Archive, Source, stage_file
from tests import factories
from tests.auth import http
from tests.viewer_api.conftest import serve


def test_a_retrieval_is_found_in_the_audit_trail(archive: Archive, tmp_path: Path) -> None:
    ds = factories.image(name="Nguyễn^Văn An")
    path = factories.write(ds, tmp_path / "one")
    archive.store(stage_file(path, archive.staging_dir), source=Source("dimse", aet="CT1"))
    study = str(ds.StudyInstanceUID)
    with serve(archive) as web:
        instance = f"{web.url}/dicom-web/studies/{study}/series/{ds.SeriesInstanceUID}"
        assert http.get(f"{instance}/metadata").status_code == 200
        deadline = time.monotonic() + 10
        while not (
            rows := http.get(f"{web.url}/api/audit", params={"study": study}).json()
        ) or not any(r["action"] == "retrieve" for r in rows):
            assert time.monotonic() < deadline, rows
            time.sleep(0.1)
        retrieve = next(r for r in rows if r["action"] == "retrieve")
        assert retrieve["source_address"] == "127.0.0.1"
        assert retrieve["outcome"] == "success"
        assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)
        store = http.get(f"{web.url}/api/audit", params={"study": study, "action": "store"})
        assert [r["actor"] for r in store.json()] == ["CT1"]
        assert http.get(f"{web.url}/api/audit", params={"study": "1.2.x"}).status_code == 400
        assert http.get(f"{web.url}/api/audit", params={"limit": 0}).status_code == 422
        for path in ("/api/audit", "/api/ai/jobs"):  # past the index's 64-bit integers
            assert http.get(f"{web.url}{path}", params={"offset": 2**63}).status_code == 422
        assert http.get(f"{web.url}/api/audit", params={"since": "yesterday"}).status_code == 422
