"""Radiology reports: templates, the document a signature covers, its renderings (PDF,
DICOM Encapsulated PDF and SR, FHIR R4, HL7 v2) and its X.509 signature."""
