"""MedMNIST's PneumoniaMNIST (Yang et al. 2023): the Kermany chest X-rays at 28x28 grey.

A 28x28 grey version of the X-rays of :mod:`mtbench.data.xray` with its own train/val/test split,
read from ``<root>/pneumoniamnist.npz``, which :meth:`PneumoniaMNIST.prepare` downloads from Zenodo
(MD5-checked). Kept at 28x28, one channel, as MedMNIST distributes it: upsampling 28-pixel images to
84 would add no information.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import torch

from mtbench.core.atomic import atomic_write
from mtbench.core.errors import UserError
from mtbench.data.base import DATASETS, Dataset, Split, VerifyReport, check_md5

# MedMNIST v3 (medmnist/info.py, INFO["pneumoniamnist"]): the 28x28 file on Zenodo and its MD5.
PNEUMONIAMNIST_URL = "https://zenodo.org/records/10519652/files/pneumoniamnist.npz?download=1"
PNEUMONIAMNIST_MD5 = "28209eda62fecd6e6a2d98b1501bb15f"
PNEUMONIAMNIST_FILE = "pneumoniamnist.npz"


@DATASETS.register
class PneumoniaMNIST(Dataset):
    """MedMNIST PneumoniaMNIST: the Kermany X-rays at 28x28 grey, normal vs pneumonia, its train/val/test split."""

    name = "pneumoniamnist"
    description = "MedMNIST PneumoniaMNIST: Kermany chest X-rays at 28x28 grey, normal vs pneumonia (Yang et al. 2023)"
    version = "1"
    splits = ("train", "val", "test")
    fit_split = "train"
    eval_split = "test"
    size = 28  # as distributed; not upsampled
    class_names = ("normal", "pneumonia")
    url = PNEUMONIAMNIST_URL
    md5 = PNEUMONIAMNIST_MD5

    @property
    def path(self) -> Path:
        return self.root / PNEUMONIAMNIST_FILE

    def is_available(self) -> bool:
        return self.path.is_file()

    def _by_hand(self) -> str:
        return f"download {self.url} (MD5 {self.md5}) and save it as {self.path}"

    def paths(self) -> tuple[Path, ...]:
        return (self.path,)

    def how_to_get(self) -> str:
        return (f"run `mtbench data download pneumoniamnist` ({self.url}, MD5-checked), or "
                f"`mtbench data prepare pneumoniamnist --from PATH` with a copy of {PNEUMONIAMNIST_FILE}")

    def download(self) -> None:
        """Download the .npz from Zenodo (MD5-checked, atomic)."""
        self.prepare(download=True)

    def verify(self, memo: dict | None = None) -> VerifyReport:
        """The MD5 of the .npz against MedMNIST's, which covers every array in it."""
        if not self.is_available():
            return VerifyReport.missing(self)
        return VerifyReport.of_checks(self, [check_md5(self.path, self.md5, f"MedMNIST v3, {self.url}")])

    def prepare_from(self, path: str | os.PathLike) -> Path:
        """Install a copy of ``pneumoniamnist.npz`` (the file, or a folder holding it), MD5-checked, atomically."""
        from mtbench.data.download import md5sum

        src = Path(path).expanduser()
        if src.is_dir():
            src = src / PNEUMONIAMNIST_FILE
        if not src.is_file():
            raise UserError(f"{src} does not exist; give the path of {PNEUMONIAMNIST_FILE} ({self._by_hand()})")
        if self.path.exists():
            raise UserError(f"{self.path} already exists; remove it first if you want to replace it with {src}")
        got = md5sum(src)
        if got != self.md5.lower():
            raise UserError(f"{src} has MD5 {got}, but MedMNIST's {PNEUMONIAMNIST_FILE} has MD5 {self.md5}: it is "
                            f"corrupt or another version; {self._by_hand()}")
        atomic_write(self.path, lambda tmp: shutil.copyfile(src, tmp))
        return self.path

    def prepare(self, download: bool = True) -> None:
        from mtbench.data.download import download_file

        if self.is_available():
            return
        if not download:
            raise UserError(f"PneumoniaMNIST is not in {self.root}: {self._by_hand()}, or run without --no-download")
        print(f"downloading PneumoniaMNIST from {self.url} to {self.path}")
        download_file(self.url, self.md5, self.path, progress=self.progress)

    def load_split(self, split: str) -> Split:
        if not self.is_available():
            raise UserError(f"PneumoniaMNIST not found: {self._by_hand()}, or let mtbench download it "
                            f"(set --data-root or MTBENCH_DATA to the folder that holds {PNEUMONIAMNIST_FILE})")
        broken = f"; delete it and {self._by_hand()}"
        try:
            with np.load(self.path, allow_pickle=False) as npz:
                if f"{split}_images" not in npz or f"{split}_labels" not in npz:
                    raise UserError(f"{self.path} has no {split}_images / {split}_labels (it holds "
                                    f"{', '.join(sorted(npz.files))}){broken}")
                images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise UserError(f"{self.path} is not a readable .npz file ({exc}){broken}") from exc
        labels = labels.reshape(-1)
        if images.dtype != np.uint8 or images.shape[1:] != (self.size, self.size) or len(labels) != len(images):
            raise UserError(f"{self.path}: {split}_images is {images.dtype}{list(images.shape)} with {len(labels)} "
                            f"labels, expected uint8[N, 28, 28] with N labels{broken}")
        if labels.size and not set(np.unique(labels).tolist()) <= {0, 1}:
            raise UserError(f"{self.path}: {split}_labels holds values other than 0 (normal) and 1 (pneumonia){broken}")
        labels_t = torch.from_numpy(labels.astype(np.int64))
        order = torch.sort(labels_t, stable=True).indices
        return Split(self.name, split, torch.from_numpy(images)[order].unsqueeze(1).contiguous(), labels_t[order],
                     self.class_names, mean=(0.5,), std=(0.5,), version=self.version)
