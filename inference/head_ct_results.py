"""The head-CT model's result as DICOM (highdicom): a binary segmentation of the lesions it
found, on the source slices, and a TID 1500 measurement report with the haemorrhage
volume, each lesion's volume and the threshold, each in its own series of the study,
each saying plainly that it is AI output and not a diagnosis.

Both carry the model's identity (name, version, SHA-256 of its weights, ensemble size) so
any viewer and any later audit can tell which model said what. Every UID derives from the
job (``uid_key``): a job run twice writes the same instances.
"""

from dataclasses import dataclass

import highdicom as hd
import numpy as np
from highdicom.sr import (
    AlgorithmIdentification,
    Comprehensive3DSR,
    DeviceObserverIdentifyingAttributes,
    FindingSite,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    QualitativeEvaluation,
    ReferencedSegment,
    SourceImageForMeasurementGroup,
    SourceSeriesForSegmentation,
    TrackingIdentifier,
    VolumetricROIMeasurementsAndQualitativeEvaluations,
)
from pydicom.sr.codedict import codes

from inference.blast_ct import EAH, IPH, IVH, OEDEMA, LesionVolumes
from inference.bundles import BundleInfo
from inference.results import DISCLAIMER, FINDING, derived_uid
from inference.volume import Volume

SR_SERIES_NUMBER = 9911
SEG_SERIES_NUMBER = 9912
MANUFACTURER = "Dalat PACS"
SOURCE = "Monteiro et al., Lancet Digit Health 2020;2:e314 (BLAST-CT)"

MORPHOLOGICALLY_ALTERED = hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure")
HEMORRHAGE = hd.sr.CodedConcept("50960005", "SCT", "Hemorrhage")
EDEMA = hd.sr.CodedConcept("79654002", "SCT", "Edema")
BRAIN = hd.sr.CodedConcept("12738006", "SCT", "Brain")
BRAIN_VENTRICLE = hd.sr.CodedConcept("35764002", "SCT", "Brain ventricle")
INTRACRANIAL_STRUCTURE = hd.sr.CodedConcept("128319008", "SCT", "Intracranial structure")
INTRACRANIAL_HEMORRHAGE = hd.sr.CodedConcept("1386000", "SCT", "Intracranial hemorrhage")
NO_HEMORRHAGE = hd.sr.CodedConcept("260413007", "SCT", "None")
CT_HEAD = hd.sr.CodedConcept("303653007", "SCT", "Computed tomography of head")
ML = hd.sr.CodedConcept("ml", "UCUM", "milliliter")
VOLUME = hd.sr.CodedConcept("118565006", "SCT", "Volume")
HAEMORRHAGE_VOLUME = hd.sr.CodedConcept(
    "HAEMORRHAGE_ML", "99DALAT", "Intracranial haemorrhage volume (IPH + EAH + IVH)"
)
THRESHOLD = hd.sr.CodedConcept("THRESHOLD", "99DALAT", "Decision threshold")


@dataclass(frozen=True, slots=True)
class LesionClass:
    label: int
    """The network's class number."""
    name: str
    property_type: hd.sr.CodedConcept
    region: hd.sr.CodedConcept
    volume_code: hd.sr.CodedConcept


LESION_CLASSES = (
    LesionClass(
        IPH,
        "Intraparenchymal haemorrhage",
        HEMORRHAGE,
        BRAIN,
        hd.sr.CodedConcept("IPH_ML", "99DALAT", "Intraparenchymal haemorrhage volume"),
    ),
    LesionClass(
        EAH,
        "Extra-axial haemorrhage",
        HEMORRHAGE,
        INTRACRANIAL_STRUCTURE,
        hd.sr.CodedConcept("EAH_ML", "99DALAT", "Extra-axial haemorrhage volume"),
    ),
    LesionClass(
        OEDEMA,
        "Perilesional oedema",
        EDEMA,
        BRAIN,
        hd.sr.CodedConcept("OEDEMA_ML", "99DALAT", "Perilesional oedema volume"),
    ),
    LesionClass(
        IVH,
        "Intraventricular haemorrhage",
        HEMORRHAGE,
        BRAIN_VENTRICLE,
        hd.sr.CodedConcept("IVH_ML", "99DALAT", "Intraventricular haemorrhage volume"),
    ),
)


def _version(model: BundleInfo) -> str:
    return f"{model.version} sha256:{model.weights_sha256[:16]}"


def lesion_segmentation(
    volume: Volume,
    labels: np.ndarray,
    model: BundleInfo,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    uid_key: list[str],
    ensemble: int,
) -> hd.seg.Segmentation | None:
    """A binary SEG of the lesion classes present in `labels` (the volume's grid), one
    segment each, its frames on the source slices; None when there is no lesion.
    `ensemble` is how many of the bundle's networks (the first ones) were run."""
    present = [lesion for lesion in LESION_CLASSES if bool((labels == lesion.label).any())]
    if not present:
        return None
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model.name,
        family=codes.cid7162.ArtificialIntelligence,
        version=_version(model),
        source=SOURCE,
        parameters={"ensemble": str(ensemble), "weights_sha256": model.weights_sha256},
    )
    segment_numbers = np.zeros(max(lesion.label for lesion in LESION_CLASSES) + 1, np.uint8)
    descriptions = []
    for number, lesion in enumerate(present, start=1):
        segment_numbers[lesion.label] = number
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=lesion.name,
                segmented_property_category=MORPHOLOGICALLY_ALTERED,
                segmented_property_type=lesion.property_type,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_uid=derived_uid(*uid_key, "segment", lesion.name),
                tracking_id=lesion.name,
                anatomic_regions=[lesion.region],
            )
        )
    seg = hd.seg.Segmentation(
        source_images=list(volume.slices),
        pixel_array=segment_numbers[labels],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid,
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=f"{model.name} {model.version}",
        software_versions=_version(model),
        device_serial_number=model.weights_sha256[:16],
        content_label="LESIONS",
        content_description=f"{DISCLAIMER}: {model.name} lesions",
    )
    seg.SeriesDescription = f"{DISCLAIMER}: {model.name} {model.version} segmentation"
    seg.SpecificCharacterSet = "ISO_IR 192"
    return seg


def haemorrhage_report(
    volume: Volume,
    model: BundleInfo,
    lesions: LesionVolumes,
    *,
    threshold_ml: float,
    series_instance_uid: str,
    sop_instance_uid: str,
    uid_key: list[str],
    ensemble: int,
    segmentation: hd.seg.Segmentation | None = None,
) -> Comprehensive3DSR:
    """The TID 1500 report: intracranial haemorrhage present or not at `threshold_ml`, the
    haemorrhage volume, each lesion class's volume, the threshold and the model; with one
    volumetric group per segment of `segmentation` when there is one."""
    algorithm = AlgorithmIdentification(
        name=model.name,
        version=_version(model),
        parameters=[f"ensemble of {ensemble}", f"weights {model.weights_sha256}"],
    )
    volumes = {
        IPH: lesions.iph,
        EAH: lesions.eah,
        OEDEMA: lesions.oedema,
        IVH: lesions.ivh,
    }

    def ml(name: hd.sr.CodedConcept, value: float) -> Measurement:
        return Measurement(name=name, value=round(value, 3), unit=ML, algorithm_id=algorithm)

    flagged = round(lesions.haemorrhage, 3) >= threshold_ml  # as the value the report shows
    groups: list[
        MeasurementsAndQualitativeEvaluations | VolumetricROIMeasurementsAndQualitativeEvaluations
    ] = [
        MeasurementsAndQualitativeEvaluations(
            tracking_identifier=TrackingIdentifier(
                uid=derived_uid(*uid_key, "sr-tracking"), identifier="AI triage"
            ),
            algorithm_id=algorithm,
            source_images=[
                SourceImageForMeasurementGroup(ds.SOPClassUID, ds.SOPInstanceUID)
                for ds in volume.slices
            ],
            measurements=[
                ml(HAEMORRHAGE_VOLUME, lesions.haemorrhage),
                ml(THRESHOLD, threshold_ml),
                *(ml(lesion.volume_code, volumes[lesion.label]) for lesion in LESION_CLASSES),
            ],
            qualitative_evaluations=[
                QualitativeEvaluation(
                    FINDING, INTRACRANIAL_HEMORRHAGE if flagged else NO_HEMORRHAGE
                )
            ],
        )
    ]
    if segmentation is not None:
        by_name = {lesion.name: lesion for lesion in LESION_CLASSES}
        for item in segmentation.SegmentSequence:
            lesion = by_name[str(item.SegmentLabel)]
            groups.append(
                VolumetricROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=TrackingIdentifier(
                        uid=str(item.TrackingUID), identifier=lesion.name
                    ),
                    referenced_segment=ReferencedSegment(
                        sop_class_uid=segmentation.SOPClassUID,
                        sop_instance_uid=segmentation.SOPInstanceUID,
                        segment_number=int(item.SegmentNumber),
                        source_series=SourceSeriesForSegmentation(
                            str(volume.slices[0].SeriesInstanceUID)
                        ),
                    ),
                    finding_type=lesion.property_type,
                    finding_sites=[FindingSite(lesion.region)],
                    algorithm_id=algorithm,
                    measurements=[ml(VOLUME, volumes[lesion.label])],
                )
            )
    observer = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=derived_uid("device", model.name, model.version, model.weights_sha256),
            name=f"Dalat PACS AI: {model.name}",
            manufacturer_name=MANUFACTURER,
            model_name=f"{model.name} {model.version}",
        ),
    )
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=observer),
        procedure_reported=CT_HEAD,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    evidence = [*volume.slices, *([segmentation] if segmentation is not None else [])]
    sr = Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=series_instance_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
    )
    sr.SeriesDescription = f"{DISCLAIMER}: {model.name} {model.version} haemorrhage volume"
    sr.SpecificCharacterSet = "ISO_IR 192"
    return sr
