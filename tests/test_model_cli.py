"""`pacs model evaluate`, `pacs model set` and `pacs model list` as a user runs them: the
report, the calibrated threshold written with who and on what evidence, and the errors."""

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from inference.metrics import roc_auc, threshold_for
from inference.model_settings import SettingRow, rows
from storage import Archive, StorageSettings
from storage.index.tables import AuditEvent
from tests.inference.calibration_cases import EXPECTED, build
from tests.test_cli import pacs

MODEL = "cxr-pneumonia"


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """24 labelled cases (12 of each) as JPEG, PNG and DICOM CR, a broken file, and a label
    for a file that is not there."""
    return build(tmp_path_factory.mktemp("hospital"))


def _audit(data_dir: Path) -> list[Any]:
    """The audit rows of AI settings, oldest first."""
    query = select(AuditEvent).where(AuditEvent.action == "ai-setting").order_by(AuditEvent.id)
    with Archive.open(StorageSettings(data_dir=data_dir)) as archive, archive.read() as conn:
        return list(conn.execute(query).all())


def _settings(data_dir: Path) -> list[SettingRow]:
    with Archive.open(StorageSettings(data_dir=data_dir)) as archive:
        return list(rows(archive, MODEL))


def test_evaluate_prints_the_auc_the_thresholds_and_what_it_could_not_use(
    cases: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, labels = cases
    result = pacs(
        tmp_path, "model", "evaluate", MODEL, "--cases", str(folder), "--labels", str(labels)
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "24 (12 positive, 12 negative)" in out
    assert "ROC AUC" in out
    assert "95% CI" in out
    assert "threshold in force (bundle)" in out
    assert "0.8732" in out  # the bundle's threshold, no hospital having its own
    assert "threshold for sensitivity >= 0.95" in out
    assert "unreadable dicom/broken.dcm: a DICOM file with nothing readable in it" in out
    assert "no case for line 27 (jpeg/not-there.jpeg): no such file in the cases folder" in out
    assert "Scoring with cxr-pneumonia" in result.stderr  # the progress bar


def test_evaluate_json_figures_follow_from_the_scores(
    cases: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, labels = cases
    result = pacs(
        tmp_path, "model", "evaluate", MODEL, "--cases", str(folder), "--labels", str(labels),
        "--json", "--target-sensitivity", "0.9",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["cases"], report["positives"], report["negatives"]) == (24, 12, 12)
    scores = {case["case"]: case["score"] for case in report["scores"]}
    for name, expected in EXPECTED.items():  # the golden JPEGs keep their pinned scores
        assert scores[f"jpeg/{name}"] == pytest.approx(expected["score"], abs=1e-4)
    labels_of = np.array([case["label"] for case in report["scores"]])
    values = np.array([case["score"] for case in report["scores"]])
    assert report["auc"] == pytest.approx(roc_auc(labels_of, values))
    low, high = report["auc_95ci"]
    assert low <= report["auc"] <= high
    target = report["threshold_for_target"]
    assert target["threshold"] == pytest.approx(threshold_for(labels_of, values, 0.9))
    assert target["true_positives"] == 11  # 0.9 of 12 positives: 10.8, so 11
    assert target["sensitivity"] >= 0.9
    assert report["threshold_in_force"]["source"] == "bundle"
    assert report["unreadable"] == [
        {
            "case": "dicom/broken.dcm",
            "label": 1,
            "reason": "a DICOM file with nothing readable in it (empty or broken)",
        }
    ]
    assert report["unmatched_labels"] == [
        {"line": 27, "case": "jpeg/not-there.jpeg", "reason": "no such file in the cases folder"}
    ]
    assert report["labels_sha256"] == hashlib.sha256(labels.read_bytes()).hexdigest()
    assert report["applied"] is None
    assert not (tmp_path / "index.db").exists()  # evaluating alone creates no archive


def test_apply_sets_the_hospitals_threshold_with_who_and_on_what_evidence(
    cases: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, labels = cases
    applied = pacs(
        tmp_path, "model", "evaluate", MODEL, "--cases", str(folder), "--labels", str(labels),
        "--hospital", "BVDKLD", "--apply", "--by", "dr.lan", "--json",
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    report = json.loads(applied.stdout)
    threshold = report["threshold_for_target"]["threshold"]
    assert report["applied"] == {"hospital": "BVDKLD", "threshold": threshold, "by": "dr.lan"}

    [setting] = _settings(tmp_path)
    assert (setting.hospital, setting.threshold, setting.updated_by) == (
        "BVDKLD",
        threshold,
        "dr.lan",
    )
    evidence = setting.evidence or ""
    sha256 = hashlib.sha256(labels.read_bytes()).hexdigest()
    assert "24 cases (12 positive, 12 negative)" in evidence
    assert "ROC AUC" in evidence
    assert "target sensitivity 0.95" in evidence
    assert f"threshold {threshold:.4f}" in evidence
    assert sha256 in evidence
    assert str(folder.resolve()) in evidence
    [audit] = _audit(tmp_path)
    assert (audit.actor, audit.hospital, audit.outcome) == ("dr.lan", "BVDKLD", "success")
    assert f"threshold {threshold:.4f}" in audit.detail
    assert sha256 in audit.detail

    listed = pacs(tmp_path, "model", "list")
    assert listed.returncode == 0, listed.stderr
    [line] = [line for line in listed.stdout.splitlines() if "BVDKLD" in line]
    assert "dr.lan" in line
    assert f"{threshold:.4f}" in line
    assert "pacs model evaluate: 24 cases" in line

    again = pacs(
        tmp_path, "model", "evaluate", MODEL, "--cases", str(folder), "--labels", str(labels),
        "--hospital", "BVDKLD",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "threshold in force (hospital BVDKLD)" in again.stdout
    assert f"{threshold:.4f}" in again.stdout


def test_apply_refuses_too_few_cases_and_writes_nothing(
    cases: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, _ = cases
    few = tmp_path / "few.csv"
    few.write_text(
        "case,label\n"
        + "".join(f"jpeg/{name},{int(e['label'] == 'PNEUMONIA')}\n" for name, e in EXPECTED.items())
    )
    result = pacs(
        tmp_path / "archive", "model", "evaluate", MODEL, "--cases", str(folder),
        "--labels", str(few), "--hospital", "BVDKLD", "--apply",
    )  # fmt: skip
    assert result.returncode == 1
    assert "ROC AUC" in result.stdout  # the report is still shown
    assert "Not applied: 3 positive and 3 negative cases were scored" in result.stderr
    assert "at least 10 of each" in result.stderr
    assert _settings(tmp_path / "archive") == []
    assert _audit(tmp_path / "archive") == []


def test_apply_needs_a_hospital(cases: tuple[Path, Path], tmp_path: Path) -> None:
    folder, labels = cases
    result = pacs(
        tmp_path, "model", "evaluate", MODEL, "--cases", str(folder), "--labels", str(labels),
        "--apply",
    )  # fmt: skip
    assert result.returncode == 2
    assert "--apply needs --hospital" in result.stderr


def test_set_disables_and_enables_a_model_for_a_hospital_with_an_audit_row(
    tmp_path: Path,
) -> None:
    off = pacs(
        tmp_path, "model", "set", MODEL, "--hospital", "BVDKLD", "--disable", "--by", "bob",
        "--reason", "adults only here",
    )  # fmt: skip
    assert off.returncode == 0, off.stderr
    assert "cxr-pneumonia for hospital BVDKLD: disabled (set by bob)." in off.stdout
    assert "In force for hospital BVDKLD: off, threshold 0.8732 (bundle)." in off.stdout
    [setting] = _settings(tmp_path)
    assert (setting.enabled, setting.threshold, setting.evidence) == (
        False,
        None,
        "adults only here",
    )

    on = pacs(
        tmp_path, "model", "set", MODEL, "--hospital", "BVDKLD", "--enable", "--threshold", "0.5",
        "--by", "bob",
    )  # fmt: skip
    assert on.returncode == 0, on.stderr
    assert "In force for hospital BVDKLD: on, threshold 0.5000 (hospital BVDKLD)." in on.stdout
    site = pacs(tmp_path, "model", "set", MODEL, "--hospital", "*", "--threshold", "0.7")
    assert site.returncode == 0, site.stderr
    assert "cxr-pneumonia for the site default: threshold 0.7000" in site.stdout

    audit = _audit(tmp_path)
    assert [(a.actor, a.hospital, a.detail) for a in audit[:2]] == [
        ("bob", "BVDKLD", "cxr-pneumonia: disabled, evidence: adults only here"),
        ("bob", "BVDKLD", "cxr-pneumonia: enabled, threshold 0.5000"),
    ]
    assert (audit[2].hospital, audit[2].detail) == (None, "cxr-pneumonia: threshold 0.7000")

    listed = pacs(tmp_path, "model", "list")
    assert listed.returncode == 0, listed.stderr
    [hospital] = [line for line in listed.stdout.splitlines() if "BVDKLD" in line]
    assert "yes" in hospital
    assert "0.5000" in hospital
    [site_row] = [line for line in listed.stdout.splitlines() if "* (site default)" in line]
    assert "0.7000" in site_row
    assert "(default)" in site_row  # on or off: not said for the site


@pytest.mark.parametrize(
    "args",
    [
        ["evaluate", "no-such-model", "--cases", ".", "--labels", "README.md"],
        ["set", "no-such-model", "--hospital", "BVDKLD", "--enable"],
    ],
)
def test_an_unknown_model_is_refused_with_the_names_known(tmp_path: Path, args: list[str]) -> None:
    result = pacs(tmp_path, "model", *args)
    assert result.returncode == 2
    assert "No model named 'no-such-model'" in result.stderr
    assert re.search(r"known: [^)]*cxr-pneumonia", result.stderr)


def test_set_with_nothing_to_set(tmp_path: Path) -> None:
    result = pacs(tmp_path, "model", "set", MODEL, "--hospital", "BVDKLD")
    assert result.returncode == 2
    assert "Nothing to set" in result.stderr


def test_missing_labels_file(cases: tuple[Path, Path], tmp_path: Path) -> None:
    folder, _ = cases
    missing = tmp_path / "labels.csv"
    result = pacs(
        tmp_path, "model", "evaluate", MODEL, "--cases", str(folder), "--labels", str(missing)
    )
    assert result.returncode == 2
    assert "does not exist" in result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "file,diagnosis\na.jpeg,1\n",
            "the first line must be a header with the columns case,label",
        ),
        ("case,label\njpeg/a.jpeg,maybe\n", "line 2: label 'maybe' is not 1/0"),
        ("case,label\n", "has no label rows"),
    ],
)
def test_a_bad_labels_file_is_refused_with_the_line(
    cases: tuple[Path, Path], tmp_path: Path, text: str, message: str
) -> None:
    folder, _ = cases
    labels = tmp_path / "labels.csv"
    labels.write_text(text)
    result = pacs(
        tmp_path, "model", "evaluate", MODEL, "--cases", str(folder), "--labels", str(labels)
    )
    assert result.returncode == 2
    assert message in " ".join(result.stderr.split())


def test_list_without_an_archive_does_not_create_one(tmp_path: Path) -> None:
    result = pacs(tmp_path / "none", "model", "list")
    assert result.returncode == 0, result.stderr
    assert "cxr-pneumonia" in result.stdout
    assert "no hospital settings" in result.stdout
    assert not (tmp_path / "none").exists()


def test_a_threshold_is_checked_against_what_the_model_means_by_it(tmp_path: Path) -> None:
    """A score is between 0 and 1; the head-CT model's threshold is a volume in mL."""
    too_high = pacs(
        tmp_path, "model", "set", "cxr-pneumonia", "--hospital", "A", "--threshold", "1.5"
    )
    assert too_high.returncode == 2
    assert "cxr-pneumonia's threshold is a score between 0 and 1, not 1.5" in too_high.stderr
    volume = pacs(tmp_path, "model", "set", "blast-ct", "--hospital", "A", "--threshold", "5")
    assert volume.returncode == 0, volume.stderr
    assert "threshold 5 mL" in volume.stdout
    negative = pacs(tmp_path, "model", "set", "blast-ct", "--hospital", "A", "--threshold", "-1")
    assert negative.returncode == 2
    assert "blast-ct's threshold is in mL, 0 or more, not -1" in negative.stderr
