"""Instances in the transfer syntax asked for: as stored, streamed; or transcoded by the
decoding workers once and cached. And the multipart bodies that carry them."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from pydicom.uid import UID

from storage import Archive, CannotTranscode, InstanceDetails, NotFound
from storage.transcode import can_transcode, effective_syntax
from viewer_api.config import ApiSettings
from viewer_api.dicomweb.accept import ANY
from viewer_api.dicomweb.cache import TranscodeCache
from viewer_api.dicomweb.decoding import Decoder
from viewer_api.dicomweb.multipart import closing, part_header
from viewer_api.errors import NotAcceptable

log = logging.getLogger(__name__)


_CHUNK = 1 << 20
_PIECE = 4 << 20
"""Bytes per piece of a multi-instance response."""


def ranges(archive: Archive, key: str, start: int, length: int) -> Iterator[bytes]:
    """Bytes of a blob in ranged reads of a few MiB (S3: one GET each)."""
    end = start + length
    while start < end:
        size = min(_PIECE, end - start)
        yield archive.read_range(key, start, size)
        start += size


def has_pixels(instance: InstanceDetails) -> bool:
    return instance.pixel_data_offset is not None


def check_transcodable(instance: InstanceDetails, syntax: str) -> None:
    stored = instance.transfer_syntax_uid
    if syntax == ANY or can_transcode(stored, syntax, has_pixels=has_pixels(instance)):
        return
    raise NotAcceptable(
        f"instance {instance.sop_instance_uid} is stored in {UID(stored).name} and cannot "
        f"be sent in {syntax}; ask with transfer-syntax=*"
    )


def sent_syntax(instance: InstanceDetails, syntax: str) -> str:
    if syntax == ANY:
        return instance.transfer_syntax_uid
    return effective_syntax(instance.transfer_syntax_uid, syntax, has_pixels=has_pixels(instance))


class Renditions:
    """Instances in a syntax other than the stored one: transcoded once, then cached."""

    def __init__(self, archive: Archive, settings: ApiSettings, decoder: Decoder) -> None:
        self._archive = archive
        self._cache = TranscodeCache(
            archive.settings.data_dir / "cache" / "transcoded",
            settings.transcode_cache_mb * 1024 * 1024,
        )
        self._decoder = decoder

    def get(self, instance: InstanceDetails, syntax: str) -> bytes:
        """Raises CannotTranscode, NotFound, StorageUnavailable."""
        cached = self._cache.get(instance.blob_key, syntax)
        if cached is not None:
            return cached
        with self._archive.blob_file(instance.blob_key) as path:
            data = self._decoder.transcode(path, syntax)
        try:
            self._cache.put(instance.blob_key, syntax, data)
        except OSError as exc:  # a cache: the client still gets its rendition
            log.warning("Transcoded %s not cached: %s", instance.sop_instance_uid, exc)
        return data

    def prepare(self, found: list[InstanceDetails], syntax: str) -> None:
        """Transcode the first instance that needs it before anything is sent, so that a
        codec that fails fails the request with a status, not a broken stream."""
        for instance in found:
            sent = sent_syntax(instance, syntax)
            if sent != instance.transfer_syntax_uid:
                try:
                    self.get(instance, sent)
                except CannotTranscode as exc:
                    raise NotAcceptable(
                        f"{exc.reason}; ask with transfer-syntax=* for the instances as stored"
                    ) from None
                return

    @contextmanager
    def open_stored(self, instance: InstanceDetails) -> Iterator[BinaryIO]:
        try:
            with self._archive.blobs.open(instance.blob_key) as blob:
                yield blob
        except (NotFound, OSError) as exc:
            log.error("Instance %s cannot be read: %s", instance.sop_instance_uid, exc)
            raise

    def stream(self, instance: InstanceDetails, syntax: str) -> Iterator[bytes]:
        """The instance's file in `syntax`: as stored, streamed, or a cached rendition."""
        sent = sent_syntax(instance, syntax)
        if sent == instance.transfer_syntax_uid:
            with self.open_stored(instance) as blob:
                while chunk := blob.read(_CHUNK):
                    yield chunk
            return
        try:
            yield self.get(instance, sent)
        except CannotTranscode as exc:  # headers are sent: all that is left is to stop
            log.error("Instance %s: %s", instance.sop_instance_uid, exc.reason)
            raise


def length_header(found: list[InstanceDetails], syntax: str, boundary: str) -> dict[str, str]:
    """Content-Length when every instance goes as stored (their sizes are in the index):
    clients can show progress, and read a plain body rather than chunks."""
    total = len(closing(boundary))
    for instance in found:
        sent = sent_syntax(instance, syntax)
        if sent != instance.transfer_syntax_uid:
            return {}
        header = part_header(boundary, f"application/dicom; transfer-syntax={sent}")
        total += len(header) + instance.size + 2
    return {"Content-Length": str(total)}


def instance_stream(
    renditions: Renditions, found: list[InstanceDetails], syntax: str, boundary: str
) -> Iterator[bytes | memoryview]:
    """The multipart body in pieces of a few MiB. Each piece of a streaming response costs
    a hand-over between threads, so part headers and instances share pieces; instances
    sent as stored are read straight into the piece (no copy in between)."""
    buffer = bytearray(_PIECE)
    filled = 0

    def add(data: bytes) -> Iterator[memoryview]:
        nonlocal buffer, filled
        view = memoryview(data)
        while view:
            room = _PIECE - filled
            buffer[filled : filled + min(room, len(view))] = view[:room]
            filled += min(room, len(view))
            view = view[room:]
            if filled == _PIECE:
                yield memoryview(buffer)
                buffer, filled = bytearray(_PIECE), 0

    for instance in found:
        sent = sent_syntax(instance, syntax)
        yield from add(part_header(boundary, f"application/dicom; transfer-syntax={sent}"))
        if sent == instance.transfer_syntax_uid:
            with renditions.open_stored(instance) as blob:
                while True:
                    read = blob.readinto(memoryview(buffer)[filled:])  # type: ignore[attr-defined]
                    if not read:
                        break
                    filled += read
                    if filled == _PIECE:
                        yield memoryview(buffer)
                        buffer, filled = bytearray(_PIECE), 0
        else:
            for piece in renditions.stream(instance, syntax):
                yield from add(piece)
        yield from add(b"\r\n")
    yield from add(closing(boundary))
    yield memoryview(buffer)[:filled]
