"""C-STORE and C-FIND responses encoded directly (PS3.7 9.3, Implicit VR Little Endian).

pynetdicom turns each response into a pydicom ``Dataset`` and encodes it twice (once only to
measure the command group length). A C-STORE or C-FIND response is a handful of small
elements, so :class:`ArchiveDIMSE` writes them straight to bytes: every stored instance
gets one, and a C-FIND gets one per match. Any other message, or a response with fields
beyond status and error comment, goes through pynetdicom as before.
``tests/dicom_node/test_responses.py`` holds the two encodings equal, byte for byte.
"""

import struct
from collections.abc import Iterator
from typing import Any

from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_FIND, C_STORE
from pynetdicom.pdu_primitives import P_DATA

C_STORE_RSP = 0x8001
C_FIND_RSP = 0x8020
DATA_SET = 0x0001
NO_DATA_SET = 0x0101
_ELEMENT = struct.Struct("<HHI")
_US = struct.Struct("<H")


def _padded(text: str, pad: bytes) -> bytes:
    data = text.encode("ascii", "replace")
    return data + pad if len(data) % 2 else data


def encode_response(
    *,
    command_field: int,
    message_id: int,
    sop_class_uid: str,
    status: int,
    sop_instance_uid: str | None = None,
    error_comment: str | None = None,
    has_data_set: bool = False,
) -> bytes:
    """The command set of a C-STORE-RSP or C-FIND-RSP, group length included."""
    elements = [
        (0x0002, _padded(sop_class_uid, b"\0")),
        (0x0100, _US.pack(command_field)),
        (0x0120, _US.pack(message_id)),
        (0x0800, _US.pack(DATA_SET if has_data_set else NO_DATA_SET)),
        (0x0900, _US.pack(status)),
    ]
    if error_comment:
        elements.append((0x0902, _padded(error_comment, b" ")))
    if sop_instance_uid is not None:
        elements.append((0x1000, _padded(sop_instance_uid, b"\0")))
    body = b"".join(_ELEMENT.pack(0x0000, number, len(value)) + value for number, value in elements)
    return _ELEMENT.pack(0x0000, 0x0000, 4) + struct.pack("<I", len(body)) + body


def encode_store_response(
    *,
    message_id: int,
    sop_class_uid: str,
    sop_instance_uid: str,
    status: int,
    error_comment: str | None = None,
) -> bytes:
    return encode_response(
        command_field=C_STORE_RSP,
        message_id=message_id,
        sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_instance_uid,
        status=status,
        error_comment=error_comment,
    )


class ArchiveDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider with C-STORE and C-FIND responses encoded directly."""

    def send_msg(self, primitive: Any, context_id: int) -> None:
        encoded = _encode(primitive)
        if encoded is None or self.assoc.get_handlers(evt.EVT_DIMSE_SENT):
            super().send_msg(primitive, context_id)
            return
        command, data_set = encoded
        for pdata in _p_data(context_id, command, data_set, self.maximum_pdu_size):
            self.dul.send_pdu(pdata)


def _encode(primitive: Any) -> tuple[bytes, bytes | None] | None:
    """The command set (and data set) of a plain C-STORE or C-FIND response, else None."""
    if isinstance(primitive, C_STORE):
        field, instance = C_STORE_RSP, primitive.AffectedSOPInstanceUID
        if instance is None:
            return None
        data_set = None
    elif isinstance(primitive, C_FIND):
        field, instance = C_FIND_RSP, None
        identifier = primitive.Identifier
        data_set = identifier.getvalue() if identifier is not None else None
    else:
        return None
    needed = (primitive.MessageIDBeingRespondedTo, primitive.Status, primitive.AffectedSOPClassUID)
    comment = getattr(primitive, "ErrorComment", None) or ""
    if None in needed or getattr(primitive, "OffendingElement", None) is not None:
        return None
    if len(comment) > 64:
        return None
    command = encode_response(
        command_field=field,
        message_id=int(primitive.MessageIDBeingRespondedTo),
        sop_class_uid=str(primitive.AffectedSOPClassUID),
        status=int(primitive.Status),
        sop_instance_uid=str(instance) if instance is not None else None,
        error_comment=comment or None,
        has_data_set=data_set is not None,
    )
    return command, data_set


def _p_data(
    context_id: int, command: bytes, data_set: bytes | None, max_pdu: int
) -> Iterator[P_DATA]:
    """P-DATA primitives for the message (PS3.8 9.3.5, E).

    Each fragment is a PDV item within the peer's maximum PDU length; consecutive items
    share a PDU while they fit, so a C-FIND match (command and identifier, a few hundred
    bytes) is one PDU, not two.
    """
    size = (max_pdu - 6) if max_pdu else max(len(command), len(data_set or b"")) + 1
    limit = max_pdu or None
    pdata, used = P_DATA(), 0
    for payload, (more, last) in ((command, (b"\x01", b"\x03")), (data_set, (b"\x00", b"\x02"))):
        if payload is None:
            continue
        chunks = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
        for index, chunk in enumerate(chunks):
            item = 6 + len(chunk)  # item length, context ID, control header, fragment
            if used and limit is not None and used + item > limit:
                yield pdata
                pdata, used = P_DATA(), 0
            header = last if index == len(chunks) - 1 else more
            pdata.presentation_data_value_list.append((context_id, header + chunk))
            used += item
    yield pdata
