"""Two hooks into pynetdicom, so instances are never decoded on their way in or out.

In: with ``STORE_RECV_CHUNKED_DATASET`` pynetdicom writes each C-STORE dataset, as its
fragments arrive, to a ``NamedTemporaryFile`` in the system temp folder, after File Meta
Information it builds with pydicom. :func:`install` points those names at
:func:`_sink_for_dataset`, which, for associations the archive accepted, writes into the
blob store's staging folder instead (so the finished file is renamed into place, never
copied) and hashes it on the way, and at :func:`_write_meta`, which encodes the File Meta
Information directly. The C-STORE handler then takes the finished
:class:`~storage.StagedFile` with :func:`take_staged`.

Out: C-GET and C-MOVE sub-operations go through ``Association.send_c_store``, which
pynetdicom only calls with datasets. A :class:`StoredDataset` carries the path of a stored
file; the wrapped ``send_c_store`` sends that file's bytes as they are when the peer
accepted its transfer syntax (``STORE_SEND_CHUNKED_DATASET`` streams it), and falls back to
pydicom's re-encoding between the uncompressed syntaxes only when it must.

Both hooks were written against pynetdicom 3.0; ``tests/dicom_node/test_receive.py``
fails if an upgrade changes what they rely on.
"""

import logging
import tempfile
import threading
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import _config, dimse_messages, service_class
from pynetdicom.association import Association

from dicom_node.contexts import UNCOMPRESSED
from dicom_node.identifiers import Identifier
from storage import NotFound, StagedFile, StagingWriter, StorageUnavailable
from storage.staging import encode_file_meta

log = logging.getLogger(__name__)

_install_lock = threading.Lock()
_installed = False
_original_send_c_store = Association.send_c_store
_original_encode = service_class.encode  # type: ignore[attr-defined]
_original_write_meta = dimse_messages.write_file_meta_info  # type: ignore[attr-defined]
_sinks: "weakref.WeakValueDictionary[str, DatasetSink]" = weakref.WeakValueDictionary()
_sinks_lock = threading.Lock()


class DatasetSink:
    """What pynetdicom writes a received dataset into (its temporary-file interface)."""

    def __init__(
        self, directory: Path, source_aet: str | None, association: object | None = None
    ) -> None:
        self._writer = StagingWriter(directory, prefix="dimse-")
        self.name = str(self._writer.path)
        self.source_aet = source_aet
        self._association = weakref.ref(association) if association is not None else None
        self._finaliser = weakref.finalize(self, self._writer.discard)

    def belongs_to(self, association: object) -> bool:
        return self._association is not None and self._association() is association

    @property
    def file(self) -> "DatasetSink":
        return self  # pynetdicom calls ``.file.flush()`` after every fragment

    def write(self, data: bytes) -> int:
        return self._writer.write(data)

    def flush(self) -> None:
        """Buffered: the file is flushed and fsynced once, when it is complete."""

    def close(self) -> None:
        """pynetdicom closes the file after the handler ran; the handler already took it."""

    def discard(self) -> None:
        self._finaliser.detach()
        self._writer.discard()

    def finish(self) -> StagedFile:
        self._finaliser.detach()
        return self._writer.finish()


def _sink_for_dataset(*args: Any, **kwargs: Any) -> Any:
    """Stand-in for ``NamedTemporaryFile`` inside pynetdicom's DIMSE message decoding.

    It runs on the association's DUL thread, which knows its association.
    """
    assoc = getattr(threading.current_thread(), "assoc", None)
    directory = getattr(assoc, "staging_dir", None)
    if assoc is None or directory is None:
        return tempfile.NamedTemporaryFile(*args, **kwargs)
    calling = str(assoc.requestor.ae_title).strip() or None
    sink = DatasetSink(directory, calling, assoc)
    with _sinks_lock:
        _sinks[sink.name] = sink
    return sink


@dataclass(frozen=True, slots=True)
class _MetaRequest:
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str


def _meta_request(*, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> Any:
    """Stand-in for ``create_file_meta`` inside pynetdicom's DIMSE message decoding."""
    return _MetaRequest(str(sop_class_uid), str(sop_instance_uid), str(transfer_syntax))


def _write_meta(fp: Any, meta: Any) -> None:
    """Stand-in for ``write_file_meta_info``: encodes directly (and names the sender)."""
    if isinstance(meta, _MetaRequest):
        source = fp.source_aet if isinstance(fp, DatasetSink) else None
        fp.write(
            encode_file_meta(
                sop_class_uid=meta.sop_class_uid.strip("\0 "),
                sop_instance_uid=meta.sop_instance_uid.strip("\0 "),
                transfer_syntax_uid=meta.transfer_syntax,
                source_aet=source,
            )
        )
    else:
        _original_write_meta(fp, meta)


def take_staged(path: Path) -> StagedFile:
    """The finished staged file for a dataset pynetdicom received into `path`.

    Raises:
        StorageUnavailable: the dataset could not be written (disk full).
    """
    with _sinks_lock:
        sink = _sinks.pop(str(path), None)
    if sink is None:
        raise StorageUnavailable("the received dataset was not staged by the archive")
    return sink.finish()


class StoredDataset(Dataset):
    """A stand-in dataset for a stored instance, sent as its file's bytes by C-GET and C-MOVE.

    `local_file` gives the file for the time of the sending (a remote blob is copied into
    the staging folder just then); if it fails, the sub-operation fails with the reason
    logged, and the rest go on.
    """

    def __init__(
        self,
        local_file: Callable[[], AbstractContextManager[Path]],
        *,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
    ) -> None:
        super().__init__()
        self.SOPClassUID = sop_class_uid
        self.SOPInstanceUID = sop_instance_uid
        self.local_file = local_file
        self._stored_syntax = UID(transfer_syntax_uid)

    def payload_for(self, assoc: Association, path: Path) -> Path | Dataset:
        """The file itself if the peer accepted its transfer syntax, else a re-encodable copy."""
        accepted = {
            cx.transfer_syntax[0]
            for cx in assoc.accepted_contexts
            if cx.abstract_syntax == self.SOPClassUID and cx.as_scu
        }
        if self._stored_syntax in accepted or self._stored_syntax not in UNCOMPRESSED:
            return path  # a compressed file is sent as is or not at all
        if not accepted & set(UNCOMPRESSED):
            return path
        log.info(
            "Re-encoding %s from %s for %s, which did not accept its transfer syntax",
            self.SOPInstanceUID,
            self._stored_syntax.name,
            assoc.acceptor.ae_title,
        )
        return dcmread(path)


def _encode(dataset: Any, *args: Any, **kwargs: Any) -> bytes | None:
    """pynetdicom's ``encode``, except for identifiers that encode themselves."""
    if isinstance(dataset, Identifier):
        implicit, little = args[0], args[1]
        if little and not (args[2:] and args[2]):  # not big endian, not deflated
            return dataset.encoded(bool(implicit))
    return _original_encode(dataset, *args, **kwargs)


def _send_c_store(self: Association, dataset: Any, *args: Any, **kwargs: Any) -> Dataset:
    if not isinstance(dataset, StoredDataset):
        return _original_send_c_store(self, dataset, *args, **kwargs)
    try:
        with dataset.local_file() as path:
            payload = dataset.payload_for(self, path)
            return _original_send_c_store(self, payload, *args, **kwargs)
    except (NotFound, StorageUnavailable) as exc:
        # pynetdicom counts the sub-operation as failed and lists its UID.
        log.error("Instance %s cannot be sent: %s", dataset.SOPInstanceUID, exc)
        raise


def _any_uid(_value: Any) -> tuple[bool, str]:
    """pynetdicom's UID check for commands and negotiation, made a no-op: it aborts the
    association over a UID longer than 64 characters, where the archive answers the C-STORE
    with 0xA900 and the presentation context with "transfer syntax not supported"."""
    return True, ""


def discard_staged(path: Path | None) -> None:
    """Drop a dataset received into `path` that will not be stored."""
    with _sinks_lock:
        sink = _sinks.pop(str(path), None) if path is not None else None
    if sink is not None:
        sink.discard()


def discard_unfinished(association: object) -> int:
    """Drop the datasets an association was still receiving when it ended (aborted, or its
    connection lost, mid-transfer); how many. Else each would stay in the staging folder
    until the next start."""
    with _sinks_lock:
        mine = [(name, sink) for name, sink in _sinks.items() if sink.belongs_to(association)]
        for name, _ in mine:
            del _sinks[name]
    for _, sink in mine:
        sink.discard()
    return len(mine)


def install() -> None:
    """Install both hooks and the pynetdicom settings the archive relies on (idempotent)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        _config.STORE_RECV_CHUNKED_DATASET = True
        _config.STORE_SEND_CHUNKED_DATASET = True
        # The "standard" handlers decode and log every DIMSE message and PDU: a third of
        # the CPU time of a C-STORE. The archive logs what matters itself.
        _config.LOG_HANDLER_LEVEL = "none"
        # pynetdicom formats every C-FIND identifier for a debug line even when nobody logs
        # it: over a third of the cost of each match. The archive logs its own summary.
        _config.LOG_REQUEST_IDENTIFIERS = False
        _config.LOG_RESPONSE_IDENTIFIERS = False
        _config.VALIDATORS["UI"] = _any_uid  # the archive checks the UIDs it relies on
        dimse_messages.NamedTemporaryFile = _sink_for_dataset  # type: ignore[attr-defined]
        dimse_messages.create_file_meta = _meta_request  # type: ignore[attr-defined,assignment]
        dimse_messages.write_file_meta_info = _write_meta  # type: ignore[attr-defined,assignment]
        Association.send_c_store = _send_c_store  # type: ignore[method-assign]
        service_class.encode = _encode  # type: ignore[attr-defined,assignment]
        _installed = True
