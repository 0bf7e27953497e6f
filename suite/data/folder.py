"""Your own images as a dataset: ``--dataset folder:PATH``, or a name given by ``mtbench data add``.

Layouts: torchvision's ImageFolder, ``PATH/<class>/<image>`` (images searched recursively inside a
class folder), or the same under ``PATH/train/``, ``PATH/test/`` (and ``val/``) when the user has fixed
splits. Images are decoded once (:mod:`mtbench.data.images`, every core) into a tensor file in the
cache folder keyed by the files' names, sizes and mtimes, at the declared size and channels; without
a declaration, at the shape of the source a run transfers from, else 84x84 RGB. Normalisation:
ImageNet's mean and std for RGB (as miniImageNet and the X-rays), 0.5 / 0.5 for grey.

Without fixed splits, the protocol chooses them, seeded (``mtbench.core.seeding``) and recorded in the
dataset notes with a sha256 of the membership: ``episodes`` splits the classes, 60 % to fit on and 40 %
(at least 2) to evaluate on; ``transfer`` splits each class's images, 20 % (at least 1) for testing.
With fixed splits: classes shared by ``train/`` and ``test/`` make a transfer target (support images
from ``train/``, queries from ``test/``); different classes, few-shot episodes fitted on ``train/``.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import ClassVar

import torch

from mtbench.core.errors import UserError
from mtbench.core.seeding import generator
from mtbench.data import user_registry
from mtbench.data.base import DATASETS, Check, Dataset, Split, VerifyReport, atomic_torch_save, some
from mtbench.data.cache import read_cache
from mtbench.data.images import Scan, decode, scan
from mtbench.data.miniimagenet import IMAGENET_MEAN, IMAGENET_STD
from mtbench.data.transforms import describe_shape

FIXED = ("train", "val", "test")
DEFAULT_SHAPE = (3, 84, 84)
EVAL_CLASSES, TEST_IMAGES = 0.4, 0.2  # the seeded splits of a folder without fixed ones
DECODER = "1"  # bump when the decoding changes: cached tensors are keyed on it


def _fixed(path: Path) -> bool:
    return (path / "train").is_dir() and (path / "test").is_dir()


def _class_dirs(path: Path) -> set[str]:
    return {e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")}


class ImageFolder(Dataset):
    """A folder of class sub-folders of images (the base of every ``folder:`` and ``data add`` dataset)."""

    name = "folder"
    version = "1"
    path: ClassVar[Path]
    image_size: ClassVar[int | None] = None
    channels: ClassVar[int | None] = None
    splits: ClassVar[tuple[str, ...]] = ("fit", "eval", "train", "test")
    fit_split, eval_split = "fit", "eval"

    def __init__(self, root: Path | None = None, cache_dir: Path | None = None, progress: bool = True) -> None:
        super().__init__(root, cache_dir, progress)
        self.skip_bad = False
        self.shape: tuple[int, int, int] = (self.channels or DEFAULT_SHAPE[0], self.image_size or DEFAULT_SHAPE[1],
                                            self.image_size or DEFAULT_SHAPE[2])
        self._protocol = self.default_protocol
        self._memo: dict = {}  # split name -> Split, or a thunk that builds it
        self._no_fit = ""
        self._choose_splits()

    # -- what the registry and `mtbench data` show ------------------------------------------------
    def is_available(self) -> bool:
        return self.path.is_dir()

    def paths(self) -> tuple[Path, ...]:
        return (self.path,)

    def how_to_get(self) -> str:
        return (f"it is your own image folder: put one sub-folder of images per class in {self.path} "
                f"(or under its train/ and test/), or register another path with `mtbench data add`")

    def prepare(self, download: bool = True) -> None:
        if not self.path.exists():
            raise UserError(f"folder {self.path} does not exist; give the folder that holds one sub-folder of images "
                            f"per class (PATH/<class>/<image>)")
        if not self.path.is_dir():
            raise UserError(f"folder {self.path} is a file; give the folder that holds one sub-folder of images per "
                            f"class (PATH/<class>/<image>)")

    def verify(self, memo: dict | None = None) -> VerifyReport:
        """The layout, and every image decoded (through the cache): a file Pillow cannot read fails."""
        if not self.is_available():
            return VerifyReport.missing(self)
        try:
            scans = self._scans()
            layout = Check("layout", True, "; ".join(
                f"{f'{s}/: ' if s else ''}{len(sc.classes)} classes, {sc.count} images" for s, sc in scans.items()))
        except UserError as exc:
            return VerifyReport.of_checks(self, [Check("layout", False, str(exc))])
        _, _, bad = self._decoded(scans)
        images = (Check("images", False, f"{len(bad)} image(s) Pillow cannot read: {some(n for n, _ in bad)} "
                                         f"(skip them with --skip-bad-images, or replace them)") if bad
                  else Check("images", True, f"every image decodes ({describe_shape(self.shape)})"))
        return VerifyReport.of_checks(self, [layout, images], notes=self._ignored_notes(scans))

    # -- a run's choices ---------------------------------------------------------------------------
    def configure(self, protocol: str, source_shape: tuple[int, int, int] | None = None,
                  skip_bad_images: bool = False) -> None:
        self.skip_bad = skip_bad_images
        self._protocol = protocol
        if source_shape is not None:
            self.shape = (self.channels or source_shape[0], self.image_size or source_shape[1],
                          self.image_size or source_shape[2])
        self._memo.clear()
        self._choose_splits()

    def _choose_splits(self) -> None:
        if self.is_available() and _fixed(self.path):
            present = tuple(s for s in FIXED if (self.path / s).is_dir())
            self.splits = present
            self.fit_split, self.eval_split = "train", "test"
            same = _class_dirs(self.path / "train") == _class_dirs(self.path / "test")
            self.support_split = "train" if same else None
            if self._protocol == "transfer" and not same:
                raise UserError(f"--protocol transfer needs the same classes in {self.path}/train and "
                                f"{self.path}/test; they differ, so use --protocol episodes")
        elif self._protocol == "transfer":
            self.fit_split, self.eval_split, self.support_split = "train", "test", "train"
        else:
            self.fit_split, self.eval_split, self.support_split = "fit", "eval", None

    # -- loading -----------------------------------------------------------------------------------
    def _scans(self) -> dict[str, Scan]:
        """``{split folder or "": scan}`` of the layout (checked)."""
        self.prepare()
        if _fixed(self.path):
            return {s: scan(self.path / s, f"{self.path}/{s}") for s in FIXED if (self.path / s).is_dir()}
        return {"": scan(self.path)}

    def _decoded(self, scans: dict[str, Scan]) -> tuple[list[str], torch.Tensor, list[tuple[str, str]]]:
        """Every image's relative path, ``uint8[N, *shape]`` and the unreadable ``(path, reason)``; cached."""
        names = [str(Path(s) / f) if s else f for s, sc in scans.items() for files in sc.files for f in files]
        c, size, _ = self.shape
        key = hashlib.sha256(f"{DECODER}|{c}|{size}\n".encode())
        for s, sc in scans.items():
            for f in (f for files in sc.files for f in files):
                size_, mtime = sc.stats[f]
                key.update(f"{Path(s) / f if s else f}:{size_}:{mtime}\n".encode())
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.path.name)[:40]
        cache = self.cache_dir / f"folder-{slug}-{size}px-{c}ch-{key.hexdigest()[:16]}.pt"
        blob = read_cache(cache, ("names", "images", "bad"), mmap=True)
        if blob is not None:
            return list(blob["names"]), blob["images"], [tuple(b) for b in blob["bad"]]
        images, failed = decode([self.path / n for n in names], size, c, self.progress,
                                desc=f"decoding {self.path.name} (once)")
        bad = [(names[i], why) for i, why in failed]
        if not bad or self.skip_bad:
            atomic_torch_save({"names": names, "images": torch.from_numpy(images), "bad": [list(b) for b in bad]},
                              cache)
        return names, torch.from_numpy(images), bad

    def _all(self) -> dict[str, tuple[list[str], list[list[int]], torch.Tensor]]:
        """``{split folder: (classes, indices of each class's images, images)}`` after bad-image handling."""
        scans = self._scans()
        names, images, bad = self._decoded(scans)
        self.notes = self._ignored_notes(scans)
        if bad and not self.skip_bad:
            name, why = bad[0]
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise UserError(f"{self.path / name} is not a readable image ({why}){more}: replace or remove it, or "
                            f"add --skip-bad-images to leave it out")
        skipped = {n for n, _ in bad}
        if skipped:
            self.notes.append(f"skipped {len(skipped)} unreadable image(s) (--skip-bad-images): {some(sorted(skipped))}")
        out, i = {}, 0
        for s, sc in scans.items():
            classes, members = [], []
            for cls, files in zip(sc.classes, sc.files):
                keep = [i + k for k, f in enumerate(files) if (str(Path(s) / f) if s else f) not in skipped]
                i += len(files)
                if keep:
                    classes.append(cls)
                    members.append(keep)
            if len(classes) < 2:
                raise UserError(f"{self.path / s} has fewer than two classes with readable images; add images")
            out[s] = (classes, members, images)
        return out

    def _ignored_notes(self, scans: dict[str, Scan]) -> list[str]:
        ignored = [str(Path(s) / f) if s else f for s, sc in scans.items() for f in sc.ignored]
        return [f"ignored {len(ignored)} non-image file(s) in {self.path}: {some(ignored)}"] if ignored else []

    def _split(self, name: str, classes: list[str], members: list[list[int]], images: torch.Tensor):
        """A thunk building the split (only the splits a run asks for are gathered from the decoded images)."""
        def build() -> Split:
            flat = [i for m in members for i in m]
            runs, start = [], 0  # consecutive indices are slices: a split of whole classes copies little
            for k in range(1, len(flat) + 1):
                if k == len(flat) or flat[k] != flat[k - 1] + 1:
                    runs.append((flat[start], flat[k - 1] + 1))
                    start = k
            picked = (images[runs[0][0]:runs[0][1]] if len(runs) == 1
                      else torch.cat([images[a:b] for a, b in runs]) if len(runs) <= 64
                      else images[torch.tensor(flat, dtype=torch.int64)])
            labels = torch.arange(len(classes)).repeat_interleave(torch.tensor([len(m) for m in members]))
            c = self.shape[0]
            mean, std = (IMAGENET_MEAN, IMAGENET_STD) if c == 3 else ((0.5,) * c, (0.5,) * c)
            return Split(self.name, name, picked, labels, tuple(classes), mean, std, self.version)
        return build

    def load_split(self, split: str) -> Split:
        if not self._memo:
            self._memo.update(self._make_splits())
        if split == "fit" and split not in self._memo:
            raise UserError(self._no_fit)
        if split not in self._memo:
            raise UserError(f"{self.name} has no split '{split}' under --protocol {self._protocol}; its splits are "
                            f"{', '.join(self._memo)}")
        if not isinstance(self._memo[split], Split):
            self._memo[split] = self._memo[split]()
        return self._memo[split]

    def _make_splits(self) -> dict[str, Split]:
        parts = self._all()
        where = f"{describe_shape(self.shape)}, decoded from {self.path}"
        if "" not in parts:
            self.notes.insert(0, f"fixed splits {', '.join(parts)} ({where})")
            return {s: self._split(s, *p) for s, p in parts.items()}
        classes, members, images = parts[""]
        membership = hashlib.sha256()
        if self._protocol == "transfer":
            train, test = [], []
            for cls, m in zip(classes, members):
                if len(m) < 2:
                    raise UserError(f"class '{cls}' of {self.path} has {len(m)} image; the transfer split needs at "
                                    f"least 2 per class (one to adapt on, one to test): add images")
                order = torch.randperm(len(m), generator=generator(f"folder|transfer|{cls}|{len(m)}")).tolist()
                n_test = max(1, round(TEST_IMAGES * len(m)))
                test.append(sorted(m[k] for k in order[:n_test]))
                train.append(sorted(m[k] for k in order[n_test:]))
            for part in (*train, *test):
                membership.update(",".join(map(str, part)).encode() + b"\n")
            self.notes.insert(0, f"no fixed splits: {round(100 * TEST_IMAGES)} % of each class's images held out as "
                                 f"test images, seeded per class name ('folder|transfer|<class>|<count>'): train "
                                 f"{sum(map(len, train))} / test {sum(map(len, test))} images, membership sha256 "
                                 f"{membership.hexdigest()[:16]} ({where})")
            return {"train": self._split("train", classes, train, images),
                    "test": self._split("test", classes, test, images)}
        n_eval = len(classes) if len(classes) < 4 else max(2, round(EVAL_CLASSES * len(classes)))
        order = torch.randperm(len(classes), generator=generator("folder|classes|" + "\n".join(classes))).tolist()
        ev, fit = sorted(order[:n_eval]), sorted(order[n_eval:])
        membership.update(("\n".join(classes[k] for k in ev) + "|" + "\n".join(classes[k] for k in fit)).encode())
        self.notes.insert(0, f"no fixed splits: classes split by seed 'folder|classes|<class names>' into {len(fit)} "
                             f"fit classes ({some(classes[k] for k in fit) or 'none'}) and {len(ev)} evaluation "
                             f"classes ({some(classes[k] for k in ev)}), membership sha256 "
                             f"{membership.hexdigest()[:16]} ({where})")
        out = {"eval": self._split("eval", [classes[k] for k in ev], [members[k] for k in ev], images)}
        if fit:
            out["fit"] = self._split("fit", [classes[k] for k in fit], [members[k] for k in fit], images)
        else:
            self._no_fit = (f"{self.path} has only {len(classes)} classes, all used for evaluation episodes: "
                                  f"nothing to fit on; use --budget 0, --source DATASET or --protocol transfer")
        return out


_CLASSES: dict[tuple, type[ImageFolder]] = {}


def folder_dataset(path: str | os.PathLike, name: str | None = None, image_size: int | None = None,
                   channels: int | None = None) -> type[ImageFolder]:
    """The dataset class of the image folder at ``path`` (one class object per name, path and declaration)."""
    given = str(path)
    path = Path(path).expanduser().resolve()
    if name is None:
        if not path.exists():
            raise UserError(f"--dataset folder:{given}: {path} does not exist; give the folder that holds one "
                            f"sub-folder of images per class (PATH/<class>/<image>)")
        if not path.is_dir():
            raise UserError(f"--dataset folder:{given}: {path} is a file; give the folder that holds one sub-folder "
                            f"of images per class (PATH/<class>/<image>)")
    key = (name, str(path), image_size, channels)
    if key not in _CLASSES:
        protocol = "episodes"
        if path.is_dir() and _fixed(path):
            same = _class_dirs(path / "train") == _class_dirs(path / "test")
            protocol = "transfer" if same else "episodes"
        shape = f"{image_size}x{image_size}" if image_size else "the source's size (else 84x84)"
        kind = {1: " grey", 3: " RGB"}.get(channels or 0, "")
        attrs = {"name": name or f"folder:{path}", "path": path, "image_size": image_size, "channels": channels,
                 "default_protocol": protocol, "__doc__": f"image folder {path}",
                 "description": f"image folder {path}, {shape}{kind}"}
        _CLASSES[key] = type("ImageFolder_" + re.sub(r"\W", "_", name or path.name), (ImageFolder,), attrs)
    return _CLASSES[key]


def registered() -> dict[str, type[Dataset]]:
    """The folders registered by ``mtbench data add`` (read from the user's registry file at every call)."""
    return {name: folder_dataset(e["path"], name, e.get("image_size"), e.get("channels"))
            for name, e in user_registry.read().items()}


DATASETS.add_prefix("folder", folder_dataset)
DATASETS.add_source(registered)
