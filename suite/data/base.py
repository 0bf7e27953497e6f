"""The data contract: a :class:`Split` of class-indexed uint8 images, and the :class:`Dataset` base.

Images stay uint8 on the device; :meth:`Split.gather` turns a batch of indices into normalised
float images there, batched, so no per-image Python runs inside a training or evaluation loop.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from ..atomic import atomic_write
from ..errors import UserError
from ..registry import Registry

DATASETS: Registry[type["Dataset"]] = Registry(
    "datasets",
    builtins=("mtbench.data.omniglot", "mtbench.data.omniglot_shift", "mtbench.data.synthetic",
              "mtbench.data.miniimagenet", "mtbench.data.xray"),
)


def _user_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mtbench"


def resolve_data_root(given: str | os.PathLike | None = None) -> Path:
    """Where datasets live: ``given`` (``--data-root``), else ``$MTBENCH_DATA``, else a user cache folder."""
    if given:
        return Path(given).expanduser().resolve()
    env = os.environ.get("MTBENCH_DATA")
    if env:
        return Path(env).expanduser().resolve()
    return _user_cache() / "data"


def resolve_cache_dir() -> Path:
    """Where decoded tensor caches go (never inside the data root, which may be read-only)."""
    env = os.environ.get("MTBENCH_CACHE")
    return Path(env).expanduser().resolve() if env else _user_cache() / "tensors"


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a dataset: images grouped by class.

    Attributes:
        dataset: registered dataset name.
        name: split name (``"train"``, ``"test"``, ...).
        images: ``uint8[N, C, H, W]``, sorted by label.
        labels: ``int64[N]``, non-decreasing, values in ``[0, num_classes)``.
        class_names: one name per class.
        mean, std: per-channel normalisation applied by :meth:`gather` (on the 0..1 scale).
        version: dataset version string, part of :attr:`fingerprint`.
    """

    dataset: str
    name: str
    images: Tensor
    labels: Tensor
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    version: str = "1"
    class_start: Tensor = field(init=False, repr=False)
    class_count: Tensor = field(init=False, repr=False)
    _scale: tuple[Tensor, Tensor] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8[N, C, H, W], got {self.images.dtype}{list(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must be int64[N] matching images")
        labels = self.labels.to(torch.int64)
        if labels.numel() and bool((labels[1:] < labels[:-1]).any()):
            raise ValueError("a Split's images must be sorted by label")
        count = torch.bincount(labels.cpu(), minlength=len(self.class_names))
        if count.numel() != len(self.class_names) or bool((count == 0).any()):
            raise ValueError("every class must have at least one image and a name")
        start = torch.cumsum(count, 0) - count
        object.__setattr__(self, "labels", labels)
        # index metadata stays on the CPU, where episodes are drawn: no device->host copy per episode
        object.__setattr__(self, "class_count", count)
        object.__setattr__(self, "class_start", start)
        if len(self.mean) != self.images.shape[1] or len(self.std) != self.images.shape[1]:
            raise ValueError("mean and std need one value per channel")
        mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1).to(self.images.device)
        std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1).to(self.images.device)
        object.__setattr__(self, "_scale", (mean, std))

    # -- facts ----------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def fingerprint(self) -> str:
        """Identifies this split's content layout: dataset, version, split, shape and labels."""
        h = hashlib.sha256(f"{self.dataset}|{self.version}|{self.name}|{list(self.images.shape)}".encode())
        h.update(self.class_count.numpy().tobytes())
        h.update("\n".join(self.class_names).encode())
        return h.hexdigest()[:16]

    # -- device work ----------------------------------------------------------------------------
    def to(self, device: torch.device | str) -> "Split":
        """This split with its tensors on ``device`` (one copy; a no-op when already there)."""
        device = torch.device(device)
        if self.images.device == device:
            return self
        return Split(self.dataset, self.name, self.images.to(device), self.labels.to(device),
                     self.class_names, self.mean, self.std, self.version)

    def normalize(self, images: Tensor) -> Tensor:
        """``uint8[..., C, H, W]`` on the split's device -> normalised ``float32`` (no host transfer)."""
        mean, std = self._scale
        return (images.float().div_(255.0) - mean) / std

    def gather(self, indices: Tensor) -> Tensor:
        """Normalised float images at ``indices`` (any shape ``S``) -> ``float32[*S, C, H, W]``."""
        return self.normalize(self.images[indices])

    def without_labels(self) -> "Split":
        """The same images as one class named ``unlabelled``: what a method may see of a target domain."""
        return Split(self.dataset, f"{self.name} (unlabelled)", self.images,
                     torch.zeros_like(self.labels), ("unlabelled",), self.mean, self.std, self.version)


class Dataset:
    """A registered dataset: knows where its files are, how to fetch them and how to load a split.

    Subclasses set the class attributes and implement :meth:`load_split`; ``prepare`` downloads
    missing files (only when asked: nothing is downloaded by a constructor).
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    fit_split: ClassVar[str] = "train"
    eval_split: ClassVar[str] = "test"
    #: target-domain images a method may train on without their labels (domain adaptation), or None
    unlabelled_split: ClassVar[str | None] = None

    def __init__(self, root: Path | None = None, cache_dir: Path | None = None, progress: bool = True) -> None:
        self.root = Path(root) if root is not None else resolve_data_root()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else resolve_cache_dir()
        self.progress = progress
        #: human-readable sentences about this copy of the data that a result should carry (e.g. a subset)
        self.notes: list[str] = []

    def is_available(self) -> bool:
        """Whether the files needed to load are present under the data root."""
        return True

    def prepare(self, download: bool = True) -> None:
        """Make the files available (download when allowed); raise a :class:`UserError` otherwise."""

    def load(self, split: str) -> Split:
        """Load one split as CPU tensors."""
        if split not in self.splits:
            raise UserError(f"dataset '{self.name}' has no split '{split}'; its splits are {', '.join(self.splits)}")
        return self.load_split(split)

    def load_split(self, split: str) -> Split:  # pragma: no cover - abstract
        raise NotImplementedError


def atomic_torch_save(obj: object, path: Path) -> None:
    """``torch.save`` atomically (see :func:`mtbench.atomic.atomic_write`)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))
