"""Omniglot: the carried Vinyals split against the reference files, decoding, caching, downloads."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mtbench.data import omniglot as om
from mtbench.core.errors import UserError

from support import requires_real_data, shared_root


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> om.Omniglot:
    requires_real_data("omniglot")
    return om.Omniglot(root=shared_root(), cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


@pytest.mark.realdata
@pytest.mark.parametrize("split", ["train", "val", "trainval", "test"])
def test_vinyals_split_matches_reference_files(real: om.Omniglot, split: str) -> None:
    reference = (real.folder / "splits" / "vinyals" / f"{split}.txt").read_text().split()
    ours = om.vinyals_classes([name for name, _ in real.characters()], split)
    assert sorted(ours) == sorted(reference)
    assert len(ours) == len(set(ours))


@pytest.mark.realdata
def test_splits_load_decoded_rotated_and_cached(real: om.Omniglot, monkeypatch: pytest.MonkeyPatch) -> None:
    test = real.load("test")
    assert test.images.dtype == torch.uint8 and test.image_shape == (1, 28, 28)
    assert test.num_classes == 1692 and int(test.class_count.min()) == int(test.class_count.max()) == 20
    # strokes are bright on a dark background after inversion
    assert float(test.images.float().mean()) < 80
    # class k*4+r is class k*4 rotated by r*90 degrees counter-clockwise
    base, rot90 = test.class_names.index("Gurmukhi/character42/rot000"), test.class_names.index("Gurmukhi/character42/rot090")
    a = test.images[test.labels == base]
    b = test.images[test.labels == rot90]
    assert torch.equal(torch.rot90(a, 1, dims=(-2, -1)), b)
    # the reference PNG, decoded independently, is the first image of its class
    png = next(real.folder.glob("images_*/Gurmukhi/character42"))
    first = sorted(png.glob("*.png"))[0]
    with Image.open(first) as im:
        small = im.convert("L").resize((28, 28), Image.Resampling.LANCZOS)
        expected = 255 - torch.from_numpy(np.array(small))
    assert torch.equal(a[0, 0], expected)
    # second load comes from the tensor cache: no PNG is opened
    assert len(list(real.cache_dir.glob("omniglot-*.pt"))) == 1
    monkeypatch.setattr(om.Image, "open", lambda *a, **k: pytest.fail("decoded again despite the cache"))
    assert torch.equal(real.load("test").images, test.images)
    trainval = real.load("trainval")
    assert trainval.num_classes == 4800
    assert not set(trainval.class_names) & set(test.class_names)


# -- download path, against a local HTTP server (see test_download.py for the fetcher itself) ----
def fake_archive(folder: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for alphabet in ("Alpha", "Beta"):
            for c in (1, 2):
                for j in range(1, 21):
                    img = Image.new("1", (105, 105), 1)
                    img.putpixel((j, c), 0)
                    png = io.BytesIO()
                    img.save(png, format="PNG")
                    zf.writestr(f"{folder}/{alphabet}/character{c:02d}/{c:04d}_{j:02d}.png", png.getvalue())
    return buf.getvalue()


def test_prepare_downloads_verifies_and_decodes(server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base_url, serve_dir = server
    md5s = {}
    for folder in om.ARCHIVES:
        blob = fake_archive(folder)
        (serve_dir / f"{folder}.zip").write_bytes(blob)
        md5s[folder] = hashlib.md5(blob).hexdigest()
    monkeypatch.setattr(om, "BASE_URL", base_url)
    monkeypatch.setattr(om, "ARCHIVES", md5s)
    data = om.Omniglot(root=tmp_path / "data", cache_dir=tmp_path / "cache", progress=False)
    assert not data.is_available()
    data.prepare(download=True)
    assert data.is_available()
    assert sorted(os.listdir(data.folder)) == sorted(om.ARCHIVES)  # archives removed, nothing half-written
    names = [n for n, _ in data.characters()]
    assert len(names) == 8 and names[0] == "Alpha/character01"
    train = data.load("train")  # none of the fake alphabets is in the Vinyals val/test lists
    assert train.num_classes == 8 * 4 and train.images.shape == (8 * 4 * 20, 1, 28, 28)


def test_prepare_with_wrong_checksum_leaves_nothing(server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base_url, serve_dir = server
    for folder in om.ARCHIVES:
        (serve_dir / f"{folder}.zip").write_bytes(fake_archive(folder))
    monkeypatch.setattr(om, "BASE_URL", base_url)
    data = om.Omniglot(root=tmp_path / "data", cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(UserError) as err:
        data.prepare(download=True)
    assert om.ARCHIVES["images_background"] in str(err.value) and base_url in str(err.value)
    assert not data.folder.exists() or os.listdir(data.folder) == []


def test_offline_error_names_url_checksum_and_folder(tmp_path: Path) -> None:
    data = om.Omniglot(root=tmp_path, cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(UserError) as err:
        data.prepare(download=False)
    msg = str(err.value)
    assert om.BASE_URL + "/images_background.zip" in msg
    assert om.ARCHIVES["images_background"] in msg
    assert str(tmp_path / "omniglot") in msg
    with pytest.raises(UserError, match="MTBENCH_DATA"):
        data.load("test")
