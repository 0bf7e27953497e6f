"""A generated few-shot dataset: deterministic, needs no download, learnable in seconds."""

from __future__ import annotations


import torch
import torch.nn.functional as F

from mtbench.data.base import DATASETS, Dataset, Split, VerifyReport
from mtbench.core.seeding import generator

_CLASSES = {"train": 64, "val": 16, "test": 32}


@DATASETS.register
class Synthetic(Dataset):
    """Generated 16x16 RGB blobs, 20 images per class (64/16/32 classes): for tests and demos.

    Each class is a smooth random pattern; its images are that pattern shifted by up to two pixels,
    recoloured slightly and covered in noise. The same images come out on every machine.
    """

    name = "synthetic"
    description = "generated 16x16 RGB patterns, 64/16/32 classes x 20 images; no download"
    version = "1"
    splits = ("train", "val", "test")
    fit_split = "train"
    eval_split = "test"
    images_per_class = 20
    size = 16

    def how_to_get(self) -> str:
        return "it is generated on the fly: nothing to get"

    def download(self) -> None:
        """Nothing to download (the CLI says so before calling this, as the data is always available)."""

    def verify(self, memo: dict | None = None) -> VerifyReport:
        return VerifyReport(self.name, "generated", notes=["generated on the fly from fixed seeds: no files to check"])

    def load_split(self, split: str) -> Split:
        g = generator(f"synthetic/{split}")
        n, k, s = _CLASSES[split], self.images_per_class, self.size
        coarse = torch.rand(n, 3, 4, 4, generator=g)
        protos = F.interpolate(coarse, size=(s, s), mode="bilinear", align_corners=False)
        imgs = protos.repeat_interleave(k, dim=0)  # [n*k, 3, s, s]
        shifts = torch.randint(-2, 3, (n * k, 2), generator=g)
        imgs = torch.stack([torch.roll(im, (int(dy), int(dx)), dims=(1, 2)) for im, (dy, dx) in zip(imgs, shifts)])
        imgs = imgs * (0.8 + 0.4 * torch.rand(n * k, 3, 1, 1, generator=g))
        imgs = imgs + 0.15 * torch.randn(imgs.shape, generator=g)
        images = (imgs.clamp(0, 1) * 255).round().to(torch.uint8)
        labels = torch.arange(n).repeat_interleave(k)
        names = tuple(f"{split}-{i:03d}" for i in range(n))
        return Split(self.name, split, images, labels, names, mean=(0.5,) * 3, std=(0.25,) * 3, version=self.version)
