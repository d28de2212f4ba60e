"""Family ``transfer-syntax``: what the File Meta Information says of the data.

Unknown, private and malformed Transfer Syntax UIDs, File Meta Information that names one
syntax for data in another, or that is missing or broken.
"""

import struct

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
)

from tests.reliability.corpus.encoding import file_meta, part10
from tests.reliability.corpus.reading import meta_end, meta_values
from tests.reliability.corpus.sample import Item, Maker, dimse_of, with_dataset_syntax


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
        data = with_dataset_syntax(make.file(name), syntax)
        items.append(make.item(name, data, "refused"))
    native = make.file("Explicit, pixel data encapsulated", transfer_syntax=JPEG2000Lossless)
    items.append(
        make.item(
            "Explicit, pixel data encapsulated",
            with_dataset_syntax(native, ExplicitVRLittleEndian),
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
