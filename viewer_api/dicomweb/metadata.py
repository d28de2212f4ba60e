"""What QIDO-RS and WADO-RS metadata say about an instance, from the index."""

from typing import Any

from pydicom.dataset import Dataset

from storage import Archive, InstanceDetails, Level
from viewer_api.dicomweb.dicomjson import JsonObject, tag_and_vr
from viewer_api.dicomweb.headerjson import header_json

_BULK_THRESHOLD = 64 * 1024
"""Binary values longer than this are given as BulkDataURI in metadata, shorter inline."""


def retrieve_url(base: str, level: Level, values: dict[str, Any]) -> str:
    url = f"{base}/dicom-web/studies/{values.get('StudyInstanceUID')}"
    if level in (Level.SERIES, Level.IMAGE):
        url += f"/series/{values.get('SeriesInstanceUID')}"
    if level is Level.IMAGE:
        url += f"/instances/{values.get('SOPInstanceUID')}"
    return url


def included_attributes(header: Dataset, include: frozenset[str], *, all_: bool) -> JsonObject:
    out: JsonObject = {}
    for element in header:
        if element.tag.group == 0x0002:
            continue
        if all_ or element.keyword in include:
            value = element.to_json_dict(_no_bulk, _BULK_THRESHOLD)
            if value.get("BulkDataURI") != "":  # large binary values: not for queries
                out[f"{int(element.tag):08X}"] = value
    return out


def _no_bulk(_: Any) -> str:
    return ""


def instance_metadata(archive: Archive, instance: InstanceDetails, base: str) -> JsonObject:
    uri = (
        f"{base}/dicom-web/studies/{instance.study_instance_uid}/series/"
        f"{instance.series_instance_uid}/instances/{instance.sop_instance_uid}"
    )

    def bulk(element: Any) -> str:
        return f"{uri}/bulkdata/{int(element.tag):08X}"

    body: JsonObject | None = None
    bits = 16
    if instance.header is not None:
        body = header_json(
            instance.header, lambda tag: f"{uri}/bulkdata/{tag:08X}", _BULK_THRESHOLD
        )
    if body is None:
        header = archive.header_of(instance)
        body = header.to_json_dict(_BULK_THRESHOLD, bulk, suppress_invalid_tags=True)
    if instance.pixel_data_offset is not None:
        allocated = body.get("00280100", {}).get("Value")
        bits = int(allocated[0]) if allocated else bits
        native = instance.pixel_data_length is not None
        body["7FE00010"] = {
            "vr": "OW" if native and bits > 8 else "OB",
            "BulkDataURI": f"{uri}/bulkdata/7FE00010",
        }
    tag, vr = tag_and_vr("AvailableTransferSyntaxUID")
    body[tag] = {"vr": vr, "Value": [instance.transfer_syntax_uid]}
    return body
