"""Omniglot (Lake et al. 2015) with the Vinyals et al. (2016) class split and rotated classes.

The official archives extract to ``<root>/omniglot/images_background`` (30 alphabets) and
``images_evaluation`` (20 alphabets), 20 drawings of 105x105 per character. Images are decoded
once, inverted (strokes bright), resized to 28x28 and cached as a tensor file; each character
rotated by 0/90/180/270 degrees is its own class, as in the papers.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from mtbench.core.errors import UserError
from mtbench.data.base import DATASETS, Check, Dataset, Split, VerifyReport, atomic_torch_save, check_md5, check_sha256sums, some
from mtbench.data.cache import file_stamp, read_cache, unreadable_image

BASE_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
ARCHIVES = {  # folder -> MD5 of its official zip
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}
ROTATIONS = (0, 90, 180, 270)
# the official release: folder -> (alphabets, characters); 20 drawings of each character
OFFICIAL_COUNTS = {"images_background": (30, 964), "images_evaluation": (20, 659)}
DRAWINGS = 20

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


def drawing_counts(folder: Path) -> dict[str, int]:
    """``{"Alphabet/characterNN": number of .png drawings}`` of one extracted Omniglot folder, sorted."""
    return {f"{a.name}/{c.name}": sum(1 for _ in c.glob("*.png"))
            for a in sorted(p for p in folder.iterdir() if p.is_dir())
            for c in sorted(p for p in a.iterdir() if p.is_dir())}


def structure_check(counts: dict[str, dict[str, int]]) -> Check:
    """Alphabets, characters and drawings of ``{"images_background": drawing_counts(...), ...}`` against
    the official release."""
    problems, found = [], []
    for f, (n_alphabets, n_chars) in OFFICIAL_COUNTS.items():
        chars = counts.get(f, {})
        alphabets = len({c.split("/")[0] for c in chars})
        found.append(f"{f}/ {alphabets} alphabets, {len(chars)} characters")
        if (alphabets, len(chars)) != (n_alphabets, n_chars):
            problems.append(f"{f}/ holds {alphabets} alphabets and {len(chars)} characters where the official "
                            f"release has {n_alphabets} and {n_chars}")
        wrong = [f"{f}/{c} ({n})" for c, n in chars.items() if n != DRAWINGS]
        if wrong:
            problems.append(f"{len(wrong)} character(s) without {DRAWINGS} drawings: {some(wrong)}")
    if problems:
        return Check("structure", False, "; ".join(problems))
    return Check("structure", True, f"{'; '.join(found)}, {DRAWINGS} drawings each, as the official release")


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
    #: a variant's protocol (another split of the same copy), said in every result's dataset notes
    protocol_note = ""

    def __init__(self, root=None, cache_dir=None, progress: bool = True) -> None:
        super().__init__(root, cache_dir, progress)
        if self.protocol_note:
            self.notes.append(self.protocol_note)

    @property
    def folder(self) -> Path:
        return self.root / "omniglot"

    def is_available(self) -> bool:
        return all((self.folder / f).is_dir() for f in ARCHIVES)

    def paths(self) -> tuple[Path, ...]:
        return (self.folder,)

    def how_to_get(self) -> str:
        return (f"run `mtbench data download omniglot` (the two official zips from {BASE_URL}, MD5-checked), or "
                f"`mtbench data prepare omniglot --from PATH` with a folder holding the two zips or the extracted "
                f"images_background/ and images_evaluation/")

    def download(self) -> None:
        """Download and extract whichever of the two official zips is missing (MD5-checked, atomic)."""
        self.prepare(download=True)

    def prepare(self, download: bool = True) -> None:
        from mtbench.data.download import download_and_extract

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

    # -- verification and installing a copy -----------------------------------------------------
    def verify(self, memo: dict | None = None) -> VerifyReport:
        """Structure against the official release (30 + 20 alphabets, 964 + 659 characters, 20 drawings
        each), the Vinyals split files when the copy has them, ``SHA256SUMS`` when present, and the MD5 of
        the official zips when they were kept."""
        if not self.is_available():
            return VerifyReport.missing(self)
        counts = {f: drawing_counts(self.folder / f) for f in ARCHIVES}
        checks = [structure_check(counts), *self._split_checks([c for f in ARCHIVES for c in counts[f]]),
                  check_sha256sums(self.folder, self.progress, memo)]
        zips = [self.folder / f"{f}.zip" for f in ARCHIVES]
        checks += [check_md5(z, ARCHIVES[z.stem], f"{BASE_URL}/{z.name}") for z in zips if z.is_file()]
        if not any(z.is_file() for z in zips):
            checks.append(Check("MD5 archives", None, "the official zips were not kept (only the extracted folders): "
                                                      "their MD5s could not be compared"))
        return VerifyReport.of_checks(self, checks)

    def structure_checks(self) -> list[Check]:
        """Alphabets, characters and drawings against the official release (30 + 20, 964 + 659, 20 each)."""
        if not self.is_available():
            return []
        return [structure_check({f: drawing_counts(self.folder / f) for f in ARCHIVES})]

    def _split_checks(self, characters: list[str]) -> list[Check]:
        """The copy's ``splits/vinyals/{train,val,test}.txt``, when it has them, against the built-in split."""
        folder = self.folder / "splits" / "vinyals"
        files = [folder / f"{s}.txt" for s in ("train", "val", "test")]
        if not all(f.is_file() for f in files):
            return []
        differ = [f.name for f in files if set(f.read_text().split()) != set(vinyals_classes(characters, f.stem))]
        if differ:
            return [Check("splits/vinyals", False, f"{some(differ)} in {folder} list other classes than mtbench's "
                                                   f"Vinyals split of these characters")]
        return [Check("splits/vinyals", True, "train/val/test.txt list the same classes as mtbench's Vinyals split")]

    def prepare_from(self, path: str | os.PathLike) -> Path:
        """Install Omniglot from ``path`` as ``<root>/omniglot``, checked, atomically.

        Args:
            path: a folder holding ``images_background/`` and ``images_evaluation/`` (extracted), or
                the official ``images_background.zip`` and ``images_evaluation.zip`` (MD5-checked), or
                the folder above one holding ``omniglot/``; or one of the two zips (its sibling is taken).

        Only the folders missing from the data root are installed. Everything is copied or extracted
        into a hidden folder in the data root and checked (20 drawings per character) before it is
        renamed into place; on any failure nothing is left. ``SHA256SUMS`` and ``LICENSE`` come along.

        Returns:
            ``<root>/omniglot``.
        """
        from mtbench.data.download import extract_zip, md5sum

        src = Path(path).expanduser()
        if src.is_file() and src.suffix.lower() == ".zip":
            src = src.parent
        if not src.is_dir():
            raise UserError(f"{src} does not exist or is not a folder; give the folder that holds the official "
                            f"images_background.zip and images_evaluation.zip, or the extracted folders")

        def holds(folder: Path) -> bool:
            return any((folder / f).is_dir() or (folder / f"{f}.zip").is_file() for f in ARCHIVES)

        if not holds(src) and holds(src / "omniglot"):
            src = src / "omniglot"
        needed = [f for f in ARCHIVES if not (self.folder / f).is_dir()]
        if not needed:
            raise UserError(f"{self.folder} already holds {' and '.join(ARCHIVES)}; remove it first if you want to "
                            f"replace it with the copy in {src}")
        sources = {}
        for f in needed:
            if (src / f).is_dir():
                sources[f] = src / f
            elif (src / f"{f}.zip").is_file():
                sources[f] = src / f"{f}.zip"
            else:
                raise UserError(f"{src} holds neither {f}/ nor {f}.zip; give the folder that holds the official "
                                f"Omniglot zips ({BASE_URL}/{f}.zip) or the folders extracted from them")
        for f, source in sources.items():  # checksums before anything is written
            if source.suffix == ".zip" and (got := md5sum(source)) != ARCHIVES[f].lower():
                raise UserError(f"{source} has MD5 {got}, but the official {source.name} has MD5 {ARCHIVES[f]}: it is "
                                f"corrupt or another file; download it again from {BASE_URL}/{source.name}")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".omniglot-", dir=self.root))
        try:
            for f, source in sources.items():
                if source.suffix == ".zip":
                    extract_zip(source, tmp, f)
                else:
                    shutil.copytree(source, tmp / f)
                counts = drawing_counts(tmp / f)
                if not counts:
                    raise UserError(f"{source} holds no Alphabet/characterNN/ folders of .png drawings: it is not "
                                    f"Omniglot's {f}")
                wrong = [f"{c} ({n})" for c, n in counts.items() if n != DRAWINGS]
                if wrong:
                    raise UserError(f"{source} is incomplete: {len(wrong)} character(s) without {DRAWINGS} drawings, "
                                    f"{some(wrong)}; use the official {f}.zip")
            for extra in ("SHA256SUMS", "LICENSE"):
                if (src / extra).is_file() and not (self.folder / extra).exists():
                    shutil.copyfile(src / extra, tmp / extra)
            if not self.folder.exists() or (self.folder.is_dir() and not any(self.folder.iterdir())):
                if self.folder.is_dir():
                    self.folder.rmdir()
                os.replace(tmp, self.folder)
            else:
                for name in sorted(os.listdir(tmp)):
                    os.replace(tmp / name, self.folder / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self.folder

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
                key.update(file_stamp(f).encode())
        cache = self.cache_dir / f"omniglot-v{self.version}-{self.size}px-{key.hexdigest()[:12]}.pt"
        blob = read_cache(cache, ("names", "images"))
        if blob is not None:
            return list(blob["names"]), blob["images"]
        counts = {len(files) for _, files in chars}
        if counts != {20}:
            raise UserError(f"Omniglot under {self.folder} is incomplete: characters with {sorted(counts)} drawings "
                            f"(expected 20 each); delete the folder and download it again")
        out = np.empty((len(chars), 20, self.size, self.size), np.uint8)
        bar = tqdm(total=len(chars) * 20, desc="decoding Omniglot (once)", unit="img", disable=not self.progress)
        for i, (_, files) in enumerate(chars):
            for j, f in enumerate(files):
                try:
                    with Image.open(f) as im:
                        small = im.convert("L").resize((self.size, self.size), Image.Resampling.LANCZOS)
                except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds on a damaged file
                    bar.close()
                    raise unreadable_image(f, exc, "the copy is damaged: replace the file from the official zip "
                                                   "(`mtbench data download omniglot` into an empty data root), "
                                                   "and check the copy with `mtbench data verify omniglot`") from None
                out[i, j] = 255 - np.asarray(small)
            bar.update(len(files))
        bar.close()
        names, images = [n for n, _ in chars], torch.from_numpy(out)
        atomic_torch_save({"names": names, "images": images}, cache)
        return names, images

    def load_split(self, split: str) -> Split:
        names, images = self._decoded()
        classes = vinyals_classes(names, split)
        if not classes:
            raise UserError(f"Omniglot under {self.folder} has no {split} classes (the {split} alphabets of the "
                            f"Vinyals split are missing): the copy is incomplete; download it again "
                            f"(`mtbench data download omniglot` into an empty data root) and check it with "
                            f"`mtbench data verify omniglot`")
        return self._split_of(split, classes, names, images)

    def _split_of(self, split: str, classes: list[str], names: list[str], images: torch.Tensor) -> Split:
        """The split whose classes are ``classes`` (``Alphabet/characterNN/rotDDD``): each character's decoded drawings
        (``names``, ``images`` of :meth:`_decoded`) turned by its rotation, counter-clockwise as PIL's rotate."""
        index = {n: i for i, n in enumerate(names)}
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
