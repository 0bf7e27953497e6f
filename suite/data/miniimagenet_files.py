"""miniImageNet's files: the two layouts that circulate (CSV + images, or pickles), read safely.

The Ravi & Larochelle class lists, layout detection and its help text, the CSV and pickle readers
(the pickle one rebuilds numpy arrays and nothing else), and the image decoder. The dataset itself,
its caching and checks, is :mod:`mtbench.data.miniimagenet`.
"""

from __future__ import annotations

import csv
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from mtbench.core.errors import UserError
SIZE = 84
IMAGES_PER_CLASS = 600  # the standard release
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


def layouts_help(folder: Path | str) -> str:
    return (f"either (a) images/ with the Ravi & Larochelle train.csv, val.csv and test.csv (filename,label) or "
            f"(b) mini-imagenet-cache-train.pkl, mini-imagenet-cache-val.pkl and mini-imagenet-cache-test.pkl, "
            f"in {folder}")


def what_is_there(folder: Path) -> str:
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


SUBSET = "this miniImageNet copy holds "  # how a subset note starts


def subset_note(counts: Iterable[int] | Mapping[str, Iterable[int]]) -> str | None:
    """The sentence a copy with other than :data:`IMAGES_PER_CLASS` images per class deserves, or None. Given the
    counts by split (``{"train": [...], "test": [...]}``), a copy whose splits hold different counts (a shortened
    train split) names each split's."""
    by_split = dict(counts) if isinstance(counts, Mapping) else {"": counts}
    held = {split: sorted(set(int(c) for c in cs)) for split, cs in by_split.items()}
    every = sorted(set().union(*held.values()))
    if every == [IMAGES_PER_CLASS]:
        return None

    def span(c: list[int]) -> str:
        return f"{c[0]}" if len(c) == 1 else f"{c[0]} to {c[-1]}"

    if len({tuple(c) for c in held.values()}) == 1:
        what = f"{span(every)} images per class"
    else:
        what = " and ".join(f"{span(c)}{' images per class' * (i == 0)} in its {split} split"
                            for i, (split, c) in enumerate(held.items()))
    consequence = ("expect lower accuracy than published" if every[0] < IMAGES_PER_CLASS
                   else "results are not comparable with published ones")
    return f"{SUBSET}{what}, not the standard {IMAGES_PER_CLASS}: {consequence}"


def decode_image(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (SIZE, SIZE):
            im = im.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
        return np.asarray(im)
