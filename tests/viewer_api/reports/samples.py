"""One signed Vietnamese report for the report tests: a chest X-ray read in Lâm Đồng."""

import dataclasses
from datetime import UTC, datetime
from typing import Any

from viewer_api.reports.document import ReportDocument, Section, StudyFacts

PATIENT = "Nguyễn^Thị Hồng Nhung"
HOSPITAL = "Bệnh viện Đa khoa tỉnh Lâm Đồng"
LUNGS = "Phổi: Không thấy tổn thương khu trú. Bóng tim không to."
BONES = "Khung xương lồng ngực cân đối, không thấy gãy xương."
FINDINGS = "Góc sườn hoành hai bên nhọn. Vòm hoành hai bên đều, bờ rõ."
IMPRESSION = "Phim X-quang ngực bình thường."
REASON = "Sửa lỗi chính tả ở phần kết luận theo yêu cầu của bác sĩ điều trị."
SIGNER = "CN=Lê Văn An,O=Bệnh viện Đa khoa tỉnh Lâm Đồng,C=VN"
SIGNED_AT = datetime(2026, 11, 20, 7, 30, 5, tzinfo=UTC)  # 14:30:05 in Đà Lạt

STUDY = StudyFacts(
    study_instance_uid="1.2.826.0.1.3680043.8.498.1",
    patient_id="P001",
    patient_name=PATIENT,
    issuer="BVDKLD",
    birth_date="19800115",
    sex="F",
    accession_number="ACC001",
    study_date="20261120",
    study_time="101010",
    study_description="X-quang ngực thẳng tư thế đứng",
    modalities=("CR",),
    hospital=HOSPITAL,
    referring_physician="Trần^Văn Minh",
)


def report(**changes: Any) -> ReportDocument:
    """Version 1, final, signed by Lê Văn An; `changes` replace any field."""
    doc = ReportDocument(
        study=STUDY,
        version=1,
        status="final",
        template="chest-xray",
        title="Kết quả chụp X-quang ngực thẳng",
        language="vi",
        sections=(Section("lungs", "Phổi", LUNGS), Section("bones", "Xương", BONES)),
        findings=FINDINGS,
        impression=IMPRESSION,
        author="bs.an",
        author_display="Lê^Văn An",
        signed_at=SIGNED_AT,
        signer=SIGNER,
    )
    return dataclasses.replace(doc, **changes)
