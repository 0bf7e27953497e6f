"""``mtbench data prepare``: chest X-rays, Omniglot, miniImageNet and PneumoniaMNIST from generated copies."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from mtbench.data import miniimagenet as mi
from mtbench.data import omniglot as om
from mtbench.data import pneumoniamnist as pm
from mtbench.data import xray as xr
from mtbench.core.errors import UserError

from data_copies import (KERMANY, files_under, invoke, kermany_members, omniglot_members, omniglot_zip,
                         one_line_error, write_kermany, write_miniimagenet, write_omniglot, zip_of)


# -- prepare: chest X-rays --------------------------------------------------------------------------
def test_prepare_xray_from_a_folder(tmp_path: Path, fake_official) -> None:
    src = write_kermany(tmp_path / "download")
    (src / "val" / "NORMAL").mkdir(parents=True)
    (src / "val" / "NORMAL" / "IM-0001.jpeg").write_bytes(b"val image")
    (src / "notes.txt").write_text("not part of the data")
    root = tmp_path / "data"
    result = invoke("prepare", "xray", "--from", str(src.parent), "--data-root", str(root), "--no-progress")
    assert result.exit_code == 0, result.output
    assert f"installed {src.parent} as {root / 'chest_xray'}" in result.output
    assert os.listdir(root) == ["chest_xray"]  # no temp folder left
    expected = sorted([*kermany_members(), "SHA256SUMS", "val/NORMAL/IM-0001.jpeg"])
    assert files_under(root / "chest_xray") == expected  # no .DS_Store, no notes.txt
    assert "ok    SHA256SUMS" in result.output and "ok    structure" in result.output  # verified after install
    result = invoke("prepare", "xray", "--from", str(src), "--data-root", str(root), "--no-progress")
    one_line_error(result, f"{root / 'chest_xray'} already exists")
    # the chest_xray folder itself works as well
    result = invoke("prepare", "xray3", "--from", str(src), "--data-root", str(tmp_path / "data2"), "--no-progress")
    assert result.exit_code == 0, result.output
    assert "ok    subtypes" in result.output


def test_prepare_xray_from_a_zip(tmp_path: Path, fake_official) -> None:
    """The Kaggle archive's shape: chest_xray/ with a duplicate chest_xray/chest_xray/ and __MACOSX junk."""
    members = {f"chest_xray/{rel}": blob for rel, blob in kermany_members().items()}
    members.update({f"chest_xray/chest_xray/{rel}": b"duplicate" for rel in kermany_members()})
    members.update({f"__MACOSX/chest_xray/train/NORMAL/._{n}": b"mac" for n in KERMANY["train"]["NORMAL"]})
    members["chest_xray/train/NORMAL/.DS_Store"] = b"\0"
    archive = tmp_path / "chest-xray-pneumonia.zip"
    archive.write_bytes(zip_of(members))
    root = tmp_path / "data"
    result = invoke("prepare", "xray", "--from", str(archive), "--data-root", str(root), "--no-progress")
    assert result.exit_code == 0, result.output
    assert os.listdir(root) == ["chest_xray"]
    assert files_under(root / "chest_xray") == sorted(kermany_members())
    for rel, blob in kermany_members().items():
        assert (root / "chest_xray" / rel).read_bytes() == blob  # from the shortest prefix, not the duplicate
    assert "ok    structure" in result.output


def test_prepare_xray_refuses_a_broken_layout(tmp_path: Path) -> None:
    files = {"train": KERMANY["train"], "test": {"NORMAL": KERMANY["test"]["NORMAL"]}}
    src = write_kermany(tmp_path / "src", files)
    root = tmp_path / "data"
    line = one_line_error(invoke("prepare", "xray", "--from", str(src), "--data-root", str(root)),
                          str(src), "lacks test/PNEUMONIA", "10.17632/rscbjbr9sj.2")
    assert "the folder above it, or the .zip" in line
    (src / "test" / "PNEUMONIA").mkdir()  # present but empty
    one_line_error(invoke("prepare", "xray", "--from", str(src), "--data-root", str(root)),
                   "lacks test/PNEUMONIA (no images)")
    archive = tmp_path / "broken.zip"
    archive.write_bytes(zip_of({f"chest_xray/{rel}": b"x" for rel in kermany_members(files)}))
    one_line_error(invoke("prepare", "xray", "--from", str(archive), "--data-root", str(root)),
                   f"the archive {archive} does not hold the chest X-ray layout", "chest_xray/test/NORMAL/")
    not_zip = tmp_path / "chest_xray.tar"
    not_zip.write_bytes(b"not an archive mtbench reads")
    one_line_error(invoke("prepare", "xray", "--from", str(not_zip), "--data-root", str(root)),
                   f"{not_zip} is neither a folder nor a .zip archive")
    one_line_error(invoke("prepare", "xray", "--from", str(tmp_path / "nowhere"), "--data-root", str(root)),
                   f"{tmp_path / 'nowhere'} does not exist")
    assert not root.exists() or os.listdir(root) == []  # nothing installed, no temp folder


def test_prepare_xray_failing_midway_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_kermany(tmp_path / "src")
    root = tmp_path / "data"
    copied = []
    real_copy = shutil.copyfile

    def flaky_copy(a, b):
        if len(copied) == 5:
            raise OSError(28, "No space left on device")
        copied.append(a)
        return real_copy(a, b)

    monkeypatch.setattr(xr.shutil, "copyfile", flaky_copy)
    with pytest.raises(OSError, match="No space left"):
        xr.ChestXray(root=root, progress=False).prepare_from(src)
    assert len(copied) == 5 and os.listdir(root) == []


# -- prepare: Omniglot, miniImageNet, PneumoniaMNIST ---------------------------------------------------
@pytest.fixture
def omniglot_zips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The two generated zips in a folder, with their MD5s as the official ones."""
    folder = tmp_path / "zips"
    folder.mkdir()
    md5s = {}
    for f in om.ARCHIVES:
        blob = omniglot_zip(f)
        (folder / f"{f}.zip").write_bytes(blob)
        md5s[f] = hashlib.md5(blob).hexdigest()
    monkeypatch.setattr(om, "ARCHIVES", md5s)
    return folder


def test_prepare_omniglot_from_the_zips(omniglot_zips: Path, tmp_path: Path, fake_official) -> None:
    root = tmp_path / "data"
    result = invoke("prepare", "omniglot", "--from", str(omniglot_zips / "images_evaluation.zip"),
                    "--data-root", str(root), "--no-progress")  # one zip: its sibling comes along
    assert result.exit_code == 0, result.output
    assert os.listdir(root) == ["omniglot"]
    assert files_under(root / "omniglot") == sorted(rel for f in om.ARCHIVES for rel in omniglot_members(f))
    assert "omniglot: verified" in result.output and "ok    structure" in result.output
    data = om.Omniglot(root=root, cache_dir=tmp_path / "cache", progress=False)
    assert len(data.characters()) == 8 and data.load("train").num_classes == 8 * 4  # loads as it should
    one_line_error(invoke("prepare", "omniglot", "--from", str(omniglot_zips), "--data-root", str(root)),
                   "already holds images_background and images_evaluation")


def test_prepare_omniglot_refuses_a_wrong_md5(omniglot_zips: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(om, "ARCHIVES", {**om.ARCHIVES, "images_background": "f" * 32})
    root = tmp_path / "data"
    got = hashlib.md5((omniglot_zips / "images_background.zip").read_bytes()).hexdigest()
    one_line_error(invoke("prepare", "omniglot", "--from", str(omniglot_zips), "--data-root", str(root)),
                   f"{omniglot_zips / 'images_background.zip'} has MD5 {got}", "f" * 32)
    assert not root.exists()


def test_prepare_omniglot_from_folders_installs_what_is_missing(tmp_path: Path, fake_official) -> None:
    src = write_omniglot(tmp_path / "src")
    root = tmp_path / "data"
    (root / "omniglot" / "images_background" / "Alpha").mkdir(parents=True)  # e.g. an earlier download
    result = invoke("prepare", "omniglot", "--from", str(src.parent), "--data-root", str(root), "--no-progress")
    assert result.exit_code == 0, result.output
    installed = files_under(root / "omniglot")
    assert "SHA256SUMS" in installed and not any(r.startswith("images_background/") for r in installed)
    assert sorted(r for r in installed if r.startswith("images_evaluation/")) == sorted(
        omniglot_members("images_evaluation"))
    assert sorted(os.listdir(root)) == ["omniglot"]
    # the existing images_background was kept as it was: verify says how it differs from its SHA256SUMS
    result = invoke("verify", "omniglot", "--data-root", str(root), "--no-progress")
    assert result.exit_code == 1 and "80 missing: images_background/Alpha/character01/0001_01.png" in result.output


def test_prepare_omniglot_refuses_an_incomplete_folder(tmp_path: Path) -> None:
    src = write_omniglot(tmp_path / "src")
    (src / "images_evaluation" / "Gamma" / "character02" / "0002_05.png").unlink()
    root = tmp_path / "data"
    one_line_error(invoke("prepare", "omniglot", "--from", str(src), "--data-root", str(root)),
                   f"{src / 'images_evaluation'} is incomplete", "Gamma/character02 (19)")
    assert os.listdir(root) == []
    one_line_error(invoke("prepare", "omniglot", "--from", str(tmp_path), "--data-root", str(root)),
                   f"{tmp_path} holds neither images_background/ nor images_background.zip")


def test_prepare_miniimagenet(tmp_path: Path) -> None:
    src = write_miniimagenet(tmp_path / "src")
    (src / "images" / "stray.jpg").write_bytes(b"not listed")
    root = tmp_path / "data"
    # prepare_from checks the 84x84 size of every image it copies: make them real images
    for p in (src / "images").glob("n*.jpg"):
        Image.new("RGB", (84, 84)).save(p, format="JPEG")
    result = invoke("prepare", "miniimagenet", "--from", str(src), "--data-root", str(root), "--no-progress")
    assert result.exit_code == 0, result.output
    assert "miniimagenet: subset" in result.output and "2 images per class" in result.output
    assert len(os.listdir(root / "mini-imagenet" / "images")) == 200
    one_line_error(invoke("prepare", "miniimagenet", "--from", str(tmp_path / "nowhere"), "--data-root", str(root)),
                   str(tmp_path / "nowhere"))


def test_prepare_pneumoniamnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = b"an npz"
    src = tmp_path / "pneumoniamnist.npz"
    src.write_bytes(blob)
    root = tmp_path / "data"
    one_line_error(invoke("prepare", "pneumoniamnist", "--from", str(src), "--data-root", str(root)),
                   f"{src} has MD5 {hashlib.md5(blob).hexdigest()}", pm.PNEUMONIAMNIST_MD5)
    assert not root.exists() or os.listdir(root) == []
    monkeypatch.setattr(pm.PneumoniaMNIST, "md5", hashlib.md5(blob).hexdigest())
    result = invoke("prepare", "pneumoniamnist", "--from", str(tmp_path), "--data-root", str(root))
    assert result.exit_code == 0, result.output
    assert os.listdir(root) == ["pneumoniamnist.npz"] and (root / "pneumoniamnist.npz").read_bytes() == blob


def test_prepare_unsupported_or_unknown(tmp_path: Path) -> None:
    one_line_error(invoke("prepare", "synthetic", "--from", str(tmp_path), "--data-root", str(tmp_path)),
                   "does not support synthetic")
    one_line_error(invoke("prepare", "nope", "--from", str(tmp_path), "--data-root", str(tmp_path)),
                   "unknown dataset 'nope'")
    result = invoke("prepare", "xray", "--data-root", str(tmp_path))
    assert result.exit_code == 2 and "--from" in result.output  # click's usage error


def test_missing_messages_name_the_prepare_commands(tmp_path: Path) -> None:
    for cls, command in ((mi.MiniImageNet, "mtbench data prepare miniimagenet --from PATH"),
                         (xr.ChestXray, "mtbench data prepare xray --from PATH")):
        with pytest.raises(UserError) as err:
            cls(root=tmp_path, progress=False).prepare()
        assert command in str(err.value) and "planned" not in str(err.value)
