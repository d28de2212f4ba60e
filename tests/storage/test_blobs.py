"""The filesystem blob store: where blobs land and how they are named."""

import os
from pathlib import Path

from storage.blobs import FilesystemBlobStore
from storage.blobs.filesystem import FOLDER_RUN
from storage.staging import StagingWriter


def _put(store: FilesystemBlobStore, data: bytes) -> str:
    with StagingWriter(store.staging_dir) as writer:
        writer.write(data)
        staged = writer.finish()
    return store.put_staged(staged)


def test_a_blob_is_stored_under_a_fresh_random_key(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    keys = [_put(store, b"same bytes") for _ in range(3)]
    assert len(set(keys)) == 3
    for key in keys:
        assert len(key) == 32
        assert set(key) <= set("0123456789abcdef")
        path = store.path_of(key)
        assert path == tmp_path.resolve() / key[:2] / key[2:4] / key
        assert path.read_bytes() == b"same bytes"
    assert os.listdir(store.staging_dir) == []


def test_consecutive_blobs_share_a_folder_for_a_run(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    keys = [store.new_key() for _ in range(FOLDER_RUN * 3)]
    folders = [key[:4] for key in keys]
    runs = [folders[i : i + FOLDER_RUN] for i in range(0, len(folders), FOLDER_RUN)]
    assert all(len(set(run)) == 1 for run in runs)
    assert len({run[0] for run in runs}) > 1  # then the folder changes (at random)
    assert len(set(keys)) == len(keys)
    assert len({key[4:] for key in keys}) == len(keys)  # the rest is random
