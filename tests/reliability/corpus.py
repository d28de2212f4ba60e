"""A corpus of malformed DICOM, made here from our own synthetic sample, never downloaded.

:func:`corpus` builds the items of eight families from one sample (a CT slice of
``tests/factories.py`` with two sequences added, one of undefined and one of defined
length), each item a name, its bytes and its family:

* ``truncation``: the sample cut at every element boundary (File Meta Information, dataset,
  sequences, items, delimiters, pixel data), inside every element header and inside every
  value; the offsets come from walking the sample's elements here.
* ``vr-length``: wrong VRs and wrong lengths: odd lengths, lengths past the end or off by
  two, VR bytes that are garbage, explicit data under an implicit transfer syntax and back.
* ``nesting``: sequences of undefined length nested up to 10,000 deep, ended or not.
* ``huge-length``: 0xFFFFFFF0 on Pixel Data and on small elements, 0xFFFFFFFF on elements
  that are not sequences, image sizes no file could hold.
* ``transfer-syntax``: unknown, private and malformed Transfer Syntax UIDs, File Meta
  Information that names one syntax for data in another, or that is missing or broken.
* ``preamble``: ELF, PE, ZIP and shell headers in the 128-byte preamble (CVE-2019-11687).
* ``bomb``: a Deflated Explicit VR Little Endian file of about 1 MiB that inflates to 1 GiB,
  compressed pixel data (JPEG, JPEG 2000, RLE) declaring 65535 x 65535 pixels, and
  encapsulated pixel data whose item structure is broken.
* ``uid``: UIDs too long, with letters, with path traversal, a NUL or rich markup, and
  SOP classes nobody knows.

Every item has a fresh SOP Instance UID derived from the corpus' `salt` and its name (all
of one length, so that a UID changes no offset), so that the same corpus can be sent over
several channels to one archive without one copy answering for another. The corpus is
deterministic: the same salt gives the same bytes.

Each item says what it may come to (``expect``): ``refused`` where storing it would keep a
broken file, ``stored`` where it is a valid instance in disguise (a polyglot preamble),
``either`` where a tolerant reader may keep it as received. It also gives its C-STORE form
(``dimse``: what a modality announces and the dataset bytes it sends), or None where the
fault lives in what C-STORE does not carry (the preamble, the File Meta Information).
"""

import hashlib
import io
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from tests import factories

Expect = Literal["stored", "refused", "either"]

FAMILIES = (
    "truncation",
    "vr-length",
    "nesting",
    "huge-length",
    "transfer-syntax",
    "preamble",
    "bomb",
    "uid",
)

LONG_VRS = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
PRIVATE_SOP_CLASS = "1.2.826.0.1.3680043.9.9999.1"
"""A well-formed UID under a private root: a SOP class no archive knows."""


@dataclass(frozen=True, slots=True)
class Dimse:
    """What a C-STORE carries: the request's UIDs, the context's transfer syntax, the data."""

    sop_class: str
    sop_instance: str
    transfer_syntax: str
    dataset: bytes


@dataclass(frozen=True, slots=True)
class Item:
    name: str
    family: str
    data: bytes
    """The file's bytes, as a STOW-RS part or an imported file holds them."""
    expect: Expect
    dimse: Dimse | None
    sop_instance_uid: str
    """The SOP Instance UID the item declares (which may be invalid)."""
    pixels: bool = False
    """Ask for it rendered, as a thumbnail and as frames if it is stored."""

    def write(self, folder: Path) -> Path:
        """The item as a file in `folder`, named after it."""
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name)
        path = folder / f"{self.family}-{safe}.dcm"
        path.write_bytes(self.data)
        return path


@dataclass(frozen=True, slots=True)
class Span:
    """One element (or item, or delimiter) of an encoded dataset."""

    offset: int
    header: int
    """Bytes of its header: 8 or 12."""
    length: int
    """Its value length as declared (UNDEFINED for undefined length)."""
    tag: int
    vr: bytes
    depth: int
    """0 at the top level, 1 inside the first sequence..."""

    @property
    def label(self) -> str:
        vr = f" {self.vr.decode('latin-1')}" if self.vr else ""
        return f"({self.tag >> 16:04X},{self.tag & 0xFFFF:04X}){vr}"


# -- encoding, by hand: the corpus needs what encoders refuse to write ----------------------


def uid_for(*parts: str) -> str:
    """A UID (2.25 + 38 digits, 43 characters) from `parts`: the same parts, the same UID."""
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    number = 10**37 + int.from_bytes(digest[:16], "big") % (9 * 10**37)
    return f"2.25.{number}"


def element(tag: int, vr: bytes, value: bytes, *, length: int | None = None) -> bytes:
    """An Explicit VR Little Endian element; `length` overrides the declared length."""
    declared = len(value) if length is None else length
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    if vr in LONG_VRS:
        return head + b"\0\0" + struct.pack("<I", declared) + value
    return head + struct.pack("<H", declared & 0xFFFF) + value


def implicit_element(tag: int, value: bytes, *, length: int | None = None) -> bytes:
    declared = len(value) if length is None else length
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, declared) + value


def _uid_value(uid: str) -> bytes:
    data = uid.encode("utf-8", "surrogateescape")
    return data + b"\0" if len(data) % 2 else data


def file_meta(
    sop_class: str, sop_instance: str, transfer_syntax: str, *, group_length: bool = True
) -> bytes:
    """File Meta Information (PS3.10 7.1), after the preamble and ``DICM``."""
    body = b"".join(
        (
            element(0x00020001, b"OB", b"\0\1"),
            element(0x00020002, b"UI", _uid_value(sop_class)),
            element(0x00020003, b"UI", _uid_value(sop_instance)),
            element(0x00020010, b"UI", _uid_value(transfer_syntax)),
            element(0x00020012, b"UI", _uid_value("1.2.826.0.1.3680043.9.9999.77")),
            element(0x00020013, b"SH", b"HOSTILE "),
        )
    )
    if not group_length:
        return body
    return element(0x00020000, b"UL", struct.pack("<I", len(body))) + body


def part10(meta: bytes, dataset: bytes, preamble: bytes = b"\0" * 128) -> bytes:
    return preamble + b"DICM" + meta + dataset


# -- reading, leniently: where each element of a file is -------------------------------------


def meta_end(data: bytes) -> int | None:
    """Offset of the dataset after the File Meta Information; None if there is none."""
    if data[128:132] != b"DICM":
        return None
    position = 132
    while position + 8 <= len(data):
        group = struct.unpack_from("<H", data, position)[0]
        if group != 0x0002:
            return position
        vr = data[position + 4 : position + 6]
        if vr in LONG_VRS:
            if position + 12 > len(data):
                return None
            position += 12 + struct.unpack_from("<I", data, position + 8)[0]
        else:
            position += 8 + struct.unpack_from("<H", data, position + 6)[0]
    return position if position == len(data) else None


def meta_values(data: bytes) -> dict[int, str]:
    """The File Meta Information's UI values, by tag."""
    values: dict[int, str] = {}
    end = meta_end(data)
    if end is None:
        return values
    for span in walk(data, 132, end):
        if span.vr == b"UI":
            start = span.offset + span.header
            raw = data[start : start + span.length]
            values[span.tag] = raw.decode("latin-1").rstrip("\0 ")
    return values


def walk(data: bytes, start: int, end: int, depth: int = 0) -> Iterator[Span]:
    """Every element from `start` to `end` (Explicit VR Little Endian), into sequences."""
    position = start
    while position + 8 <= end:
        group, number = struct.unpack_from("<HH", data, position)
        tag = (group << 16) | number
        if group == 0xFFFE:  # an item or a delimiter: tag and a 4-byte length, no VR
            length = struct.unpack_from("<I", data, position + 4)[0]
            yield Span(position, 8, length, tag, b"", depth)
            if tag in (ITEM_END, SEQUENCE_END):
                return
            value_end = _value_end(data, position + 8, length, end, depth + 1, item=True)
            position = value_end
            continue
        vr = data[position + 4 : position + 6]
        header = 12 if vr in LONG_VRS else 8
        if header == 12:
            length = struct.unpack_from("<I", data, position + 8)[0]
        else:
            length = struct.unpack_from("<H", data, position + 6)[0]
        yield Span(position, header, length, tag, vr, depth)
        if vr == b"SQ" or (length == UNDEFINED and tag == 0x7FE00010):
            yield from _inside(data, position + header, length, end, depth + 1)
            position = _value_end(data, position + header, length, end, depth + 1)
        else:
            position += header + length


def _inside(data: bytes, start: int, length: int, end: int, depth: int) -> Iterator[Span]:
    stop = end if length == UNDEFINED else min(end, start + length)
    position = start
    while position + 8 <= stop:
        group, number = struct.unpack_from("<HH", data, position)
        tag = (group << 16) | number
        item_length = struct.unpack_from("<I", data, position + 4)[0]
        yield Span(position, 8, item_length, tag, b"", depth)
        if tag == SEQUENCE_END:
            return
        if tag != ITEM:
            return
        if item_length == UNDEFINED:
            inner = list(walk(data, position + 8, stop, depth + 1))
            yield from inner
            position = inner[-1].offset + 8 if inner else stop
        elif data[start - 12 : start - 10] == b"\xe0\x7f":  # pixel data fragments
            position += 8 + item_length
        else:
            yield from walk(data, position + 8, position + 8 + item_length, depth + 1)
            position += 8 + item_length


def _value_end(
    data: bytes, start: int, length: int, end: int, depth: int, *, item: bool = False
) -> int:
    if length != UNDEFINED:
        return start + length
    spans = list(
        walk(data, start, end, depth) if item else _inside(data, start, length, end, depth)
    )
    closing = ITEM_END if item else SEQUENCE_END
    for span in spans:
        if span.tag == closing and span.depth == depth:
            return span.offset + 8
    return end


def top_level(data: bytes) -> list[Span]:
    end = meta_end(data)
    assert end is not None
    return [span for span in walk(data, end, len(data)) if span.depth == 0]


def find(data: bytes, tag: int) -> Span:
    """The top-level element `tag` of a Part 10 file."""
    for span in top_level(data):
        if span.tag == tag:
            return span
    raise KeyError(f"{tag:08X}")


def replace_element(data: bytes, tag: int, new: bytes) -> bytes:
    span = find(data, tag)
    return data[: span.offset] + new + data[span.offset + span.header + span.length :]


def insert_before(data: bytes, tag: int, new: bytes) -> bytes:
    """`new` inserted where top-level element `tag` (or the first after it) begins."""
    for span in top_level(data):
        if span.tag >= tag:
            return data[: span.offset] + new + data[span.offset :]
    return data + new


# -- the sample ------------------------------------------------------------------------------


class Maker:
    """Items of one family, each with its own SOP Instance UID."""

    def __init__(self, salt: str, family: str) -> None:
        self.salt = salt
        self.family = family
        self.study = uid_for(salt, family, "study")
        self.series = uid_for(salt, family, "series")

    def uid(self, name: str) -> str:
        return uid_for(self.salt, self.family, name)

    def dataset(self, name: str, **kwargs: object) -> Dataset:
        """The sample: a CT slice with Other Patient IDs Sequence (undefined length) and
        Referenced Study Sequence (defined length)."""
        ds = factories.image(
            study_uid=self.study,
            series_uid=self.series,
            sop_uid=self.uid(name),
            seed=7,
            **kwargs,  # type: ignore[arg-type]
        )
        citizen = Dataset()
        citizen.PatientID = "079123456789"
        citizen.IssuerOfPatientID = "CCCD"
        citizen.is_undefined_length_sequence_item = True
        ds.OtherPatientIDsSequence = Sequence([citizen])
        ds["OtherPatientIDsSequence"].is_undefined_length = True
        study = Dataset()
        study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
        study.ReferencedSOPInstanceUID = uid_for(self.salt, "referenced")
        ds.ReferencedStudySequence = Sequence([study])
        return ds

    def file(self, name: str, **kwargs: object) -> bytes:
        """The sample as a Part 10 file in its transfer syntax (explicit LE by default)."""
        ds = self.dataset(name, **kwargs)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()

    def item(
        self,
        name: str,
        data: bytes,
        expect: Expect,
        *,
        dimse: Dimse | Literal["from-file"] | None = "from-file",
        pixels: bool = False,
    ) -> Item:
        if dimse == "from-file":
            dimse = dimse_of(data)
        return Item(name, self.family, data, expect, dimse, self.uid(name), pixels)


def dimse_of(data: bytes) -> Dimse | None:
    """The C-STORE a modality would make of a Part 10 file (its meta's UIDs, its dataset)."""
    end = meta_end(data)
    if end is None:
        return None
    values = meta_values(data)
    try:
        return Dimse(values[0x00020002], values[0x00020003], values[0x00020010], data[end:])
    except KeyError:
        return None


def _with_dataset_syntax(data: bytes, transfer_syntax: str) -> bytes:
    """The file with the same dataset bytes under other File Meta Information."""
    end = meta_end(data)
    assert end is not None
    values = meta_values(data)
    meta = file_meta(values[0x00020002], values[0x00020003], transfer_syntax)
    return part10(meta, data[end:])


# -- (a) truncations -----------------------------------------------------------------------


def truncations(salt: str) -> list[Item]:
    """The sample cut at each element boundary, inside each header and inside each value."""
    make = Maker(salt, "truncation")
    placeholder = make.uid("placeholder")
    whole = make.file("placeholder")
    end = meta_end(whole)
    assert end is not None
    cuts: dict[int, tuple[str, Span]] = {}
    for span in walk(whole, 132, len(whole)):
        cuts.setdefault(span.offset, ("boundary", span))
        cuts.setdefault(span.offset + span.header // 2 + 1, ("mid-header", span))
        if span.length != UNDEFINED and span.length >= 2:
            cuts.setdefault(span.offset + span.header + span.length // 2, ("mid-value", span))
    cuts.setdefault(len(whole) - 1, ("last byte missing", find(whole, 0x7FE00010)))
    items = []
    for cut, (kind, span) in sorted(cuts.items()):
        name = f"{cut:05d} {kind} {span.label} depth {span.depth}"
        uid = make.uid(name)
        data = whole[:cut].replace(placeholder.encode(), uid.encode())
        clean = kind == "boundary" and span.depth == 0 and cut >= end
        expect: Expect = "either" if clean else "refused"
        dimse = dimse_of(data) if cut >= end else None
        if dimse is None and cut >= end:
            values = meta_values(whole)
            dimse = Dimse(values[0x00020002], uid, values[0x00020010], data[end:])
        items.append(make.item(name, data, expect, dimse=dimse))
    return items


# -- (b) wrong VRs and lengths -------------------------------------------------------------


def wrong_vrs_and_lengths(salt: str) -> list[Item]:
    make = Maker(salt, "vr-length")
    items = []

    def edit(name: str, tag: int, new: bytes, expect: Expect = "either") -> None:
        data = make.file(name)
        items.append(make.item(name, replace_element(data, tag, new), expect))

    edit("odd length SH", 0x00200010, element(0x00200010, b"SH", b"1"))
    edit("odd length US Rows", 0x00280010, element(0x00280010, b"US", b"\x10\x00\x00"))
    edit("empty US Rows", 0x00280010, element(0x00280010, b"US", b""))
    edit("US Rows of 4 bytes", 0x00280010, element(0x00280010, b"US", b"\x10\x00\x10\x00"))
    edit(
        "short-VR length past the end",
        0x00100010,
        element(0x00100010, b"PN", b"Nguyen^Van", length=0xFFFF),
        "refused",
    )
    edit(
        "long-VR length past the end",
        0x00081030,
        element(0x00081030, b"UT", b"Head CT", length=100_000),
        "refused",
    )
    edit("length 2 too long", 0x00080020, element(0x00080020, b"DA", b"20261120", length=10))
    edit("length 2 too short", 0x00080020, element(0x00080020, b"DA", b"20261120", length=6))
    for label, vr in (
        ("NUL", b"\0\0"),
        ("0xFFFE", b"\xff\xfe"),
        ("lower case", b"lo"),
        ("digits", b"12"),
        ("unknown letters", b"QQ"),
    ):
        data = make.file(f"garbage VR {label}")
        span = find(data, 0x00100020)  # Patient ID, LO
        data = data[: span.offset + 4] + vr + data[span.offset + 6 :]
        items.append(make.item(f"garbage VR {label}", data, "either"))
    edit(
        "text declared SQ",
        0x00081030,
        element(0x00081030, b"SQ", b"Chup CT so nao  "),
    )
    edit("Rows declared OB", 0x00280010, element(0x00280010, b"OB", b"\x10\x00"))
    edit(
        "sequence of garbage items",
        0x00081110,
        element(0x00081110, b"SQ", struct.pack("<HHI", 0xFFFE, 0xE000, 6) + b"garbage!"),
    )
    edit(
        "sequence shorter than its item",
        0x00081110,
        element(0x00081110, b"SQ", struct.pack("<HHI", 0xFFFE, 0xE000, 40) + b"\0" * 8),
    )
    edit(
        "item length past its sequence",
        0x00081110,
        element(0x00081110, b"SQ", struct.pack("<HHI", 0xFFFE, 0xE000, 0x7FFFFFF0)),
    )
    data = make.file("item tag at the top level")
    data = insert_before(data, 0x00100010, struct.pack("<HHI", 0xFFFE, 0xE000, 4) + b"abcd")
    items.append(make.item("item tag at the top level", data, "either"))
    data = make.file("sequence delimiter at the top level")
    data = insert_before(data, 0x00100010, struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    items.append(make.item("sequence delimiter at the top level", data, "either"))
    data = make.file("elements out of order")
    first, second = find(data, 0x00100010), find(data, 0x00100020)
    a = data[first.offset : first.offset + first.header + first.length]
    b = data[second.offset : second.offset + second.header + second.length]
    data = data[: first.offset] + b + a + data[second.offset + len(b) :]
    items.append(make.item("elements out of order", data, "either"))
    data = make.file("element twice")
    name_span = find(data, 0x00100010)
    name_bytes = data[name_span.offset : name_span.offset + name_span.header + name_span.length]
    data = data[: name_span.offset] + name_bytes + data[name_span.offset :]
    items.append(make.item("element twice", data, "either"))

    # Explicit and implicit encodings swapped under the File Meta Information.
    implicit = make.file("implicit data, explicit meta", transfer_syntax=ImplicitVRLittleEndian)
    items.append(
        make.item(
            "implicit data, explicit meta",
            _with_dataset_syntax(implicit, ExplicitVRLittleEndian),
            "either",
        )
    )
    explicit = make.file("explicit data, implicit meta")
    items.append(
        make.item(
            "explicit data, implicit meta",
            _with_dataset_syntax(explicit, ImplicitVRLittleEndian),
            "either",
        )
    )
    little = make.file("little endian data, big endian meta")
    items.append(
        make.item(
            "little endian data, big endian meta",
            _with_dataset_syntax(little, ExplicitVRBigEndian),
            "either",
        )
    )
    return items


# -- (c) deep nesting ------------------------------------------------------------------------

_CONTENT_SEQUENCE = 0x0040A730
_VALUE_TYPE = 0x0040A040


def nested(depth: int, *, defined: bool = False, ended: bool = True) -> bytes:
    """Content Sequence in an item of Content Sequence... `depth` times, as explicit LE."""
    inner = element(_VALUE_TYPE, b"CS", b"TEXT")
    if defined:
        for _ in range(depth):
            item = struct.pack("<HHI", 0xFFFE, 0xE000, len(inner)) + inner
            inner = element(_CONTENT_SEQUENCE, b"SQ", item)
        return inner
    head = element(_CONTENT_SEQUENCE, b"SQ", b"", length=UNDEFINED) + struct.pack(
        "<HHI", 0xFFFE, 0xE000, UNDEFINED
    )
    tail = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return head * depth + inner + (tail * depth if ended else b"")


def deep_nesting(salt: str) -> list[Item]:
    make = Maker(salt, "nesting")
    items = []
    for depth in (8, 40, 120, 180, 240, 1000, 10_000):
        name = f"{depth} levels, ended"
        data = insert_before(make.file(name), 0x7FE00010, nested(depth))
        expect: Expect = "stored" if depth <= 8 else "either"
        items.append(make.item(name, data, expect, pixels=depth <= 240))
    name = "10000 levels of defined length"
    data = insert_before(make.file(name), 0x7FE00010, nested(10_000, defined=True))
    items.append(make.item(name, data, "either"))
    for depth in (40, 10_000):
        name = f"{depth} levels, never ended"
        data = make.file(name)
        data = data[: find(data, 0x00280002).offset] + nested(depth, ended=False)
        items.append(make.item(name, data, "refused"))
    return items


# -- (d) huge declared lengths ---------------------------------------------------------------


def huge_lengths(salt: str) -> list[Item]:
    make = Maker(salt, "huge-length")
    items = []

    def edit(name: str, tag: int, new: bytes, expect: Expect = "refused", **kw: object) -> None:
        data = make.file(name, **kw)
        items.append(make.item(name, replace_element(data, tag, new), expect))

    pixels = bytes(512)
    edit(
        "Pixel Data of 0xFFFFFFF0",
        0x7FE00010,
        element(0x7FE00010, b"OW", pixels, length=0xFFFFFFF0),
    )
    edit(
        "Pixel Data of 0x7FFFFFF0",
        0x7FE00010,
        element(0x7FE00010, b"OW", pixels, length=0x7FFFFFF0),
    )
    edit(
        "Pixel Data of 0xFFFFFFFF, native",
        0x7FE00010,
        element(0x7FE00010, b"OW", pixels, length=UNDEFINED),
    )
    edit("small UT of 0xFFFFFFF0", 0x00081030, element(0x00081030, b"UT", b"CT", length=0xFFFFFFF0))
    edit("small UT of 0xFFFFFFFF", 0x00081030, element(0x00081030, b"UT", b"CT", length=UNDEFINED))
    edit(
        "OB of 0xFFFFFFFF ended by a delimiter",
        0x00081030,
        element(
            0x00081030, b"OB", b"CT" + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0), length=UNDEFINED
        ),
        "refused",
    )
    implicit = make.file(
        "implicit: Patient Name of 0xFFFFFFF0", transfer_syntax=ImplicitVRLittleEndian
    )
    items.append(
        _implicit_edit(
            make, "implicit: Patient Name of 0xFFFFFFF0", implicit, 0x00100010, 0xFFFFFFF0
        )
    )
    implicit = make.file(
        "implicit: Patient Name of 0xFFFFFFFF", transfer_syntax=ImplicitVRLittleEndian
    )
    items.append(
        _implicit_edit(
            make, "implicit: Patient Name of 0xFFFFFFFF", implicit, 0x00100010, UNDEFINED
        )
    )
    implicit = make.file(
        "implicit: Pixel Data of 0xFFFFFFF0", transfer_syntax=ImplicitVRLittleEndian
    )
    items.append(
        _implicit_edit(make, "implicit: Pixel Data of 0xFFFFFFF0", implicit, 0x7FE00010, 0xFFFFFFF0)
    )
    name = "65535 x 65535 x 100000 frames, native"
    data = make.file(name)
    data = replace_element(data, 0x00280010, element(0x00280010, b"US", b"\xff\xff"))
    data = replace_element(data, 0x00280011, element(0x00280011, b"US", b"\xff\xff"))
    data = insert_before(data, 0x00280010, element(0x00280008, b"IS", b"100000"))
    items.append(make.item(name, data, "refused"))
    name = "Rows of 0"
    data = make.file(name)
    data = replace_element(data, 0x00280010, element(0x00280010, b"US", b"\0\0"))
    items.append(make.item(name, data, "refused"))
    for frames in (b"0 ", b"-1", b"1e9 ", b"abc "):
        name = f"Number of Frames {frames.decode().strip()}"
        data = insert_before(make.file(name), 0x00280010, element(0x00280008, b"IS", frames))
        items.append(make.item(name, data, "either"))
    return items


def _implicit_edit(make: Maker, name: str, data: bytes, tag: int, length: int) -> Item:
    """An implicit VR file whose element `tag` declares `length` (its value kept)."""
    end = meta_end(data)
    assert end is not None
    position = end
    while position + 8 <= len(data):
        group, number, declared = struct.unpack_from("<HHI", data, position)
        if (group << 16) | number == tag:
            data = data[: position + 4] + struct.pack("<I", length) + data[position + 8 :]
            break
        if declared == UNDEFINED:  # the sample's only such sequence has no nested ones
            position = data.index(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0), position) + 8
        else:
            position += 8 + declared
    else:
        raise KeyError(f"{tag:08X}")
    return make.item(name, data, "refused")


# -- (e) transfer syntaxes -------------------------------------------------------------------


def transfer_syntaxes(salt: str) -> list[Item]:
    make = Maker(salt, "transfer-syntax")
    items = []
    for name, syntax in (
        ("unknown UID", "1.2.840.10008.1.2.4.999"),
        ("private UID", "1.2.826.0.1.3680043.9.9999.1.2"),
        ("not a UID", "Explicit VR Little Endian"),
        ("path traversal", "../../etc/passwd"),
        ("empty", ""),
        ("70 characters", "1." + "2" * 68),
        ("Deflated, data not deflated", DeflatedExplicitVRLittleEndian),
        ("JPEG Baseline, data native", JPEGBaseline8Bit),
    ):
        data = _with_dataset_syntax(make.file(name), syntax)
        items.append(make.item(name, data, "refused"))
    native = make.file("Explicit, pixel data encapsulated", transfer_syntax=JPEG2000Lossless)
    items.append(
        make.item(
            "Explicit, pixel data encapsulated",
            _with_dataset_syntax(native, ExplicitVRLittleEndian),
            "refused",
        )
    )

    whole = make.file("no File Meta Information")
    end = meta_end(whole)
    assert end is not None
    items.append(
        make.item("no File Meta Information", whole[end:], "stored", dimse=dimse_of(whole))
    )
    implicit = make.file("no meta, implicit", transfer_syntax=ImplicitVRLittleEndian)
    implicit_end = meta_end(implicit)
    assert implicit_end is not None
    items.append(
        make.item("no meta, implicit", implicit[implicit_end:], "stored", dimse=dimse_of(implicit))
    )
    data = make.file("meta without preamble")
    items.append(make.item("meta without preamble", data[128:], "either", dimse=None))
    data = make.file("DICM, then no meta")
    end = meta_end(data)
    assert end is not None
    items.append(make.item("DICM, then no meta", data[:132] + data[end:], "either", dimse=None))
    data = make.file("meta without group length")
    values = meta_values(data)
    end = meta_end(data)
    assert end is not None
    meta = file_meta(
        values[0x00020002], values[0x00020003], ExplicitVRLittleEndian, group_length=False
    )
    items.append(
        make.item("meta without group length", part10(meta, data[end:]), "either", dimse=None)
    )
    data = make.file("meta group length past the end")
    data = data[:140] + struct.pack("<I", 0x7FFFFFF0) + data[144:]
    items.append(make.item("meta group length past the end", data, "either", dimse=None))
    data = make.file("magic DICN")
    items.append(make.item("magic DICN", data[:128] + b"DICN" + data[132:], "refused", dimse=None))
    data = make.file("meta twice")
    end = meta_end(data)
    assert end is not None
    items.append(make.item("meta twice", data[:end] + data[132:], "either", dimse=None))
    return items


# -- (f) polyglot preambles ------------------------------------------------------------------


def _preambles() -> dict[str, bytes]:
    elf = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHI", 2, 0x3E, 1)
    pe = bytearray(128)
    pe[0:2] = b"MZ"
    pe[0x3C:0x40] = struct.pack("<I", 0x40)
    pe[0x40:0x44] = b"PE\0\0"
    zip_header = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(16) + b"\x08\x00\x00\x00payload!"
    shell = b"#!/bin/sh\nrm -rf / --no-preserve-root # never run\n"
    return {
        "ELF": elf.ljust(128, b"\0"),
        "PE": bytes(pe),
        "ZIP": zip_header.ljust(128, b"\0"),
        "shell script": shell.ljust(128, b"\0"),
        "all 0xFF": b"\xff" * 128,
    }


def polyglot_preambles(salt: str) -> list[Item]:
    make = Maker(salt, "preamble")
    items = []
    for name, preamble in _preambles().items():
        data = make.file(name)
        items.append(make.item(name, preamble + data[128:], "stored", dimse=None))
    return items


# -- (g) bombs -------------------------------------------------------------------------------

BOMB_INFLATED = 1 << 30
"""What the deflate bomb inflates to: 1 GiB of pixel data from a file of about 1 MiB."""


def deflate_bomb(dataset: bytes, pixel_bytes: int) -> bytes:
    """`dataset` followed by Pixel Data of `pixel_bytes` zeros, raw-deflated.

    The zeros are one compressed megabyte repeated: after a full flush a deflate block
    refers to nothing before it, so the same bytes can follow each other.
    """
    head = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    start = head.compress(dataset + element(0x7FE00010, b"OW", b"", length=pixel_bytes))
    start += head.flush(zlib.Z_FULL_FLUSH)
    block = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    megabyte = block.compress(bytes(1 << 20)) + block.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    finish = end.compress(bytes(pixel_bytes % (1 << 20))) + end.flush(zlib.Z_FINISH)
    return start + megabyte * (pixel_bytes >> 20) + finish


def _deflated(dataset: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(dataset) + packer.flush()


def _jpeg(width: int, height: int) -> bytes:
    """A tiny grey JPEG whose frame header then claims width x height."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _jpeg2000(width: int, height: int) -> bytes:
    """A tiny JPEG 2000 codestream whose SIZ marker then claims width x height."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buffer, "JPEG2000", no_jp2=True)
    data = bytearray(buffer.getvalue())
    siz = data.find(b"\xff\x51")
    data[siz + 6 : siz + 14] = struct.pack(">II", width, height)  # Xsiz, Ysiz
    data[siz + 22 : siz + 30] = struct.pack(">II", width, height)  # XTsiz, YTsiz
    return bytes(data)


def _rle() -> bytes:
    """One RLE segment (PS3.5 G.3) of a few replicate runs: far less than 65535 rows."""
    header = struct.pack("<16I", 1, 64, *([0] * 14))
    return header + b"\x81\x00" * 64


def _encapsulated(
    make: Maker, name: str, syntax: str, value: bytes, *, rows: int, columns: int, frames: int = 1
) -> bytes:
    """The sample in `syntax` with 8-bit `rows` x `columns` and `value` as Pixel Data."""
    data = make.file(name, transfer_syntax=syntax)
    data = replace_element(data, 0x00280010, element(0x00280010, b"US", struct.pack("<H", rows)))
    data = replace_element(data, 0x00280011, element(0x00280011, b"US", struct.pack("<H", columns)))
    for tag, number in ((0x00280100, 8), (0x00280101, 8), (0x00280102, 7)):
        data = replace_element(data, tag, element(tag, b"US", struct.pack("<H", number)))
    if frames != 1:
        text = str(frames).encode()
        text += b" " * (len(text) % 2)
        data = insert_before(data, 0x00280010, element(0x00280008, b"IS", text))
    return replace_element(data, 0x7FE00010, element(0x7FE00010, b"OB", value, length=UNDEFINED))


def _fragments(*fragments: bytes, table: bytes = b"") -> bytes:
    out = struct.pack("<HHI", 0xFFFE, 0xE000, len(table)) + table
    for fragment in fragments:
        out += struct.pack("<HHI", 0xFFFE, 0xE000, len(fragment)) + fragment
    return out + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def bombs(salt: str) -> list[Item]:
    make = Maker(salt, "bomb")
    items = []

    name = "deflate bomb, 1 MiB to 1 GiB"
    sample = make.file(name)  # then 16384 x 32768 x 16 bits: 1 GiB
    sample = replace_element(sample, 0x00280010, element(0x00280010, b"US", b"\0\x40"))
    sample = replace_element(sample, 0x00280011, element(0x00280011, b"US", b"\0\x80"))
    end = meta_end(sample)
    assert end is not None
    pixel_start = find(sample, 0x7FE00010).offset
    meta = file_meta(CTImageStorage, make.uid(name), DeflatedExplicitVRLittleEndian)
    body = deflate_bomb(sample[end:pixel_start], BOMB_INFLATED)
    items.append(make.item(name, part10(meta, body), "refused"))
    name = "deflated, corrupt stream"
    sample = make.file(name)
    end = meta_end(sample)
    assert end is not None
    meta = file_meta(CTImageStorage, make.uid(name), DeflatedExplicitVRLittleEndian)
    packed = bytearray(_deflated(sample[end:]))
    packed[len(packed) // 2 :] = bytes(len(packed) - len(packed) // 2)
    items.append(make.item(name, part10(meta, bytes(packed)), "refused"))
    name = "deflated, a valid small instance"
    sample = make.file(name)
    end = meta_end(sample)
    assert end is not None
    meta = file_meta(CTImageStorage, make.uid(name), DeflatedExplicitVRLittleEndian)
    items.append(make.item(name, part10(meta, _deflated(sample[end:])), "either"))

    huge = 65535
    for name, syntax, fragment in (
        ("JPEG declaring 65535 x 65535", JPEGBaseline8Bit, _jpeg(huge, huge)),
        ("JPEG 2000 declaring 65535 x 65535", JPEG2000Lossless, _jpeg2000(huge, huge)),
        ("RLE for 65535 x 65535", RLELossless, _rle()),
    ):
        data = _encapsulated(make, name, syntax, _fragments(fragment), rows=huge, columns=huge)
        items.append(make.item(name, data, "either", pixels=True))
    name = "JPEG, 1000000 frames declared, one fragment"
    data = _encapsulated(
        make, name, JPEGBaseline8Bit, _fragments(_jpeg(8, 8)), rows=8, columns=8, frames=1_000_000
    )
    items.append(make.item(name, data, "either", pixels=True))
    name = "JPEG, offset table pointing past the end"
    table = struct.pack("<II", 0, 0x7FFFFFF0)
    data = _encapsulated(
        make,
        name,
        JPEGBaseline8Bit,
        _fragments(_jpeg(8, 8), _jpeg(8, 8), table=table),
        rows=8,
        columns=8,
        frames=2,
    )
    items.append(make.item(name, data, "either", pixels=True))
    name = "JPEG, garbage fragment"
    data = _encapsulated(
        make,
        name,
        JPEGBaseline8Bit,
        _fragments(b"\xff\xd8" + bytes(range(256)) * 4),
        rows=8,
        columns=8,
    )
    items.append(make.item(name, data, "either", pixels=True))

    broken = {
        "encapsulated, no sequence delimiter": _fragments(_jpeg(8, 8))[:-8],
        "encapsulated, an element where an item belongs": struct.pack("<HHI", 0xFFFE, 0xE000, 0)
        + element(0x00100010, b"PN", b"Nguyen^Van")
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0),
        "encapsulated, item length past the end": struct.pack("<HHI", 0xFFFE, 0xE000, 0)
        + struct.pack("<HHI", 0xFFFE, 0xE000, 0x7FFFFFF0)
        + b"\xff\xd8",
        "encapsulated, item of undefined length": struct.pack("<HHI", 0xFFFE, 0xE000, 0)
        + struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED)
        + _jpeg(8, 8)
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0),
        "encapsulated, offset table only": _fragments(),
        "encapsulated, nothing at all": b"",
    }
    for name, value in broken.items():
        data = _encapsulated(make, name, JPEGBaseline8Bit, value, rows=8, columns=8)
        items.append(make.item(name, data, "refused"))
    name = "encapsulated, defined length"
    data = make.file(name, transfer_syntax=JPEG2000Lossless)
    data = replace_element(
        data, 0x7FE00010, element(0x7FE00010, b"OB", encapsulate([_jpeg2000(8, 8)]))
    )
    items.append(make.item(name, data, "refused"))
    return items


# -- (h) UIDs --------------------------------------------------------------------------------


def bad_uids(salt: str) -> list[Item]:
    make = Maker(salt, "uid")
    items = []
    for name, uid in (
        ("65 characters", "1." + "2" * 63),
        ("200 characters", "1." + "3" * 198),
        ("letters", "1.2.abc.4"),
        ("path traversal", "../../etc/passwd"),
        ("absolute path", "/etc/cron.d/x"),
        ("encoded traversal", "1.2.3%2F..%2F.."),
        ("NUL inside", "1.2.3\0.4"),
        ("empty", ""),
        ("empty component", "1..2"),
        ("fullwidth digit", "1.2.\uff13"),
        ("rich markup", "[/red][bold]1.2"),
        ("backslash", "1.2\\3.4"),
    ):
        data = make.file(name)
        value = _uid_value(uid)
        data = replace_element(data, 0x00080018, element(0x00080018, b"UI", value))
        end = meta_end(data)
        assert end is not None
        meta = file_meta(CTImageStorage, uid, ExplicitVRLittleEndian)
        data = part10(meta, data[end:])
        items.append(
            Item(
                f"SOP Instance UID {name}",
                "uid",
                data,
                "refused",
                Dimse(CTImageStorage, uid, ExplicitVRLittleEndian, data[meta_end(data) or 0 :]),
                uid,
            )
        )
    for keyword, tag, uid in (
        ("Study Instance UID", 0x0020000D, "../../../tmp/x"),
        ("Series Instance UID", 0x0020000E, "1.2.series.x"),
    ):
        name = f"{keyword} {uid}"
        data = make.file(name)
        data = replace_element(data, tag, element(tag, b"UI", _uid_value(uid)))
        items.append(make.item(name, data, "refused"))
    name = "SOP class unknown"
    data = make.file(name, sop_class=PRIVATE_SOP_CLASS)
    items.append(make.item(name, data, "either"))
    name = "SOP class not a UID"
    data = make.file(name)
    data = replace_element(data, 0x00080016, element(0x00080016, b"UI", b"CT Image"))
    items.append(
        make.item(
            name,
            data,
            "refused",
            dimse=Dimse(
                CTImageStorage, make.uid(name), ExplicitVRLittleEndian, data[meta_end(data) or 0 :]
            ),
        )
    )
    name = "meta and dataset differ"
    data = make.file(name)
    values = meta_values(data)
    end = meta_end(data)
    assert end is not None
    meta = file_meta(values[0x00020002], uid_for(salt, "someone else"), ExplicitVRLittleEndian)
    items.append(make.item(name, part10(meta, data[end:]), "refused"))
    return items


_BUILDERS = {
    "truncation": truncations,
    "vr-length": wrong_vrs_and_lengths,
    "nesting": deep_nesting,
    "huge-length": huge_lengths,
    "transfer-syntax": transfer_syntaxes,
    "preamble": polyglot_preambles,
    "bomb": bombs,
    "uid": bad_uids,
}


def corpus(salt: str, families: tuple[str, ...] = FAMILIES) -> list[Item]:
    """Every item of `families`, with UIDs of their own for `salt`."""
    return [item for family in families for item in _BUILDERS[family](salt)]
