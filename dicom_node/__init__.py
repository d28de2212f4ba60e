"""The DIMSE edge of the archive: a pynetdicom listener standing on ``storage``.

The listener itself is :class:`dicom_node.node.DicomNode`; importing this package alone
loads only the settings.
"""

from dicom_node.config import DicomSettings

__all__ = ["DicomSettings"]
