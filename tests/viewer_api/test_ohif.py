"""The OHIF viewer we serve, in a real browser (Debian's chromium driven by playwright):
the study list shows a study, and a CT opens with its frames fetched and drawn."""

import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from storage import Archive, Source, stage_file
from tests import factories
from tests.auth import ADMIN, PASSWORD
from tests.conftest import CI
from tests.viewer_api.conftest import Web, serve
from viewer_api.config import ApiSettings
from viewer_api.viewer import viewer_directory

ARTIFACTS = Path(__file__).parent.parent.parent / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _need_browser() -> None:
    problems = []
    if viewer_directory(ApiSettings(_env_file=None)) is None:  # type: ignore[call-arg]
        problems.append("OHIF is not installed (bash scripts/fetch-ohif)")
    if not os.access(CHROMIUM, os.X_OK):
        problems.append("chromium is not installed (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        problems.append("playwright is not installed")
    if problems:
        if CI:
            pytest.fail("; ".join(problems))
        pytest.skip("; ".join(problems))


def _head_ct(slices: int, size: int = 128) -> list[object]:
    """A CT series with a bright disc on a dark background, so a drawn image shows."""
    series = factories.ct_series(slices, rows=size, columns=size, name="Nguyễn^Văn An")
    centre = size / 2
    for number, ds in enumerate(series):
        radius = size * (0.25 + 0.1 * math.sin(number / slices * math.pi))
        pixels = bytearray()
        for y in range(size):
            for x in range(size):
                inside = math.hypot(x - centre, y - centre) < radius
                pixels += (1800 if inside else 40).to_bytes(2, "little")
        ds.PixelData = bytes(pixels)
        ds.WindowCenter, ds.WindowWidth = 900, 2000
    return series


def sign_in(page: Any, url: str, name: str = ADMIN, password: str = PASSWORD) -> None:
    """Open `url` as a person would: the sign-in page first, then where they were going."""
    page.goto(url, wait_until="domcontentloaded")
    assert "/signin" in page.url, page.url
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(url, timeout=30_000)


@pytest.fixture
def ohif(archive: Archive, tmp_path: Path) -> Web:
    _need_browser()
    series = _head_ct(12)
    for path in factories.write_all(series, tmp_path / "ct"):
        archive.store(stage_file(path, archive.staging_dir), source=Source("dimse", aet="CT1"))
    return series  # type: ignore[return-value]


@pytest.mark.parametrize(
    "transfer_syntax", [None, "1.2.840.10008.1.2.4.80"], ids=["as-stored", "jpeg-ls"]
)
def test_ohif_lists_the_study_and_draws_the_ct(
    archive: Archive, ohif: list[object], tmp_path: Path, transfer_syntax: str | None
) -> None:
    from playwright.sync_api import sync_playwright

    study_uid = ohif[0].StudyInstanceUID  # type: ignore[attr-defined]
    ARTIFACTS.mkdir(exist_ok=True)
    with (
        serve(archive, viewer_transfer_syntax=transfer_syntax) as web,
        sync_playwright() as driver,
    ):
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.add_init_script('localStorage.setItem("shownTours", \'["basicViewerTour"]\')')
        requests: list[str] = []
        accepts: set[str] = set()
        failures: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.on(
            "request",
            lambda request: (
                accepts.add(request.headers.get("accept", ""))
                if "/frames/" in request.url
                else None
            ),
        )
        page.on(
            "response",
            lambda response: (
                failures.append(f"{response.status} {response.url}")
                if response.status >= 400
                else None
            ),
        )
        try:
            sign_in(page, f"{web.url}/")
            page.get_by_text("Nguyễn, Văn An").first.wait_for(timeout=60_000)  # OHIF's format
            page.screenshot(path=ARTIFACTS / "ohif-study-list.png")

            page.goto(f"{web.url}/viewer?StudyInstanceUIDs={study_uid}")
            page.wait_for_function("document.querySelectorAll('canvas').length > 0", timeout=60_000)
            deadline_ms = 60_000
            page.wait_for_function(
                """() => [...document.querySelectorAll('canvas')].some(c => {
                    if (c.width < 64 || c.height < 64) return false;
                    const probe = document.createElement('canvas');
                    probe.width = c.width; probe.height = c.height;
                    const ctx = probe.getContext('2d');
                    ctx.drawImage(c, 0, 0);
                    const data = ctx.getImageData(0, 0, c.width, c.height).data;
                    let lit = 0;
                    for (let i = 0; i < data.length; i += 4 * 97) if (data[i] > 128) lit++;
                    return lit > 20;
                })""",
                timeout=deadline_ms,
            )
            page.screenshot(
                path=ARTIFACTS / f"ohif-ct-{'jls' if transfer_syntax else 'native'}.png"
            )
        finally:
            browser.close()
    frames = [url for url in requests if "/frames/" in url]
    assert frames, "OHIF fetched no frames"
    assert any("/metadata" in url for url in requests)
    assert failures == []
    if transfer_syntax:  # OHIF asked for JPEG-LS, got it, and drew it
        assert accepts == {f"multipart/related; type=image/jls; transfer-syntax={transfer_syntax}"}


def _reddish(png: bytes) -> int:
    """Pixels of a screenshot that are the red of OHIF's first segment."""
    import io

    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(((red > 150) & (red - green > 50) & (red - blue > 50)).sum())


def test_ohif_draws_the_ai_segmentation_over_the_head_ct(archive: Archive, tmp_path: Path) -> None:
    """The head-CT model's DICOM SEG, stored in the study, opens in OHIF over the images
    it was made from (a synthetic head with a bleed; one network of the ensemble)."""
    _need_browser()
    from playwright.sync_api import sync_playwright

    from inference.bundles import load_ensemble
    from inference.config import SHIPPED_MODELS
    from inference.head_ct import run_head_ct
    from tests.inference.phantoms import Bleed, head_ct, write_series

    series = head_ct(
        bleed=Bleed(radius_mm=8.0), rows=96, columns=96, slices=30, pixel_mm=0.6, slice_mm=2.0
    )
    paths = write_series(series, tmp_path / "ct")
    source = Source("dimse", aet="CT1")
    for path in paths:
        archive.store(stage_file(path, archive.staging_dir), source=source)
    info, networks = load_ensemble(SHIPPED_MODELS / "blast-ct", 1)
    result = run_head_ct(
        info, networks, paths, threshold_ml=1.0, out_dir=tmp_path / "ai", uid_key=["ohif"]
    )
    assert result.flagged
    assert len(result.files) == 2  # an SR and a SEG
    for path in result.files:
        archive.store(stage_file(path, archive.staging_dir), source=source)

    ARTIFACTS.mkdir(exist_ok=True)
    with serve(archive) as web, sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.add_init_script('localStorage.setItem("shownTours", \'["basicViewerTour"]\')')
        try:
            sign_in(page, f"{web.url}/viewer?StudyInstanceUIDs={series[0].StudyInstanceUID}")
            page.wait_for_function("document.querySelectorAll('canvas').length > 0")
            page.get_by_text("AI triage, not a diagnosis: blast-ct 1.0.0 segmentation").wait_for(
                timeout=60_000
            )
            assert _reddish(page.screenshot()) < 20  # nothing drawn before the SEG is opened
            page.get_by_text("SEG", exact=True).first.dblclick()
            page.get_by_role("button", name="Yes").click(timeout=60_000)
            deadline = time.monotonic() + 60
            while (red := _reddish(page.screenshot())) < 200:
                assert time.monotonic() < deadline, f"no segment drawn ({red} red pixels)"
                time.sleep(0.5)
            page.screenshot(path=ARTIFACTS / "ohif-head-ct-segmentation.png")
        finally:
            browser.close()
