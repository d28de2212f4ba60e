"""What every DICOMweb resource needs of a request: valid UIDs."""

from storage.uids import uid_problem
from viewer_api.errors import BadRequest

DICOM_JSON = "application/dicom+json"


def check_uids(**uids: str | None) -> None:
    for name, value in uids.items():
        if value is not None and (problem := uid_problem(value)):
            raise BadRequest(f"{name} {value[:70]!r} {problem}")
