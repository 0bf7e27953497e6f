"""Omniglot (Lake et al. 2015) with the Vinyals et al. (2016) class split and rotated classes.

The official archives extract to ``<root>/omniglot/images_background`` (30 alphabets) and
``images_evaluation`` (20 alphabets), 20 drawings of 105x105 per character. Images are decoded
once, inverted (strokes bright), resized to 28x28 and cached as a tensor file; each character
rotated by 0/90/180/270 degrees is its own class, as in the papers.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..errors import UserError
from .base import DATASETS, Dataset, Split, atomic_torch_save

BASE_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
ARCHIVES = {  # folder -> MD5 of its official zip
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}
ROTATIONS = (0, 90, 180, 270)

# The Vinyals et al. split as used by Prototypical Networks and MAML: whole alphabets, except that
# Gurmukhi's characters 42-45 are test classes. Everything not listed here is a training class.
VINYALS_VAL_ALPHABETS = ("Armenian", "Bengali", "Early_Aramaic", "Hebrew", "Mkhedruli_(Georgian)")
VINYALS_TEST_ALPHABETS = (
    "Kannada", "Keble", "Malayalam", "Manipuri", "Mongolian", "Old_Church_Slavonic_(Cyrillic)",
    "Oriya", "Sylheti", "Syriac_(Serto)", "Tengwar", "Tibetan", "ULOG",
)
VINYALS_TEST_FROM = {"Gurmukhi": 42}  # alphabet -> first character number that is a test class


def vinyals_split_of(alphabet: str, character: int) -> str:
    """``"train"``, ``"val"`` or ``"test"`` for one character of the Vinyals split."""
    if alphabet in VINYALS_TEST_ALPHABETS or character >= VINYALS_TEST_FROM.get(alphabet, 10**9):
        return "test"
    if alphabet in VINYALS_VAL_ALPHABETS:
        return "val"
    return "train"


def vinyals_classes(characters: list[str], split: str) -> list[str]:
    """Class names ``Alphabet/characterNN/rotDDD`` of a split, from the list of ``Alphabet/characterNN``."""
    wanted = {"trainval": ("train", "val")}.get(split, (split,))
    out = []
    for char in characters:
        alphabet, name = char.split("/")
        if vinyals_split_of(alphabet, int(name.removeprefix("character"))) in wanted:
            out.extend(f"{char}/rot{r:03d}" for r in ROTATIONS)
    return out


@DATASETS.register
class Omniglot(Dataset):
    """Omniglot handwritten characters, 28x28, Vinyals split with rotations (4800+1692 classes)."""

    name = "omniglot"
    description = "handwritten characters of 50 alphabets, 28x28, Vinyals split x4 rotations (Lake et al. 2015)"
    version = "1"
    splits = ("train", "val", "trainval", "test")
    fit_split = "trainval"  # the papers train on the 1,200 train+val characters
    eval_split = "test"
    size = 28

    @property
    def folder(self) -> Path:
        return self.root / "omniglot"

    def is_available(self) -> bool:
        return all((self.folder / f).is_dir() for f in ARCHIVES)

    def prepare(self, download: bool = True) -> None:
        from .download import download_and_extract

        for folder, md5 in ARCHIVES.items():
            if (self.folder / folder).is_dir():
                continue
            url = f"{BASE_URL}/{folder}.zip"
            if not download:
                raise UserError(
                    f"Omniglot is not in {self.folder}: download {url} (MD5 {md5}) and extract it there "
                    f"so that {self.folder / folder} exists, or run without --no-download"
                )
            print(f"downloading Omniglot {folder} from {url} into {self.folder}")
            download_and_extract(url, md5, self.folder, folder, progress=self.progress)

    # -- decoding -------------------------------------------------------------------------------
    def characters(self) -> list[tuple[str, list[Path]]]:
        """``[("Alphabet/characterNN", [png, ...]), ...]`` in a fixed order, both archives."""
        if not self.is_available():
            raise UserError(
                f"Omniglot not found under {self.folder} (expected images_background/ and images_evaluation/); "
                f"set --data-root or MTBENCH_DATA to the folder that holds omniglot/, or let mtbench download it"
            )
        chars = []
        for folder in ARCHIVES:
            for alphabet in sorted(p for p in (self.folder / folder).iterdir() if p.is_dir()):
                for char in sorted(p for p in alphabet.iterdir() if p.is_dir()):
                    chars.append((f"{alphabet.name}/{char.name}", sorted(char.glob("*.png"))))
        return chars

    def _decoded(self) -> tuple[list[str], torch.Tensor]:
        """All characters, unrotated: names and ``uint8[n_chars, 20, 28, 28]``, cached on disk."""
        chars = self.characters()
        key = hashlib.sha256()
        for name, files in chars:
            key.update(name.encode())
            for f in files:
                key.update(f"{f.name}:{f.stat().st_size}".encode())
        cache = self.cache_dir / f"omniglot-v{self.version}-{self.size}px-{key.hexdigest()[:12]}.pt"
        if cache.exists():
            blob = torch.load(cache, weights_only=True)
            return list(blob["names"]), blob["images"]
        counts = {len(files) for _, files in chars}
        if counts != {20}:
            raise UserError(f"Omniglot under {self.folder} is incomplete: characters with {sorted(counts)} drawings "
                            f"(expected 20 each); delete the folder and download it again")
        out = np.empty((len(chars), 20, self.size, self.size), np.uint8)
        bar = tqdm(total=len(chars) * 20, desc="decoding Omniglot (once)", unit="img", disable=not self.progress)
        for i, (_, files) in enumerate(chars):
            for j, f in enumerate(files):
                with Image.open(f) as im:
                    small = im.convert("L").resize((self.size, self.size), Image.Resampling.LANCZOS)
                out[i, j] = 255 - np.asarray(small)
            bar.update(len(files))
        bar.close()
        names, images = [n for n, _ in chars], torch.from_numpy(out)
        atomic_torch_save({"names": names, "images": images}, cache)
        return names, images

    def load_split(self, split: str) -> Split:
        names, images = self._decoded()
        index = {n: i for i, n in enumerate(names)}
        classes = vinyals_classes(names, split)
        chars = torch.tensor([index[c.rsplit("/", 1)[0]] for c in classes])
        rots = torch.tensor([int(c.rsplit("rot", 1)[1]) // 90 for c in classes])
        picked = images[chars]  # [n_classes, 20, H, W]
        for k in (1, 2, 3):
            sel = rots == k
            picked[sel] = torch.rot90(picked[sel], k, dims=(-2, -1))  # counter-clockwise, as PIL's rotate
        n_cls, per, h, w = picked.shape
        return Split(
            self.name, split, picked.reshape(n_cls * per, 1, h, w).contiguous(),
            torch.arange(n_cls).repeat_interleave(per), tuple(classes),
            mean=(0.0,), std=(1.0,), version=self.version,
        )
