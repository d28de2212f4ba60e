"""The worklist page in a real browser (Debian's chromium driven by playwright): a
radiologist signs in, finds the AI-flagged study first, claims it, opens its images, writes
the report from the template and signs it final with her PIN; another radiologist sees the
study locked with her name. Without a browser: the page's sign-in redirect, its language
and its files.

``PACS_SCREENSHOTS=1`` also writes the README's pictures, ``docs/images/worklist.png`` and
``docs/images/report.png`` (1280x800)."""

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset
from sqlalchemy import insert, update

from storage import Archive, Source, stage_file
from storage.index.tables import InferenceJob, Study
from storage.scope import Scope
from storage.worklist import claim
from tests import factories
from tests.auth import ensure_user
from tests.viewer_api.conftest import Web, serve
from tests.viewer_api.test_ohif import CHROMIUM, CHROMIUM_ARGS, _need_browser, sign_in

A = "BV-DALAT"
PIN = "lan-2468-ky"
SCREENSHOTS = os.environ.get("PACS_SCREENSHOTS") == "1"
IMAGES = Path(__file__).parent.parent.parent / "docs" / "images"
VIEWPORT = {"width": 1280, "height": 800}


@dataclass
class Ward:
    web: Web
    flagged: Dataset
    """A head CT the AI flagged critical (received last)."""
    plain: Dataset
    """A chest X-ray without a flag (received first: it has waited longer)."""
    users: dict[str, dict[str, str]]


def _store(archive: Archive, ds: Dataset, folder: Path) -> None:
    path = factories.write(ds, folder)
    source = Source("dimse", aet="MODALITY", hospital=A)
    archive.store(stage_file(path, archive.staging_dir), source=source)


def _flag(
    archive: Archive, ds: Dataset, severity: str, score: float, finding: str, model: str
) -> None:
    """A finished, flagged AI job, as the inference service writes one."""

    def write(conn: Any, now: datetime) -> None:
        conn.execute(
            insert(InferenceJob).values(
                study_instance_uid=ds.StudyInstanceUID,
                model=model,
                model_version="1.0.0",
                up_to_seq=0,
                state="done",
                score=score,
                threshold=0.5,
                flagged=True,
                finding=finding,
                severity=severity,
                hospital=A,
                created_at=now,
                updated_at=now,
            )
        )

    archive.run_write(write)


def _give_certificate(archive: Archive, ca_dir: Path, user: str, display_name: str) -> Path:
    """A report-signing certificate for `user` from a CA in `ca_dir`, opened by PIN; the
    CA's PEM file (the server's trust anchor)."""
    from storage.certificates import add_certificate
    from viewer_api.reports.signing import LocalCa, Trust, check_pkcs12

    ca = LocalCa.open_or_create(ca_dir)
    checked = check_pkcs12(
        ca.issue(user, display_name, PIN), PIN, Trust.load(ca.certificate_path), datetime.now(UTC)
    )
    add_certificate(
        archive,
        user,
        certificate_pem=checked.certificate_pem,
        pkcs12=checked.pkcs12,
        subject=checked.subject,
        not_after=checked.not_after,
        actor="tests",
    )
    return ca.certificate_path


def _more_studies(archive: Archive, tmp_path: Path, ward: tuple[Dataset, Dataset]) -> None:
    """A fuller list for the README's pictures: more studies, waiting for a while, one of
    them being read by minh."""
    pneumonia = factories.chest_cr(patient_id="P3", name="Lê^Thị Hoa", birth_date="19560212")
    pneumonia.StudyDescription = "X-quang ngực thẳng"
    knee = factories.image(patient_id="P4", name="Phạm^Minh Tuấn", modality="MR")
    knee.StudyDescription = "MRI khớp gối phải"
    head = factories.image(patient_id="P5", name="Võ^Thị Mai", birth_date="19910304")
    for number, ds in enumerate((pneumonia, knee, head)):
        _store(archive, ds, tmp_path / f"more{number}")
    _flag(archive, pneumonia, "urgent", 0.81, "Pneumonia", "chest-xray-triage")
    flagged, plain = ward
    waited = [(flagged, 35), (plain, 190), (pneumonia, 80), (knee, 125), (head, 50)]
    for ds, minutes in waited:
        _received(archive, ds, minutes)
    claim(archive, knee.StudyInstanceUID, "minh", Scope(hospital=A, user="minh"))


def _received(archive: Archive, ds: Dataset, minutes_ago: int) -> None:
    def write(conn: Any, now: datetime) -> None:
        conn.execute(
            update(Study)
            .where(Study.study_instance_uid == ds.StudyInstanceUID)
            .values(created_at=now - timedelta(minutes=minutes_ago))
        )

    archive.run_write(write)


@pytest.fixture
def ward(archive: Archive, tmp_path: Path) -> Iterator[Ward]:
    _need_browser()
    plain = factories.chest_cr(patient_id="P1", name="Trần^Thị Bình", study_date="20261119")
    plain.StudyDescription = "X-quang ngực thẳng"
    flagged = factories.image(patient_id="P2", name="Nguyễn^Văn An", sex="M")
    _store(archive, plain, tmp_path / "plain")
    time.sleep(0.01)
    _store(archive, flagged, tmp_path / "flagged")
    _flag(archive, flagged, "critical", 0.97, "Intracranial haemorrhage", "blast-ct")
    users = {
        "lan": ensure_user(archive, "lan", "radiologist", A),
        "minh": ensure_user(archive, "minh", "radiologist", A),
    }
    ca = _give_certificate(archive, tmp_path / "signing-ca", "lan", "Nguyễn Thị Lan")
    if SCREENSHOTS:
        _more_studies(archive, tmp_path, (flagged, plain))
    with serve(archive, report_signing_ca=ca) as web:
        yield Ward(web, flagged, plain, users)


def _picture(page: Any, name: str) -> None:
    """A README picture: the page as shown, in 256 colours (a small file)."""
    import io

    from PIL import Image

    shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    shot.quantize(colors=256).save(IMAGES / f"{name}.png", optimize=True)


def _browser_page(driver: Any) -> tuple[Any, Any, list[str]]:
    """A browser, its page (English, 1280x800), and the page's Content Security Policy
    complaints and script errors."""
    browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport=VIEWPORT, locale="en-US")
    problems: list[str] = []
    page.on(
        "console",
        lambda message: (
            problems.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    page.on("pageerror", lambda error: problems.append(str(error)))
    return browser, page, problems


def test_a_radiologist_reads_the_flagged_study_first_and_signs_it(ward: Ward) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, uid = ward.web.url, ward.flagged.StudyInstanceUID
    with sync_playwright() as driver:
        browser, page, problems = _browser_page(driver)
        try:
            sign_in(page, f"{url}/worklist", "lan")
            rows = page.locator("#worklist tbody tr")
            expect(rows.first).to_have_attribute("data-uid", uid)
            top = rows.first
            expect(top.locator(".patient strong")).to_have_text("Nguyễn Văn An")
            expect(top.locator(".badge.severity-critical")).to_have_text("Critical")
            expect(top.locator(".ai .score")).to_have_text("0.97")
            expect(top.locator(".ai .finding")).to_have_text("Intracranial haemorrhage")
            expect(top.locator(".state")).to_have_text("Unread")
            plain = page.locator(f'tr[data-uid="{ward.plain.StudyInstanceUID}"]')
            expect(plain.locator(".patient strong")).to_have_text("Trần Thị Bình")
            expect(plain.locator(".badge")).to_have_count(0)
            if not SCREENSHOTS:  # (which backdates the studies)
                expect(plain.locator(".waiting")).to_have_text("0 min")

            page.get_by_role("link", name="Tiếng Việt").click()  # the language toggle
            page.wait_for_url(f"{url}/worklist?lang=vi")
            expect(page.locator("h1 span")).to_have_text("Danh sách ca đọc")
            top = page.locator("#worklist tbody tr").first
            expect(top.locator(".badge.severity-critical")).to_have_text("Nguy cấp")
            expect(top.locator(".state")).to_have_text("Chưa đọc")
            if SCREENSHOTS:
                _picture(page, "worklist")

            top.click()  # claims the study and opens the panel
            panel = page.locator("#panel")
            expect(panel.locator("h2")).to_have_text("Nguyễn Văn An")
            expect(top.locator(".holder")).to_have_text("lan (bạn)")
            claimed = httpx.get(f"{url}/api/worklist", headers=ward.users["minh"]).json()[0]
            assert (claimed["claimed_by"], claimed["status"]) == ("lan", "in-progress")

            with page.expect_popup() as opened:
                panel.get_by_role("link", name="Mở ảnh").click()
            viewer = opened.value
            viewer.wait_for_load_state("domcontentloaded")
            assert viewer.url == f"{url}/viewer?StudyInstanceUIDs={uid}"
            viewer.wait_for_function("document.querySelectorAll('canvas').length > 0")
            viewer.close()

            expect(panel.locator(".finding-card strong")).to_have_text("Intracranial haemorrhage")
            panel.get_by_role("button", name="Đồng ý", exact=True).click()
            expect(panel.locator(".verdict")).to_have_text("Đánh giá của bạn: đồng ý")

            expect(panel.locator("#report-template")).to_have_value("head-ct")
            expect(panel.locator("#report-status")).to_have_text("Chưa có báo cáo")
            for field in ("technique", "parenchyma", "ventricles"):
                panel.locator(f'[data-field="field-{field}"] button.normal').click()
            expect(panel.locator("#field-technique")).to_have_value(
                "Chụp CT sọ não không tiêm thuốc cản quang."
            )
            panel.locator("#field-haemorrhage").fill(
                "Ổ máu tụ trong nhu mô thùy thái dương phải, đường kính khoảng 15 mm."
            )
            panel.locator("#report-impression").fill(
                "Chảy máu trong nhu mô não thùy thái dương phải."
            )
            expect(panel.locator(".save-status")).to_contain_text("Đã lưu", timeout=10_000)
            expect(panel.locator("#report-status")).to_have_text("Bản nháp")
            report = httpx.get(f"{url}/api/studies/{uid}/report", headers=ward.users["lan"]).json()
            assert report["draft"]["sections"]["haemorrhage"].startswith("Ổ máu tụ")
            if SCREENSHOTS:
                panel.evaluate("panel => { panel.scrollTop = 0; }")
                _picture(page, "report")

            panel.get_by_role("button", name="Ký chính thức").click()
            panel.locator("#sign-pin").fill(PIN)
            panel.locator("#confirm-sign").click()
            expect(panel.locator("#report-status")).to_have_text("Chính thức", timeout=30_000)
            version = panel.locator('.version-list li[data-version="1"]')
            expect(version).to_contain_text("Phiên bản 1")
            expect(version).to_contain_text("Chính thức")
            expect(version.get_by_role("link", name="PDF")).to_have_attribute(
                "href", f"/api/studies/{uid}/report/versions/1/pdf"
            )
            expect(page.locator(f'tr[data-uid="{uid}"] .state')).to_have_text("Chính thức")
            expect(panel.locator("#field-haemorrhage")).to_have_attribute("readonly", "")

            panel.get_by_role("button", name="Đính chính").click()  # a final report is amended
            panel.locator("#report-impression").fill(
                "Chảy máu nhu mô não thùy thái dương phải, 15 mm."
            )
            expect(panel.locator(".save-status")).to_contain_text("Đã lưu", timeout=10_000)
            panel.get_by_role("button", name="Ký đính chính").click()
            panel.locator("#sign-pin").fill(PIN)
            panel.locator("#confirm-sign").click()
            expect(panel.locator(".sign-message")).to_have_text("Cần ghi lý do đính chính.")
            panel.locator("#amend-reason").fill("Ghi rõ kích thước ổ máu tụ trong kết luận.")
            panel.locator("#sign-pin").fill("not-her-pin")
            panel.locator("#confirm-sign").click()
            expect(panel.locator(".sign-message")).to_contain_text("Chưa ký")
            panel.locator("#sign-pin").fill(PIN)
            panel.locator("#confirm-sign").click()
            expect(panel.locator("#report-status")).to_have_text("Đã đính chính", timeout=30_000)
            amended = panel.locator('.version-list li[data-version="2"]')
            expect(amended).to_contain_text("Ghi rõ kích thước ổ máu tụ")
            expect(amended.get_by_role("link", name="Chữ ký số")).to_be_visible()
            expect(panel.locator('.version-list li[data-version="1"]')).to_contain_text(
                "Chính thức"
            )

            panel.get_by_role("button", name="Đóng", exact=True).click()
            expect(panel).to_be_hidden()

            page.get_by_role("button", name="Hiệu quả AI").click()
            model = page.locator(".performance-table tbody tr", has_text="blast-ct")
            expect(model.locator("td")).to_have_text(
                ["blast-ct", "1", "1", "1", "100%", "100%"] + [re.compile(".*")] * 2
            )
        finally:
            browser.close()
    assert problems == []
    pdf = httpx.get(
        f"{url}/api/studies/{uid}/report/versions/1/pdf", headers=ward.users["lan"], timeout=30
    )
    assert pdf.status_code == 200, pdf.text
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")
    row = httpx.get(f"{url}/api/worklist", headers=ward.users["lan"]).json()
    done = next(r for r in row if r["study_instance_uid"] == uid)
    assert (done["status"], done["claimed_by"]) == ("amended", None)


def test_another_radiologist_sees_the_study_locked(ward: Ward) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, uid = ward.web.url, ward.flagged.StudyInstanceUID
    taken = httpx.post(f"{url}/api/worklist/{uid}/claim", headers=ward.users["lan"])
    assert taken.status_code == 200, taken.text
    with sync_playwright() as driver:
        browser, page, problems = _browser_page(driver)
        try:
            sign_in(page, f"{url}/worklist", "minh")
            top = page.locator("#worklist tbody tr").first
            expect(top.locator(".holder.locked")).to_have_text("lan")
            expect(top.locator(".holder svg.lock")).to_have_count(1)
            top.click()
            panel = page.locator("#panel")
            expect(panel.locator(".lock-banner")).to_have_text("lan is reading this study")
            expect(panel.get_by_role("link", name="Open images")).to_be_visible()
            expect(panel.locator("#field-haemorrhage")).to_have_attribute("readonly", "")
            expect(panel.locator("#sign-final")).to_have_count(0)
            panel.get_by_role("button", name="Close").click()
            expect(panel).to_be_hidden()

            # The list refreshes itself (every 10 s) and marks a study newly flagged.
            _flag(ward.web.archive, ward.plain, "urgent", 0.74, "Pneumonia", "chest-xray-triage")
            second = page.locator("#worklist tbody tr").nth(1)
            expect(second.locator(".badge.severity-urgent")).to_have_text("Urgent", timeout=15_000)
            expect(second).to_have_attribute("data-uid", ward.plain.StudyInstanceUID)
            expect(second).to_have_class(re.compile(r"\bnew-flag\b"))

            page.locator('select[name="claimed_by"]').select_option("mine")  # minh holds none
            expect(page.locator("#worklist tbody tr")).to_have_count(0)
            expect(page.locator("#list-message")).to_have_text("No studies match.")
            page.locator('select[name="claimed_by"]').select_option("")
            page.locator('select[name="modality"]').select_option("CR")
            expect(page.locator("#worklist tbody tr")).to_have_count(1)
            expect(page.locator("#worklist tbody tr").first).to_have_attribute(
                "data-uid", ward.plain.StudyInstanceUID
            )
        finally:
            browser.close()
    assert problems == []
    still = httpx.get(f"{url}/api/worklist", headers=ward.users["lan"]).json()[0]
    assert still["claimed_by"] == "lan"  # closing the panel let go of nothing of hers


# -- without a browser ------------------------------------------------------------------


@pytest.fixture
def plain_web(archive: Archive) -> Iterator[Web]:
    ensure_user(archive, "lan", "radiologist", A)
    ensure_user(archive, "rose", "referring", A)
    with serve(archive) as web:
        yield web


def test_the_page_sends_a_browser_that_has_not_signed_in_to_the_sign_in_page(
    plain_web: Web,
) -> None:
    answer = httpx.get(f"{plain_web.url}/worklist")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/signin?next=%2Fworklist"


@pytest.mark.parametrize(
    ("accept_language", "query", "title"),
    [
        ("en-US,en;q=0.9", "", "Worklist"),
        ("vi-VN,vi;q=0.9,en;q=0.8", "", "Danh sách ca đọc"),
        ("fr-FR", "", "Danh sách ca đọc"),  # Vietnamese unless asked otherwise
        ("en;q=0.5,vi;q=0.8", "", "Danh sách ca đọc"),
        ("vi-VN", "?lang=en", "Worklist"),
    ],
)
def test_the_page_speaks_vietnamese_unless_english_is_asked(
    plain_web: Web, accept_language: str, query: str, title: str
) -> None:
    headers = ensure_user(plain_web.archive, "lan", "radiologist", A)
    answer = httpx.get(
        f"{plain_web.url}/worklist{query}",
        headers=headers | {"Accept-Language": accept_language},
    )
    assert answer.status_code == 200, answer.text
    assert f"<title>Dalat PACS: {title}</title>" in answer.text
    assert "<script>" not in answer.text  # the policy runs no inline script
    assert answer.headers["content-security-policy"].startswith("default-src 'self'")
    if query:
        assert answer.cookies["pacs_lang"] == "en"


def test_the_page_is_for_those_who_read_the_worklist(plain_web: Web) -> None:
    headers = ensure_user(plain_web.archive, "rose", "referring", A)
    answer = httpx.get(f"{plain_web.url}/worklist?lang=en", headers=headers)
    assert answer.status_code == 403
    assert "This page is for radiologists" in answer.text


def test_the_page_serves_its_own_files_and_no_other(plain_web: Web) -> None:
    for module in ("worklist", "panel", "ai_findings", "report", "editor", "common"):
        script = httpx.get(f"{plain_web.url}/static/{module}.js")
        assert script.status_code == 200, module
        assert script.headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{plain_web.url}/static/worklist.css").status_code == 200
    for path in ("/static/app.py", "/static/x/y.js", "/static/worklist"):
        assert httpx.get(f"{plain_web.url}{path}").status_code == 404, path
    climbing = httpx.get(f"{plain_web.url}/static/..%2Fworklist_page.py")
    assert "worklist_page_router" not in climbing.text  # never our source
