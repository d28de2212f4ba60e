"""C-STORE responses encoded directly (PS3.7 9.3.1.2, Implicit VR Little Endian).

pynetdicom turns each response into a pydicom ``Dataset`` and encodes it twice (once only to
measure the command group length): more CPU than storing the instance itself. A C-STORE-RSP
is seven small elements, so :class:`ArchiveDIMSE` writes them straight to bytes; any other
message, or a response with fields beyond status and error comment, goes through pynetdicom
as before. ``tests/dicom_node/test_responses.py`` holds the two encodings equal, byte for byte.
"""

import struct
from typing import Any

from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

C_STORE_RSP = 0x8001
NO_DATA_SET = 0x0101
_ELEMENT = struct.Struct("<HHI")
_US = struct.Struct("<H")


def _padded(text: str, pad: bytes) -> bytes:
    data = text.encode("ascii", "replace")
    return data + pad if len(data) % 2 else data


def encode_store_response(
    *,
    message_id: int,
    sop_class_uid: str,
    sop_instance_uid: str,
    status: int,
    error_comment: str | None = None,
) -> bytes:
    """The command set of a C-STORE-RSP, group length included."""
    elements = [
        (0x0002, _padded(sop_class_uid, b"\0")),
        (0x0100, _US.pack(C_STORE_RSP)),
        (0x0120, _US.pack(message_id)),
        (0x0800, _US.pack(NO_DATA_SET)),
        (0x0900, _US.pack(status)),
    ]
    if error_comment:
        elements.append((0x0902, _padded(error_comment, b" ")))
    elements.append((0x1000, _padded(sop_instance_uid, b"\0")))
    body = b"".join(_ELEMENT.pack(0x0000, number, len(value)) + value for number, value in elements)
    return _ELEMENT.pack(0x0000, 0x0000, 4) + struct.pack("<I", len(body)) + body


class ArchiveDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider with C-STORE responses encoded directly."""

    def send_msg(self, primitive: Any, context_id: int) -> None:
        if not self._fast(primitive) or self.assoc.get_handlers(evt.EVT_DIMSE_SENT):
            super().send_msg(primitive, context_id)
            return
        encoded = encode_store_response(
            message_id=int(primitive.MessageIDBeingRespondedTo),
            sop_class_uid=str(primitive.AffectedSOPClassUID),
            sop_instance_uid=str(primitive.AffectedSOPInstanceUID),
            status=int(primitive.Status),
            error_comment=primitive.ErrorComment or None,
        )
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((context_id, b"\x03" + encoded))
        self.dul.send_pdu(pdata)

    @staticmethod
    def _fast(primitive: Any) -> bool:
        """A C-STORE response with only status and error comment (what the archive sends)."""
        if not isinstance(primitive, C_STORE):
            return False
        needed = (
            primitive.MessageIDBeingRespondedTo,
            primitive.Status,
            primitive.AffectedSOPClassUID,
            primitive.AffectedSOPInstanceUID,
        )
        comment = getattr(primitive, "ErrorComment", None) or ""
        return (
            None not in needed
            and getattr(primitive, "OffendingElement", None) is None
            and len(comment) <= 64
        )
