"""miniImageNet: both layouts on generated data, the Ravi split, caching, notes, errors, prepare_from; the real subset."""

from __future__ import annotations

import os
import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mtbench.data import DATASETS, resolve_cache_dir
from mtbench.data import miniimagenet as mi
from mtbench.data import miniimagenet_files as mi_files
from mtbench.core.errors import UserError

from support import requires_real_data, shared_root

PER_CLASS = 2  # generated images per class


def colour(split: str, k: int, j: int) -> tuple[int, int, int]:
    """A distinct flat colour for image j of class k of a split (survives JPEG within a few levels)."""
    return (40 + 2 * k, 60 + 100 * j, {"train": 30, "val": 130, "test": 230}[split])


def write_csv_copy(folder: Path, per_class: int = PER_CLASS) -> Path:
    """A miniImageNet copy in the CSV layout: the real Ravi classes, ``per_class`` flat 84x84 JPEGs each.

    Rows are written in reverse class order, so the loader has to sort them.
    """
    (folder / "images").mkdir(parents=True)
    for split, classes in mi.RAVI_CLASSES.items():
        rows = ["filename,label"]
        for k, wnid in reversed(list(enumerate(classes))):
            for j in range(per_class):
                name = f"{wnid}{j:08d}.jpg"
                Image.new("RGB", (84, 84), colour(split, k, j)).save(folder / "images" / name, quality=95)
                rows.append(f"{name},{wnid}")
        (folder / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return folder


def write_pickles(folder: Path, per_class: int = PER_CLASS, protocol: int = 4) -> Path:
    """A copy in the pickle layout; image i of a split has all pixels equal to i % 251, classes interleaved."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, classes in mi.RAVI_CLASSES.items():
        n = len(classes) * per_class
        data = np.empty((n, 84, 84, 3), np.uint8)
        data[:] = (np.arange(n) % 251).astype(np.uint8)[:, None, None, None]
        class_dict = {wnid: [k + len(classes) * j for j in range(per_class)] for k, wnid in enumerate(classes)}
        with open(folder / mi.PICKLE_FILES[split], "wb") as f:
            pickle.dump({"image_data": data, "class_dict": class_dict}, f, protocol=protocol)
    return folder


@pytest.fixture(scope="module")
def csv_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv_copy(tmp_path_factory.mktemp("csvsrc") / "mini-imagenet")


@pytest.fixture(scope="module")
def pickle_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pickles(tmp_path_factory.mktemp("pklsrc") / "mini-imagenet")


def dataset(root: Path, cache: Path) -> mi.MiniImageNet:
    return mi.MiniImageNet(root=root, cache_dir=cache, progress=False)


def test_registered_with_the_ravi_split() -> None:
    cls = DATASETS.get("miniimagenet")
    assert cls is mi.MiniImageNet
    assert cls.splits == ("train", "val", "test") and cls.fit_split == "train" and cls.eval_split == "test"
    assert {s: len(c) for s, c in mi.RAVI_CLASSES.items()} == {"train": 64, "val": 16, "test": 20}
    assert len({c for cs in mi.RAVI_CLASSES.values() for c in cs}) == 100


def test_csv_layout_loads_sorted_84px_rgb_with_a_note(csv_copy: Path, tmp_path: Path) -> None:
    data = dataset(csv_copy.parent, tmp_path / "cache")
    assert data.layout == "csv" and data.is_available()
    data.prepare(download=True)  # present: nothing to do
    assert data.notes == []
    for split, n_cls in (("train", 64), ("val", 16), ("test", 20)):
        s = data.load(split)
        assert s.num_classes == n_cls and s.class_names == tuple(sorted(mi.RAVI_CLASSES[split]))
        assert s.images.dtype == torch.uint8 and s.image_shape == (3, 84, 84)
        assert s.class_count.tolist() == [PER_CLASS] * n_cls
        assert torch.equal(s.labels, torch.arange(n_cls).repeat_interleave(PER_CLASS))
        assert s.mean == mi.IMAGENET_MEAN and s.std == mi.IMAGENET_STD
        # image j of class k is the generated flat colour: labels go with the right pictures
        for k in (0, n_cls - 1):
            ravi_k = mi.RAVI_CLASSES[split].index(s.class_names[k])
            for j in range(PER_CLASS):
                pixel = s.images[k * PER_CLASS + j, :, 40, 40].int()
                assert (pixel - torch.tensor(colour(split, ravi_k, j))).abs().max() <= 3
    assert data.notes == [f"this miniImageNet copy holds {PER_CLASS} images per class, not the standard 600: "
                          "expect lower accuracy than published"]  # one note, however many splits were loaded


def test_no_note_for_a_full_copy(csv_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mi, "IMAGES_PER_CLASS", PER_CLASS)
    monkeypatch.setattr(mi_files, "IMAGES_PER_CLASS", PER_CLASS)  # subset_note reads it there
    data = dataset(csv_copy.parent, tmp_path / "cache")
    data.load("test")
    assert data.notes == []
    monkeypatch.undo()
    assert mi.subset_note([600] * 20) is None
    assert "holds 90 to 100 images per class" in mi.subset_note([100, 90, 100])
    assert "not comparable" in mi.subset_note([700])


def test_a_shortened_train_split_is_named_in_the_note(tmp_path: Path) -> None:
    """A copy whose train split keeps fewer images per class than its test split (what the reproduction page's
    data experiments fit on): the one note names each split's count, so a result says which split was short."""
    src = write_csv_copy(tmp_path / "src" / "mini-imagenet")
    rows = (src / "train.csv").read_text().splitlines()
    first = {}
    for row in rows[1:]:  # the first image of each training class
        first.setdefault(row.split(",")[1], row)
    (src / "train.csv").write_text("\n".join([rows[0], *first.values()]) + "\n")
    data = dataset(src.parent, tmp_path / "cache")
    data.load("test")
    assert data.notes == [f"this miniImageNet copy holds {PER_CLASS} images per class, not the standard 600: "
                          "expect lower accuracy than published"]
    data.load("train")
    assert data.notes == [f"this miniImageNet copy holds {PER_CLASS} images per class in its test split and 1 in its "
                          "train split, not the standard 600: expect lower accuracy than published"]


def test_cache_is_reused_and_keyed_on_the_files(csv_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "data" / "mini-imagenet"
    shutil.copytree(csv_copy, src)
    cache = tmp_path / "cache"
    first = dataset(src.parent, cache).load("val")
    assert len(list(cache.glob("miniimagenet-*-val-*.pt"))) == 1
    with monkeypatch.context() as m:
        m.setattr(mi.Image, "open", lambda *a, **k: pytest.fail("decoded again despite the cache"))
        again = dataset(src.parent, cache).load("val")
    assert torch.equal(again.images, first.images) and again.class_names == first.class_names
    # a changed image (another size on disk) is a new key: decoded anew, and resized to 84x84
    name = (src / "val.csv").read_text().splitlines()[1].split(",")[0]
    Image.new("RGB", (100, 90), (1, 2, 3)).save(src / "images" / name, quality=95)
    changed = dataset(src.parent, cache).load("val")
    assert len(list(cache.glob("miniimagenet-*-val-*.pt"))) == 2
    assert changed.image_shape == (3, 84, 84) and not torch.equal(changed.images, first.images)


@pytest.mark.parametrize("protocol", [2, 5])
def test_pickle_layout_loads_by_class_dict(tmp_path: Path, protocol: int, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_pickles(tmp_path / "data" / "mini-imagenet", protocol=protocol)
    data = dataset(folder.parent, tmp_path / "cache")
    assert data.layout == "pickle"
    test = data.load("test")
    assert test.num_classes == 20 and test.class_names == tuple(sorted(mi.RAVI_CLASSES["test"]))
    assert test.image_shape == (3, 84, 84) and test.class_count.tolist() == [PER_CLASS] * 20
    # class k (sorted) takes the class_dict indices of its wnid, in their order
    for k, wnid in enumerate(test.class_names):
        ravi_k = mi.RAVI_CLASSES["test"].index(wnid)
        got = test.images[test.labels == k][:, 0, 0, 0].tolist()
        assert got == [(ravi_k + 20 * j) % 251 for j in range(PER_CLASS)]
    assert data.notes and "2 images per class" in data.notes[0]
    monkeypatch.setattr(mi, "read_pickle", lambda *a, **k: pytest.fail("read again despite the cache"))
    assert torch.equal(dataset(folder.parent, tmp_path / "cache").load("test").images, test.images)


def test_csv_layout_wins_when_both_are_present(csv_copy: Path, tmp_path: Path) -> None:
    both = tmp_path / "mini-imagenet"
    shutil.copytree(csv_copy, both)
    write_pickles(both)
    assert mi.detect_layout(both) == "csv"


def test_a_doctored_pickle_runs_no_code(tmp_path: Path) -> None:
    folder = write_pickles(tmp_path / "mini-imagenet")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(folder / mi.PICKLE_FILES["test"], "wb") as f:
        pickle.dump({"image_data": Evil(), "class_dict": {}}, f)
    with pytest.raises(UserError, match="refusing to load"):
        dataset(tmp_path, tmp_path / "cache").load("test")
    assert not marker.exists()


def test_missing_copy_explains_both_layouts(tmp_path: Path) -> None:
    data = dataset(tmp_path, tmp_path / "cache")
    assert not data.is_available()
    for call in (lambda: data.prepare(download=True), lambda: data.prepare(download=False), lambda: data.load("test")):
        with pytest.raises(UserError) as err:
            call()
        msg = str(err.value)
        for needle in ("images/", "train.csv", "test.csv", "mini-imagenet-cache-train.pkl",
                       str(tmp_path / "mini-imagenet"), "no official download", "mtbench data prepare miniimagenet"):
            assert needle in msg
        assert "\n" not in msg


def test_partial_copy_says_what_is_lacking(csv_copy: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mini-imagenet"
    shutil.copytree(csv_copy, folder)
    (folder / "test.csv").unlink()
    with pytest.raises(UserError, match=r"lacks test\.csv"):
        dataset(tmp_path, tmp_path / "cache").prepare()


def test_incomplete_copies_are_clear_errors(csv_copy: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mini-imagenet"
    shutil.copytree(csv_copy, folder)
    lines = (folder / "test.csv").read_text().splitlines()
    dropped = lines[1].split(",")[1]
    (folder / "test.csv").write_text("\n".join([lines[0]] + [ln for ln in lines[1:] if not ln.endswith(dropped)]))
    with pytest.raises(UserError, match=f"19 classes.*has 20.*missing e.g. {dropped}"):
        dataset(tmp_path, tmp_path / "cache").load("test")
    # an image the CSV lists is gone
    name = (folder / "val.csv").read_text().splitlines()[2].split(",")[0]
    (folder / "images" / name).unlink()
    with pytest.raises(UserError, match=f"1 of the 32 images.*{name}"):
        dataset(tmp_path, tmp_path / "cache").load("val")
    # a class of another split (e.g. the original Vinyals split)
    (folder / "train.csv").write_text((folder / "train.csv").read_text().replace(
        mi.RAVI_CLASSES["train"][0], mi.RAVI_CLASSES["test"][0]))
    with pytest.raises(UserError, match=f"not in this split, e.g. {mi.RAVI_CLASSES['test'][0]}"):
        dataset(tmp_path, tmp_path / "cache").load("train")
    (folder / "train.csv").write_text("file,class\na.jpg,n1\n")
    with pytest.raises(UserError, match="filename,label"):
        dataset(tmp_path, tmp_path / "cache").load("train")


# -- prepare_from ---------------------------------------------------------------------------------
def test_prepare_from_csv_copies_only_listed_images(csv_copy: Path, tmp_path: Path) -> None:
    src = tmp_path / "download" / "miniImageNet"
    shutil.copytree(csv_copy, src)
    (src / "images" / "stray.jpg").write_bytes(b"not listed")
    root = tmp_path / "data"
    data = dataset(root, tmp_path / "cache")
    assert data.prepare_from(src) == root / "mini-imagenet"
    assert sorted(os.listdir(root)) == ["mini-imagenet"]  # no temp folder left
    assert data.layout == "csv" and not (root / "mini-imagenet" / "images" / "stray.jpg").exists()
    assert len(os.listdir(root / "mini-imagenet" / "images")) == 100 * PER_CLASS
    assert data.load("train").num_classes == 64
    with pytest.raises(UserError, match="already exists"):
        data.prepare_from(src)


def test_prepare_from_a_pickle_file_or_the_folder_above(pickle_copy: Path, csv_copy: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "mini-imagenet").mkdir(parents=True)  # an empty folder is replaced
    data = dataset(root, tmp_path / "cache")
    data.prepare_from(pickle_copy / mi.PICKLE_FILES["val"])
    assert sorted(os.listdir(root / "mini-imagenet")) == sorted(mi.PICKLE_FILES.values())
    assert data.layout == "pickle" and data.load("val").num_classes == 16
    other = dataset(tmp_path / "data2", tmp_path / "cache")
    other.prepare_from(csv_copy.parent)  # the folder that holds mini-imagenet/
    assert other.layout == "csv"


def test_prepare_from_rejects_bad_copies_and_leaves_nothing(csv_copy: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    data = dataset(root, tmp_path / "cache")
    with pytest.raises(UserError, match="does not exist"):
        data.prepare_from(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no complete miniImageNet copy.*mini-imagenet-cache-train.pkl"):
        data.prepare_from(empty)
    # wrong class count: one training class too few
    src = tmp_path / "src"
    shutil.copytree(csv_copy, src)
    lines = (src / "train.csv").read_text().splitlines()
    (src / "train.csv").write_text("\n".join(ln for ln in lines if mi.RAVI_CLASSES["train"][5] not in ln))
    with pytest.raises(UserError, match="63 classes.*has 64"):
        data.prepare_from(src)
    assert not root.exists() or os.listdir(root) == []
    # an image of the wrong size
    shutil.rmtree(src)
    shutil.copytree(csv_copy, src)
    name = (src / "test.csv").read_text().splitlines()[1].split(",")[0]
    Image.new("RGB", (32, 32)).save(src / "images" / name)
    with pytest.raises(UserError, match=f"{name} is 32x32, not 84x84"):
        data.prepare_from(src)
    assert os.listdir(root) == []
    # a listed image missing
    (src / "images" / name).unlink()
    with pytest.raises(UserError, match=f"1 of the 200 images.*{name}"):
        data.prepare_from(src)
    assert os.listdir(root) == []
    # a pickle with a missing class
    pk = write_pickles(tmp_path / "pk")
    blob = pickle.loads((pk / mi.PICKLE_FILES["test"]).read_bytes())
    blob["class_dict"].pop(mi.RAVI_CLASSES["test"][0])
    (pk / mi.PICKLE_FILES["test"]).write_bytes(pickle.dumps(blob))
    with pytest.raises(UserError, match="19 classes"):
        data.prepare_from(pk)
    assert os.listdir(root) == []


# -- the real subset in the shared datasets ------------------------------------------------------
@pytest.mark.realdata
def test_real_subset_split_counts_and_note(monkeypatch: pytest.MonkeyPatch) -> None:
    requires_real_data("mini-imagenet")
    data = mi.MiniImageNet(root=shared_root(), cache_dir=resolve_cache_dir(), progress=False)
    assert data.layout == "csv"
    splits = {}
    for split, n_cls in (("train", 64), ("val", 16), ("test", 20)):
        start = time.perf_counter()
        s = splits[split] = data.load(split)
        print(f"miniImageNet {split}: {len(s.labels)} images in {time.perf_counter() - start:.1f}s")
        assert s.num_classes == n_cls and s.class_count.tolist() == [100] * n_cls
        assert s.image_shape == (3, 84, 84) and s.class_names == tuple(sorted(mi.RAVI_CLASSES[split]))
    assert data.notes == ["this miniImageNet copy holds 100 images per class, not the standard 600: "
                          "expect lower accuracy than published"]
    # the first image of the last test class is that class's first row in test.csv, decoded independently
    test = splits["test"]
    wnid = test.class_names[-1]
    first = next(r for r in mi.read_csv(data.folder / "test.csv") if r[1] == wnid)[0]
    with Image.open(data.folder / "images" / first) as im:
        expected = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(test.images[int(test.class_start[-1])], expected)
    monkeypatch.setattr(mi.Image, "open", lambda *a, **k: pytest.fail("decoded again despite the cache"))
    assert torch.equal(mi.MiniImageNet(root=shared_root(), progress=False).load("test").images, test.images)
