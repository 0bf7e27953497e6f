"""Omniglot → Omniglot-M: a domain-shift task built from real data, for domain adaptation (DANN).

The recipe of MNIST-M (Ganin et al. 2016, §5.2.1) applied to Omniglot: each target image is a
character blended into a colour patch cut from a natural photograph, ``|patch - character|`` per
channel, so strokes take the inverted colours of the photo. The photos are miniImageNet images
(its training classes, read from the usual ``images/`` + ``train.csv`` layout).

Splits (Vinyals classes, rotations included):

* ``source`` — clean characters of the train+val classes, drawings at even positions, grey in 3
  channels; labelled: the fit split.
* ``target`` — the *other* drawings of the same classes (odd positions), shifted; a method sees
  them only as unlabelled images (``unlabelled_split``).
* ``test`` — every drawing of the test classes, shifted: the evaluation episodes.

No target label and no test image is ever given to ``fit``. The blend is deterministic (a fixed
seed picks patch and crop per image), so every machine builds the same images.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from mtbench.core.errors import UserError
from mtbench.data.base import DATASETS, Check, Dataset, Split, VerifyReport
from mtbench.data.omniglot import Omniglot
from mtbench.core.seeding import generator

PHOTOS_PER_CLASS = 6  # the first 6 photos of each miniImageNet training class: 384 photos


def blend_into_patches(chars: Tensor, photos: Tensor, generator: torch.Generator) -> Tensor:
    """MNIST-M blending: ``uint8[N, 1, h, w]`` characters (bright strokes) and ``uint8[P, 3, H, W]``
    photos -> ``uint8[N, 3, h, w]`` images ``|crop - character|``, one random photo and crop each."""
    n, _, h, w = chars.shape
    _, _, ph, pw = photos.shape
    which = torch.randint(photos.shape[0], (n,), generator=generator)
    top = torch.randint(ph - h + 1, (n,), generator=generator)
    left = torch.randint(pw - w + 1, (n,), generator=generator)
    rows = (top[:, None] + torch.arange(h))[:, :, None]  # [N, h, 1]
    cols = (left[:, None] + torch.arange(w))[:, None, :]  # [N, 1, w]
    crops = photos.permute(0, 2, 3, 1)[which[:, None, None], rows, cols]  # [N, h, w, 3]
    crops = crops.permute(0, 3, 1, 2).to(torch.int16)
    return (crops - chars.to(torch.int16)).abs().to(torch.uint8)


@DATASETS.register
class OmniglotShift(Dataset):
    """Clean Omniglot as labelled source, Omniglot blended into photo patches as target (MNIST-M recipe)."""

    name = "omniglot-shift"
    description = "domain shift: clean Omniglot source -> characters blended into photo patches (MNIST-M recipe)"
    version = "1"
    splits = ("source", "target", "test")
    fit_split = "source"
    eval_split = "test"
    unlabelled_split = "target"

    def __init__(self, root=None, cache_dir=None, progress: bool = True) -> None:
        super().__init__(root, cache_dir, progress)
        self.omniglot = Omniglot(self.root, self.cache_dir, progress)

    @property
    def photo_folder(self) -> Path:
        return self.root / "mini-imagenet"

    def is_available(self) -> bool:
        return self.omniglot.is_available() and (self.photo_folder / "train.csv").is_file()

    def paths(self) -> tuple[Path, ...]:
        return (self.omniglot.folder, self.photo_folder)

    def how_to_get(self) -> str:
        steps = []
        if not self.omniglot.is_available():
            steps.append("`mtbench data download omniglot`")
        if not (self.photo_folder / "train.csv").is_file():
            steps.append("`mtbench data prepare miniimagenet --from PATH` (its photos are the backgrounds)")
        return ("it is built from Omniglot and miniImageNet photos, nothing to download of its own"
                + (f": run {' and '.join(steps)}" if steps else ""))

    def verify(self, memo: dict | None = None) -> VerifyReport:
        """The verification of the two datasets it is built from (shared through ``memo``, not repeated).

        A miniImageNet subset is no failure here: only the first photos of each training class are used."""
        from mtbench.data.miniimagenet import MiniImageNet

        if not self.is_available():
            return VerifyReport.missing(self)
        checks, notes = [], []
        for part in (self.omniglot, MiniImageNet(self.root, self.cache_dir, self.progress)):
            report = part.verify(memo)
            if report.status == "missing":
                checks.append(Check(part.name, False, f"incomplete under {self.root}: {part.how_to_get()}"))
            elif report.failed:
                checks.append(Check(part.name, False, "failed: " + "; ".join(
                    f"{c.what}: {c.detail}" for c in report.checks if c.ok is False)))
            else:
                passed = [c.what for c in report.checks if c.ok]
                checks.append(Check(part.name, True if passed else None,
                                    f"{report.status}" + (f" ({', '.join(passed)} passed)" if passed else "")))
            if report.status == "subset":
                notes.append(f"{part.name} is a subset; omniglot-shift uses only the first {PHOTOS_PER_CLASS} photos "
                             f"of each training class, the same in the usual subsets")
        return VerifyReport.of_checks(self, checks, notes=notes)

    def structure_checks(self) -> list[Check]:
        """Omniglot's (a miniImageNet subset is no failure here: see :meth:`verify`)."""
        return self.omniglot.structure_checks()

    def prepare(self, download: bool = True) -> None:
        self.omniglot.prepare(download)
        if not (self.photo_folder / "train.csv").is_file():
            raise UserError(
                f"omniglot-shift cuts its backgrounds from miniImageNet photos, which are not in {self.photo_folder} "
                f"(expected images/ and train.csv); put miniImageNet there or point --data-root at the folder holding it"
            )

    def photos(self) -> Tensor:
        """``uint8[384, 3, 84, 84]``: the first photos of each class in miniImageNet's train.csv.

        The first ones of each class in the Ravi order, so the full dataset and its common subsets
        (the first k images of each class) give the same photos, hence the same target images.
        """
        picked: dict[str, list[str]] = {}
        with open(self.photo_folder / "train.csv", newline="") as f:
            for row in csv.DictReader(f):
                names = picked.setdefault(row["label"], [])
                if len(names) < PHOTOS_PER_CLASS:
                    names.append(row["filename"])
        out = []
        for name in (n for label in sorted(picked) for n in picked[label]):
            path = self.photo_folder / "images" / name
            if not path.is_file():
                raise UserError(f"miniImageNet photo {path} is missing; the folder {self.photo_folder} is incomplete")
            with Image.open(path) as im:
                out.append(np.asarray(im.convert("RGB").resize((84, 84), Image.Resampling.BILINEAR)))
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()

    def load_split(self, split: str) -> Split:
        base = self.omniglot.load("trainval" if split in ("source", "target") else "test")
        images, labels = base.images, base.labels
        if split != "test":  # source: even drawing positions within each class; target: odd
            position = torch.arange(len(labels)) - base.class_start[labels]
            keep = position % 2 == (0 if split == "source" else 1)
            images, labels = images[keep], labels[keep]
        if split == "source":
            images = images.expand(-1, 3, -1, -1).contiguous()
        else:
            g = generator(f"{self.name}/v{self.version}/{split}")
            images = blend_into_patches(images, self.photos(), g)
        return Split(self.name, split, images, labels, base.class_names,
                     mean=(0.5,) * 3, std=(0.5,) * 3, version=self.version)
