"""The data contract: a :class:`Split` of class-indexed uint8 images, and the :class:`Dataset` base.

Images stay uint8 on the device; :meth:`Split.gather` turns a batch of indices into normalised
float images there, batched, so no per-image Python runs inside a training or evaluation loop.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import ClassVar

import torch
from torch import Tensor

from mtbench.core.atomic import atomic_write
from mtbench.core.errors import UserError
from mtbench.core.registry import Registry

DATASETS: Registry[type["Dataset"]] = Registry(
    "datasets",
    builtins=("mtbench.data.*",),  # each dataset is one module of mtbench.data
)


def _user_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mtbench"


def resolve_data_root(given: str | os.PathLike | None = None) -> Path:
    """Where datasets live: ``given`` (``--data-root``), else ``$MTBENCH_DATA``, else a user cache folder."""
    if given:
        return _folder(Path(given).expanduser().resolve(), f"--data-root {given}")
    env = os.environ.get("MTBENCH_DATA")
    if env:
        return _folder(Path(env).expanduser().resolve(), f"MTBENCH_DATA={env}")
    return _folder(_user_cache() / "data", "the default data root")


DATA_FIX = "point it at the folder that holds the datasets (e.g. omniglot/), or at an empty folder to download into"


def _folder(path: Path, what: str, fix: str = DATA_FIX) -> Path:
    """``path``, unless it exists and is not a folder: a :class:`UserError` naming ``what`` set it, and ``fix``."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{what}: {path} is a file, not a folder; {fix}")
    return path


def resolve_cache_dir() -> Path:
    """Where decoded tensor caches go (never inside the data root, which may be read-only)."""
    env = os.environ.get("MTBENCH_CACHE")
    if env:
        return _folder(Path(env).expanduser().resolve(), f"MTBENCH_CACHE={env}",
                       "point it at a folder for the decoded tensors (it is created if missing)")
    return _user_cache() / "tensors"


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
        return self.standardize(images.float().div_(255.0))

    def standardize(self, images: Tensor) -> Tensor:
        """``float32[..., C, H, W]`` on the 0..1 scale (augmented copies, say) -> normalised as :meth:`normalize`."""
        mean, std = self._scale
        return (images - mean) / std

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
    #: where evaluation draws the labelled (support) images from, when not ``eval_split`` itself: a
    #: target's own training images, the queries then coming from its test images
    support_split: ClassVar[str | None] = None
    #: the dataset methods are fitted on when this one is a transfer target (``--source`` changes it);
    #: ``None``: fit on this dataset's own ``fit_split``
    default_source: ClassVar[str | None] = None
    #: ``"episodes"`` (few-shot tasks) or ``"transfer"`` (a fixed-size labelled target set, many trials)
    default_protocol: ClassVar[str] = "episodes"

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

    # -- what ``mtbench data`` shows and does ----------------------------------------------------
    def paths(self) -> tuple[Path, ...]:
        """The files or folders under the data root that hold this dataset (none for generated data)."""
        return ()

    def how_to_get(self) -> str:
        """One sentence: how to get this dataset when it is missing (the command, the URL or DOI)."""
        return f"put its files under {self.root}, or point --data-root / MTBENCH_DATA at a folder that holds them"

    def download(self) -> None:
        """Fetch the dataset from its official URL; the default: there is none, a :class:`UserError` says what to do."""
        raise UserError(f"mtbench cannot download {self.name}, there is no official download URL: {self.how_to_get()}")

    def prepare_from(self, path: str | os.PathLike) -> Path:
        """Check a copy the user has at ``path`` and install it under the data root (when the dataset supports it)."""
        raise UserError(f"`mtbench data prepare` does not support {self.name}: {self.how_to_get()}")

    def verify(self, memo: dict | None = None) -> "VerifyReport":
        """Check this copy of the data: structure and counts against the official release, checksums.

        The default knows no expected structure or checksum: a present dataset is reported as found,
        not as verified. ``memo`` shares work (the hashing of one folder) between the datasets of one
        command, e.g. ``xray`` and ``xray3``, which read the same folder.
        """
        if not self.is_available():
            return VerifyReport.missing(self)
        return VerifyReport(self.name, "found", self.paths(),
                            notes=["no expected structure or checksums are known for this dataset"])

    def structure_checks(self) -> list["Check"]:
        """The cheap part of :meth:`verify`: this copy's folders and file counts against the official
        release, from directory listings alone (no file is read); empty when no structure is known.
        ``mtbench run`` refuses a copy that fails one before any work."""
        return []

    def configure(self, protocol: str, source_shape: tuple[int, int, int] | None = None,
                  skip_bad_images: bool = False) -> None:
        """What a run tells the dataset before loading: the protocol (``episodes``/``transfer``), the image
        shape of the source it transfers from (``None``: none), and whether unreadable images may be
        skipped. Datasets with fixed splits and shape (the built-in ones) ignore it; an image folder
        (:mod:`mtbench.data.folder`) chooses its splits and, without a declared size, takes the source's."""

    def load(self, split: str) -> Split:
        """Load one split as CPU tensors."""
        if split not in self.splits:
            raise UserError(f"dataset '{self.name}' has no split '{split}'; its splits are {', '.join(self.splits)}")
        return self.load_split(split)

    def load_split(self, split: str) -> Split:  # pragma: no cover - abstract
        raise NotImplementedError


def atomic_torch_save(obj: object, path: Path) -> None:
    """``torch.save`` atomically (see :func:`mtbench.core.atomic.atomic_write`)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


# -- verification -----------------------------------------------------------------------------------
SUMS_FILE = "SHA256SUMS"


@dataclass(frozen=True)
class Check:
    """One verification of a dataset copy.

    Attributes:
        what: what was checked (``"structure"``, ``"SHA256SUMS"``, ``"MD5 images_background.zip"``).
        ok: ``True`` passed, ``False`` failed, ``None`` could not be done (e.g. no checksum file).
        detail: one line: what was found.
    """

    what: str
    ok: bool | None
    detail: str


@dataclass
class VerifyReport:
    """What ``mtbench data verify`` found for one dataset.

    ``status`` is one of :data:`STATUSES`: ``missing`` (not under the data root), ``failed`` (a check
    failed), ``subset`` (every check passed, but the copy holds fewer images than the official release),
    ``verified`` (every check passed and at least one did something), ``found`` (present, nothing could
    be checked), ``generated`` (no files: nothing to check).
    """

    dataset: str
    status: str
    paths: tuple[Path, ...] = ()
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    how_to_get: str = ""

    STATUSES: ClassVar[tuple[str, ...]] = ("verified", "subset", "found", "generated", "missing", "failed")

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @classmethod
    def missing(cls, dataset: "Dataset") -> "VerifyReport":
        return cls(dataset.name, "missing", dataset.paths(), how_to_get=dataset.how_to_get())

    @classmethod
    def of_checks(cls, dataset: "Dataset", checks: list[Check], subset: bool = False,
                  notes: Iterable[str] = ()) -> "VerifyReport":
        """The report whose status follows from ``checks``: failed, else subset, else verified (or found)."""
        if any(c.ok is False for c in checks):
            status = "failed"
        elif subset:
            status = "subset"
        else:
            status = "verified" if any(c.ok for c in checks) else "found"
        return cls(dataset.name, status, dataset.paths(), list(checks), list(notes))


def some(items: Iterable[object], first: int = 3) -> str:
    """``"a, b, c and 7 more"``: the first few of a list, and how many more there are."""
    items = [str(i) for i in items]
    shown = ", ".join(items[:first])
    return shown + (f" and {len(items) - first} more" if len(items) > first else "")


def _parse_sums(sums: Path) -> tuple[list[tuple[str, str]], list[int]]:
    """``[(sha256, relative path), ...]`` of a ``sha256sum`` file, and the numbers of malformed lines."""
    entries, bad = [], []
    for number, line in enumerate(sums.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, sep, rel = line.partition(" ")
        rel = rel[1:] if rel[:1] in (" ", "*") else rel  # "hash  path" (text) or "hash *path" (binary)
        parts = PurePosixPath(rel).parts
        if (not sep or len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest) or not rel
                or rel.startswith("/") or ".." in parts):
            bad.append(number)
            continue
        entries.append((digest.lower(), rel))
    return entries, bad


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256sums(folder: Path, progress: bool = True, memo: dict | None = None) -> Check:
    """Check every file that ``folder/SHA256SUMS`` lists (``sha256  relative/path`` per line).

    The list comes with the copy, not from an official release: a pass says that the files are the
    ones this copy was published with (nothing corrupt, truncated or missing), and files it does not
    list are not looked at. Shows a progress bar over the files when ``progress``.
    """
    from tqdm.auto import tqdm

    folder = Path(folder)
    key = ("sha256sums", str(folder.resolve()))
    if memo is not None and key in memo:
        return memo[key]
    sums = folder / SUMS_FILE
    if not sums.is_file():
        out = Check(SUMS_FILE, None, f"no {SUMS_FILE} in {folder}: file contents not checked")
    else:
        entries, bad = _parse_sums(sums)
        missing, differ = [], []
        for digest, rel in tqdm(entries, desc=f"hashing {folder.name}", unit="file", leave=False,
                                mininterval=0.5, disable=not progress or len(entries) < 100):
            try:
                if sha256_file(folder / rel) != digest:
                    differ.append(rel)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
                missing.append(rel)
        problems = []
        if differ:
            problems.append(f"{len(differ)} differ: {some(differ)}")
        if missing:
            problems.append(f"{len(missing)} missing: {some(missing)}")
        if bad:
            problems.append(f"{len(bad)} malformed line(s) in {SUMS_FILE}: line {some(bad)}")
        if not entries and not bad:
            problems.append(f"{SUMS_FILE} lists no files")
        if problems:
            out = Check(SUMS_FILE, False, f"of the {len(entries)} files listed in {sums}, " + "; ".join(problems))
        else:
            out = Check(SUMS_FILE, True, f"all {len(entries)} files listed in {SUMS_FILE} match "
                                         f"(the list that came with this copy)")
    if memo is not None:
        memo[key] = out
    return out


def check_md5(path: Path, md5: str, source: str) -> Check:
    """Compare a file's MD5 with the official one published by ``source``."""
    from mtbench.data.download import md5sum

    got = md5sum(path)
    if got == md5.lower():
        return Check(f"MD5 {path.name}", True, f"{path.name} has the official MD5 {got} ({source})")
    return Check(f"MD5 {path.name}", False, f"{path} has MD5 {got}, but the official file ({source}) has MD5 "
                                            f"{md5.lower()}: it is corrupt, truncated or another version")
