"""Seeds derived from names: every random draw of the suite comes from a generator seeded this way.

No global RNG is used anywhere: a component that draws makes its own ``torch.Generator`` from a
text that names what it draws for (``"fit|0"``, an episode's dataset, spec and index, ...), so the
draws are the same on every machine, in any order, and independent of each other.
"""

from __future__ import annotations

import hashlib

import torch


def seed_hash(text: str | bytes, *more: bytes) -> int:
    """A 63-bit seed from the sha256 of ``text`` (and of any further ``more`` bytes, hashed after it)."""
    digest = hashlib.sha256(text.encode() if isinstance(text, str) else text)
    for chunk in more:
        digest.update(chunk)
    return int.from_bytes(digest.digest()[:8], "little") >> 1


def generator(text: str | bytes, *more: bytes) -> torch.Generator:
    """A CPU generator seeded with :func:`seed_hash` of ``text`` (and ``more``)."""
    return torch.Generator().manual_seed(seed_hash(text, *more))
