"""The archive core: an index database and a blob store, kept apart, every object checksummed.

This package holds no protocol code and imports none of its siblings; ``dicom_node``,
``viewer_api`` and ``inference`` stand on it.
"""

from storage.archive import Archive, ArchiveStats, InstanceDetails, StoredInstance, StoreResult
from storage.attributes import BY_KEYWORD, UNIQUE_KEYS, Level
from storage.commitments import CommitmentResult, Commitments, FailureReason, PendingCommitment
from storage.config import DuplicatePolicy, NameMatching, StorageSettings
from storage.errors import (
    CannotDeidentify,
    CannotTranscode,
    InconsistentInstance,
    InvalidInstance,
    InvalidQuery,
    InvalidUser,
    NotFound,
    StorageError,
    StorageUnavailable,
)
from storage.index.records import Outcome, Source
from storage.peers import Peer, PeerError, PeerRegistry, aet_problem
from storage.query import Match, Query, build_query, header_datasets
from storage.staging import StagedFile, StagingWriter, stage_file

__all__ = [
    "BY_KEYWORD",
    "UNIQUE_KEYS",
    "Archive",
    "ArchiveStats",
    "CannotDeidentify",
    "CannotTranscode",
    "CommitmentResult",
    "Commitments",
    "DuplicatePolicy",
    "FailureReason",
    "InconsistentInstance",
    "InstanceDetails",
    "InvalidInstance",
    "InvalidQuery",
    "InvalidUser",
    "Level",
    "Match",
    "NameMatching",
    "NotFound",
    "Outcome",
    "Peer",
    "PeerError",
    "PeerRegistry",
    "PendingCommitment",
    "Query",
    "Source",
    "StagedFile",
    "StagingWriter",
    "StorageError",
    "StorageSettings",
    "StorageUnavailable",
    "StoreResult",
    "StoredInstance",
    "aet_problem",
    "build_query",
    "header_datasets",
    "stage_file",
]
