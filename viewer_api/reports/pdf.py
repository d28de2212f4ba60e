"""A signed report as an A4 PDF a hospital prints: the study, the sections, the findings and
the impression, then who signed it and when. A ``ReportDocument`` in, bytes out.

The fonts (DejaVu Sans, regular and bold, with Vietnamese glyphs) ship in ``fonts/`` beside
this module and are the only thing read; nothing comes from the system or the network.
Times are shown in Vietnam's time zone (Asia/Ho_Chi_Minh), whatever zone the signature was
made in.
"""

import unicodedata
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from fpdf.fonts import FontFace, TTFFont

from viewer_api.reports.document import Language, ReportDocument

FONTS = Path(__file__).parent / "fonts"
FONT = "DejaVu"
TIMEZONE = ZoneInfo("Asia/Ho_Chi_Minh")

LABELS: dict[Language, dict[str, str]] = {
    "vi": {
        "patient": "Bệnh nhân",
        "patient_id": "Mã bệnh nhân",
        "birth_date": "Ngày sinh",
        "sex": "Giới tính",
        "study_date": "Ngày chụp",
        "accession": "Số phiếu chụp",
        "modalities": "Kỹ thuật",
        "referring": "Bác sĩ chỉ định",
        "description": "Mô tả",
        "findings": "Kết quả",
        "impression": "Kết luận",
        "status": "Trạng thái",
        "radiologist": "Bác sĩ đọc",
        "certificate": "Chứng thư số",
        "signed_at": "Thời gian ký",
        "version": "Phiên bản",
        "reason": "Lý do sửa đổi",
        "page": "Trang {page}/{pages}",
    },
    "en": {
        "patient": "Patient",
        "patient_id": "Patient ID",
        "birth_date": "Date of birth",
        "sex": "Sex",
        "study_date": "Study date",
        "accession": "Accession number",
        "modalities": "Modality",
        "referring": "Referring physician",
        "description": "Description",
        "findings": "Findings",
        "impression": "Impression",
        "status": "Status",
        "radiologist": "Radiologist",
        "certificate": "Certificate",
        "signed_at": "Signed at",
        "version": "Version",
        "reason": "Reason for amendment",
        "page": "Page {page} of {pages}",
    },
}
STATUSES: dict[Language, dict[str, str]] = {
    "vi": {"preliminary": "Sơ bộ", "final": "Chính thức", "amended": "Đã sửa đổi"},
    "en": {"preliminary": "Preliminary", "final": "Final", "amended": "Amended"},
}
SEXES: dict[Language, dict[str, str]] = {
    "vi": {"M": "Nam", "F": "Nữ", "O": "Khác"},
    "en": {"M": "Male", "F": "Female", "O": "Other"},
}

_MARGIN = 18.0
_BODY = 10.5
_LINE = 5.5
_MISSING = "—"
_BOLD = FontFace(emphasis="BOLD")
_PRELIMINARY_RED = (170, 20, 20)


def render_pdf(doc: ReportDocument) -> bytes:
    """The report as a PDF: A4, Vietnamese diacritics embedded, long text flowing across
    pages, each page footed with the Study Instance UID and its number."""
    labels = LABELS[doc.language]
    pdf = _ReportPdf(footer_left=f"Study Instance UID {doc.study.study_instance_uid}")
    pdf.page_label = labels["page"]
    pdf.set_title(_text(doc.title))
    pdf.set_author(person_name(doc.author_display))
    pdf.set_subject(f"{_text(doc.title)} — {person_name(doc.study.patient_name)}")
    pdf.set_creator("Dalat PACS")
    pdf.set_lang(doc.language)
    try:
        pdf.add_page()
        _heading_block(pdf, doc)
        _study_block(pdf, doc)
        _body(pdf, doc)
        _signature_block(pdf, doc)
        return bytes(pdf.output())
    finally:
        # fpdf2 reads its fonts lazily through fontTools and leaves the files open.
        for font in pdf.fonts.values():
            if isinstance(font, TTFFont):
                font.ttfont.close()


def person_name(value: str | None) -> str:
    """A DICOM PN as a person reads it: the alphabetic group, its components (family name
    first, as Vietnamese write it) joined by spaces. ``Nguyễn^Văn An`` → ``Nguyễn Văn An``."""
    if not value:
        return ""
    alphabetic = value.split("=", 1)[0]
    return _text(" ".join(part.strip() for part in alphabetic.split("^") if part.strip()))


def local_time(moment: datetime) -> datetime:
    """``moment`` in Vietnam's time zone; a naive time is refused, since its zone is a guess."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"The signing time {moment.isoformat()} has no time zone.")
    return moment.astimezone(TIMEZONE)


class _ReportPdf(FPDF):
    def __init__(self, *, footer_left: str) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.footer_left = footer_left
        self.page_label = "{page}/{pages}"
        self.add_font(FONT, "", FONTS / "DejaVuSans.ttf")
        self.add_font(FONT, "B", FONTS / "DejaVuSans-Bold.ttf")
        self.set_margins(_MARGIN, _MARGIN, _MARGIN)
        self.set_auto_page_break(auto=True, margin=_MARGIN + 4)
        self.alias_nb_pages()

    def footer(self) -> None:
        self.set_y(-_MARGIN)
        self.set_draw_color(160, 160, 160)
        self.line(self.l_margin, self.get_y(), self.w - self.r_margin, self.get_y())
        self.set_y(-_MARGIN + 1.5)
        self.set_font(FONT, "", 7.5)
        self.set_text_color(90, 90, 90)
        page = self.page_label.format(page=self.page_no(), pages=self.str_alias_nb_pages)
        self.cell(0, 4, self.footer_left, align="L")
        self.set_x(self.l_margin)
        self.cell(0, 4, page, align="R")
        self.set_text_color(0, 0, 0)


def _heading_block(pdf: _ReportPdf, doc: ReportDocument) -> None:
    if doc.study.hospital:
        pdf.set_font(FONT, "B", 11)
        pdf.multi_cell(
            0, 6, _text(doc.study.hospital), align="C", new_x=XPos.LMARGIN, new_y=YPos.NEXT
        )
        pdf.ln(2)
    pdf.set_font(FONT, "B", 16)
    pdf.multi_cell(0, 8, _text(doc.title), align="C", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    if doc.status != "final":
        pdf.set_font(FONT, "B", 11)
        if doc.status == "preliminary":
            pdf.set_text_color(*_PRELIMINARY_RED)
        status = STATUSES[doc.language][doc.status]
        pdf.multi_cell(0, 6, f"({status})", align="C", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_text_color(0, 0, 0)
    pdf.ln(3)
    _rule(pdf)


def _study_block(pdf: _ReportPdf, doc: ReportDocument) -> None:
    labels = LABELS[doc.language]
    study = doc.study
    patient_id = study.patient_id + (f" ({study.issuer})" if study.issuer else "")
    study_date = " ".join(v for v in (_date(study.study_date), _time(study.study_time)) if v)
    sex = SEXES[doc.language].get(study.sex or "", study.sex or "")
    rows = [
        (labels["patient"], person_name(study.patient_name), labels["patient_id"], patient_id),
        (labels["birth_date"], _date(study.birth_date), labels["sex"], sex),
        (labels["study_date"], study_date, labels["accession"], study.accession_number),
        (
            labels["modalities"],
            ", ".join(study.modalities),
            labels["referring"],
            person_name(study.referring_physician),
        ),
    ]
    pdf.set_font(FONT, "", _BODY - 0.5)
    with pdf.table(
        col_widths=(28, 62, 34, 50),
        borders_layout="NONE",
        first_row_as_headings=False,
        text_align="LEFT",
        line_height=_LINE,
        padding=(0.8, 1.5),
    ) as table:
        for label, value, label2, value2 in rows:
            row = table.row()
            row.cell(label, style=_BOLD)
            row.cell(_text(value) or _MISSING)
            row.cell(label2, style=_BOLD)
            row.cell(_text(value2) or _MISSING)
        if study.study_description:
            row = table.row()
            row.cell(labels["description"], style=_BOLD)
            row.cell(_text(study.study_description), colspan=3)
    pdf.ln(2)
    _rule(pdf)


def _body(pdf: _ReportPdf, doc: ReportDocument) -> None:
    labels = LABELS[doc.language]
    _heading(pdf, labels["findings"])
    for section in doc.sections:
        _keep_room(pdf, 3 * _LINE)
        pdf.set_font(FONT, "B", _BODY)
        pdf.multi_cell(0, _LINE, _text(section.label), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        _paragraphs(pdf, section.text)
        pdf.ln(1.5)
    if doc.findings.strip():
        _paragraphs(pdf, doc.findings)
    pdf.ln(2)
    _heading(pdf, labels["impression"])
    _paragraphs(pdf, doc.impression)
    pdf.ln(3)


def _signature_block(pdf: _ReportPdf, doc: ReportDocument) -> None:
    labels = LABELS[doc.language]
    signed_at = local_time(doc.signed_at)
    offset = signed_at.strftime("%z")
    rows = [
        (labels["status"], STATUSES[doc.language][doc.status]),
        (labels["radiologist"], person_name(doc.author_display) or doc.author),
    ]
    if doc.signer:
        rows.append((labels["certificate"], doc.signer))
    rows.append(
        (
            labels["signed_at"],
            f"{signed_at:%d/%m/%Y %H:%M:%S} (UTC{offset[:3]}:{offset[3:]})",
        )
    )
    rows.append((labels["version"], str(doc.version)))
    if doc.reason:
        rows.append((labels["reason"], doc.reason))
    _keep_room(pdf, (len(rows) + 1) * _LINE)
    _rule(pdf)
    pdf.set_font(FONT, "", _BODY - 0.5)
    with pdf.table(
        col_widths=(40, 134),
        borders_layout="NONE",
        first_row_as_headings=False,
        text_align="LEFT",
        line_height=_LINE,
        padding=(0.8, 1.5),
    ) as table:
        for label, value in rows:
            row = table.row()
            row.cell(label, style=_BOLD)
            row.cell(_text(value))


def _heading(pdf: _ReportPdf, text: str) -> None:
    _keep_room(pdf, 4 * _LINE)
    pdf.ln(1)
    pdf.set_font(FONT, "B", _BODY + 1.5)
    pdf.multi_cell(0, 7, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(1)


def _paragraphs(pdf: _ReportPdf, text: str) -> None:
    pdf.set_font(FONT, "", _BODY)
    for paragraph in _text(text).split("\n"):
        pdf.multi_cell(0, _LINE, paragraph, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _keep_room(pdf: _ReportPdf, height: float) -> None:
    """A heading is not left alone at the foot of a page."""
    if pdf.will_page_break(height):
        pdf.add_page()


def _rule(pdf: _ReportPdf) -> None:
    pdf.set_draw_color(120, 120, 120)
    pdf.line(pdf.l_margin, pdf.get_y(), pdf.w - pdf.r_margin, pdf.get_y())
    pdf.ln(3)


def _text(value: str | None) -> str:
    """NFC (DejaVu has the precomposed Vietnamese letters), one kind of line break, no tabs."""
    if not value:
        return ""
    text = value.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    return unicodedata.normalize("NFC", text).strip()


def _date(value: str | None) -> str:
    """DICOM DA (YYYYMMDD) as DD/MM/YYYY; anything else as it came."""
    if value and len(value) == 8 and value.isdigit():
        return f"{value[6:]}/{value[4:6]}/{value[:4]}"
    return value or ""


def _time(value: str | None) -> str:
    """DICOM TM (HHMMSS.FFFFFF) as HH:MM."""
    if value and len(value) >= 4 and value[:4].isdigit():
        return f"{value[:2]}:{value[2:4]}"
    return value or ""
