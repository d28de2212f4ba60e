"""The DIMSE edge of the archive: a pynetdicom listener standing on ``storage``."""

from dicom_node.config import DicomSettings
from dicom_node.node import DicomNode

__all__ = ["DicomNode", "DicomSettings"]
