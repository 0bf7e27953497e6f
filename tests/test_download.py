"""Tests for mtbench.data.download against a real local HTTP server."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest

from mtbench.data.download import download_and_extract, extract_zip, fetch, md5sum
from mtbench.core.errors import DownloadError

from data_copies import zip_of


MEMBER = "images_background/Alpha/character01/0001_01.png"
PAYLOAD = b"\x89PNG fake image bytes" * 50


GOOD_ZIP = zip_of({MEMBER: PAYLOAD})
GOOD_MD5 = hashlib.md5(GOOD_ZIP).hexdigest()


@pytest.fixture
def dead_url():
    """A URL on a local port that was bound and closed, so nothing listens there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/images_background.zip"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_good_file(server, tmp_path):
    base, served = server
    (served / "images_background.zip").write_bytes(GOOD_ZIP)
    root = tmp_path / "data" / "omniglot"
    out = download_and_extract(f"{base}/images_background.zip", GOOD_MD5, root,
                               "images_background", progress=False)
    assert out == root / "images_background"
    assert (root / MEMBER).read_bytes() == PAYLOAD
    assert leftovers(root) == ["images_background"]
    # A second call finds the folder and needs no server.
    assert download_and_extract("http://127.0.0.1:1/x.zip", GOOD_MD5, root, "images_background",
                                progress=False) == out


def test_wrong_checksum(server, tmp_path):
    base, served = server
    (served / "images_background.zip").write_bytes(GOOD_ZIP)
    root = tmp_path / "omniglot"
    url = f"{base}/images_background.zip"
    wrong = "0" * 32
    with pytest.raises(DownloadError) as info:
        download_and_extract(url, wrong, root, "images_background", progress=False)
    msg = str(info.value)
    assert url in msg
    assert wrong in msg
    assert GOOD_MD5 in msg
    assert str(root / "images_background.zip") in msg
    assert "\n" not in msg
    assert leftovers(root) == []


def test_truncated_transfer(server, tmp_path):
    base, served = server
    (served / "images_background.zip").write_bytes(GOOD_ZIP)
    root = tmp_path / "omniglot"
    url = f"{base}/truncated/images_background.zip"
    with pytest.raises(DownloadError) as info:
        download_and_extract(url, GOOD_MD5, root, "images_background", progress=False)
    msg = str(info.value)
    assert url in msg
    assert GOOD_MD5 in msg
    assert str(len(GOOD_ZIP) + 1000) in msg  # the promised byte count
    assert leftovers(root) == []


def test_http_error(server, tmp_path):
    base, _ = server
    url = f"{base}/missing.zip"
    with pytest.raises(DownloadError) as info:
        fetch(url, tmp_path / "missing.zip", GOOD_MD5, progress=False)
    assert "404" in str(info.value) and url in str(info.value)
    assert leftovers(tmp_path) == ["served"]


def test_server_unreachable(dead_url, tmp_path):
    root = tmp_path / "omniglot"
    with pytest.raises(DownloadError) as info:
        download_and_extract(dead_url, GOOD_MD5, root, "images_background", progress=False)
    msg = str(info.value)
    assert dead_url in msg
    assert GOOD_MD5 in msg
    assert str(root / "images_background.zip") in msg
    assert leftovers(root) == []


def test_file_placed_by_hand(dead_url, tmp_path):
    root = tmp_path / "omniglot"
    root.mkdir()
    archive = root / "images_background.zip"
    archive.write_bytes(GOOD_ZIP)
    assert fetch(dead_url, archive, GOOD_MD5, progress=False) == archive
    out = download_and_extract(dead_url, GOOD_MD5.upper(), root, "images_background",
                               progress=False, keep_archive=True)
    assert (out / "Alpha" / "character01" / "0001_01.png").read_bytes() == PAYLOAD
    assert leftovers(root) == ["images_background", "images_background.zip"]


@pytest.mark.parametrize("evil", ["../evil.txt", "images_background/../../evil.txt"])
def test_zip_slip_rejected(tmp_path, evil):
    outer = tmp_path / "data"
    root = outer / "omniglot"
    root.mkdir(parents=True)
    archive = root / "images_background.zip"
    archive.write_bytes(zip_of({MEMBER: PAYLOAD, evil: b"pwned"}))
    with pytest.raises(DownloadError) as info:
        extract_zip(archive, root, "images_background")
    assert str(archive) in str(info.value)
    assert not (outer / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()
    assert leftovers(root) == ["images_background.zip"]


def test_zip_without_expected_folder(tmp_path):
    archive = tmp_path / "other.zip"
    archive.write_bytes(zip_of({"something_else/a.txt": b"a"}))
    with pytest.raises(DownloadError, match="images_background") as info:
        extract_zip(archive, tmp_path, "images_background")
    assert str(archive) in str(info.value)
    assert leftovers(tmp_path) == ["other.zip"]


def test_corrupt_zip(tmp_path):
    archive = tmp_path / "bad.zip"
    archive.write_bytes(b"this is not a zip file")
    with pytest.raises(DownloadError, match="Delete it") as info:
        extract_zip(archive, tmp_path, "images_background")
    assert str(archive) in str(info.value)
    assert leftovers(tmp_path) == ["bad.zip"]


def test_md5sum_matches_hashlib(tmp_path):
    data = os.urandom(2_500_003)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    expected = hashlib.md5(data).hexdigest()
    assert md5sum(path) == expected
    assert md5sum(path, chunk=4096) == expected
