"""Prometheus metrics of the DICOM listener."""

from prometheus_client import Counter, Histogram

ASSOCIATIONS = Counter(
    "pacs_dicom_associations_total", "Association requests, by outcome.", ["outcome"]
)
STORES = Counter("pacs_dicom_stores_total", "C-STORE requests answered, by status.", ["status"])
STORED_BYTES = Counter("pacs_dicom_stored_bytes_total", "Bytes of instances newly stored.")
FIND_SECONDS = Histogram(
    "pacs_dicom_find_seconds",
    "Time to answer a C-FIND, by level.",
    ["level"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RETRIEVES = Counter(
    "pacs_dicom_retrieve_instances_total", "Instances offered to C-MOVE/C-GET.", ["service"]
)
