"""What a browser is told about the archive's answers: security headers on every answer,
a policy that lets nothing run in API answers, and no trace or path in an error."""

import base64
import hashlib
import re

from sqlalchemy import text

from storage import Archive
from tests.auth import http
from tests.viewer_api.conftest import serve
from viewer_api.config import ApiSettings
from viewer_api.viewer import viewer_directory


def test_api_answers_carry_the_security_headers_and_a_policy_that_runs_nothing(
    archive: Archive,
) -> None:
    with serve(archive) as web:
        for path in ("/dicom-web/studies", "/api/ai/jobs", "/health"):
            answer = http.get(f"{web.url}{path}")
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["referrer-policy"] == "no-referrer"
            assert answer.headers["x-frame-options"] == "SAMEORIGIN"
            assert answer.headers["content-security-policy"].startswith("default-src 'none'")
        viewer = http.get(f"{web.url}/")
        policy = viewer.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "connect-src 'self'" in policy
        assert "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
        if viewer_directory(ApiSettings(_env_file=None)) is not None:  # type: ignore[call-arg]
            for script in re.findall(r"<script>(.*?)</script>", viewer.text, re.DOTALL):
                digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
                assert f"'sha256-{digest}'" in policy  # OHIF's own inline scripts, only
        docs = http.get(f"{web.url}/docs")
        assert docs.status_code == 200
        assert "content-security-policy" not in docs.headers  # its assets come from a CDN
        assert docs.headers["x-content-type-options"] == "nosniff"


def test_an_internal_fault_answers_500_with_an_incident_number_and_no_trace(
    archive: Archive,
) -> None:
    with serve(archive) as web:
        with archive.engine.begin() as conn:  # an index broken under the running server
            conn.execute(text("ALTER TABLE inference_jobs RENAME TO inference_jobs_gone"))
        try:
            answer = http.get(f"{web.url}/api/ai/jobs")
        finally:
            with archive.engine.begin() as conn:
                conn.execute(text("ALTER TABLE inference_jobs_gone RENAME TO inference_jobs"))
    assert answer.status_code == 500
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["content-security-policy"].startswith("default-src 'none'")
    assert answer.json()["detail"].startswith("internal error (incident ")
    for leak in ("Traceback", "inference_jobs", "/work", ".py", "sqlite"):
        assert leak not in answer.text
