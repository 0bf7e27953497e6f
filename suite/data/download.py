"""Download official dataset archives, verify their checksums and extract them atomically.

Nothing here touches the network at import time. Every failure the user can fix is raised as a
:class:`~mtbench.core.errors.DownloadError` whose message names the URL, the expected MD5 and the
exact path where the file can be saved by hand, so that machines without internet access can
still be set up.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

from tqdm import tqdm

from mtbench.core.errors import DownloadError

__all__ = ["md5sum", "fetch", "download_file", "extract_zip", "download_and_extract"]

_CHUNK = 1 << 20


def md5sum(path: Path, chunk: int = _CHUNK) -> str:
    """Return the hex MD5 digest of a file, read in chunks.

    Args:
        path: File to hash.
        chunk: Number of bytes read at a time.

    Returns:
        The lower-case hexadecimal MD5 digest.
    """
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _by_hand(dest: Path, md5: str) -> str:
    return f"Download it yourself and save it as {dest} (MD5 {md5}), then run the command again."


def fetch(url: str, dest: Path, md5: str, *, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` to the file ``dest`` and verify its MD5.

    A file already at ``dest`` with the right MD5 is returned without any network access. The
    download streams into a hidden ``.part`` file next to ``dest`` that is moved onto ``dest``
    only once it is complete and verified, and removed on any failure.

    Args:
        url: Address of the file.
        dest: Path the file is saved as; its parent folder must exist.
        md5: Expected hex MD5 digest of the file.
        progress: Show a tqdm progress bar.
        timeout: Socket timeout in seconds.

    Returns:
        ``dest``.

    Raises:
        DownloadError: The download failed, was truncated or has the wrong checksum.
    """
    dest = Path(dest)
    md5 = md5.lower()
    if dest.is_file() and md5sum(dest) == md5:
        return dest
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    done = False
    try:
        digest = hashlib.md5()
        received = 0
        total: int | None = None
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.strip().isdigit() else None
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=dest.name, disable=not progress) as bar:
                    for block in iter(lambda: resp.read(_CHUNK), b""):
                        out.write(block)
                        digest.update(block)
                        received += len(block)
                        bar.update(len(block))
        except http.client.IncompleteRead as exc:
            got = received + len(exc.partial)
            raise DownloadError(
                f"could not download {url} (the connection closed after {got} of "
                f"{total if total is not None else 'an unknown number of'} bytes). "
                + _by_hand(dest, md5)) from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # URLError, HTTPError and socket timeouts are all OSError subclasses.
            if isinstance(exc, urllib.error.HTTPError):
                reason = f"HTTP {exc.code} {exc.reason}"
            elif isinstance(exc, urllib.error.URLError):
                reason = str(exc.reason)
            else:
                reason = str(exc) or type(exc).__name__
            raise DownloadError(
                f"could not download {url} ({reason}). " + _by_hand(dest, md5)) from exc
        if total is not None and received < total:
            raise DownloadError(
                f"could not download {url} (the transfer stopped after {received} of {total} "
                f"bytes). " + _by_hand(dest, md5))
        got_md5 = digest.hexdigest()
        if got_md5 != md5:
            raise DownloadError(
                f"the file downloaded from {url} has MD5 {got_md5}, but MD5 {md5} was expected "
                "(the download may be corrupt or the file may have changed upstream). "
                + _by_hand(dest, md5))
        os.replace(tmp, dest)
        done = True
    finally:
        if not done:
            tmp.unlink(missing_ok=True)
    return dest


def download_file(url: str, md5: str, dest: Path, *, progress: bool = True) -> Path:
    """Make sure the single file ``dest`` (e.g. a ``.npz``) exists with the right MD5, downloading it if needed.

    Unlike :func:`download_and_extract` nothing is unpacked: the verified file is the dataset. The
    parent folder is created; the file appears atomically (see :func:`fetch`), and one the user saved
    by hand with the right MD5 is used without network access.

    Args:
        url: Address of the file (a query string such as ``?download=1`` is fine: ``dest`` names the file).
        md5: Expected hex MD5 digest of the file.
        dest: Path the file is saved as.
        progress: Show a tqdm progress bar while downloading.

    Returns:
        ``dest``.

    Raises:
        DownloadError: The download failed, was truncated or has the wrong checksum.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    return fetch(url, dest, md5, progress=progress)


def _unsafe(name: str) -> bool:
    """Tell whether a zip member name is absolute or climbs out of the extraction folder."""
    win = PureWindowsPath(name)
    return (name.startswith(("/", "\\")) or bool(win.drive) or win.is_absolute()
            or ".." in PurePosixPath(name.replace("\\", "/")).parts)


def extract_zip(archive: Path, root: Path, expect: str) -> Path:
    """Extract ``archive`` so that the folder ``root / expect`` appears atomically.

    The archive is extracted into a fresh hidden folder inside ``root``; only the ``expect``
    folder is then moved into place, and the rest is removed.

    Args:
        archive: Zip file to extract.
        root: Existing folder to extract into.
        expect: Name of the top-level folder the archive must contain.

    Returns:
        ``root / expect``.

    Raises:
        DownloadError: The archive is corrupt, has unsafe member paths, or lacks ``expect``.
    """
    archive, root = Path(archive), Path(root)
    target = root / expect
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                bad = [m.filename for m in zf.infolist() if _unsafe(m.filename)]
                if bad:
                    raise DownloadError(
                        f"the archive {archive} contains the unsafe path {bad[0]!r} that would be "
                        "written outside the data folder, so it was not extracted. Delete it, "
                        "download it again from the official source, and run the command again.")
                zf.extractall(tmp)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise DownloadError(
                f"the archive {archive} is corrupt ({exc}). Delete it and run the command again "
                "to download it anew.") from exc
        if not (tmp / expect).is_dir():
            raise DownloadError(
                f"the archive {archive} does not contain the folder {expect!r}. Delete it, "
                "download the official archive again, and run the command again.")
        try:
            os.replace(tmp / expect, target)
        except OSError as exc:
            if not target.is_dir():  # else another process extracted it first: use theirs
                raise DownloadError(
                    f"could not move the folder {expect!r} extracted from {archive} to {target} "
                    f"({exc}). Remove {target} and run the command again.") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def download_and_extract(url: str, md5: str, root: Path, expect: str, *, progress: bool = True,
                         keep_archive: bool = False) -> Path:
    """Make sure the folder ``root / expect`` exists, downloading and extracting it if needed.

    A zip archive the user saved by hand as ``root / <archive name>`` with the right MD5 is used
    without network access.

    Args:
        url: Address of the zip archive; its last path component names the archive file.
        md5: Expected hex MD5 digest of the archive.
        root: Folder that receives the archive and the extracted folder.
        expect: Top-level folder the archive contains.
        progress: Show a tqdm progress bar while downloading.
        keep_archive: Keep the archive after extraction instead of deleting it.

    Returns:
        ``root / expect``.

    Raises:
        DownloadError: Downloading, verification or extraction failed.
    """
    root = Path(root)
    target = root / expect
    if target.is_dir():
        return target
    name = urllib.parse.unquote(PurePosixPath(urllib.parse.urlsplit(url).path).name)
    if not name:
        raise ValueError(f"the URL {url!r} does not end in a file name")
    root.mkdir(parents=True, exist_ok=True)
    archive = fetch(url, root / name, md5, progress=progress)
    extract_zip(archive, root, expect)
    if not keep_archive:
        archive.unlink(missing_ok=True)
    return target
