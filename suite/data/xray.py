"""Pediatric chest X-rays (Kermany et al. 2018): normal vs pneumonia, and normal / bacterial / viral.

Two registered datasets (a third view of the same X-rays, MedMNIST's 28x28 ``pneumoniamnist``, is
in :mod:`mtbench.data.pneumoniamnist`):

* ``xray`` — the Kermany et al. images from ``<root>/chest_xray/{train,test}/{NORMAL,PNEUMONIA}``
  (the layout of the Mendeley Data release, doi:10.17632/rscbjbr9sj.2, and of the common Kaggle
  copy; its 16-image ``val/`` folder, when present, is not used). Two classes, ``normal`` and
  ``pneumonia``. Each X-ray is converted to grayscale, resized to 84x84 (the whole image, aspect
  ratio not kept) and replicated to 3 channels, so that backbones trained on miniImageNet
  (84x84 RGB) take it as it is; it is normalised with the ImageNet mean and std for the same reason.
* ``xray3`` — the same images in three classes, ``normal``, ``bacterial`` and ``viral``: the
  pneumonia subtype is in the file names, ``personN_bacteria_M.jpeg`` / ``personN_virus_M.jpeg``.

The Kermany images have no stable direct download URL, so a missing ``chest_xray/`` is reported
with the DOI and the expected layout. Its images are decoded once per split into a tensor file in
the cache folder (keyed on file names and sizes), shared by ``xray`` and ``xray3``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from mtbench.core.errors import UserError
from mtbench.data.base import (DATASETS, SUMS_FILE, Check, Dataset, Split, VerifyReport, atomic_torch_save,
                               check_sha256sums, some)
from mtbench.data.cache import file_stamp, read_cache, unreadable_image
from mtbench.data.miniimagenet import IMAGENET_MEAN, IMAGENET_STD
from mtbench.data.pneumoniamnist import PNEUMONIAMNIST_FILE

KERMANY_DOI = "10.17632/rscbjbr9sj.2"
KERMANY_URL = f"https://doi.org/{KERMANY_DOI}"
CLASS_FOLDERS = ("NORMAL", "PNEUMONIA")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
SUBTYPE = re.compile(r"_(bacteria|virus)_", re.IGNORECASE)
# the standard release (Mendeley Data v2 / the Kaggle copy): images per split and class folder, and the
# pneumonia subtypes its file names give (bacteria, virus)
OFFICIAL_COUNTS = {("train", "NORMAL"): 1341, ("train", "PNEUMONIA"): 3875,
                   ("test", "NORMAL"): 234, ("test", "PNEUMONIA"): 390}
OFFICIAL_SUBTYPES = {"train": (2530, 1345), "test": (242, 148)}

def pneumonia_subtype(file_name: str) -> str:
    """``"bacterial"`` or ``"viral"`` from a Kermany pneumonia file name (``personN_bacteria_M.jpeg``)."""
    found = SUBTYPE.search(file_name)
    if found is None:
        raise UserError(f"cannot tell bacterial from viral pneumonia for {file_name}: Kermany et al. name these "
                        f"files personN_bacteria_M.jpeg or personN_virus_M.jpeg; rename or remove it, or use "
                        f"--dataset xray (normal vs pneumonia)")
    return "bacterial" if found.group(1).lower() == "bacteria" else "viral"


def image_names(folder: Path) -> list[str]:
    """The sorted names of the images in one class folder (hidden files such as .DS_Store left out)."""
    return sorted(p.name for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file())


def _layout_help() -> str:
    return (f"give the chest_xray folder (train/ and test/, each with NORMAL/ and PNEUMONIA/ holding the .jpeg "
            f"images), the folder above it, or the .zip downloaded from DOI {KERMANY_DOI} ({KERMANY_URL})")


@DATASETS.register
class ChestXray(Dataset):
    """Kermany et al. 2018 pediatric chest X-rays, normal vs pneumonia, grey in 3 channels, 84x84."""

    name = "xray"
    description = "pediatric chest X-rays, normal vs pneumonia, 84x84 grey in 3 channels (Kermany et al. 2018)"
    version = "1"
    splits = ("train", "test")
    fit_split = "train"
    eval_split = "test"
    size = 84  # as miniImageNet, so that its backbones transfer without resizing
    # a transfer target: fit on natural images, adapt on labelled training X-rays, score on test X-rays
    default_source = "miniimagenet"
    default_protocol = "transfer"
    support_split = "train"
    class_names: tuple[str, ...] = ("normal", "pneumonia")

    @property
    def folder(self) -> Path:
        return self.root / "chest_xray"

    def _class_dirs(self, split: str) -> list[Path]:
        return [self.folder / split / c for c in CLASS_FOLDERS]

    def is_available(self) -> bool:
        return all(d.is_dir() for s in self.splits for d in self._class_dirs(s))

    def _missing(self) -> UserError:
        lacking = [str(d.relative_to(self.root)) for s in self.splits for d in self._class_dirs(s) if not d.is_dir()]
        hint = ""
        if (self.root / PNEUMONIAMNIST_FILE).is_file():
            hint = f"; {self.root / PNEUMONIAMNIST_FILE} is there: --dataset pneumoniamnist reads it (28x28)"
        return UserError(
            f"the Kermany et al. chest X-rays are not in {self.folder} (missing {', '.join(lacking)}); they have no "
            f"stable direct download: get them from Mendeley Data, DOI {KERMANY_DOI} ({KERMANY_URL}), and extract "
            f"them so that {self.folder}/train/NORMAL, train/PNEUMONIA, test/NORMAL and test/PNEUMONIA hold the "
            f".jpeg files (`mtbench data prepare {self.name} --from PATH` checks the .zip or the extracted folder and "
            f"installs it there), or point --data-root / MTBENCH_DATA at the folder that holds chest_xray/{hint}"
        )

    def paths(self) -> tuple[Path, ...]:
        return (self.folder,)

    def how_to_get(self) -> str:
        return (f"get the Kermany et al. chest X-rays (no stable direct download) from Mendeley "
                f"Data, DOI {KERMANY_DOI} ({KERMANY_URL}), then run `mtbench data prepare {self.name} --from PATH` "
                f"(the .zip or the extracted chest_xray folder)")

    # -- verification ---------------------------------------------------------------------------
    def verify(self, memo: dict | None = None) -> VerifyReport:
        """Images per split and class folder against the standard release (train 1341 normal / 3875
        pneumonia, test 234 / 390), and ``SHA256SUMS`` when the folder has one; mtbench knows no official
        checksum of the images."""
        if not self.is_available():
            return VerifyReport.missing(self)
        names = {(s, c): image_names(self.folder / s / c) for s in self.splits for c in CLASS_FOLDERS}
        checks = [self._structure(names), *self._extra_checks(names),
                  check_sha256sums(self.folder, self.progress, memo),
                  Check("official checksum", None, "mtbench knows no official checksum of the Kermany images: their "
                                                   "contents are checked only against the copy's SHA256SUMS, if any")]
        notes = []
        if (self.folder / "val").is_dir():
            notes.append(f"{self.folder / 'val'} is not used, and its images are not counted")
        return VerifyReport.of_checks(self, checks, notes=notes)

    def structure_checks(self) -> list[Check]:
        """Images per split and class folder (and, for ``xray3``, per pneumonia subtype) against the standard release."""
        if not self.is_available():
            return []
        names = {(s, c): image_names(self.folder / s / c) for s in self.splits for c in CLASS_FOLDERS}
        return [self._structure(names), *self._extra_checks(names)]

    def _structure(self, names: dict[tuple[str, str], list[str]]) -> Check:
        found = {k: len(v) for k, v in names.items()}
        wrong = [f"{s}/{c} holds {found[s, c]}" for (s, c), n in OFFICIAL_COUNTS.items() if found[s, c] != n]
        counts = ", ".join(f"{s}/{c} {n}" for (s, c), n in found.items())
        if wrong:
            return Check("structure", False, f"{'; '.join(wrong)} images where the standard release has "
                                             f"{', '.join(f'{s}/{c} {n}' for (s, c), n in OFFICIAL_COUNTS.items())}")
        return Check("structure", True, f"{counts} images, as the standard release")

    def _extra_checks(self, names: dict[tuple[str, str], list[str]]) -> list[Check]:
        return []

    # -- installing a copy ----------------------------------------------------------------------
    def prepare_from(self, path: str | os.PathLike) -> Path:
        """Install the Kermany X-rays from ``path`` as ``<root>/chest_xray``, checked, atomically.

        Args:
            path: the ``chest_xray`` folder, the folder above it, or a ``.zip`` of it (such as the
                Mendeley Data or Kaggle archive: the shortest folder in it that has the layout is taken,
                ``__MACOSX`` and hidden files are skipped).

        The layout, ``{train,test}/{NORMAL,PNEUMONIA}`` each holding images, is checked first. The images
        of ``train/``, ``test/`` (and ``val/``, when present) and a ``SHA256SUMS`` beside them are copied
        into a hidden folder in the data root that is renamed into place at the end; on any failure
        nothing is left. The counts are not required to be the official ones: ``verify`` reports them.

        Returns:
            ``<root>/chest_xray``.
        """
        src = Path(path).expanduser()
        if not src.exists():
            raise UserError(f"{src} does not exist; {_layout_help()}")
        dest = self.folder
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise UserError(f"{dest} already exists and is not empty; remove it first if you want to replace it with "
                            f"the copy in {src}")
        if src.is_dir():
            copies = self._plan_folder(src)
        elif zipfile.is_zipfile(src):
            copies = None
        else:
            raise UserError(f"{src} is neither a folder nor a .zip archive; {_layout_help()}")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".chest_xray-", dir=self.root))
        try:
            if copies is None:
                self._extract(src, tmp)
            else:
                for source, rel in tqdm(copies, desc="copying chest X-rays", unit="file", disable=not self.progress):
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, tmp / rel)
            if dest.is_dir():
                dest.rmdir()  # empty, checked above
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest

    @staticmethod
    def _layout_lacks(folder: Path) -> list[str]:
        """What of the layout ``folder`` lacks: ``["test/PNEUMONIA (no images)", ...]``, empty when complete."""
        lacks = []
        for s in ("train", "test"):
            for c in CLASS_FOLDERS:
                d = folder / s / c
                if not d.is_dir():
                    lacks.append(f"{s}/{c}")
                elif not image_names(d):
                    lacks.append(f"{s}/{c} (no images)")
        return lacks

    def _plan_folder(self, src: Path) -> list[tuple[Path, str]]:
        """``[(source file, path relative to chest_xray/), ...]`` of a folder copy, its layout checked."""
        base = src
        lacks = self._layout_lacks(src)
        if lacks and (src / "chest_xray").is_dir():
            base, lacks = src / "chest_xray", self._layout_lacks(src / "chest_xray")
        if lacks:
            raise UserError(f"{base} does not hold the chest X-ray layout: it lacks {', '.join(lacks)}; "
                            f"{_layout_help()}")
        plan = [(base / s / c / n, f"{s}/{c}/{n}") for s in ("train", "test", "val") for c in CLASS_FOLDERS
                if (base / s / c).is_dir() for n in image_names(base / s / c)]
        if (base / SUMS_FILE).is_file():
            plan.append((base / SUMS_FILE, SUMS_FILE))
        return plan

    def _extract(self, archive: Path, tmp: Path) -> None:
        """Extract the images of the chest X-ray layout found in a zip archive into ``tmp``, checked."""
        try:
            with zipfile.ZipFile(archive) as zf:
                found: dict[tuple[str, ...], dict[tuple[str, str], list[tuple[zipfile.ZipInfo, str]]]] = {}
                for info in zf.infolist():
                    parts = PurePosixPath(info.filename.replace("\\", "/")).parts
                    if (info.is_dir() or len(parts) < 3 or "__MACOSX" in parts or parts[-1].startswith(".")
                            or PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_SUFFIXES
                            or parts[-3] not in ("train", "test", "val") or parts[-2] not in CLASS_FOLDERS):
                        continue
                    found.setdefault(parts[:-3], {}).setdefault((parts[-3], parts[-2]), []).append((info, parts[-1]))
                complete = [p for p, got in found.items() if all((s, c) in got for s in ("train", "test")
                                                                  for c in CLASS_FOLDERS)]
                if not complete:
                    seen = sorted({f"{'/'.join(p + k)}/" for p, got in found.items() for k in got})
                    raise UserError(f"the archive {archive} does not hold the chest X-ray layout (train/ and test/, "
                                    f"each with NORMAL/ and PNEUMONIA/ images; it has "
                                    f"{some(seen) if seen else 'no such folders'}); {_layout_help()}")
                prefix = min(complete, key=lambda p: (len(p), p))
                members = [(info, f"{s}/{c}/{name}") for (s, c), infos in sorted(found[prefix].items())
                           for info, name in infos]
                try:
                    members.append((zf.getinfo("/".join((*prefix, SUMS_FILE))), SUMS_FILE))
                except KeyError:
                    pass  # no checksum file in the archive
                for info, rel in tqdm(members, desc="extracting chest X-rays", unit="file", disable=not self.progress):
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as f, open(tmp / rel, "wb") as out:
                        shutil.copyfileobj(f, out)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise UserError(f"the archive {archive} is corrupt ({exc}); download it again from DOI {KERMANY_DOI} "
                            f"({KERMANY_URL})") from exc

    def prepare(self, download: bool = True) -> None:
        """Nothing can be downloaded: raise a :class:`UserError` naming the DOI and layout when missing."""
        if not self.is_available():
            raise self._missing()

    # -- decoding -------------------------------------------------------------------------------
    def files(self, split: str) -> list[tuple[str, int]]:
        """``[("NORMAL/IM-0001-0001.jpeg", 0), ...]``: image paths under ``split/`` and their folder's class."""
        if not self.is_available():
            raise self._missing()
        out = []
        for label, folder in enumerate(self._class_dirs(split)):
            names = sorted(p.name for p in folder.iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file())
            if not names:
                raise UserError(f"{folder} holds no .jpeg images; the copy of the chest X-rays is incomplete: "
                                f"extract the archive from DOI {KERMANY_DOI} again")
            out.extend((f"{folder.name}/{n}", label) for n in names)
        return out

    def _decoded(self, split: str) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """Relative file names, folder labels ``int64[N]`` and grey images ``uint8[N, 1, size, size]``, cached."""
        files = self.files(split)
        key = hashlib.sha256(f"{split}|{self.size}".encode())
        for name, _ in files:
            key.update(f"{file_stamp(self.folder / split / name, name)}\n".encode())
        cache = self.cache_dir / f"chest-xray-v{self.version}-{split}-{self.size}px-{key.hexdigest()[:12]}.pt"
        blob = read_cache(cache, ("names", "labels", "images"))
        if blob is not None:
            return list(blob["names"]), blob["labels"], blob["images"]
        out = np.empty((len(files), 1, self.size, self.size), np.uint8)
        for i, (name, _) in enumerate(tqdm(files, desc=f"decoding chest X-rays {split} (once)", unit="img",
                                           disable=not self.progress)):
            try:
                with Image.open(self.folder / split / name) as im:
                    im.draft(im.mode, (2 * self.size, 2 * self.size))  # JPEG: decode large originals at 1/2..1/8 scale
                    out[i, 0] = np.asarray(im.convert("L").resize((self.size, self.size), Image.Resampling.LANCZOS))
            except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds on a damaged file
                raise unreadable_image(self.folder / split / name, exc, f"the copy is damaged: replace the file "
                                       f"from the archive (DOI {KERMANY_DOI}), and check the copy with "
                                       f"`mtbench data verify {self.name}`") from None
        names = [n for n, _ in files]
        labels = torch.tensor([label for _, label in files], dtype=torch.int64)
        images = torch.from_numpy(out)
        atomic_torch_save({"names": names, "labels": labels, "images": images}, cache)
        return names, labels, images

    def labels_of(self, names: list[str], folder_labels: torch.Tensor) -> torch.Tensor:
        """This dataset's class of each image (here: its folder's, 0 normal, 1 pneumonia)."""
        return folder_labels

    def load_split(self, split: str) -> Split:
        names, folder_labels, grey = self._decoded(split)
        labels = self.labels_of(names, folder_labels)
        count = torch.bincount(labels, minlength=len(self.class_names))
        if bool((count == 0).any()):
            empty = [c for c, n in zip(self.class_names, count.tolist()) if n == 0]
            raise UserError(f"{self.folder / split} has no images of the class(es) {', '.join(empty)}; the copy of the "
                            f"chest X-rays is incomplete: extract the archive from DOI {KERMANY_DOI} again")
        order = torch.sort(labels, stable=True).indices
        images = grey[order].expand(-1, 3, -1, -1).contiguous()
        return Split(self.name, split, images, labels[order], self.class_names,
                     IMAGENET_MEAN, IMAGENET_STD, self.version)


@DATASETS.register
class ChestXray3(ChestXray):
    """Kermany et al. 2018 chest X-rays in three classes: normal, bacterial and viral pneumonia, 84x84."""

    name = "xray3"
    description = "pediatric chest X-rays, normal / bacterial / viral pneumonia (from the file names), 84x84"
    class_names = ("normal", "bacterial", "viral")

    def _extra_checks(self, names: dict[tuple[str, str], list[str]]) -> list[Check]:
        """The pneumonia subtypes in the file names: every name has one, counts as the standard release."""
        unnamed = [f"{s}/PNEUMONIA/{n}" for s in self.splits for n in names[s, "PNEUMONIA"] if not SUBTYPE.search(n)]
        if unnamed:
            return [Check("subtypes", False, f"{len(unnamed)} pneumonia image(s) without _bacteria_ or _virus_ in the "
                                             f"name: {some(unnamed)}")]
        got = {s: (sum(SUBTYPE.search(n).group(1).lower() == "bacteria" for n in names[s, "PNEUMONIA"]),
                   sum(SUBTYPE.search(n).group(1).lower() == "virus" for n in names[s, "PNEUMONIA"]))
               for s in self.splits}
        text = ", ".join(f"{s} {b} bacterial / {v} viral" for s, (b, v) in got.items())
        if got != OFFICIAL_SUBTYPES:
            want = ", ".join(f"{s} {b} / {v}" for s, (b, v) in OFFICIAL_SUBTYPES.items())
            return [Check("subtypes", False, f"{text} where the standard release has {want}")]
        return [Check("subtypes", True, f"{text}, as the standard release")]

    def labels_of(self, names: list[str], folder_labels: torch.Tensor) -> torch.Tensor:
        index = {c: i for i, c in enumerate(self.class_names)}
        return torch.tensor([0 if int(f) == 0 else index[pneumonia_subtype(n)]
                             for n, f in zip(names, folder_labels)], dtype=torch.int64)
