"""The sample every item is made from, and what an item is.

The sample is a CT slice of ``tests/factories.py`` with two sequences added, one of
undefined and one of defined length. A `Maker` gives each item of its family a SOP
Instance UID of its own, derived from the corpus' salt and the item's name.
"""

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests import factories
from tests.reliability.corpus.encoding import file_meta, part10, uid_for
from tests.reliability.corpus.reading import meta_end, meta_values

Expect = Literal["stored", "refused", "either"]


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


def with_dataset_syntax(data: bytes, transfer_syntax: str) -> bytes:
    """The file with the same dataset bytes under other File Meta Information."""
    end = meta_end(data)
    assert end is not None
    values = meta_values(data)
    meta = file_meta(values[0x00020002], values[0x00020003], transfer_syntax)
    return part10(meta, data[end:])
