"""The archive's errors as DIMSE statuses: one table per service, in one place."""

from pydicom.dataset import Dataset

from storage import (
    FailureReason,
    InconsistentInstance,
    InvalidInstance,
    InvalidQuery,
    StorageError,
    StorageUnavailable,
)

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
OUT_OF_RESOURCES = 0xA700
MOVE_DESTINATION_UNKNOWN = 0xA801
IDENTIFIER_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110
NO_SUCH_ACTION_TYPE = 0x0123
INVALID_ARGUMENT_VALUE = 0x0115

_STORE: list[tuple[type[StorageError], int]] = [
    (InconsistentInstance, 0xA900),  # Data Set does not match SOP Class (PS3.4 B.2.3)
    (InvalidInstance, CANNOT_UNDERSTAND),
    (StorageUnavailable, OUT_OF_RESOURCES),
]
_QUERY: list[tuple[type[StorageError], int]] = [
    (InvalidQuery, IDENTIFIER_DOES_NOT_MATCH),
    (StorageUnavailable, OUT_OF_RESOURCES),
]
COMMITMENT_FAILURE_REASONS = {
    FailureReason.NO_SUCH_INSTANCE: 0x0112,  # No such object instance (PS3.4 J.3.3)
    FailureReason.CLASS_INSTANCE_CONFLICT: 0x0119,
    FailureReason.CORRUPT: 0x0110,  # Processing failure
    FailureReason.NOT_UPLOADED: 0x0110,
}


def _lookup(table: list[tuple[type[StorageError], int]], error: StorageError) -> int:
    for kind, status in table:
        if isinstance(error, kind):
            return status
    return CANNOT_UNDERSTAND


def store_status(error: StorageError) -> int:
    return _lookup(_STORE, error)


def query_status(error: StorageError) -> int:
    return _lookup(_QUERY, error)


def status_dataset(status: int, comment: str) -> Dataset:
    """A status with its Error Comment (LO: at most 64 characters, no backslash)."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment.replace("\\", "/")[:64]
    return ds
