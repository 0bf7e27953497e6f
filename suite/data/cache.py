"""Decoded-tensor caches: what they are keyed on, and reading one that may be damaged.

Datasets decode their image files once and cache the tensors in the cache folder
(:func:`~mtbench.data.base.resolve_cache_dir`), under a name that holds a hash of every file's
:func:`file_stamp`: a file replaced or rewritten in place gets a new key, so a stale cache is never read.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

import torch

from mtbench.core.errors import UserError


def file_stamp(path: Path, name: str | None = None) -> str:
    """``name:size:mtime_ns`` of a file (``name``: default its file name), what decoded caches are keyed
    on: a file rewritten in place, even at the same size, gets a new key and is decoded again."""
    st = path.stat()
    return f"{name or path.name}:{st.st_size}:{st.st_mtime_ns}"


def read_cache(path: Path, keys: Iterable[str], mmap: bool = False) -> dict | None:
    """The decoded tensors cached at ``path`` (a dict holding ``keys``), or ``None`` when there is none.

    A cache that cannot be read (truncated by a crash or a full disk, corrupt, another layout) is
    removed with a one-line note on stderr and ``None`` returned, so that the caller decodes again.
    """
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, weights_only=True, mmap=mmap)
        if not isinstance(blob, dict) or not set(keys) <= set(blob):
            raise ValueError("not the expected tensors")
    except Exception as exc:  # noqa: BLE001 - torch.load raises many kinds on a damaged file
        reason = (str(exc).splitlines() or [type(exc).__name__])[0].split(". ")[0]  # torch adds paragraphs of advice
        print(f"mtbench: note: the decoded cache {path} cannot be read ({reason}); decoding the images again",
              file=sys.stderr)
        path.unlink(missing_ok=True)
        return None
    return blob


def unreadable_image(path: Path, exc: BaseException, fix: str) -> UserError:
    """The one-line error for an image file that cannot be decoded: the file, why, and ``fix``."""
    reason = (str(exc).splitlines() or ["unreadable"])[0]
    return UserError(f"{path} is not a readable image ({type(exc).__name__}: {reason}): {fix}")
