"""Family ``preamble``: ELF, PE, ZIP and shell headers in the 128-byte preamble.

Each is a valid instance in disguise (CVE-2019-11687): one file that is both a DICOM
instance and an executable or an archive.
"""

import struct

from tests.reliability.corpus.sample import Item, Maker


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
