"""Image files a user brings: finding them in class folders, and decoding them on every core.

:func:`scan` walks a folder of class sub-folders (torchvision's ImageFolder layout) and returns the
images of each class, refusing what would make a bad dataset (no images, one class, class names that
differ only in case, a symlink loop) with a :class:`UserError` that names the folder and the fix.
Files that Pillow cannot read by their extension are ignored and counted.

:func:`decode` turns a list of files into ``uint8[N, C, S, S]``: each image converted to grey (``L``,
ITU-R 601-2 luminance) or RGB, 16-bit grey scaled to 8 bits, and resized to ``S x S`` with Lanczos
(JPEGs are first drafted at no less than twice that size), the decoding of
:mod:`mtbench.data.xray`. Many files are decoded in a process pool, in chunks, one process per core.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from mtbench.core.errors import UserError

#: every file extension Pillow can open (PNG, JPEG, BMP, TIFF, GIF, WebP, ...), lower case
IMAGE_SUFFIXES = frozenset(ext.lower() for ext in Image.registered_extensions())
#: below this many files, decoding stays in this process (a pool costs more than it saves)
POOL_MIN = 256
CHUNK = 64


@dataclass
class Scan:
    """The images found under a folder: ``classes[i]`` holds ``files[i]`` (paths relative to ``root``, sorted).

    Attributes:
        ignored: files that are not images by their extension (hidden files aside).
    """

    root: Path
    classes: list[str] = field(default_factory=list)
    files: list[list[str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    #: ``(size, mtime_ns)`` of each image, by its path relative to ``root``
    stats: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(f) for f in self.files)


def is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _walk(top: Path, root: Path, ignored: list[str], stats: dict[str, tuple[int, int]] | None = None) -> list[str]:
    """Image paths under ``top`` relative to ``root``, following symlinks; a loop is a :class:`UserError`.
    ``stats`` receives each image's ``(size, mtime_ns)`` (from the directory scan: no second ``stat``)."""
    found: list[str] = []
    try:
        ancestors = [os.path.realpath(top, strict=True)]
    except OSError as exc:
        raise UserError(f"{top} cannot be read ({exc.strerror or exc}): a symlink loop or a broken link; "
                        f"remove or fix it") from None
    skip = len(str(root)) + 1

    def visit(folder: str, seen: list[str]) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise UserError(f"cannot list {folder} ({exc.strerror or exc}); fix its permissions or remove it") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()
                real = os.path.realpath(entry.path, strict=True) if entry.is_symlink() else None
            except OSError:
                raise UserError(f"{entry.path} is a symlink loop or a broken link; remove it or point it at a real "
                                f"file or folder") from None
            if is_dir:
                real = real or os.path.realpath(entry.path)
                if real in seen:
                    raise UserError(f"{entry.path} is a symlink loop (it leads back to {real}); remove the link")
                visit(entry.path, [*seen, real])
            elif entry.is_file() and is_image(entry.name):
                found.append(entry.path[skip:])
                if stats is not None:
                    st = entry.stat()
                    stats[entry.path[skip:]] = (st.st_size, st.st_mtime_ns)
            elif entry.is_file():
                ignored.append(entry.path[skip:])

    visit(str(top), ancestors)
    return found


def _check_folder(folder: Path, what: str) -> None:
    if not folder.exists():
        raise UserError(f"{what} does not exist; give a folder that holds one sub-folder of images per class")
    if not folder.is_dir():
        raise UserError(f"{what} is a file, not a folder; give the folder that holds one sub-folder of images "
                        f"per class (PATH/<class>/<image>)")


def find_images(folder: Path, what: str) -> tuple[list[str], list[str]]:
    """Every image under ``folder`` (recursively, sorted, relative to it) and the non-image files ignored."""
    folder = Path(folder)
    if not folder.exists() or not folder.is_dir():
        raise UserError(f"{what} {'is a file' if folder.exists() else 'does not exist'}; give a folder of images")
    ignored: list[str] = []
    files = _walk(folder, folder, ignored)
    if not files:
        raise UserError(f"{what} holds no images (any format Pillow reads: PNG, JPEG, BMP, TIFF, ...)")
    return files, ignored


def scan(folder: Path, what: str | None = None) -> Scan:
    """The class sub-folders of ``folder`` and their images (searched recursively, as torchvision does).

    Raises a :class:`UserError` for a missing folder, a file, no images, a single class, an empty
    class, class names that differ only in case, images outside a class folder and symlink loops.
    ``what`` names the folder in messages (default: its path).
    """
    folder = Path(folder)
    what = what or str(folder)
    _check_folder(folder, what)
    out = Scan(folder)
    loose: list[str] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise UserError(f"cannot list {what} ({exc.strerror or exc})") from None
    lower: dict[str, str] = {}
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if not is_dir:
            if entry.is_symlink() and not os.path.exists(entry.path):
                raise UserError(f"{entry.path} is a symlink loop or a broken link; remove it")
            (loose if is_image(entry.name) else out.ignored).append(entry.name)
            continue
        if entry.name.lower() in lower:
            raise UserError(f"{what} has class folders '{lower[entry.name.lower()]}' and '{entry.name}', whose names "
                            f"differ only in case: merge or rename one of them")
        lower[entry.name.lower()] = entry.name
        out.classes.append(entry.name)
        out.files.append(_walk(folder / entry.name, folder, out.ignored, out.stats))
    if loose:
        raise UserError(f"{what} holds images outside class folders ({loose[0]}{' and more' if len(loose) > 1 else ''}):"
                        f" put each class's images in its own sub-folder, {what}/<class>/<image>")
    if not out.count:
        raise UserError(f"{what} holds no images: put each class's images in a sub-folder, {what}/<class>/<image> "
                        f"(any format Pillow reads: PNG, JPEG, BMP, TIFF, ...)")
    empty = [c for c, f in zip(out.classes, out.files) if not f]
    if empty:
        raise UserError(f"class folder {what}/{empty[0]} holds no images: add images to it or remove it")
    if len(out.classes) < 2:
        raise UserError(f"{what} has one class ({out.classes[0]}): a classifier needs at least two; add a "
                        f"sub-folder of images for each other class")
    return out


def to_array(im: Image.Image, size: int, channels: int) -> np.ndarray:
    """One opened image as ``uint8[channels, size, size]`` (grey by luminance or RGB, Lanczos-resized)."""
    im.draft(im.mode, (2 * size, 2 * size))  # JPEG: decode large originals at 1/2..1/8 scale
    if im.mode.startswith("I"):  # 16-bit (or 32-bit integer) grey: scale the 16-bit range to 8 bits
        wide = np.asarray(im, dtype=np.uint32 if im.mode == "I" else np.uint16).astype(np.float64)
        im = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        im = Image.fromarray(np.clip(np.rint(np.asarray(im, dtype=np.float64)), 0, 255).astype(np.uint8), "L")
    im = im.convert("L" if channels == 1 else "RGB").resize((size, size), Image.Resampling.LANCZOS)
    arr = np.asarray(im)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def _decode_chunk(job: tuple[list[str], int, int]) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Decode a chunk of files: their images, and ``(position, reason)`` of each that failed."""
    paths, size, channels = job
    out = np.zeros((len(paths), channels, size, size), np.uint8)
    bad = []
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as im:
                out[i] = to_array(im, size, channels)
        except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds on a corrupt file
            bad.append((i, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}"))
    return out, bad


def decode(paths: list[Path], size: int, channels: int, progress: bool = True, desc: str = "decoding images",
           workers: int | None = None) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """``paths`` as ``uint8[N, channels, size, size]`` and the ``(index, reason)`` of each unreadable file
    (its image left black). A pool of ``workers`` processes (default: every core) decodes chunks of
    :data:`CHUNK` files when there are at least :data:`POOL_MIN`."""
    names = [str(p) for p in paths]
    chunks = [names[i:i + CHUNK] for i in range(0, len(names), CHUNK)]
    out = np.empty((len(names), channels, size, size), np.uint8)
    bad: list[tuple[int, str]] = []
    workers = workers or os.cpu_count() or 1
    with tqdm(total=len(names), desc=desc, unit="img", disable=not progress, mininterval=0.5) as bar:
        if workers > 1 and len(names) >= POOL_MIN:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else None)
            with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=context) as pool:
                results = pool.map(_decode_chunk, [(c, size, channels) for c in chunks])
                for k, (images, failed) in enumerate(results):
                    out[k * CHUNK:k * CHUNK + len(images)] = images
                    bad += [(k * CHUNK + i, why) for i, why in failed]
                    bar.update(len(images))
        else:
            for k, chunk in enumerate(chunks):
                images, failed = _decode_chunk((chunk, size, channels))
                out[k * CHUNK:k * CHUNK + len(images)] = images
                bad += [(k * CHUNK + i, why) for i, why in failed]
                bar.update(len(images))
    return out, bad
