"""``mtbench data download``: generated archives from a local HTTP server."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from mtbench.data import omniglot as om
from mtbench.data import pneumoniamnist as pm

from data_copies import files_under, invoke, omniglot_members, omniglot_zip, one_line_error, table_rows


# -- download -----------------------------------------------------------------------------------
@pytest.fixture
def omniglot_server(server, monkeypatch: pytest.MonkeyPatch):
    base_url, served = server
    md5s = {}
    for folder in om.ARCHIVES:
        blob = omniglot_zip(folder)
        (served / f"{folder}.zip").write_bytes(blob)
        md5s[folder] = hashlib.md5(blob).hexdigest()
    monkeypatch.setattr(om, "BASE_URL", base_url)
    monkeypatch.setattr(om, "ARCHIVES", md5s)
    return base_url, served


def test_download_omniglot(omniglot_server, tmp_path: Path, fake_official) -> None:
    root = tmp_path / "data"
    result = invoke("download", "omniglot", "--data-root", str(root), "--no-progress")
    assert result.exit_code == 0, result.output
    assert f"installed as {root / 'omniglot'}" in result.output
    assert files_under(root) == sorted(f"omniglot/{rel}" for f in om.ARCHIVES for rel in omniglot_members(f))
    result = invoke("download", "omniglot", "--data-root", str(root), "--no-progress")
    assert result.exit_code == 0 and "already in" in result.output and "nothing to do" in result.output
    assert invoke("verify", "omniglot", "--data-root", str(root), "--no-progress").exit_code == 0


def test_download_omniglot_wrong_checksum_leaves_nothing(omniglot_server, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    base_url, _ = omniglot_server
    monkeypatch.setattr(om, "ARCHIVES", {**om.ARCHIVES, "images_evaluation": "0" * 32})
    root = tmp_path / "data"
    result = invoke("download", "omniglot", "--data-root", str(root), "--no-progress")
    one_line_error(result, f"{base_url}/images_evaluation.zip", "0" * 32)
    left = files_under(root)
    assert left and all(r.startswith("omniglot/images_background/") for r in left)  # the good one only
    assert not any(p.name.startswith(".") for p in (root / "omniglot").iterdir())  # no .part file, no temp folder


@pytest.fixture
def npz_server(server, monkeypatch: pytest.MonkeyPatch):
    base_url, served = server
    blob = b"pneumoniamnist " * 1000
    (served / "pneumoniamnist.npz").write_bytes(blob)
    monkeypatch.setattr(pm.PneumoniaMNIST, "url", f"{base_url}/pneumoniamnist.npz")
    monkeypatch.setattr(pm.PneumoniaMNIST, "md5", hashlib.md5(blob).hexdigest())
    return base_url, blob


def test_download_pneumoniamnist(npz_server, tmp_path: Path) -> None:
    _, blob = npz_server
    root = tmp_path / "data"
    result = invoke("download", "pneumoniamnist", "--data-root", str(root), "--no-progress")
    assert result.exit_code == 0, result.output
    assert os.listdir(root) == ["pneumoniamnist.npz"] and (root / "pneumoniamnist.npz").read_bytes() == blob
    result = invoke("verify", "pneumoniamnist", "--data-root", str(root), "--no-progress")
    assert result.exit_code == 0 and table_rows(result.output)["pneumoniamnist"][0] == "verified"


def test_download_pneumoniamnist_wrong_checksum_leaves_nothing(npz_server, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    base_url, blob = npz_server
    monkeypatch.setattr(pm.PneumoniaMNIST, "md5", "0" * 32)
    root = tmp_path / "data"
    result = invoke("download", "pneumoniamnist", "--data-root", str(root), "--no-progress")
    one_line_error(result, "0" * 32, hashlib.md5(blob).hexdigest(), f"{base_url}/pneumoniamnist.npz")
    assert os.listdir(root) == []


def test_download_pneumoniamnist_truncated_leaves_nothing(npz_server, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    base_url, blob = npz_server
    monkeypatch.setattr(pm.PneumoniaMNIST, "url", f"{base_url}/truncated/pneumoniamnist.npz")
    root = tmp_path / "data"
    result = invoke("download", "pneumoniamnist", "--data-root", str(root), "--no-progress")
    one_line_error(result, f"{base_url}/truncated/pneumoniamnist.npz", str(len(blob) + 1000))
    assert os.listdir(root) == []


def test_download_of_present_data_does_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pneumoniamnist.npz").write_bytes(b"anything")
    monkeypatch.setattr(pm.PneumoniaMNIST, "url", "http://127.0.0.1:1/nothing-listens-here.npz")
    result = invoke("download", "pneumoniamnist", "--data-root", str(tmp_path), "--no-progress")
    assert result.exit_code == 0, result.output
    assert f"pneumoniamnist is already in {tmp_path / 'pneumoniamnist.npz'}: nothing to do" in result.output
    assert (tmp_path / "pneumoniamnist.npz").read_bytes() == b"anything"


@pytest.mark.parametrize(("name", "mentions"), [
    ("xray", ["10.17632/rscbjbr9sj.2", "mtbench data prepare xray --from PATH"]),
    ("xray3", ["10.17632/rscbjbr9sj.2", "mtbench data prepare xray3 --from PATH"]),
    ("miniimagenet", ["no official download", "mtbench data prepare miniimagenet --from PATH"]),
    ("omniglot-shift", ["mtbench data download omniglot", "mtbench data prepare miniimagenet --from PATH"]),
])
def test_download_without_an_official_url(tmp_path: Path, name: str, mentions: list[str]) -> None:
    root = tmp_path / "data"
    one_line_error(invoke("download", name, "--data-root", str(root)), *mentions)
    assert not root.exists()


def test_download_unknown_dataset(tmp_path: Path) -> None:
    one_line_error(invoke("download", "omniglott", "--data-root", str(tmp_path)), "did you mean 'omniglot'")
