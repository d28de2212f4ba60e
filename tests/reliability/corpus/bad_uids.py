"""Family ``uid``: UIDs no archive should take.

UIDs too long, with letters, with path traversal, a NUL or rich markup, and SOP classes
nobody knows.
"""

from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from tests.reliability.corpus.encoding import element, file_meta, part10, uid_for, uid_value
from tests.reliability.corpus.reading import meta_end, meta_values, replace_element
from tests.reliability.corpus.sample import Dimse, Item, Maker

PRIVATE_SOP_CLASS = "1.2.826.0.1.3680043.9.9999.1"
"""A well-formed UID under a private root: a SOP class no archive knows."""


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
        value = uid_value(uid)
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
        data = replace_element(data, tag, element(tag, b"UI", uid_value(uid)))
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
