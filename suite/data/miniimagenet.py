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

import csv
import hashlib
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from mtbench.core.errors import UserError
from mtbench.data.base import DATASETS, Check, Dataset, Split, VerifyReport, atomic_torch_save, check_sha256sums, some

SIZE = 84
IMAGES_PER_CLASS = 600  # the standard release
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLITS = ("train", "val", "test")
CSV_FILES = {s: f"{s}.csv" for s in SPLITS}
PICKLE_FILES = {s: f"mini-imagenet-cache-{s}.pkl" for s in SPLITS}

# The Ravi & Larochelle (2017) split, as in their train.csv / val.csv / test.csv.
RAVI_CLASSES: dict[str, tuple[str, ...]] = {
    "train": tuple("""
        n01532829 n01558993 n01704323 n01749939 n01770081 n01843383 n01910747 n02074367 n02089867
        n02091831 n02101006 n02105505 n02108089 n02108551 n02108915 n02111277 n02113712 n02120079
        n02165456 n02457408 n02606052 n02687172 n02747177 n02795169 n02823428 n02966193 n03017168
        n03047690 n03062245 n03207743 n03220513 n03337140 n03347037 n03400231 n03476684 n03527444
        n03676483 n03838899 n03854065 n03888605 n03908618 n03924679 n03998194 n04067472 n04243546
        n04251144 n04258138 n04275548 n04296562 n04389033 n04435653 n04443257 n04509417 n04515003
        n04596742 n04604644 n04612504 n06794110 n07584110 n07697537 n07747607 n09246464 n13054560
        n13133613""".split()),
    "val": tuple("""
        n01855672 n02091244 n02114548 n02138441 n02174001 n02950826 n02971356 n02981792 n03075370
        n03417042 n03535780 n03584254 n03770439 n03773504 n03980874 n09256479""".split()),
    "test": tuple("""
        n01930112 n01981276 n02099601 n02110063 n02110341 n02116738 n02129165 n02219486 n02443484
        n02871525 n03127925 n03146219 n03272010 n03544143 n03775546 n04146614 n04149813 n04418357
        n04522168 n07613480""".split()),
}


# -- layouts ----------------------------------------------------------------------------------------
def detect_layout(folder: Path) -> str | None:
    """``"csv"`` or ``"pickle"`` when ``folder`` holds that complete layout (CSV first), else ``None``."""
    folder = Path(folder)
    if (folder / "images").is_dir() and all((folder / f).is_file() for f in CSV_FILES.values()):
        return "csv"
    if all((folder / f).is_file() for f in PICKLE_FILES.values()):
        return "pickle"
    return None


def _layouts_help(folder: Path | str) -> str:
    return (f"either (a) images/ with the Ravi & Larochelle train.csv, val.csv and test.csv (filename,label) or "
            f"(b) mini-imagenet-cache-train.pkl, mini-imagenet-cache-val.pkl and mini-imagenet-cache-test.pkl, "
            f"in {folder}")


def _what_is_there(folder: Path) -> str:
    """What of the two layouts a folder holds, as a clause for an error message ('' when nothing)."""
    if not folder.is_dir():
        return ""
    have = [n for n in ("images", *CSV_FILES.values(), *PICKLE_FILES.values()) if (folder / n).exists()]
    if not have:
        return f" ({folder} holds none of these files)"
    lacking_csv = [n for n in ("images", *CSV_FILES.values()) if not (folder / n).exists()]
    lacking_pkl = [n for n in PICKLE_FILES.values() if not (folder / n).exists()]
    lacking = lacking_csv if len(lacking_csv) <= len(lacking_pkl) else lacking_pkl
    return f" ({folder} holds {', '.join(have)} but lacks {', '.join(lacking)})"


def read_csv(path: Path) -> list[tuple[str, str]]:
    """Rows ``(filename, wnid)`` of a Ravi split file, in file order."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"filename", "label"} <= set(reader.fieldnames):
            raise UserError(f"{path} is not a miniImageNet split file: its first line must be the header "
                            f"'filename,label' (got {reader.fieldnames}); use the Ravi & Larochelle CSV files")
        rows = [(r["filename"], r["label"]) for r in reader]
    for name, _ in rows:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if not name or name.startswith(("/", "\\")) or ".." in parts:
            raise UserError(f"{path} lists the image name {name!r}, which is not a file inside images/; "
                            f"use the Ravi & Larochelle CSV files")
    return rows


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays, dicts, lists and strings; refuses every other global (no code runs)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # pickle protocol 5
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle API
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a miniImageNet pickle")
        if module.startswith("numpy.core."):  # pickled by numpy 1; numpy 2 keeps the modules in numpy._core
            try:
                return super().find_class("numpy._core." + module[len("numpy.core."):], name)
            except (ImportError, AttributeError):
                pass
        return super().find_class(module, name)


def read_pickle(path: Path, split: str) -> tuple[np.ndarray, dict[str, list[int]]]:
    """``image_data`` (``uint8[N, 84, 84, 3]``) and ``class_dict`` of one cache pickle, checked."""
    try:
        with open(path, "rb") as f:
            blob = _ArraysOnly(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as exc:
        raise UserError(f"{path} is not a readable miniImageNet cache pickle ({exc}); replace it with the "
                        f"original mini-imagenet-cache-{split}.pkl") from exc
    if not isinstance(blob, dict) or "image_data" not in blob or "class_dict" not in blob:
        keys = sorted(map(str, blob)) if isinstance(blob, dict) else type(blob).__name__
        raise UserError(f"{path} should hold a dict with 'image_data' and 'class_dict' (found {keys}); "
                        f"replace it with the original mini-imagenet-cache-{split}.pkl")
    images, classes = blob["image_data"], blob["class_dict"]
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.shape[1:] != (SIZE, SIZE, 3):
        got = f"{images.dtype}{list(images.shape)}" if isinstance(images, np.ndarray) else type(images).__name__
        raise UserError(f"{path}: image_data must be uint8[N, {SIZE}, {SIZE}, 3], got {got}; "
                        f"replace it with the original mini-imagenet-cache-{split}.pkl")
    out: dict[str, list[int]] = {}
    for wnid, idx in dict(classes).items():
        idx = [int(i) for i in np.asarray(idx).reshape(-1)]
        if not idx or min(idx) < 0 or max(idx) >= len(images):
            raise UserError(f"{path}: class {wnid} lists {len(idx)} image indices, some outside 0..{len(images) - 1} "
                            f"(or none); replace it with the original mini-imagenet-cache-{split}.pkl")
        out[str(wnid)] = idx
    return images, out


def check_classes(split: str, wnids: Iterable[str], source: Path) -> None:
    """Raise a :class:`UserError` unless ``wnids`` are exactly the Ravi & Larochelle classes of ``split``."""
    got, want = set(wnids), set(RAVI_CLASSES[split])
    if got == want:
        return
    detail = []
    if want - got:
        detail.append(f"missing e.g. {sorted(want - got)[0]}")
    if got - want:
        detail.append(f"{len(got - want)} not in this split, e.g. {sorted(got - want)[0]}")
    raise UserError(f"{source} holds {len(got)} classes for the {split} split where Ravi & Larochelle's has "
                    f"{len(want)} ({'; '.join(detail)}); the miniImageNet copy is incomplete or uses another "
                    f"split: use the Ravi & Larochelle files (64/16/20 classes)")


def subset_note(counts: Iterable[int]) -> str | None:
    """The sentence a copy with other than :data:`IMAGES_PER_CLASS` images per class deserves, or None."""
    counts = sorted(set(int(c) for c in counts))
    if counts == [IMAGES_PER_CLASS]:
        return None
    held = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
    consequence = ("expect lower accuracy than published" if counts[0] < IMAGES_PER_CLASS
                   else "results are not comparable with published ones")
    return (f"this miniImageNet copy holds {held} images per class, not the standard {IMAGES_PER_CLASS}: "
            f"{consequence}")


def _decode(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (SIZE, SIZE):
            im = im.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
        return np.asarray(im)


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
            f"miniImageNet is not in {self.folder}{_what_is_there(self.folder)} and has no official download: "
            f"put {_layouts_help(self.folder)} (`mtbench data prepare miniimagenet --from PATH` checks a copy you "
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
        note = subset_note(out.class_count.tolist())
        if note and note not in self.notes:
            self.notes.append(note)
        return out

    def _cache_file(self, split: str, layout: str, digest: str) -> Path:
        return self.cache_dir / f"miniimagenet-v{self.version}-{layout}-{split}-{self.size}px-{digest[:12]}.pt"

    @staticmethod
    def _from_cache(cache: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        blob = torch.load(cache, weights_only=True)
        return blob["images"], blob["labels"], list(blob["class_names"])

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
            key.update(f"{name}:{label}:{f.stat().st_size}\n".encode())
        cache = self._cache_file(split, "csv", key.hexdigest())
        if cache.exists():
            return self._from_cache(cache)
        class_names = sorted({label for _, label in rows})
        index = {c: i for i, c in enumerate(class_names)}
        out = np.empty((len(files), SIZE, SIZE, 3), np.uint8)
        for i, f in enumerate(tqdm(files, desc=f"decoding miniImageNet {split} (once)", unit="img",
                                   disable=not self.progress)):
            out[i] = _decode(f)
        images = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
        labels = torch.tensor([index[label] for _, label in rows], dtype=torch.int64)
        atomic_torch_save({"images": images, "labels": labels, "class_names": class_names}, cache)
        return images, labels, class_names

    def _load_pickle(self, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        path = self.folder / PICKLE_FILES[split]
        key = hashlib.sha256(f"{split}|{path.name}:{path.stat().st_size}".encode())
        cache = self._cache_file(split, "pickle", key.hexdigest())
        if cache.exists():
            return self._from_cache(cache)
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
                            f"copy: {_layouts_help('it')}")
        layout = detect_layout(src)
        if layout is None and detect_layout(src / "mini-imagenet") is not None:
            src = src / "mini-imagenet"
            layout = detect_layout(src)
        if layout is None:
            raise UserError(f"{src} holds no complete miniImageNet copy{_what_is_there(src)}: it needs "
                            f"{_layouts_help('it')}")
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
