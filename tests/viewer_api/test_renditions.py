"""Instances and frames in the transfer syntax a slow link asks for, and rendered images:
real pixel data, real codecs, read back by another decoder than the one that wrote it."""

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
)

from storage import Archive, Source, stage_file
from tests import factories
from tests.auth import http
from tests.viewer_api.conftest import Web
from tests.viewer_api.test_dicomweb import _parts

SIZE = 64


def disc(size: int = SIZE, *, monochrome1: bool = False) -> Dataset:
    """A CT slice: a bright disc (1800) on a dark field (40), 12 bits stored."""
    ds = factories.image(rows=size, columns=size)
    y, x = np.mgrid[:size, :size]
    pixels = np.where(np.hypot(x - size / 2, y - size / 2) < size / 4, 1800, 40)
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.WindowCenter, ds.WindowWidth = 900, 2000
    if monochrome1:
        ds.PhotometricInterpretation = "MONOCHROME1"
    return ds


def store(archive: Archive, ds: Dataset, tmp_path: Path) -> Dataset:
    path = factories.write(ds, tmp_path / "src")
    archive.store(stage_file(path, archive.staging_dir), source=Source("dimse", aet="CT1"))
    return ds


def instance_url(web: Web, ds: Dataset) -> str:
    return (
        f"{web.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def test_an_instance_in_jpeg_2000_lossless_is_smaller_and_the_same_pixels(
    web: Web, archive: Archive, tmp_path: Path
) -> None:
    original = store(archive, disc(), tmp_path)
    client = web.client()
    (j2k,) = client.retrieve_series(
        original.StudyInstanceUID,
        original.SeriesInstanceUID,
        media_types=(("application/dicom", JPEG2000Lossless),),
    )
    assert j2k.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert j2k.SOPInstanceUID == original.SOPInstanceUID
    assert len(j2k.PixelData) < len(original.PixelData) / 4
    assert np.array_equal(j2k.pixel_array, original.pixel_array)  # lossless
    cached = list((archive.settings.data_dir / "cache" / "transcoded").iterdir())
    assert len(cached) == 1  # encoded once, kept for the next client
    (again,) = client.retrieve_series(
        original.StudyInstanceUID,
        original.SeriesInstanceUID,
        media_types=(("application/dicom", JPEG2000Lossless),),
    )
    assert again.PixelData == j2k.PixelData


def test_lossy_only_when_asked_for(web: Web, archive: Archive, tmp_path: Path) -> None:
    original = store(archive, disc(), tmp_path)
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={JPEG2000}'
    ((headers, data),) = _parts(http.get(instance_url(web, original), headers={"Accept": accept}))
    lossy = dcmread(io.BytesIO(data))
    assert headers["Content-Type"] == f"application/dicom; transfer-syntax={JPEG2000}"
    assert lossy.LossyImageCompression == "01"
    default = dcmread(
        io.BytesIO(_parts(http.get(instance_url(web, original)))[0][1])
    )  # no transfer syntax asked: Explicit VR Little Endian, never lossy
    assert default.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert "LossyImageCompression" not in default


def test_frames_in_the_media_type_a_client_asks_for(
    web: Web, archive: Archive, tmp_path: Path
) -> None:
    original = store(archive, disc(), tmp_path)
    client = web.client()
    (jls,) = client.retrieve_instance_frames(
        original.StudyInstanceUID,
        original.SeriesInstanceUID,
        original.SOPInstanceUID,
        [1],
        media_types=(("image/jls", JPEGLSLossless),),
    )
    assert jls[:2] == b"\xff\xd8"  # a JPEG-LS codestream
    import jpeg_ls  # pyjpegls: decoded by another library than the encoder's wrapper

    assert np.array_equal(jpeg_ls.decode(np.frombuffer(jls, np.uint8)), original.pixel_array)
    (j2k,) = client.retrieve_instance_frames(
        original.StudyInstanceUID,
        original.SeriesInstanceUID,
        original.SOPInstanceUID,
        [1],
        media_types=(("image/jp2", JPEG2000Lossless),),
    )
    assert j2k[:4] == b"\xff\x4f\xff\x51"


def test_a_compressed_instance_goes_out_decompressed_when_asked(
    web: Web, archive: Archive, tmp_path: Path
) -> None:
    compressed = disc()
    compressed.compress(JPEGLSLossless, generate_instance_uid=False)
    store(archive, compressed, tmp_path)
    (native,) = web.client().retrieve_series(
        compressed.StudyInstanceUID, compressed.SeriesInstanceUID
    )
    assert native.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(native.pixel_array, disc().pixel_array)
    frames = http.get(
        f"{instance_url(web, compressed)}/frames/1",
        headers={"Accept": 'multipart/related; type="application/octet-stream"'},
    )
    ((headers, frame),) = _parts(frames)
    assert headers["Content-Type"].startswith("application/octet-stream")
    assert frame == disc().PixelData


def _image(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def test_rendered_and_thumbnails(web: Web, archive: Archive, tmp_path: Path) -> None:
    original = store(archive, disc(), tmp_path)
    url = instance_url(web, original)
    jpeg = _image(http.get(f"{url}/rendered"))
    assert (jpeg.format, jpeg.size, jpeg.mode) == ("JPEG", (SIZE, SIZE), "L")
    assert jpeg.getpixel((SIZE // 2, SIZE // 2)) > 200  # the disc, in its window
    assert jpeg.getpixel((1, 1)) < 60
    png = _image(http.get(f"{url}/frames/1/rendered", headers={"Accept": "image/png"}))
    assert png.format == "PNG"
    narrow = _image(http.get(f"{url}/rendered", params={"window": "40,10"}))
    assert narrow.getpixel((SIZE // 2, SIZE // 2)) == 255  # above the window: white
    big = _image(http.get(f"{url}/rendered", params={"viewport": "256,128"}))
    assert big.size == (128, 128)  # fitted, aspect kept
    small = http.get(f"{url}/rendered", params={"quality": "5"})
    assert len(small.content) < len(http.get(f"{url}/rendered").content)
    study = f"{web.dicomweb}/studies/{original.StudyInstanceUID}"
    thumb = _image(http.get(f"{study}/thumbnail", params={"viewport": "32,32"}))
    assert thumb.size == (32, 32)
    assert _image(http.get(f"{study}/series/{original.SeriesInstanceUID}/thumbnail")).size == (
        128,
        128,
    )


def test_monochrome1_is_inverted_for_display(web: Web, archive: Archive, tmp_path: Path) -> None:
    original = store(archive, disc(monochrome1=True), tmp_path)
    image = _image(http.get(f"{instance_url(web, original)}/rendered"))
    assert image.getpixel((SIZE // 2, SIZE // 2)) < 60


@pytest.mark.parametrize(
    ("suffix", "params", "accept", "status"),
    [
        ("/rendered", {"window": "abc"}, "image/jpeg", 400),
        ("/rendered", {"viewport": "0,10"}, "image/jpeg", 400),
        ("/rendered", {"quality": "101"}, "image/jpeg", 400),
        ("/rendered", {"quality": "²"}, "image/jpeg", 400),  # isdigit, but not for int()
        ("/rendered", {"quality": "9" * 5000}, "image/jpeg", 400),  # too long for int()
        ("/rendered", {"window": "nan,400"}, "image/jpeg", 400),
        ("/rendered", {"window": "40,inf"}, "image/jpeg", 400),
        ("/rendered", {}, "image/gif", 406),
        ("/frames/2/rendered", {}, "image/jpeg", 404),
        ("/frames/1,2/rendered", {}, "image/jpeg", 400),
    ],
)
def test_bad_rendering_requests(
    web: Web,
    archive: Archive,
    tmp_path: Path,
    suffix: str,
    params: dict[str, str],
    accept: str,
    status: int,
) -> None:
    original = store(archive, disc(), tmp_path)
    response = http.get(
        f"{instance_url(web, original)}{suffix}", params=params, headers={"Accept": accept}
    )
    assert response.status_code == status
    assert response.json()["detail"]


def test_a_pixel_bomb_costs_a_worker_not_the_server(archive: Archive, tmp_path: Path) -> None:
    """A JPEG 2000 codestream that claims 60000 x 60000 pixels (7 GB decoded) behind a
    64 x 64 DICOM header: refused by a memory-capped decoder, and the server serves on."""
    from tests.viewer_api.conftest import serve

    bomb = disc()
    bomb.compress(JPEG2000Lossless, generate_instance_uid=False)
    from pydicom.encaps import encapsulate, generate_frames

    (frame,) = list(generate_frames(bomb.PixelData, number_of_frames=1))
    siz = frame.index(b"\xff\x51")
    header = bytearray(frame)
    for offset in (siz + 6, siz + 10, siz + 22, siz + 26):  # Xsiz, Ysiz, XTsiz, YTsiz
        header[offset : offset + 4] = (60000).to_bytes(4, "big")
    bomb.PixelData = encapsulate([bytes(header)])
    store(archive, bomb, tmp_path)
    fine = store(archive, disc(), tmp_path)
    with serve(archive, decode_memory_mb=512) as web:
        refused = http.get(f"{instance_url(web, bomb)}/rendered", timeout=120)
        assert refused.status_code == 406
        assert "decod" in refused.json()["detail"], refused.json()
        assert _image(http.get(f"{instance_url(web, fine)}/rendered")).size == (SIZE, SIZE)


@pytest.mark.parametrize("offset_table", [True, False], ids=["basic-offset-table", "none"])
def test_frames_of_a_compressed_multiframe_instance(
    web: Web, archive: Archive, tmp_path: Path, offset_table: bool
) -> None:
    import jpeg_ls
    from pydicom.encaps import encapsulate

    frames = [np.full((SIZE, SIZE), value, dtype="<u2") for value in (100, 2000, 3000)]
    for number, frame in enumerate(frames):
        frame[number, :] = 7  # each frame its own
    ds = disc()
    ds.NumberOfFrames = 3
    ds.PixelData = encapsulate(
        [bytes(jpeg_ls.encode(frame)) for frame in frames], has_bot=offset_table
    )
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    store(archive, ds, tmp_path)
    response = http.get(
        f"{instance_url(web, ds)}/frames/3,1",
        headers={"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"},
    )
    third, first = (data for _, data in _parts(response))
    assert np.array_equal(jpeg_ls.decode(np.frombuffer(third, np.uint8)), frames[2])
    assert np.array_equal(jpeg_ls.decode(np.frombuffer(first, np.uint8)), frames[0])


def test_the_first_of_several_windows_is_used(web: Web, archive: Archive, tmp_path: Path) -> None:
    ds = disc()
    ds.WindowCenter, ds.WindowWidth = [1800, 40], [100, 80]  # as CTs carry two windows
    store(archive, ds, tmp_path)
    image = _image(http.get(f"{instance_url(web, ds)}/rendered", headers={"Accept": "image/png"}))
    assert 100 < image.getpixel((SIZE // 2, SIZE // 2)) < 160  # 1800 mid-window: grey
