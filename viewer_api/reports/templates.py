"""Report templates: for each kind of study, the sections a radiologist fills in, with
their labels and a normal finding to start from, in Vietnamese and English."""

from dataclasses import dataclass

from viewer_api.reports.document import Language


@dataclass(frozen=True, slots=True)
class Field:
    key: str
    label: dict[Language, str]
    normal: dict[Language, str]
    """The usual wording of a normal finding, offered as a start."""


@dataclass(frozen=True, slots=True)
class Template:
    key: str
    title: dict[Language, str]
    modalities: tuple[str, ...]
    body_parts: tuple[str, ...]
    fields: tuple[Field, ...]
    impression: dict[Language, str]
    """The usual impression of a normal study."""

    def labels(self, language: Language) -> dict[str, str]:
        return {field.key: field.label[language] for field in self.fields}


def _f(key: str, vi: str, en: str, normal_vi: str, normal_en: str) -> Field:
    return Field(key, {"vi": vi, "en": en}, {"vi": normal_vi, "en": normal_en})


_PLEURA = _f(
    "pleura",
    "Màng phổi",
    "Pleura",
    "Không tràn dịch, không tràn khí màng phổi.",
    "No pleural effusion or pneumothorax.",
)

TEMPLATES: dict[str, Template] = {
    t.key: t
    for t in (
        Template(
            "chest-xray",
            {"vi": "X-quang ngực thẳng", "en": "Chest X-ray"},
            ("CR", "DX"),
            ("CHEST", "THORAX", "LUNG"),
            (
                _f(
                    "technique",
                    "Kỹ thuật",
                    "Technique",
                    "Phim ngực thẳng tư thế đứng, chất lượng đạt yêu cầu.",
                    "Erect PA chest radiograph of diagnostic quality.",
                ),
                _f(
                    "lungs",
                    "Phổi",
                    "Lungs",
                    "Hai trường phổi sáng đều, không thấy tổn thương khu trú.",
                    "Both lungs are clear; no focal consolidation.",
                ),
                _PLEURA,
                _f(
                    "heart",
                    "Tim và trung thất",
                    "Heart and mediastinum",
                    "Bóng tim không to, trung thất cân đối.",
                    "Normal heart size; mediastinum is central.",
                ),
                _f(
                    "bones",
                    "Xương và phần mềm",
                    "Bones and soft tissues",
                    "Khung xương lồng ngực bình thường.",
                    "Bony thorax and soft tissues are normal.",
                ),
            ),
            {"vi": "Phim X-quang ngực bình thường.", "en": "Normal chest radiograph."},
        ),
        Template(
            "chest-ct",
            {"vi": "CT ngực", "en": "Chest CT"},
            ("CT",),
            ("CHEST", "THORAX", "LUNG"),
            (
                _f(
                    "technique",
                    "Kỹ thuật",
                    "Technique",
                    "Chụp CT ngực xoắn ốc, lát cắt mỏng.",
                    "Helical CT of the chest, thin sections.",
                ),
                _f(
                    "lungs",
                    "Nhu mô phổi",
                    "Lung parenchyma",
                    "Không thấy nốt, đông đặc hay kính mờ.",
                    "No nodules, consolidation or ground-glass opacity.",
                ),
                _f(
                    "airways",
                    "Đường thở",
                    "Airways",
                    "Khí quản và phế quản thông thoáng.",
                    "Trachea and bronchi are patent.",
                ),
                _PLEURA,
                _f(
                    "mediastinum",
                    "Trung thất và tim",
                    "Mediastinum and heart",
                    "Không có hạch trung thất to; tim không to.",
                    "No enlarged mediastinal nodes; normal heart size.",
                ),
                _f(
                    "bones",
                    "Xương",
                    "Bones",
                    "Không thấy tổn thương xương.",
                    "No bone lesion.",
                ),
            ),
            {"vi": "CT ngực không thấy bất thường.", "en": "Normal CT of the chest."},
        ),
        Template(
            "head-ct",
            {"vi": "CT sọ não", "en": "Head CT"},
            ("CT",),
            ("HEAD", "BRAIN", "SKULL"),
            (
                _f(
                    "technique",
                    "Kỹ thuật",
                    "Technique",
                    "Chụp CT sọ não không tiêm thuốc cản quang.",
                    "Non-contrast CT of the head.",
                ),
                _f(
                    "haemorrhage",
                    "Chảy máu nội sọ",
                    "Intracranial haemorrhage",
                    "Không thấy chảy máu trong sọ.",
                    "No intracranial haemorrhage.",
                ),
                _f(
                    "parenchyma",
                    "Nhu mô não",
                    "Brain parenchyma",
                    "Phân biệt chất trắng, chất xám rõ; không thấy ổ giảm tỷ trọng.",
                    "Normal grey-white differentiation; no hypodense area.",
                ),
                _f(
                    "ventricles",
                    "Hệ thống não thất",
                    "Ventricles",
                    "Hệ thống não thất không giãn; đường giữa không di lệch.",
                    "Ventricles not dilated; no midline shift.",
                ),
                _f(
                    "bones",
                    "Xương sọ",
                    "Skull",
                    "Không thấy đường vỡ xương sọ.",
                    "No skull fracture.",
                ),
            ),
            {"vi": "CT sọ não không thấy bất thường.", "en": "Normal CT of the head."},
        ),
        Template(
            "general",
            {"vi": "Kết quả chẩn đoán hình ảnh", "en": "Imaging report"},
            (),
            (),
            (
                _f("technique", "Kỹ thuật", "Technique", "", ""),
                _f("findings", "Mô tả", "Findings", "", ""),
            ),
            {"vi": "", "en": ""},
        ),
    )
}


def template_for(modalities: tuple[str, ...], body_parts: tuple[str, ...]) -> Template:
    """The template that fits a study: by modality and body part; the general one if none
    fits."""
    parts = {part.upper() for part in body_parts}
    for template in TEMPLATES.values():
        if set(template.modalities) & set(modalities) and parts & set(template.body_parts):
            return template
    chest_xray = TEMPLATES["chest-xray"]
    if not parts and set(chest_xray.modalities) & set(modalities):
        return chest_xray  # a chest X-ray often names no body part
    return TEMPLATES["general"]
