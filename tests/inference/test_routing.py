"""Routing rules: which model reads which series, a hospital's own rules, and the reason a
study is skipped."""

from pathlib import Path

import pytest

from inference.config import SHIPPED_MODELS
from inference.errors import NotApplicable, RoutingError
from inference.routing import SeriesFacts, choose, parse, read


def series(number: int = 1, **values: object) -> SeriesFacts:
    facts: dict[str, object] = {
        "series_instance_uid": f"1.2.3.{number}",
        "series_number": number,
        "modality": "CR",
        "body_part": "CHEST",
        "view_position": "PA",
        "description": "Ngực thẳng",
        "instances": 1,
        "slice_thickness": None,
    }
    return SeriesFacts(**(facts | values))  # type: ignore[arg-type]


SHIPPED = read(SHIPPED_MODELS / "routing.toml")


def test_the_shipped_rules_send_a_chest_pa_to_the_chest_model() -> None:
    rule = SHIPPED.rule("cxr-pneumonia", None)
    assert rule is not None
    chosen = choose(rule, "cxr-pneumonia", [series(2, view_position="LL"), series(3)])
    assert chosen.series_number == 3


def test_a_knee_is_skipped_with_the_reason_of_each_series() -> None:
    rule = SHIPPED.rule("cxr-pneumonia", None)
    assert rule is not None
    with pytest.raises(NotApplicable) as refused:
        choose(
            rule,
            "cxr-pneumonia",
            [series(1, body_part="KNEE"), series(2, description="Chest LAT")],
        )
    assert refused.value.reason.startswith("no series for cxr-pneumonia: ")
    assert "series 1 (CR KNEE): body part KNEE is not CHEST" in refused.value.reason
    assert "series 2 (CR CHEST): its description matches the excluded *lat*" in (
        refused.value.reason
    )


def test_the_head_ct_rule_wants_enough_thin_slices() -> None:
    rule = SHIPPED.rule("blast-ct", None)
    assert rule is not None
    head = {"modality": "CT", "body_part": "HEAD", "view_position": "", "description": "Sọ não"}
    thick = series(1, instances=40, slice_thickness=(10.0, 10.0), **head)
    scout = series(2, instances=1, slice_thickness=None, **head)
    axial = series(3, instances=180, slice_thickness=(1.25, 1.25), **head)
    assert choose(rule, "blast-ct", [thick, scout, axial]).series_number == 3
    with pytest.raises(NotApplicable) as refused:
        choose(rule, "blast-ct", [thick, scout])
    assert "slices of 10 mm, thicker than 5 mm" in refused.value.reason
    assert "1 images, fewer than 20" in refused.value.reason


def test_a_hospital_replaces_keys_of_the_site_rule() -> None:
    routing = parse(
        {
            "models": {"cxr": {"modality": ["CR", "DX"], "body_part": ["CHEST", ""]}},
            "hospitals": {"BVDKLD": {"models": {"cxr": {"body_part": ["CHEST"]}}}},
        }
    )
    unsaid = series(body_part="")
    site, hospital = routing.rule("cxr", None), routing.rule("cxr", "BVDKLD")
    assert site is not None
    assert hospital is not None
    assert site.refusal(unsaid) is None
    assert hospital.refusal(unsaid) == "series 1 (CR): body part (none) is not CHEST"
    assert hospital.modality == ("CR", "DX")  # the rest of the site's rule stands
    assert routing.rule("other", "BVDKLD") is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[models.cxr]\nmodality = 'CR'", "models.cxr.modality: a list of strings"),
        ("[models.cxr]\nwhatever = 1", "models.cxr: unknown key whatever"),
        ("[models.cxr]\nmin_instances = -1", "models.cxr.min_instances: a whole number"),
        ("[model.cxr]\n", "unknown section model"),
        ("[models.cxr\n", "cannot read the AI routing rules"),
    ],
)
def test_a_wrong_rules_file_is_refused_with_what_is_wrong(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "routing.toml"
    path.write_text(text)
    with pytest.raises(RoutingError) as refused:
        read(path)
    assert problem in refused.value.reason
