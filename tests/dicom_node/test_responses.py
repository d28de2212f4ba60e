"""The directly encoded C-STORE response is the one pynetdicom would have sent."""

import pytest
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from dicom_node.responses import encode_store_response


@pytest.mark.parametrize(
    ("status", "comment"),
    [
        (0x0000, None),
        (0xA900, "pixel data has 100 bytes; Rows, Columns need 8192"),
        (0xC000, "odd"),
        (0xA700, "disk full: 12 MiB free, PACS_MIN_FREE_MB is 512"),
    ],
)
def test_matches_pynetdicom_byte_for_byte(status: int, comment: str | None) -> None:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = CTImageStorage
    primitive.AffectedSOPInstanceUID = generate_uid()
    primitive.Status = status
    if comment:
        primitive.ErrorComment = comment
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    expected = encode(message.command_set, True, True)
    ours = encode_store_response(
        message_id=7,
        sop_class_uid=CTImageStorage,
        sop_instance_uid=str(primitive.AffectedSOPInstanceUID),
        status=status,
        error_comment=comment,
    )
    assert ours == expected
