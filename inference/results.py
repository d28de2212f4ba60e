"""A model's result as DICOM: a TID 1500 measurement report (highdicom), in its own series
of the study, saying plainly that it is AI output and not a diagnosis.

The report holds, for the image the model read: the finding (pneumonia pattern present or
not at the model's threshold), the score, the threshold, and the model's identity (name,
version, SHA-256 of its weights), so any viewer and any later audit can tell which model
said what.
"""

import uuid

import highdicom as hd
from highdicom.sr import (
    AlgorithmIdentification,
    Comprehensive3DSR,
    DeviceObserverIdentifyingAttributes,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    QualitativeEvaluation,
    SourceImageForMeasurementGroup,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from inference.bundles import BundleInfo

FINDING = hd.sr.CodedConcept("121071", "DCM", "Finding")
PNEUMONIA = hd.sr.CodedConcept("233604007", "SCT", "Pneumonia")
NO_FINDING = hd.sr.CodedConcept("260413007", "SCT", "None")
THRESHOLD = hd.sr.CodedConcept("THRESHOLD", "99DALAT", "Decision threshold")
NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")
CHEST_X_RAY = hd.sr.CodedConcept("399208008", "SCT", "Plain chest X-ray")


def _concept(
    metadata: dict[str, object], key: str, default: hd.sr.CodedConcept
) -> hd.sr.CodedConcept:
    """A coded concept a bundle's metadata gives as [value, scheme, meaning], or `default`."""
    given = metadata.get(key)
    if isinstance(given, list) and len(given) == 3:
        return hd.sr.CodedConcept(*(str(part) for part in given))
    return default


SERIES_NUMBER = 9901
DISCLAIMER = "AI triage, not a diagnosis"


_UID_NAMESPACE = uuid.UUID("5f1d3c8e-6a7b-4c2d-9e0f-da1a70000001")
"""The namespace of the UIDs Dalat PACS derives from names (uuid5)."""


def derived_uid(*parts: str) -> str:
    """A UID that is always the same for the same parts (PS3.5 B.2: 2.25 and a UUID)."""
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, chr(0).join(parts)).int}"


def triage_report(
    image: Dataset,
    model: BundleInfo,
    *,
    score: float,
    threshold: float,
    series_instance_uid: str,
    sop_instance_uid: str,
) -> Dataset:
    """The SR for one image the model read, under the UIDs given."""
    algorithm = AlgorithmIdentification(
        name=model.name, version=f"{model.version} sha256:{model.weights_sha256[:16]}"
    )
    flagged = score >= threshold
    finding = _concept(model.metadata, "finding_code", PNEUMONIA)
    label = str(model.metadata.get("finding", finding.meaning))
    score_name = hd.sr.CodedConcept("SCORE", "99DALAT", f"{label.capitalize()} score")
    procedure = _concept(model.metadata, "procedure_code", CHEST_X_RAY)
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=generate_uid(), identifier="AI triage"),
        algorithm_id=algorithm,
        source_images=[SourceImageForMeasurementGroup(image.SOPClassUID, image.SOPInstanceUID)],
        measurements=[
            Measurement(
                name=score_name, value=round(score, 6), unit=NO_UNITS, algorithm_id=algorithm
            ),
            Measurement(
                name=THRESHOLD, value=round(threshold, 6), unit=NO_UNITS, algorithm_id=algorithm
            ),
        ],
        qualitative_evaluations=[
            QualitativeEvaluation(FINDING, finding if flagged else NO_FINDING)
        ],
    )
    observer = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=generate_uid(),
            name=f"Dalat PACS AI: {model.name}",
            manufacturer_name="Dalat PACS",
            model_name=f"{model.name} {model.version}",
        ),
    )
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=observer),
        procedure_reported=procedure,
        imaging_measurements=[group],
        title=codes.DCM.ImagingMeasurementReport,
    )
    sr = Comprehensive3DSR(
        evidence=[image],
        content=report,
        series_instance_uid=series_instance_uid,
        series_number=SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer="Dalat PACS",
        is_complete=True,
    )
    sr.SeriesDescription = f"{DISCLAIMER}: {model.name} {model.version}"
    sr.SpecificCharacterSet = "ISO_IR 192"
    return sr
