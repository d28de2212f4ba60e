"""How the archive serves OHIF: its generated configuration, the single-page app fallback
that never hides an API 404, a page when OHIF is missing, and the CORS allow-list."""

from pathlib import Path

import httpx
import pytest

from storage import Archive
from tests.auth import http
from tests.viewer_api.conftest import serve
from viewer_api.config import ApiSettings
from viewer_api.viewer import viewer_directory


def _ohif() -> Path:
    directory = viewer_directory(ApiSettings(_env_file=None))  # type: ignore[call-arg]
    if directory is None:
        pytest.skip("OHIF is not installed (bash scripts/fetch-ohif)")
    return directory


def test_app_config_points_ohif_at_our_dicomweb(archive: Archive) -> None:
    with serve(archive) as web:
        direct = http.get(f"{web.url}/app-config.js")
        assert direct.headers["content-type"].startswith("text/javascript")
        assert f'"qidoRoot": "{web.url}/dicom-web"' in direct.text
        assert '"omitQuotationForMultipartRequest": true' in direct.text
        proxied = http.get(
            f"{web.url}/app-config.js",
            headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "pacs.lamdong.vn"},
        )
        assert '"wadoRoot": "https://pacs.lamdong.vn/dicom-web"' in proxied.text
    with serve(archive, public_url="https://pacs.example.vn/") as web:
        configured = http.get(f"{web.url}/app-config.js").text
        assert '"wadoUriRoot": "https://pacs.example.vn/wado"' in configured


def test_app_routes_get_the_app_and_api_paths_never_do(archive: Archive) -> None:
    index = (_ohif() / "index.html").read_text()
    with serve(archive) as web:
        for path in ("/", "/viewer", "/viewer?StudyInstanceUIDs=1.2.3", "/notfoundstudy"):
            response = http.get(f"{web.url}{path}")
            assert response.status_code == 200
            assert response.text == index
        wasm = next(p.name for p in _ohif().glob("*.wasm"))
        assert http.get(f"{web.url}/{wasm}").headers["content-type"] == "application/wasm"
        for path in ("/dicom-web/nothing-here", "/wado/x", "/metrics/x"):
            assert http.get(f"{web.url}{path}").status_code == 404


def test_without_ohif_the_root_says_how_to_install_it(archive: Archive, tmp_path: Path) -> None:
    with serve(archive, ohif_dir=tmp_path / "none") as web:
        response = http.get(f"{web.url}/")
        assert response.status_code == 200
        assert "bash scripts/fetch-ohif" in response.text
        assert http.get(f"{web.url}/dicom-web/studies").status_code == 200


def test_cors_only_for_the_origins_allowed(archive: Archive) -> None:
    allowed = "https://viewer.bvdk.vn"
    with serve(archive, cors_origins=f"{allowed}, https://other.vn") as web:
        preflight = {"Access-Control-Request-Method": "GET"}
        ok = httpx.options(
            f"{web.url}/dicom-web/studies",
            headers={"Origin": allowed, **preflight, "Access-Control-Request-Headers": "accept"},
        )
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == allowed
        refused = httpx.options(
            f"{web.url}/dicom-web/studies", headers={"Origin": "https://evil.example", **preflight}
        )
        assert "access-control-allow-origin" not in refused.headers
        simple = http.get(f"{web.url}/dicom-web/studies", headers={"Origin": allowed})
        assert simple.headers["access-control-allow-origin"] == allowed
    with serve(archive) as web:  # none configured: no CORS headers at all
        plain = http.get(f"{web.url}/dicom-web/studies", headers={"Origin": allowed})
        assert "access-control-allow-origin" not in plain.headers
