"""The directly encoded responses are the ones pynetdicom would have sent."""

from io import BytesIO

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom.dimse_messages import C_FIND_RSP, C_STORE_RSP
from pynetdicom.dimse_primitives import C_FIND, C_STORE
from pynetdicom.dsutils import encode

from dicom_node.responses import encode_store_response

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def pynetdicom_messages(primitive: object, max_pdu: int) -> list[bytes]:
    message = (C_STORE_RSP if isinstance(primitive, C_STORE) else C_FIND_RSP)()
    message.primitive_to_message(primitive)
    return [
        value
        for pdata in message.encode_msg(1, max_pdu)
        for _, value in pdata.presentation_data_value_list
    ]


def ours(primitive: object, max_pdu: int) -> list[bytes]:
    from dicom_node.responses import _encode, _p_data

    encoded = _encode(primitive)
    assert encoded is not None
    return [
        value
        for pdata in _p_data(1, *encoded, max_pdu)
        for _, value in pdata.presentation_data_value_list
    ]


@pytest.mark.parametrize(
    ("status", "comment"),
    [
        (0x0000, None),
        (0xA900, "pixel data has 100 bytes; Rows, Columns need 8192"),
        (0xC000, "odd"),
        (0xA700, "disk full: 12 MiB free, PACS_MIN_FREE_MB is 512"),
    ],
)
def test_store_responses_match_pynetdicom_byte_for_byte(status: int, comment: str | None) -> None:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = CTImageStorage
    primitive.AffectedSOPInstanceUID = generate_uid()
    primitive.Status = status
    if comment:
        primitive.ErrorComment = comment
    assert ours(primitive, 16384) == pynetdicom_messages(primitive, 16384)
    assert (
        encode_store_response(
            message_id=7,
            sop_class_uid=CTImageStorage,
            sop_instance_uid=str(primitive.AffectedSOPInstanceUID),
            status=status,
            error_comment=comment,
        )
        == pynetdicom_messages(primitive, 16384)[0][1:]
    )


@pytest.mark.parametrize("max_pdu", [16384, 4096, 0])
@pytest.mark.parametrize(
    ("status", "with_identifier"), [(0xFF00, True), (0x0000, False), (0xA900, False)]
)
def test_find_responses_match_pynetdicom_byte_for_byte(
    status: int, with_identifier: bool, max_pdu: int
) -> None:
    primitive = C_FIND()
    primitive.MessageIDBeingRespondedTo = 3
    primitive.AffectedSOPClassUID = STUDY_ROOT_FIND
    primitive.Status = status
    if with_identifier:
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = "Nguyễn^Thị Hằng" * 200  # long enough to need several fragments
        ds.StudyInstanceUID = generate_uid()
        primitive.Identifier = BytesIO(encode(ds, True, True))
    if status == 0xA900:
        primitive.ErrorComment = "StudyDate: '2026' is not valid"
    assert ours(primitive, max_pdu) == pynetdicom_messages(primitive, max_pdu)


def test_other_messages_are_left_to_pynetdicom() -> None:
    from pynetdicom.dimse_primitives import C_ECHO

    from dicom_node.responses import _encode

    echo = C_ECHO()
    echo.MessageIDBeingRespondedTo = 1
    echo.Status = 0
    assert _encode(echo) is None


@pytest.mark.parametrize(("name_repeats", "max_pdu"), [(1, 16384), (200, 4096), (200, 16384)])
def test_find_responses_share_pdus_within_the_peers_maximum(
    name_repeats: int, max_pdu: int
) -> None:
    from pynetdicom.pdu import P_DATA_TF

    from dicom_node.responses import _encode, _p_data

    primitive = C_FIND()
    primitive.MessageIDBeingRespondedTo = 3
    primitive.AffectedSOPClassUID = STUDY_ROOT_FIND
    primitive.Status = 0xFF00
    ds = Dataset()
    ds.PatientName = "Nguyen^Thi Hang" * name_repeats
    primitive.Identifier = BytesIO(encode(ds, True, True))
    encoded = _encode(primitive)
    assert encoded is not None
    pdus = []
    for pdata in _p_data(1, *encoded, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(pdata)
        pdus.append(pdu.encode())
    assert all(len(pdu) - 6 <= max_pdu for pdu in pdus)  # the PDU length field's limit
    size = len(encoded[0]) + len(encoded[1] or b"") + 12
    assert len(pdus) == -(-size // max_pdu)  # as few PDUs as fit: one for a typical match
