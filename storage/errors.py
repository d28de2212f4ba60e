"""The archive's errors, one tree for the whole package.

::

    StorageError
     ├── InvalidInstance          not a readable DICOM instance (truncated, garbage, lying lengths)
     │    └── InconsistentInstance readable, but it contradicts itself or its SOP class
     ├── StorageUnavailable       the index or the blob store cannot take the work now
     │    └── CommitUncertain      the index did not answer in time: the write may yet commit
     ├── InvalidQuery             a query key or value that cannot be matched
     ├── NotFound                 no such object in the archive
     ├── CannotTranscode          the pixel data cannot be put in the transfer syntax asked for
     ├── CannotDeidentify         an instance cannot be exported de-identified (burned-in text)
     ├── InvalidUser              a user that cannot be added or changed so (name, role, password)
     ├── InvalidGrant             a share, assignment or link that cannot be made so
     └── AlreadyClaimed           another radiologist is reading the study

The edges translate these in one table each: ``dicom_node.statuses`` to DIMSE statuses,
``viewer_api`` to HTTP statuses.
"""


class StorageError(Exception):
    """Base of every error the archive raises on purpose."""

    instance: tuple[str, str] | None = None
    """(SOP Class UID, SOP Instance UID) of the instance a store refused, once read."""

    @property
    def reason(self) -> str:
        """The sentence that goes into logs and error comments."""
        return str(self)


class InvalidInstance(StorageError):
    """The bytes cannot be read as a DICOM instance; nothing of it is stored."""


class InconsistentInstance(InvalidInstance):
    """The instance is readable but does not match its SOP class or contradicts the archive."""


class StorageUnavailable(StorageError):
    """The index or the blob store cannot take the write now (full, down, timed out)."""


class CommitUncertain(StorageUnavailable):
    """The index database did not answer in time after the write began: it may still commit
    it (whatever the write refers to, such as a blob, must be kept)."""


class InvalidQuery(StorageError):
    """A query names a key the archive cannot match or gives a malformed value."""


class NotFound(StorageError):
    """The object asked for is not in the archive."""


class CannotTranscode(StorageError):
    """An instance cannot be given in the transfer syntax asked for (no codec, bad pixels)."""


class CannotDeidentify(StorageError):
    """An instance cannot be de-identified safely (its pixels may show names); not exported."""


class InvalidUser(StorageError):
    """A user cannot be added or changed so: a taken or bad name, an unknown role, a weak
    password."""


class InvalidGrant(StorageError):
    """A share, reading assignment or capability link cannot be made or revoked so: no
    grantee, an expiry in the past, a study the granter does not own."""


class AlreadyClaimed(StorageError):
    """Another radiologist holds the study on the worklist (until their claim runs out)."""


class ReportConflict(StorageError):
    """The report cannot change so now: the study is not held by its writer, a final report
    can only be amended (with a reason), or someone signed a version first."""
