"""miniImageNet (Vinyals et al. 2016) with the class split of Ravi & Larochelle (2017).

100 ImageNet classes, 600 images of 84x84 RGB each in the standard release; 64 training, 16
validation and 20 test classes. There is no official download (the images are ImageNet's), so
the data comes in one of the two layouts that circulate, under ``<root>/mini-imagenet/``:

* **CSV layout** — ``images/<filename>`` plus the Ravi split files ``train.csv``, ``val.csv``,
  ``test.csv`` (header ``filename,label``, one row per image, the label a WordNet id). Images that
  are not 84x84 are resized on decoding (the Ravi script's LANCZOS).
* **pickle layout** — ``mini-imagenet-cache-train.pkl``, ``-val.pkl``, ``-test.pkl``: each a dict
  with ``"image_data"`` (``uint8[N, 84, 84, 3]``) and ``"class_dict"`` (``{wnid: [index, ...]}``).
  They are read with an unpickler that only rebuilds numpy arrays, so a doctored file cannot run code.

When both are present the CSV layout is read. Each split is decoded once into a tensor file in the
cache folder, keyed on the file names and sizes. A copy with other than 600 images per class (such
as the first-100-per-class subset often used for tests) loads, and says so in :attr:`Dataset.notes`.
:meth:`MiniImageNet.prepare_from` installs a copy from anywhere into the data root, checked.
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
from mtbench.data.base import DATASETS, Check, Dataset, Split, VerifyReport, atomic_torch_save, check_sha256sums, some
from mtbench.data.cache import file_stamp, read_cache, unreadable_image
from mtbench.data.miniimagenet_files import (CSV_FILES, IMAGES_PER_CLASS, PICKLE_FILES, SIZE, SPLITS, check_classes,
                                             decode_image, detect_layout, layouts_help, read_csv, read_pickle,
                                             SUBSET, subset_note, what_is_there)
from mtbench.data.miniimagenet_files import RAVI_CLASSES  # noqa: F401 (the split's classes, importable from here)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@DATASETS.register
class MiniImageNet(Dataset):
    """miniImageNet, 84x84 RGB, the Ravi & Larochelle split: 64 train / 16 val / 20 test classes."""

    name = "miniimagenet"
    description = "100 ImageNet classes, 84x84 RGB, Ravi & Larochelle split 64/16/20 (Vinyals et al. 2016)"
    version = "1"
    splits = SPLITS
    fit_split = "train"
    eval_split = "test"
    size = SIZE
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, root: Path | None = None, cache_dir: Path | None = None, progress: bool = True) -> None:
        super().__init__(root, cache_dir, progress)
        self._per_class: dict[str, list[int]] = {}  # images per class of each split loaded, for the subset note

    @property
    def folder(self) -> Path:
        return self.root / "mini-imagenet"

    @property
    def layout(self) -> str | None:
        """``"csv"``, ``"pickle"`` or ``None`` (see the module docstring)."""
        return detect_layout(self.folder)

    def is_available(self) -> bool:
        return self.layout is not None

    def _missing(self) -> UserError:
        return UserError(
            f"miniImageNet is not in {self.folder}{what_is_there(self.folder)} and has no official download: "
            f"put {layouts_help(self.folder)} (`mtbench data prepare miniimagenet --from PATH` checks a copy you "
            f"have and installs it there), or point --data-root / MTBENCH_DATA at the folder that holds mini-imagenet/"
        )

    def paths(self) -> tuple[Path, ...]:
        return (self.folder,)

    def how_to_get(self) -> str:
        return ("miniImageNet has no official download (its images are ImageNet's): get a copy in the images/ + "
                "Ravi CSV layout or as the three mini-imagenet-cache-*.pkl files, then run "
                "`mtbench data prepare miniimagenet --from PATH`")

    # -- verification ---------------------------------------------------------------------------
    def verify(self, memo: dict | None = None) -> VerifyReport:
        """The Ravi & Larochelle classes (64/16/20) and the images per class against the standard 600 (fewer:
        reported as a subset, with the counts, not as a failure), every image the CSVs list present, and
        ``SHA256SUMS`` when the folder has one. There is no official archive, hence no official checksum."""
        layout = self.layout
        if layout is None:
            return VerifyReport.missing(self)
        counts: list[int] = []
        problems: list[str] = []
        for split in SPLITS:
            try:
                per_class = self._class_counts(split, layout)
                check_classes(split, per_class, self.folder / (CSV_FILES if layout == "csv" else PICKLE_FILES)[split])
            except UserError as exc:
                problems.append(str(exc))
                continue
            counts.extend(per_class.values())
        held = sorted(set(counts))
        if held and held[-1] > IMAGES_PER_CLASS:
            problems.append(f"classes with up to {held[-1]} images, more than the {IMAGES_PER_CLASS} of the "
                            f"standard release")
        if problems:
            structure = Check("structure", False, " / ".join(problems))
        else:
            per = f"{held[0]}" if len(held) == 1 else f"{held[0]} to {held[-1]}"
            structure = Check("structure", True, f"{'CSV' if layout == 'csv' else 'pickle'} layout, the Ravi & "
                                                 f"Larochelle 64/16/20 classes, {per} images per class "
                                                 f"({sum(counts)} images)"
                                                 + (", every listed image present" if layout == "csv" else ""))
        note = None if problems else subset_note(counts)
        subset = bool(note) and held[0] < IMAGES_PER_CLASS
        if subset:
            structure = Check(structure.what, True, structure.detail + f": a subset of the standard release "
                                                                      f"({IMAGES_PER_CLASS} per class)")
        checks = [structure, check_sha256sums(self.folder, self.progress, memo)]
        return VerifyReport.of_checks(self, checks, subset=subset, notes=[note] if note else [])

    def _class_counts(self, split: str, layout: str) -> dict[str, int]:
        """``{wnid: images}`` of one split; a :class:`UserError` when a listed image is missing."""
        if layout == "pickle":
            _, classes = read_pickle(self.folder / PICKLE_FILES[split], split)
            return {wnid: len(idx) for wnid, idx in classes.items()}
        rows = read_csv(self.folder / CSV_FILES[split])
        missing = [name for name, _ in rows if not (self.folder / "images" / name).is_file()]
        if missing:
            raise UserError(f"{len(missing)} of the {len(rows)} images that {CSV_FILES[split]} lists are missing from "
                            f"{self.folder / 'images'}: {some(missing)}")
        out: dict[str, int] = {}
        for _, wnid in rows:
            out[wnid] = out.get(wnid, 0) + 1
        return out

    def prepare(self, download: bool = True) -> None:
        """Nothing to download: raise a :class:`UserError` that explains the layouts when the data is missing."""
        if not self.is_available():
            raise self._missing()

    # -- loading --------------------------------------------------------------------------------
    def load_split(self, split: str) -> Split:
        layout = self.layout
        if layout is None:
            raise self._missing()
        images, labels, class_names = self._load_csv(split) if layout == "csv" else self._load_pickle(split)
        out = Split(self.name, split, images, labels, tuple(class_names), self.mean, self.std, self.version)
        # one note for the splits loaded so far, naming each split's count where they differ
        self._per_class[split] = out.class_count.tolist()
        note = subset_note(self._per_class)
        self.notes[:] = [n for n in self.notes if not n.startswith(SUBSET)] + ([note] if note else [])
        return out

    def _cache_file(self, split: str, layout: str, digest: str) -> Path:
        return self.cache_dir / f"miniimagenet-v{self.version}-{layout}-{split}-{self.size}px-{digest[:12]}.pt"

    @staticmethod
    def _from_cache(cache: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]] | None:
        blob = read_cache(cache, ("images", "labels", "class_names"))
        return None if blob is None else (blob["images"], blob["labels"], list(blob["class_names"]))

    def _load_csv(self, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        csv_path = self.folder / CSV_FILES[split]
        rows = read_csv(csv_path)
        check_classes(split, (label for _, label in rows), csv_path)
        rows = sorted(rows, key=lambda r: r[1])  # by class, file order within a class (stable sort)
        files = [self.folder / "images" / name for name, _ in rows]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise UserError(f"{len(missing)} of the {len(files)} images that {csv_path} lists are missing from "
                            f"{self.folder / 'images'} (first: {missing[0].name}); the copy is incomplete: "
                            f"put the images there, or use a CSV that lists only the images you have")
        key = hashlib.sha256(f"{split}|{csv_path.name}".encode())
        for (name, label), f in zip(rows, files):
            key.update(f"{label}:{file_stamp(f, name)}\n".encode())
        cache = self._cache_file(split, "csv", key.hexdigest())
        if (cached := self._from_cache(cache)) is not None:
            return cached
        class_names = sorted({label for _, label in rows})
        index = {c: i for i, c in enumerate(class_names)}
        out = np.empty((len(files), SIZE, SIZE, 3), np.uint8)
        for i, f in enumerate(tqdm(files, desc=f"decoding miniImageNet {split} (once)", unit="img",
                                   disable=not self.progress)):
            try:
                out[i] = decode_image(f)
            except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds on a damaged file
                raise unreadable_image(f, exc, "the copy is damaged: replace the file, and check the copy with "
                                               "`mtbench data verify miniimagenet`") from None
        images = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
        labels = torch.tensor([index[label] for _, label in rows], dtype=torch.int64)
        atomic_torch_save({"images": images, "labels": labels, "class_names": class_names}, cache)
        return images, labels, class_names

    def _load_pickle(self, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        path = self.folder / PICKLE_FILES[split]
        key = hashlib.sha256(f"{split}|{file_stamp(path)}".encode())
        cache = self._cache_file(split, "pickle", key.hexdigest())
        if (cached := self._from_cache(cache)) is not None:
            return cached
        bar = tqdm(total=1, desc=f"reading miniImageNet {path.name} (once)", unit="file", disable=not self.progress)
        data, classes = read_pickle(path, split)
        bar.update(1)
        bar.close()
        check_classes(split, classes, path)
        class_names = sorted(classes)
        order = torch.tensor([i for c in class_names for i in classes[c]], dtype=torch.int64)
        labels = torch.tensor([k for k, c in enumerate(class_names) for _ in classes[c]], dtype=torch.int64)
        images = torch.from_numpy(data)[order]
        del data
        images = images.permute(0, 3, 1, 2).contiguous()
        atomic_torch_save({"images": images, "labels": labels, "class_names": class_names}, cache)
        return images, labels, class_names

    # -- installing a copy ----------------------------------------------------------------------
    def prepare_from(self, path: str | os.PathLike) -> Path:
        """Check a miniImageNet copy at ``path`` and install it as ``<root>/mini-imagenet``, atomically.

        Args:
            path: a folder in either layout (or the folder that holds ``mini-imagenet/``), or one of
                the three ``mini-imagenet-cache-*.pkl`` files (its two siblings are taken with it).

        The CSV files and the images they list (only those), or the three pickles, are copied into a
        hidden folder in the data root, checked there (Ravi & Larochelle's 64/16/20 classes, 84x84
        images, every listed image present), then renamed into place; on any failure nothing is left.

        Returns:
            The installed folder, ``<root>/mini-imagenet``.

        Raises:
            UserError: the source is missing or incomplete, or the destination already holds files.
        """
        src = Path(path).expanduser()
        if src.is_file() and src.name in PICKLE_FILES.values():
            src = src.parent
        if not src.is_dir():
            raise UserError(f"{src} does not exist or is not a folder; give the folder that holds a miniImageNet "
                            f"copy: {layouts_help('it')}")
        layout = detect_layout(src)
        if layout is None and detect_layout(src / "mini-imagenet") is not None:
            src = src / "mini-imagenet"
            layout = detect_layout(src)
        if layout is None:
            raise UserError(f"{src} holds no complete miniImageNet copy{what_is_there(src)}: it needs "
                            f"{layouts_help('it')}")
        dest = self.folder
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise UserError(f"{dest} already exists and is not empty; remove it first if you want to replace it "
                            f"with the copy in {src}")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".mini-imagenet-", dir=self.root))
        try:
            if layout == "csv":
                self._install_csv(src, tmp)
            else:
                self._install_pickles(src, tmp)
            if dest.is_dir():
                dest.rmdir()  # empty, checked above
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest

    def _install_csv(self, src: Path, tmp: Path) -> None:
        names: dict[str, None] = {}
        for split in SPLITS:
            rows = read_csv(src / CSV_FILES[split])
            check_classes(split, (label for _, label in rows), src / CSV_FILES[split])
            names.update((name, None) for name, _ in rows)
            shutil.copyfile(src / CSV_FILES[split], tmp / CSV_FILES[split])
        missing = [n for n in names if not (src / "images" / n).is_file()]
        if missing:
            raise UserError(f"{len(missing)} of the {len(names)} images that the CSV files list are missing from "
                            f"{src / 'images'} (first: {missing[0]}); complete the copy, or use CSV files that list "
                            f"only the images you have")
        for name in tqdm(names, desc="copying miniImageNet images", unit="img", disable=not self.progress):
            target = tmp / "images" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / "images" / name, target)
            with Image.open(target) as im:
                if im.size != (SIZE, SIZE):
                    raise UserError(f"{src / 'images' / name} is {im.size[0]}x{im.size[1]}, not {SIZE}x{SIZE}: "
                                    f"this is not a miniImageNet copy (resize the images to {SIZE}x{SIZE} first)")

    def _install_pickles(self, src: Path, tmp: Path) -> None:
        for split in tqdm(SPLITS, desc="copying miniImageNet pickles", unit="file", disable=not self.progress):
            shutil.copyfile(src / PICKLE_FILES[split], tmp / PICKLE_FILES[split])
            _, classes = read_pickle(tmp / PICKLE_FILES[split], split)
            check_classes(split, classes, src / PICKLE_FILES[split])
