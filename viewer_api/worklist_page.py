"""The radiologists' worklist page (issue 8): the studies to read, AI-flagged first, and a
side panel to read one (claim, images, AI findings, priors, the report, signing).

The page is server-rendered in the reader's language (Vietnamese by default; English when
the browser or the toggle asks) and carries its words as a JSON data block; everything it
does runs in the script modules under ``static/`` (no inline script: the Content Security
Policy lets only the archive's own files run), against the JSON API it sits on.
"""

import html
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from viewer_api.auth import SENDERS, Authenticator, Forbidden, Principal, Unauthorized
from viewer_api.errors import NotFoundError

STATIC = Path(__file__).parent / "static"
ASSETS = {
    **{
        f"{name}.js": "text/javascript"
        for name in ("worklist", "panel", "ai_findings", "report", "editor", "common")
    },
    "worklist.css": "text/css",
}
"""The files under /static/ (the page's script modules and its style): these and no other."""
LANGUAGE_COOKIE = "pacs_lang"
LANGUAGES = ("vi", "en")

_TEXT: dict[str, dict[str, str]] = {
    "vi": {
        "title": "Danh sách ca đọc",
        "signed_in_as": "Người dùng: {name}",
        "sign_out": "Đăng xuất",
        "ai_performance": "Hiệu quả AI",
        "hospital": "Bệnh viện",
        "modality": "Loại chụp",
        "body_part": "Vùng cơ thể",
        "date_from": "Từ ngày",
        "date_to": "Đến ngày",
        "status": "Trạng thái",
        "assigned": "Bác sĩ đọc",
        "all": "Tất cả",
        "mine": "Của tôi",
        "clear": "Bỏ lọc",
        "col_patient": "Bệnh nhân",
        "col_study": "Ca chụp",
        "col_hospital": "Bệnh viện",
        "col_modality": "Loại chụp",
        "col_ai": "Kết quả AI",
        "col_waiting": "Thời gian chờ",
        "col_status": "Trạng thái",
        "col_holder": "Người đọc",
        "empty": "Không có ca nào phù hợp.",
        "updated": "Cập nhật lúc {time}",
        "refresh_failed": "Không tải được danh sách: {reason}",
        "unit_day": "ngày",
        "unit_hour": "giờ",
        "unit_minute": "phút",
        "status_unread": "Chưa đọc",
        "status_in-progress": "Đang đọc",
        "status_preliminary": "Sơ bộ",
        "status_final": "Chính thức",
        "status_amended": "Đã đính chính",
        "status_none": "Chưa có báo cáo",
        "status_draft": "Bản nháp",
        "severity_critical": "Nguy cấp",
        "severity_urgent": "Khẩn",
        "severity_flagged": "Cần xem",
        "new_flag": "Cảnh báo AI mới",
        "you": "bạn",
        "locked_by": "{name} đang đọc ca này",
        "claim_failed": "Không mở được ca chụp: {reason}",
        "close": "Đóng",
        "open_images": "Mở ảnh",
        "patient_id": "Mã BN",
        "birth_date": "Ngày sinh",
        "sex": "Giới",
        "sex_M": "Nam",
        "sex_F": "Nữ",
        "sex_O": "Khác",
        "accession": "Số phiếu chụp",
        "ai_findings": "Kết quả AI",
        "ai_disclaimer": "AI hỗ trợ sàng lọc, không phải chẩn đoán.",
        "no_findings": "Không có kết quả AI.",
        "score": "điểm",
        "threshold": "ngưỡng",
        "agree": "Đồng ý",
        "disagree": "Không đồng ý",
        "correct_label": "Nhãn đúng (không bắt buộc)",
        "your_verdict": "Đánh giá của bạn: {verdict}",
        "verdict_agree": "đồng ý",
        "verdict_disagree": "không đồng ý",
        "priors": "Ca chụp trước",
        "no_priors": "Không có ca chụp trước.",
        "compare": "So sánh",
        "match_same-record": "cùng hồ sơ",
        "match_citizen-id": "cùng số CCCD",
        "match_confirmed": "đã xác nhận cùng người",
        "suggestions": "Có thể cùng một người",
        "confirm_same": "Xác nhận cùng người",
        "report": "Báo cáo",
        "report_status": "Báo cáo: {status}",
        "template": "Mẫu",
        "language": "Ngôn ngữ",
        "language_vi": "Tiếng Việt",
        "language_en": "English",
        "normal": "Bình thường",
        "findings": "Mô tả thêm",
        "impression": "Kết luận",
        "saving": "Đang lưu…",
        "saved": "Đã lưu {time}",
        "save_failed": "Chưa lưu: {reason}",
        "sign_preliminary": "Ký sơ bộ",
        "sign_final": "Ký chính thức",
        "sign_amendment": "Ký đính chính",
        "pin": "Mã PIN ký số",
        "sign": "Ký",
        "cancel": "Hủy",
        "amend": "Đính chính",
        "amend_reason": "Lý do đính chính",
        "reason_needed": "Cần ghi lý do đính chính.",
        "pin_needed": "Cần nhập mã PIN.",
        "signing": "Đang ký…",
        "signed": "Đã ký phiên bản {version}",
        "sign_failed": "Chưa ký: {reason}",
        "versions": "Các phiên bản",
        "no_versions": "Chưa ký phiên bản nào.",
        "version": "Phiên bản {version}",
        "by": "bởi {name}",
        "signature": "Chữ ký số",
        "report_unavailable": "Máy chủ này chưa có chức năng báo cáo.",
        "perf_model": "Mô hình",
        "perf_studies": "Số ca",
        "perf_flags": "Cảnh báo",
        "perf_reviewed": "Đã đánh giá",
        "perf_agreement": "Tỷ lệ đồng ý",
        "perf_ppv": "Giá trị dự báo dương",
        "perf_flagged_minutes": "Phút đến khi ký (có cảnh báo)",
        "perf_unflagged_minutes": "Phút đến khi ký (không cảnh báo)",
        "perf_none": "Chưa có dữ liệu.",
        "perf_failed": "Không tải được: {reason}",
        "not_allowed": "Trang này dành cho bác sĩ chẩn đoán hình ảnh và kỹ thuật viên.",
    },
    "en": {
        "title": "Worklist",
        "signed_in_as": "Signed in as {name}",
        "sign_out": "Sign out",
        "ai_performance": "AI performance",
        "hospital": "Hospital",
        "modality": "Modality",
        "body_part": "Body part",
        "date_from": "From",
        "date_to": "To",
        "status": "Status",
        "assigned": "Radiologist",
        "all": "All",
        "mine": "Mine",
        "clear": "Clear filters",
        "col_patient": "Patient",
        "col_study": "Study",
        "col_hospital": "Hospital",
        "col_modality": "Modality",
        "col_ai": "AI finding",
        "col_waiting": "Waiting",
        "col_status": "Status",
        "col_holder": "Reader",
        "empty": "No studies match.",
        "updated": "Updated {time}",
        "refresh_failed": "Could not load the list: {reason}",
        "unit_day": "d",
        "unit_hour": "h",
        "unit_minute": "min",
        "status_unread": "Unread",
        "status_in-progress": "In progress",
        "status_preliminary": "Preliminary",
        "status_final": "Final",
        "status_amended": "Amended",
        "status_none": "No report",
        "status_draft": "Draft",
        "severity_critical": "Critical",
        "severity_urgent": "Urgent",
        "severity_flagged": "Flagged",
        "new_flag": "New AI flag",
        "you": "you",
        "locked_by": "{name} is reading this study",
        "claim_failed": "Could not open the study: {reason}",
        "close": "Close",
        "open_images": "Open images",
        "patient_id": "ID",
        "birth_date": "Born",
        "sex": "Sex",
        "sex_M": "Male",
        "sex_F": "Female",
        "sex_O": "Other",
        "accession": "Accession",
        "ai_findings": "AI findings",
        "ai_disclaimer": "AI triage, not a diagnosis.",
        "no_findings": "No AI findings.",
        "score": "score",
        "threshold": "threshold",
        "agree": "Agree",
        "disagree": "Disagree",
        "correct_label": "Correct label (optional)",
        "your_verdict": "Your verdict: {verdict}",
        "verdict_agree": "agree",
        "verdict_disagree": "disagree",
        "priors": "Prior studies",
        "no_priors": "No prior studies.",
        "compare": "Compare",
        "match_same-record": "same record",
        "match_citizen-id": "same citizen ID",
        "match_confirmed": "confirmed same person",
        "suggestions": "Possibly the same person",
        "confirm_same": "Confirm same person",
        "report": "Report",
        "report_status": "Report: {status}",
        "template": "Template",
        "language": "Language",
        "language_vi": "Tiếng Việt",
        "language_en": "English",
        "normal": "Normal",
        "findings": "Other findings",
        "impression": "Impression",
        "saving": "Saving…",
        "saved": "Saved {time}",
        "save_failed": "Not saved: {reason}",
        "sign_preliminary": "Sign preliminary",
        "sign_final": "Sign final",
        "sign_amendment": "Sign amendment",
        "pin": "Signing PIN",
        "sign": "Sign",
        "cancel": "Cancel",
        "amend": "Amend",
        "amend_reason": "Reason for the amendment",
        "reason_needed": "An amendment needs a reason.",
        "pin_needed": "Enter your PIN.",
        "signing": "Signing…",
        "signed": "Signed version {version}",
        "sign_failed": "Not signed: {reason}",
        "versions": "Versions",
        "no_versions": "No version signed yet.",
        "version": "Version {version}",
        "by": "by {name}",
        "signature": "Signature",
        "report_unavailable": "Reports are not available on this server.",
        "perf_model": "Model",
        "perf_studies": "Studies",
        "perf_flags": "Flags",
        "perf_reviewed": "Reviewed",
        "perf_agreement": "Agreement",
        "perf_ppv": "Positive predictive value",
        "perf_flagged_minutes": "Minutes to final (flagged)",
        "perf_unflagged_minutes": "Minutes to final (not flagged)",
        "perf_none": "No data yet.",
        "perf_failed": "Could not load: {reason}",
        "not_allowed": "This page is for radiologists and technologists.",
    },
}
MODALITIES = ("CT", "MR", "CR", "DX", "US", "MG", "XA", "NM", "PT")
BODY_PARTS: dict[str, dict[str, str]] = {
    "HEAD": {"vi": "Đầu", "en": "Head"},
    "CHEST": {"vi": "Ngực", "en": "Chest"},
    "ABDOMEN": {"vi": "Bụng", "en": "Abdomen"},
    "PELVIS": {"vi": "Khung chậu", "en": "Pelvis"},
    "SPINE": {"vi": "Cột sống", "en": "Spine"},
    "EXTREMITY": {"vi": "Chi", "en": "Limbs"},
    "BREAST": {"vi": "Vú", "en": "Breast"},
}
STATUSES = ("unread", "in-progress", "preliminary", "final", "amended")


def worklist_page_router(auth: Authenticator) -> APIRouter:
    router = APIRouter(tags=["worklist"], include_in_schema=False)

    @router.get("/worklist")
    async def page(request: Request) -> Response:
        language = language_of(request)
        try:
            principal: Principal = await run_in_threadpool(auth.principal, request)
        except (Unauthorized, Forbidden):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/signin?next={quote(target, safe='')}", status_code=303)
        allowed = principal.role in SENDERS
        response = HTMLResponse(
            render(language, principal.name, allowed),
            status_code=200 if allowed else 403,
            headers={"Cache-Control": "no-store"},
        )
        if request.query_params.get("lang") in LANGUAGES:
            response.set_cookie(
                LANGUAGE_COOKIE, language, max_age=365 * 86400, path="/", samesite="lax"
            )
        return response

    @router.get("/static/{name}")
    def asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise NotFoundError(f"no file {name[:64]!r}")
        return FileResponse(
            STATIC / name, media_type=ASSETS[name], headers={"Cache-Control": "no-cache"}
        )

    return router


def language_of(request: Request) -> str:
    """The toggle's choice (?lang=, then its cookie), else the first of ours the browser
    accepts, else Vietnamese."""
    for chosen in (request.query_params.get("lang"), request.cookies.get(LANGUAGE_COOKIE)):
        if chosen in LANGUAGES:
            return str(chosen)
    ranked: list[tuple[float, int, str]] = []
    for index, item in enumerate(request.headers.get("accept-language", "").split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, index, primary))
    return min(ranked)[2] if ranked else "vi"


def _data_block(value: Any) -> str:
    """JSON the page's script reads; safe inside <script type="application/json">."""
    text = json.dumps(value, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(language: str, user: str, allowed: bool) -> str:
    text = _TEXT[language]
    other = "en" if language == "vi" else "vi"
    escape = html.escape
    head = f"""<!doctype html>
<html lang="{language}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Dalat PACS: {escape(text["title"])}</title>
<link rel="stylesheet" href="/static/worklist.css">
</head>"""
    top = f"""<header class="top">
<h1>Dalat PACS <span>{escape(text["title"])}</span></h1>
<nav>
<span class="user">{escape(text["signed_in_as"].format(name=user))}</span>
<button type="button" id="show-performance">{escape(text["ai_performance"])}</button>
<a class="language" href="/worklist?lang={other}" lang="{other}">{
        escape(text[f"language_{other}"])
    }</a>
<form method="post" action="/auth/signout"><button type="submit">{
        escape(text["sign_out"])
    }</button></form>
</nav></header>"""
    if not allowed:
        return f"""{head}<body>{top}<main><p class="error" role="alert">{
            escape(text["not_allowed"])
        }</p></main></body></html>"""
    all_ = escape(text["all"])
    modalities = "".join(f'<option value="{m}">{m}</option>' for m in MODALITIES)
    parts = "".join(
        f'<option value="{key}">{escape(names[language])}</option>'
        for key, names in BODY_PARTS.items()
    )
    statuses = "".join(
        f'<option value="{s}">{escape(text["status_" + s])}</option>' for s in STATUSES
    )
    config = {"language": language, "user": user, "text": text}
    return f"""{head}<body>{top}
<div class="layout"><div class="list">
<section id="performance" class="performance" hidden>
<h2>{escape(text["ai_performance"])}</h2><div id="performance-body"></div>
</section>
<form id="filters" class="filters">
<label>{escape(text["hospital"])}<select name="hospital"><option value="">{all_}</option>
</select></label>
<label>{escape(text["modality"])}<select name="modality"><option value="">{all_}</option>{
        modalities
    }</select></label>
<label>{escape(text["body_part"])}<select name="body_part"><option value="">{all_}</option>{
        parts
    }</select></label>
<label>{escape(text["date_from"])}<input type="date" name="date_from"></label>
<label>{escape(text["date_to"])}<input type="date" name="date_to"></label>
<label>{escape(text["status"])}<select name="status"><option value="">{all_}</option>{
        statuses
    }</select></label>
<label>{escape(text["assigned"])}<select name="claimed_by"><option value="">{all_}</option>
<option value="mine">{escape(text["mine"])}</option></select></label>
<button type="reset">{escape(text["clear"])}</button>
<span id="updated" class="updated" aria-live="polite"></span>
</form>
<main>
<table id="worklist" class="worklist"><thead><tr>
<th>{escape(text["col_patient"])}</th><th>{escape(text["col_study"])}</th>
<th class="hospital">{escape(text["col_hospital"])}</th><th>{escape(text["col_modality"])}</th>
<th>{escape(text["col_ai"])}</th><th>{escape(text["col_waiting"])}</th>
<th>{escape(text["col_status"])}</th><th>{escape(text["col_holder"])}</th>
</tr></thead><tbody></tbody></table>
<p id="list-message" class="message" role="status"></p>
</main></div>
<aside id="panel" class="panel" hidden aria-labelledby="panel-title"></aside>
</div>
<script type="application/json" id="page-config">{_data_block(config)}</script>
<script type="module" src="/static/worklist.js"></script>
</body></html>"""
