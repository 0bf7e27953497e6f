"""Image-folder datasets on generated images: layouts, conversion, the cache, recorded splits, bad input,
``mtbench data add`` / ``ls`` / ``data list`` / ``data verify``, and the declared transforms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from mtbench.cli import main
from mtbench.core.errors import UserError
from mtbench.data import folder as folder_mod
from mtbench.data.folder import folder_dataset
from mtbench.data.transforms import convert


def write_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (20, 24), value: int | None = None,
                seed: int = 0) -> None:
    """One image file: RGB, grey (L) or 16-bit grey (I;16), random or constant ``value``."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    if mode == "I;16":
        arr = np.full((h, w), value, np.uint16) if value is not None else rng.integers(0, 65535, (h, w), dtype=np.uint16)
        Image.fromarray(arr).save(path)
        return
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    arr = np.full(shape, value, np.uint8) if value is not None else rng.integers(0, 255, shape, dtype=np.uint8)
    Image.fromarray(arr, mode).save(path)


def make_folder(root: Path, classes: int = 4, per_class: int = 6, prefix: str = "c") -> Path:
    """PNG and JPEG images of several sizes, grey and RGB, and 16-bit grey, in ``classes`` class folders."""
    for c in range(classes):
        for i in range(per_class):
            mode, ext = [("RGB", "png"), ("L", "jpg"), ("I;16", "png"), ("RGB", "jpeg")][i % 4]
            write_image(root / f"{prefix}{c}" / f"img{i:02d}.{ext}", mode, (16 + 4 * i, 20 + 2 * c), seed=100 * c + i)
    return root


@pytest.fixture(autouse=True)
def private_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("MTBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MTBENCH_CONFIG", str(tmp_path / "config"))


def test_imagefolder_layout_conversion_and_16_bit_grey(tmp_path):
    root = make_folder(tmp_path / "imgs")
    write_image(root / "c0" / "red.png", "RGB", (30, 30), value=0)
    Image.fromarray(np.tile(np.array([255, 0, 0], np.uint8), (30, 30, 1))).save(root / "c0" / "red.png")
    write_image(root / "c1" / "nested" / "half.tif", "I;16", (12, 12), value=32768)
    data = folder_dataset(root, "mine", image_size=16, channels=1)(progress=False)
    data.configure("transfer")
    train, test = data.load("train"), data.load("test")
    assert train.image_shape == test.image_shape == (1, 16, 16)
    assert train.class_names == ("c0", "c1", "c2", "c3") and train.images.shape[0] + test.images.shape[0] == 26
    names, images, bad = data._decoded(data._scans())
    assert bad == []
    assert int(images[names.index("c0/red.png")].float().mean().round()) == 76  # 0.299 * 255: luminance
    assert int(images[names.index("c1/nested/half.tif")].float().mean().round()) == 128  # 32768 / 257
    rgb = folder_dataset(root)(progress=False)  # undeclared: 84x84 RGB, ImageNet normalisation
    split = rgb.load("eval")
    assert split.image_shape == (3, 84, 84) and split.mean == (0.485, 0.456, 0.406)


def test_fixed_splits_shared_classes_are_a_transfer_target_disjoint_ones_episodes(tmp_path):
    for s, n in (("train", 5), ("test", 3), ("val", 2)):
        make_folder(tmp_path / "same" / s, classes=3, per_class=n)
        make_folder(tmp_path / "apart" / s, classes=3, per_class=n, prefix=s)
    same = folder_dataset(tmp_path / "same")
    assert same.default_protocol == "transfer"
    data = same(progress=False)
    data.configure("transfer", (1, 12, 12))
    assert (data.fit_split, data.eval_split, data.support_split) == ("train", "test", "train")
    assert data.load("test").images.shape == (9, 1, 12, 12) and data.load("val").images.shape[0] == 6
    apart = folder_dataset(tmp_path / "apart")
    assert apart.default_protocol == "episodes"
    data = apart(progress=False)
    with pytest.raises(UserError, match="needs the same classes"):
        data.configure("transfer")
    data.configure("episodes")
    assert data.load("train").class_names == ("train0", "train1", "train2") and data.support_split is None


def test_the_second_load_decodes_nothing_until_a_file_changes(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "imgs")
    cls = folder_dataset(root)
    first = cls(progress=False).load("eval")
    monkeypatch.setattr(folder_mod, "decode", lambda *a, **k: pytest.fail("decoded again"))
    assert torch.equal(cls(progress=False).load("eval").images, first.images)
    write_image(root / "c0" / "img00.png", "RGB", (16, 20), seed=999)  # new bytes and mtime: decoded again
    with pytest.raises(pytest.fail.Exception, match="decoded again"):
        cls(progress=False).load("eval")


def test_splits_are_seeded_recorded_and_reproducible(tmp_path):
    root = make_folder(tmp_path / "imgs", classes=10, per_class=5)
    a, b = folder_dataset(root)(progress=False), folder_dataset(root)(progress=False)
    assert a.load("eval").class_names == b.load("eval").class_names
    assert len(a.load("eval").class_names) == 4 and len(a.load("fit").class_names) == 6
    assert "membership sha256" in a.notes[0] and a.notes[0] == b.notes[0]
    copy = make_folder(tmp_path / "elsewhere", classes=10, per_class=5)  # a copy elsewhere: the same split
    c = folder_dataset(copy)(progress=False)
    assert c.load("eval").class_names == a.load("eval").class_names
    for d in (a, b):
        d.configure("transfer")
    assert torch.equal(a.load("test").images, b.load("test").images) and a.load("test").images.shape[0] == 10
    assert "held out as test images" in a.notes[0] and a.notes[0] == b.notes[0]


def test_declared_transforms():
    grey = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    out, steps = convert(grey, (3, 4, 4))
    assert torch.equal(out, grey.expand(1, 3, 4, 4)) and steps == ["grey → 3 channels by repetition"]
    red = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    red[:, 0] = 255
    out, steps = convert(red, (1, 4, 4))
    assert out.shape == (2, 1, 4, 4) and int(out.max()) == int(out.min()) == 76 and len(steps) == 2
    with pytest.raises(UserError, match="2-channel"):
        convert(torch.zeros(1, 2, 4, 4, dtype=torch.uint8), (3, 4, 4))


# -- bad input: one line, exit 2, nothing written -------------------------------------------------------
def _bad_folder(kind: str, root: Path) -> tuple[str, list[str]]:
    """A folder with one kind of bad input; the ``--dataset`` and the run options."""
    extra = ["--ways", "2", "--shots", "1", "--queries", "2"]
    if kind == "missing":
        return f"folder:{root / 'nowhere'}", extra
    if kind == "file":
        root.mkdir(parents=True)
        (root / "a.txt").write_text("x")
        return f"folder:{root / 'a.txt'}", extra
    if kind == "empty":
        (root / "c0").mkdir(parents=True)
        (root / "c1").mkdir()
        return f"folder:{root}", extra
    if kind == "one class":
        make_folder(root, classes=1)
        return f"folder:{root}", extra
    if kind == "few images":
        make_folder(root, classes=4, per_class=6)
        for f in sorted((root / "c2").iterdir())[2:]:
            f.unlink()
        return f"folder:{root}", ["--ways", "2", "--shots", "1", "--queries", "3", "--budget", "0"]
    if kind == "corrupt":
        make_folder(root, classes=4)
        data = (root / "c1" / "img01.jpg").read_bytes()
        (root / "c1" / "img01.jpg").write_bytes(data[: len(data) // 3])
        return f"folder:{root}", extra
    if kind == "loop":
        make_folder(root, classes=3)
        (root / "c0" / "again").symlink_to(root / "c0")
        return f"folder:{root}", extra
    if kind == "case":
        make_folder(root, classes=2)
        make_folder(root, classes=1, prefix="C")
        return f"folder:{root}", extra
    raise AssertionError(kind)


BAD = {"missing": "does not exist", "file": "is a file", "empty": "holds no images", "one class": "has one class",
       "few images": "class 'c2' has 2", "corrupt": "img01.jpg is not a readable image",
       "loop": "symlink loop", "case": "differ only in case"}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_input_is_one_line_naming_the_fix_and_nothing_is_written(tmp_path, kind, one_thread):
    dataset, extra = _bad_folder(kind, tmp_path / "imgs")
    out = tmp_path / "results"
    done = CliRunner().invoke(main, ["run", "--method", "protonet", "--dataset", dataset, "--budget", "0",
                                     "--episodes", "2", "--out", str(out), "--no-progress", *extra])
    assert done.exit_code == 2, done.output
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtbench: error: ") and BAD[kind] in lines[0], done.output
    assert not out.exists()


def test_skip_bad_images_leaves_them_out_and_counts_them(tmp_path, one_thread):
    dataset, extra = _bad_folder("corrupt", tmp_path / "imgs")
    (tmp_path / "imgs" / "c0" / "README.txt").write_text("not an image")
    done = CliRunner().invoke(main, ["run", "--method", "protonet", "--dataset", dataset, "--budget", "0",
                                     "--episodes", "2", "--out", str(tmp_path / "r"), "--no-progress",
                                     "--skip-bad-images", *extra])
    assert done.exit_code == 0, done.output
    doc = json.loads(next((tmp_path / "r").glob("*.json")).read_text())
    notes = doc["dataset"]["notes"]
    assert any("skipped 1 unreadable image(s)" in n and "c1/img01.jpg" in n for n in notes)
    assert sum("ignored 1 non-image file(s)" in n for n in notes) == 1
    assert doc["dataset"]["name"] == f"folder:{tmp_path / 'imgs'}"


def test_data_add_ls_list_and_verify(tmp_path):
    root = make_folder(tmp_path / "imgs")
    runner = CliRunner()
    done = runner.invoke(main, ["data", "add", "mine", str(root), "--image-size", "28", "--channels", "1"])
    assert done.exit_code == 0, done.output
    entry = json.loads((tmp_path / "config" / "datasets.json").read_text())["mine"]
    assert entry == {"path": str(root), "image_size": 28, "channels": 1}
    assert "mine" in runner.invoke(main, ["ls", "datasets"]).output
    listed = runner.invoke(main, ["data", "list", "--data-root", str(tmp_path)]).output
    assert any(line.split()[:2] == ["mine", "found"] for line in listed.splitlines())
    verified = runner.invoke(main, ["data", "verify", "mine", "--no-progress", "--data-root", str(tmp_path)])
    assert verified.exit_code == 0 and "every image decodes (28x28 grey)" in verified.output, verified.output
    clash = runner.invoke(main, ["data", "add", "omniglot", str(root)])
    assert clash.exit_code == 2 and "built-in dataset" in clash.output and len(clash.output.strip().splitlines()) == 1
    assert "omniglot" not in json.loads((tmp_path / "config" / "datasets.json").read_text())
    bad = runner.invoke(main, ["data", "add", "other", str(tmp_path / "nope")])
    assert bad.exit_code == 2 and "does not exist" in bad.output
