"""What one model run over one study gives back: its score, whether it flags the study, and
the DICOM objects (SR, SEG) it wrote, to be stored in the study."""

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ModelResult:
    score: float
    """The model's number: a probability for a classifier, millilitres for a segmenter."""
    flagged: bool
    finding: str
    """What the model looks for, as a reader says it: ``pneumonia pattern``."""
    series_instance_uid: str
    """The series the model read."""
    files: list[Path] = field(default_factory=list)
    """DICOM files written by the run (its SR, its SEG), in the order to store them."""
    result_sop_instance_uid: str | None = None
    """The SR that carries the finding."""
    detail: str | None = None
    """More for a reader, such as the volume of each kind of lesion."""
