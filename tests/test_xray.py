"""Chest X-rays: xray / xray3 on generated folders, PneumoniaMNIST's npz and its download; the real Kermany copy."""

from __future__ import annotations

import hashlib
import io
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mtbench.data import DATASETS, resolve_cache_dir
from mtbench.data import pneumoniamnist as pm
from mtbench.data import xray as xr
from mtbench.data.download import download_file
from mtbench.core.errors import DownloadError, UserError

from support import requires_real_data, shared_root

# split -> class folder -> file names (the Kermany naming, including a person with two virus images)
FILES = {
    "train": {
        "NORMAL": ["IM-0115-0001.jpeg", "NORMAL2-IM-0007-0001.jpeg", "IM-0117-0001.png"],
        "PNEUMONIA": ["person1_bacteria_1.jpeg", "person2_virus_3.jpeg", "person3_bacteria_10.jpeg",
                      "person4_virus_7_1.jpeg"],
    },
    "test": {
        "NORMAL": ["IM-0001-0001.jpeg", "IM-0003-0001.jpeg"],
        "PNEUMONIA": ["person100_bacteria_475.jpeg", "person101_virus_187.jpeg"],
    },
}


def grey_image(i: int, size: tuple[int, int]) -> Image.Image:
    """A grey gradient whose brightness depends on ``i``, as an RGB image (as the Kermany copy stores them)."""
    w, h = size
    ramp = (np.add.outer(np.arange(h), np.arange(w)) * 60 // (w + h) + 20 * i) % 256
    return Image.fromarray(ramp.astype(np.uint8), "L").convert("RGB")


def write_kermany(root: Path, files=FILES) -> Path:
    """``root/chest_xray/{split}/{NORMAL,PNEUMONIA}/`` with small images of assorted sizes, and a .DS_Store."""
    i = 0
    for split, classes in files.items():
        for folder, names in classes.items():
            d = root / "chest_xray" / split / folder
            d.mkdir(parents=True, exist_ok=True)
            (d / ".DS_Store").write_bytes(b"\0")
            for name in names:
                grey_image(i, (120 + 7 * i, 100)).save(d / name, quality=95)
                i += 1
    return root


def expected_grey(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("L").resize((84, 84), Image.Resampling.LANCZOS)))


@pytest.fixture(scope="module")
def kermany(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_kermany(tmp_path_factory.mktemp("kermany"))


def test_registered() -> None:
    for name, cls in (("xray", xr.ChestXray), ("xray3", xr.ChestXray3), ("pneumoniamnist", pm.PneumoniaMNIST)):
        assert DATASETS.get(name) is cls
        assert cls.fit_split == "train" and cls.eval_split == "test"
    assert xr.ChestXray.splits == xr.ChestXray3.splits == ("train", "test")
    assert xr.ChestXray.size == xr.ChestXray3.size == 84 and pm.PneumoniaMNIST.size == 28


def test_xray_loads_grey_in_three_channels_at_84(kermany: Path, tmp_path: Path) -> None:
    data = xr.ChestXray(root=kermany, cache_dir=tmp_path / "cache", progress=False)
    assert data.is_available()
    data.prepare(download=True)
    train = data.load("train")
    assert train.class_names == ("normal", "pneumonia") and train.class_count.tolist() == [3, 4]
    assert train.images.dtype == torch.uint8 and train.image_shape == (3, 84, 84)
    assert torch.equal(train.images[:, 0], train.images[:, 1]) and torch.equal(train.images[:, 0], train.images[:, 2])
    assert torch.equal(train.labels, torch.tensor([0, 0, 0, 1, 1, 1, 1]))
    # images in file-name order within a class, each the LANCZOS-resized grey original (PNG and JPEG alike)
    ordered = [f"NORMAL/{n}" for n in sorted(FILES["train"]["NORMAL"])] + \
              [f"PNEUMONIA/{n}" for n in sorted(FILES["train"]["PNEUMONIA"])]
    for k, rel in enumerate(ordered):
        assert torch.equal(train.images[k, 0], expected_grey(kermany / "chest_xray" / "train" / rel)), rel
    test = data.load("test")
    assert test.class_count.tolist() == [2, 2] and test.name == "test"


def test_xray3_takes_the_subtype_from_the_file_name(kermany: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    two = xr.ChestXray(root=kermany, cache_dir=cache, progress=False).load("train")
    three = xr.ChestXray3(root=kermany, cache_dir=cache, progress=False).load("train")
    assert three.class_names == ("normal", "bacterial", "viral")
    assert three.class_count.tolist() == [3, 2, 2]
    assert torch.equal(three.labels, torch.tensor([0, 0, 0, 1, 1, 2, 2]))
    # bacterial: person1, person3 (sorted names); viral: person2, person4 — the same pixels as in xray
    assert torch.equal(three.images[:3], two.images[:3])
    assert torch.equal(three.images[3], two.images[3]) and torch.equal(three.images[4], two.images[5])
    assert torch.equal(three.images[5], two.images[4]) and torch.equal(three.images[6], two.images[6])
    assert xr.pneumonia_subtype("person1_virus_2_1.jpeg") == "viral"
    assert xr.pneumonia_subtype("person10_bacteria_3.jpeg") == "bacterial"


def test_decoded_once_and_shared_by_xray_and_xray3(kermany: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    first = xr.ChestXray(root=kermany, cache_dir=cache, progress=False).load("test")
    assert [p.name.split("-")[:3] for p in cache.glob("*.pt")] == [["chest", "xray", "v1"]]
    monkeypatch.setattr(xr.Image, "open", lambda *a, **k: pytest.fail("decoded again despite the cache"))
    again = xr.ChestXray(root=kermany, cache_dir=cache, progress=False).load("test")
    assert torch.equal(again.images, first.images)
    assert xr.ChestXray3(root=kermany, cache_dir=cache, progress=False).load("test").num_classes == 3
    assert len(list(cache.glob("*.pt"))) == 1


def test_large_originals_decode_close_to_a_full_decode(tmp_path: Path) -> None:
    """Kermany's originals are ~1000-2000 px: JPEG draft mode decodes them at a reduced scale first."""
    files = {"train": {"NORMAL": ["big.jpeg"], "PNEUMONIA": ["person1_virus_1.jpeg"]},
             "test": {"NORMAL": ["a.jpeg"], "PNEUMONIA": ["person2_bacteria_2.jpeg"]}}
    write_kermany(tmp_path, files)
    big = tmp_path / "chest_xray" / "train" / "NORMAL" / "big.jpeg"
    ramp = np.add.outer(np.arange(1200), np.arange(1600)) * 255 // 2800
    Image.fromarray(ramp.astype(np.uint8), "L").save(big, quality=95)
    got = xr.ChestXray(root=tmp_path, cache_dir=tmp_path / "cache", progress=False).load("train").images[0, 0]
    assert (got.float() - expected_grey(big).float()).abs().mean() < 1.0


def test_missing_kermany_names_the_doi_and_the_layout(tmp_path: Path) -> None:
    for cls in (xr.ChestXray, xr.ChestXray3):
        data = cls(root=tmp_path, cache_dir=tmp_path / "cache", progress=False)
        assert not data.is_available()
        for call in (lambda: data.prepare(download=True), lambda: data.prepare(download=False),
                     lambda: data.load("train")):
            with pytest.raises(UserError) as err:
                call()
            msg = str(err.value)
            assert "10.17632/rscbjbr9sj.2" in msg and str(tmp_path / "chest_xray") in msg
            assert "train/NORMAL" in msg and "test/PNEUMONIA" in msg and "\n" not in msg
            assert "pneumoniamnist" not in msg
    (tmp_path / "pneumoniamnist.npz").write_bytes(b"")
    with pytest.raises(UserError, match="--dataset pneumoniamnist"):
        xr.ChestXray(root=tmp_path, progress=False).prepare()


def test_incomplete_kermany_copies(tmp_path: Path) -> None:
    files = {s: dict(c) for s, c in FILES.items()}
    files["test"] = {"NORMAL": FILES["test"]["NORMAL"]}
    write_kermany(tmp_path, files)
    with pytest.raises(UserError, match=r"missing chest_xray/test/PNEUMONIA"):
        xr.ChestXray(root=tmp_path, cache_dir=tmp_path / "cache", progress=False).load("train")
    (tmp_path / "chest_xray" / "test" / "PNEUMONIA").mkdir()
    with pytest.raises(UserError, match="PNEUMONIA holds no .jpeg images"):
        xr.ChestXray(root=tmp_path, cache_dir=tmp_path / "cache", progress=False).load("test")
    # a test split without viral images: xray loads it, xray3 says which class is empty
    grey_image(0, (90, 90)).save(tmp_path / "chest_xray" / "test" / "PNEUMONIA" / "person9_bacteria_9.jpeg")
    assert xr.ChestXray(root=tmp_path, cache_dir=tmp_path / "cache", progress=False).load("test").num_classes == 2
    with pytest.raises(UserError, match="no images of the class\\(es\\) viral"):
        xr.ChestXray3(root=tmp_path, cache_dir=tmp_path / "cache", progress=False).load("test")
    # a pneumonia file without bacteria/virus in its name
    grey_image(0, (90, 90)).save(tmp_path / "chest_xray" / "test" / "PNEUMONIA" / "scan_0001.jpeg")
    with pytest.raises(UserError, match="scan_0001.jpeg.*personN_bacteria_M"):
        xr.ChestXray3(root=tmp_path, cache_dir=tmp_path / "cache", progress=False).load("test")


# -- PneumoniaMNIST ---------------------------------------------------------------------------------
NPZ_LABELS = {"train": [1, 0, 1, 1, 0], "val": [0, 1], "test": [1, 0, 0]}


def npz_bytes(**override) -> bytes:
    """A small pneumoniamnist.npz: image i of a split is flat with value 10 * i, labels ``[N, 1]`` uint8."""
    arrays = {}
    for split, labels in NPZ_LABELS.items():
        n = len(labels)
        arrays[f"{split}_images"] = (np.arange(n, dtype=np.uint8) * 10)[:, None, None].repeat(28, 1).repeat(28, 2)
        arrays[f"{split}_labels"] = np.array(labels, np.uint8)[:, None]
    arrays.update(override)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def test_official_medmnist_url_and_md5() -> None:
    # medmnist/info.py (MedMNIST v3.0.2), INFO["pneumoniamnist"]["url"] and ["MD5"]
    assert pm.PneumoniaMNIST.url == "https://zenodo.org/records/10519652/files/pneumoniamnist.npz?download=1"
    assert pm.PneumoniaMNIST.md5 == "28209eda62fecd6e6a2d98b1501bb15f"


def test_pneumoniamnist_loads_28px_grey_sorted(tmp_path: Path) -> None:
    (tmp_path / "pneumoniamnist.npz").write_bytes(npz_bytes())
    data = pm.PneumoniaMNIST(root=tmp_path, cache_dir=tmp_path / "cache", progress=False)
    assert data.is_available()
    data.prepare(download=False)  # present: no network
    train = data.load("train")
    assert train.image_shape == (1, 28, 28) and train.images.dtype == torch.uint8
    assert train.class_names == ("normal", "pneumonia") and train.class_count.tolist() == [2, 3]
    # stable sort by label: normals 1, 4 then pneumonias 0, 2, 3
    assert train.images[:, 0, 0, 0].tolist() == [10, 40, 0, 20, 30]
    assert data.load("val").class_count.tolist() == [1, 1] and data.load("test").class_count.tolist() == [2, 1]
    assert not (tmp_path / "cache").exists()  # already tensors: no cache file


def test_pneumoniamnist_missing_or_broken(tmp_path: Path) -> None:
    data = pm.PneumoniaMNIST(root=tmp_path, cache_dir=tmp_path / "cache", progress=False)
    for call in (lambda: data.prepare(download=False), lambda: data.load("test")):
        with pytest.raises(UserError) as err:
            call()
        msg = str(err.value)
        assert pm.PNEUMONIAMNIST_URL in msg and pm.PNEUMONIAMNIST_MD5 in msg and str(tmp_path / "pneumoniamnist.npz") in msg
    (tmp_path / "pneumoniamnist.npz").write_bytes(npz_bytes()[:100])
    with pytest.raises(UserError, match="not a readable .npz.*delete it"):
        data.load("test")
    (tmp_path / "pneumoniamnist.npz").write_bytes(npz_bytes(test_images=np.zeros((3, 64, 64), np.uint8)))
    with pytest.raises(UserError, match=r"uint8\[3, 64, 64\].*expected uint8\[N, 28, 28\]"):
        data.load("test")
    (tmp_path / "pneumoniamnist.npz").write_bytes(npz_bytes(test_labels=np.array([[0], [2], [1]], np.uint8)))
    with pytest.raises(UserError, match="other than 0 .normal. and 1"):
        data.load("test")


@pytest.fixture
def npz_server(server, monkeypatch: pytest.MonkeyPatch):
    """The local HTTP server serving a generated pneumoniamnist.npz; the dataset's URL and MD5 point at it."""
    base, served = server
    blob = npz_bytes()
    (served / "pneumoniamnist.npz").write_bytes(blob)
    monkeypatch.setattr(pm.PneumoniaMNIST, "url", f"{base}/pneumoniamnist.npz")
    monkeypatch.setattr(pm.PneumoniaMNIST, "md5", hashlib.md5(blob).hexdigest())
    return base, blob


def test_pneumoniamnist_download(npz_server, tmp_path: Path) -> None:
    _, blob = npz_server
    root = tmp_path / "data"  # does not exist yet
    data = pm.PneumoniaMNIST(root=root, cache_dir=tmp_path / "cache", progress=False)
    data.prepare(download=True)
    assert os.listdir(root) == ["pneumoniamnist.npz"] and (root / "pneumoniamnist.npz").read_bytes() == blob
    assert data.load("train").class_count.tolist() == [2, 3]


def test_pneumoniamnist_wrong_checksum_leaves_nothing(npz_server, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    base, blob = npz_server
    monkeypatch.setattr(pm.PneumoniaMNIST, "md5", "0" * 32)
    data = pm.PneumoniaMNIST(root=tmp_path / "data", cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(DownloadError) as err:
        data.prepare(download=True)
    msg = str(err.value)
    assert "0" * 32 in msg and hashlib.md5(blob).hexdigest() in msg and f"{base}/pneumoniamnist.npz" in msg
    assert str(tmp_path / "data" / "pneumoniamnist.npz") in msg
    assert os.listdir(tmp_path / "data") == [] and not data.is_available()


def test_pneumoniamnist_truncated_download_leaves_nothing(npz_server, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    base, blob = npz_server
    monkeypatch.setattr(pm.PneumoniaMNIST, "url", f"{base}/truncated/pneumoniamnist.npz")
    data = pm.PneumoniaMNIST(root=tmp_path / "data", cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(DownloadError) as err:
        data.prepare(download=True)
    assert str(len(blob) + 1000) in str(err.value) and pm.PneumoniaMNIST.md5 in str(err.value)
    assert os.listdir(tmp_path / "data") == [] and not data.is_available()


def test_download_file_uses_a_file_placed_by_hand(tmp_path: Path) -> None:
    blob = npz_bytes()
    dest = tmp_path / "deep" / "er" / "pneumoniamnist.npz"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(blob)
    # nothing listens on port 1: the file's MD5 is checked and no connection is tried
    assert download_file("http://127.0.0.1:1/x.npz", hashlib.md5(blob).hexdigest(), dest, progress=False) == dest


# -- the real Kermany copy in the shared datasets -------------------------------------------------
@pytest.fixture(scope="module")
def real_root() -> Path:
    requires_real_data("chest_xray")
    return shared_root()


@pytest.mark.realdata
def test_real_xray_counts(real_root: Path) -> None:
    data = xr.ChestXray(root=real_root, cache_dir=resolve_cache_dir(), progress=False)
    for split, counts in (("train", [1341, 3875]), ("test", [234, 390])):
        start = time.perf_counter()
        s = data.load(split)
        print(f"xray {split}: {len(s.labels)} images in {time.perf_counter() - start:.1f}s")
        assert s.class_count.tolist() == counts and s.image_shape == (3, 84, 84)
    # the first normal test image is the resized grey original
    first = sorted((real_root / "chest_xray" / "test" / "NORMAL").glob("*.jpeg"))[0]
    assert torch.equal(s.images[0, 0], expected_grey(first))


@pytest.mark.realdata
def test_real_xray3_counts_match_the_file_names(real_root: Path) -> None:
    data = xr.ChestXray3(root=real_root, cache_dir=resolve_cache_dir(), progress=False)
    for split in ("train", "test"):
        folder = real_root / "chest_xray" / split
        names = [p.name for p in (folder / "PNEUMONIA").iterdir() if p.suffix == ".jpeg"]
        expected = [len(list((folder / "NORMAL").glob("*.jpeg"))),
                    sum(bool(re.search(r"_bacteria_", n)) for n in names),
                    sum(bool(re.search(r"_virus_", n)) for n in names)]
        assert sum(expected[1:]) == len(names)
        s = data.load(split)
        print(f"xray3 {split}: {dict(zip(s.class_names, s.class_count.tolist()))}")
        assert s.class_count.tolist() == expected
    assert expected == [234, 242, 148]
