"""Deflated Explicit VR Little Endian, inflated with a cap (a 510 KiB file can hold 512 MiB)."""

import contextlib
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian

from storage.errors import InvalidInstance

_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UC", b"UR", b"UT"}


@contextlib.contextmanager
def inflated(path: Path, meta: FileMetaDataset, limit: int) -> Iterator[Path]:
    """An Explicit VR Little Endian copy of a deflated file, next to it, for the caller's use.

    Raises InvalidInstance past `limit` inflated bytes, or if the deflate stream is corrupt.
    """
    target = path.with_name(path.name + ".inflated")
    dataset_offset = _dataset_offset(path)
    explicit_meta = FileMetaDataset(meta)
    explicit_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    try:
        with path.open("rb") as source, target.open("wb") as out:
            out.write(b"\0" * 128 + b"DICM")
            write_file_meta_info(out, explicit_meta)  # type: ignore[arg-type]
            source.seek(dataset_offset)
            _inflate_capped(source, out, limit)
        yield target
    finally:
        target.unlink(missing_ok=True)


def _dataset_offset(path: Path) -> int:
    """Offset of the first dataset element after the File Meta Information."""
    with path.open("rb") as fp:
        fp.seek(132)
        while True:
            element = fp.read(8)
            if len(element) < 8:
                raise InvalidInstance("the file ends inside the File Meta Information")
            group, _ = struct.unpack("<HH", element[:4])
            if group != 0x0002:
                return fp.tell() - 8
            if element[4:6] in _LONG_VRS:
                (length,) = struct.unpack("<I", fp.read(4))
            else:
                (length,) = struct.unpack("<H", element[6:8])
            fp.seek(length, 1)


def _inflate_capped(source: BinaryIO, out: BinaryIO, limit: int) -> None:
    """Inflate raw deflate data in bounded steps, so a bomb is stopped at `limit` bytes."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    written = 0
    while not inflater.eof:
        data = inflater.unconsumed_tail or source.read(1 << 20)
        if not data:
            break
        try:
            piece = inflater.decompress(data, 1 << 20)
        except zlib.error as exc:
            raise InvalidInstance(f"deflated dataset is corrupt: {exc}") from None
        written += len(piece)
        if written > limit:
            raise InvalidInstance(f"deflated dataset inflates past the limit of {limit} bytes")
        out.write(piece)
    tail = inflater.flush()
    if written + len(tail) > limit:
        raise InvalidInstance(f"deflated dataset inflates past the limit of {limit} bytes")
    out.write(tail)
