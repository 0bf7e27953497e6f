"""``mtbench data list / verify / download / prepare``: tiny generated copies, a local HTTP server, the real data."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import time
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from mtbench.cli import main
from mtbench.data import base
from mtbench.data import miniimagenet as mi
from mtbench.data import omniglot as om
from mtbench.data import pneumoniamnist as pm
from mtbench.data import xray as xr
from mtbench.core.errors import UserError

from support import requires_real_data, shared_root


def invoke(*args: str):
    return CliRunner().invoke(main, ["data", *args])


def one_line_error(result, *mentions: str) -> str:
    """The single ``mtbench: error:`` line on stderr of a user error (exit 2, no traceback).

    stdout may say what was attempted (e.g. "downloading ... from URL")."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtbench: error: "), result.output
    assert "Traceback" not in result.output
    for text in mentions:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def table_rows(output: str) -> dict[str, tuple[str, str]]:
    """``{dataset: (status, where)}`` from the table that ``list`` and ``verify`` print."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:3] == ["dataset", "status", "where"])
    rows = {}
    for line in lines[start + 1:]:
        if not line.strip():
            break
        name, status, where = line.split(None, 2)
        rows[name] = (status, where)
    return rows


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def write_sums(folder: Path) -> Path:
    """``SHA256SUMS`` of every file under ``folder`` (as the shared copies ship it)."""
    lines = [f"{hashlib.sha256((folder / rel).read_bytes()).hexdigest()}  {rel}" for rel in files_under(folder)
             if rel != "SHA256SUMS"]
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return folder / "SHA256SUMS"


# -- generated copies ---------------------------------------------------------------------------
ALPHABETS = {"images_background": ("Alpha", "Beta"), "images_evaluation": ("Gamma", "Delta")}
FAKE_OMNIGLOT_COUNTS = {"images_background": (2, 4), "images_evaluation": (2, 4)}  # alphabets, characters


def drawing(c: int, j: int) -> bytes:
    img = Image.new("1", (16, 16), 1)
    img.putpixel((j % 16, c % 16), 0)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def omniglot_members(folder: str) -> dict[str, bytes]:
    """``{relative path: png}`` of a fake Omniglot folder: 2 alphabets x 2 characters x 20 drawings."""
    return {f"{folder}/{a}/character{c:02d}/{k * 2 + c:04d}_{j:02d}.png": drawing(c, j)
            for k, a in enumerate(ALPHABETS[folder]) for c in (1, 2) for j in range(1, 21)}


def write_omniglot(root: Path) -> Path:
    folder = root / "omniglot"
    for f in om.ARCHIVES:
        for rel, blob in omniglot_members(f).items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(blob)
    write_sums(folder)
    return folder


def omniglot_zip(folder: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for rel, blob in omniglot_members(folder).items():
            zf.writestr(rel, blob)
    return buf.getvalue()


# split -> class folder -> file names, the Kermany naming
KERMANY = {
    "train": {"NORMAL": ["IM-0115-0001.jpeg", "IM-0117-0001.jpeg", "NORMAL2-IM-0007-0001.jpeg"],
              "PNEUMONIA": ["person1_bacteria_1.jpeg", "person2_virus_3.jpeg", "person3_bacteria_10.jpeg",
                            "person4_virus_7.jpeg"]},
    "test": {"NORMAL": ["IM-0001-0001.jpeg", "IM-0003-0001.jpeg"],
             "PNEUMONIA": ["person100_bacteria_475.jpeg", "person101_virus_187.jpeg"]},
}
FAKE_XRAY_COUNTS = {("train", "NORMAL"): 3, ("train", "PNEUMONIA"): 4, ("test", "NORMAL"): 2, ("test", "PNEUMONIA"): 2}
FAKE_SUBTYPES = {"train": (2, 2), "test": (1, 1)}


def kermany_members(files=KERMANY) -> dict[str, bytes]:
    return {f"{s}/{c}/{n}": f"x-ray {s}/{c}/{n}".encode() for s, classes in files.items()
            for c, names in classes.items() for n in names}


def write_kermany(root: Path, files=KERMANY, sums: bool = True) -> Path:
    folder = root / "chest_xray"
    for rel, blob in kermany_members(files).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(blob)
    if sums:
        write_sums(folder)
    (folder / "train" / "NORMAL" / ".DS_Store").write_bytes(b"\0")  # not an image: ignored everywhere
    return folder


def write_miniimagenet(root: Path, per_class: int = 2) -> Path:
    """The CSV layout with the real Ravi classes, ``per_class`` (undecoded) image files each."""
    folder = root / "mini-imagenet"
    (folder / "images").mkdir(parents=True)
    for split, classes in mi.RAVI_CLASSES.items():
        rows = ["filename,label"]
        for wnid in classes:
            for j in range(per_class):
                name = f"{wnid}{j:08d}.jpg"
                (folder / "images" / name).write_bytes(f"{wnid} {j}".encode())
                rows.append(f"{name},{wnid}")
        (folder / f"{split}.csv").write_text("\n".join(rows) + "\n")
    write_sums(folder)
    return folder


@pytest.fixture
def fake_official(monkeypatch: pytest.MonkeyPatch) -> None:
    """The official counts scaled down to the generated copies (so that those pass as complete)."""
    monkeypatch.setattr(om, "OFFICIAL_COUNTS", FAKE_OMNIGLOT_COUNTS)
    monkeypatch.setattr(xr, "OFFICIAL_COUNTS", FAKE_XRAY_COUNTS)
    monkeypatch.setattr(xr, "OFFICIAL_SUBTYPES", FAKE_SUBTYPES)


# -- list ---------------------------------------------------------------------------------------
def test_data_group_help_lists_the_four_commands() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("list", "verify", "download", "prepare"):
        assert command in result.output


def test_list_on_a_generated_root(tmp_path: Path) -> None:
    write_omniglot(tmp_path)
    write_kermany(tmp_path)
    result = invoke("list", "--data-root", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert f"data root: {tmp_path} (--data-root)" in result.output
    assert table_rows(result.output) == {
        "miniimagenet": ("missing", "mini-imagenet/"),
        "omniglot": ("found", "omniglot/"),
        "omniglot-lake": ("found", "omniglot/"),
        "omniglot-shift": ("missing", "omniglot/, mini-imagenet/"),
        "pneumoniamnist": ("missing", "pneumoniamnist.npz"),
        "synthetic": ("found", "(generated)"),
        "xray": ("found", "chest_xray/"),
        "xray3": ("found", "chest_xray/"),
    }
    hints = result.output.split("to get a missing dataset:", 1)[1]
    assert "mtbench data prepare miniimagenet --from PATH" in hints
    assert "mtbench data download pneumoniamnist" in hints and pm.PNEUMONIAMNIST_URL in hints
    # omniglot-shift names only what it lacks: miniImageNet, not the present Omniglot
    shift = next(line for line in hints.splitlines() if line.strip().startswith("omniglot-shift"))
    assert "prepare miniimagenet" in shift and "download omniglot" not in shift
    assert "xray" not in hints and "10.17632" not in hints  # present: no hint


def test_list_reads_mtbench_data_and_an_empty_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTBENCH_DATA", str(tmp_path / "nowhere"))
    result = invoke("list")
    assert result.exit_code == 0, result.output
    assert f"data root: {tmp_path / 'nowhere'} ($MTBENCH_DATA, does not exist yet)" in result.output
    rows = table_rows(result.output)
    assert {n for n, (s, _) in rows.items() if s == "found"} == {"synthetic"}
    assert "10.17632/rscbjbr9sj.2" in result.output and "mtbench data download omniglot" in result.output
    assert not (tmp_path / "nowhere").exists()  # listing writes nothing


@pytest.mark.realdata
def test_list_on_the_shared_data() -> None:
    requires_real_data("omniglot")
    result = invoke("list", "--data-root", str(shared_root()))
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    for name, where in (("omniglot", "omniglot/"), ("miniimagenet", "mini-imagenet/"), ("xray", "chest_xray/"),
                        ("xray3", "chest_xray/"), ("omniglot-shift", "omniglot/, mini-imagenet/")):
        assert rows[name] == ("found", where), (name, rows)


# -- verify -------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_verify_passes_on_the_shared_data() -> None:
    """Hashes every file the shared copies list (48,303 files, ~100 MB): 1.4-2 s here with a warm page cache."""
    requires_real_data("omniglot")
    requires_real_data("mini-imagenet")
    requires_real_data("chest_xray")
    start = time.perf_counter()
    result = invoke("verify", "--data-root", str(shared_root()), "--no-progress")
    print(f"mtbench data verify on the shared data: {time.perf_counter() - start:.1f}s")
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    assert rows["omniglot"][0] == rows["xray"][0] == rows["xray3"][0] == rows["omniglot-shift"][0] == "verified"
    assert rows["miniimagenet"][0] == "subset" and rows["synthetic"][0] == "generated"
    out = result.output
    assert "images_background/ 30 alphabets, 964 characters; images_evaluation/ 20 alphabets, 659 characters" in out
    assert "all 32460 files listed in SHA256SUMS match" in out and "all 10003 files" in out and "all 5840 files" in out
    assert "100 images per class" in out and "train 2530 bacterial / 1345 viral" in out
    assert "FAIL" not in out


def test_verify_a_complete_generated_copy(tmp_path: Path, fake_official) -> None:
    write_omniglot(tmp_path)
    write_kermany(tmp_path)
    result = invoke("verify", "omniglot", "xray", "xray3", "synthetic", "--data-root", str(tmp_path), "--no-progress")
    assert result.exit_code == 0, result.output
    assert table_rows(result.output) == {
        "omniglot": ("verified", "omniglot/"), "xray": ("verified", "chest_xray/"),
        "xray3": ("verified", "chest_xray/"), "synthetic": ("generated", "(generated)")}
    assert "all 160 files listed in SHA256SUMS match" in result.output
    assert "FAIL" not in result.output and "nothing failed: 3 verified, 1 generated" in result.output


def test_verify_names_an_altered_file(tmp_path: Path, fake_official) -> None:
    folder = write_omniglot(tmp_path)
    altered = "images_evaluation/Delta/character02/0004_07.png"
    (folder / altered).write_bytes((folder / altered).read_bytes() + b"\0")
    result = invoke("verify", "omniglot", "--data-root", str(tmp_path), "--no-progress")
    assert result.exit_code == 1, result.output
    assert table_rows(result.output)["omniglot"][0] == "failed"
    fail = [line for line in result.output.splitlines() if line.strip().startswith("FAIL")]
    assert len(fail) == 1 and "SHA256SUMS" in fail[0] and f"1 differ: {altered}" in fail[0]
    assert "verification FAILED for omniglot; the FAIL lines above say what and where" in result.output


def test_verify_names_a_missing_file_and_the_wrong_count(tmp_path: Path, fake_official) -> None:
    folder = write_kermany(tmp_path)
    gone = "test/PNEUMONIA/person101_virus_187.jpeg"
    (folder / gone).unlink()
    result = invoke("verify", "xray", "--data-root", str(tmp_path), "--no-progress")
    assert result.exit_code == 1
    out = result.output
    assert "test/PNEUMONIA holds 1 images where the standard release has" in out
    assert f"1 missing: {gone}" in out


def test_verify_an_extra_image_is_a_wrong_count(tmp_path: Path, fake_official) -> None:
    folder = write_kermany(tmp_path)
    (folder / "train" / "NORMAL" / "IM-9999-0001.jpeg").write_bytes(b"extra")  # not in SHA256SUMS
    result = invoke("verify", "xray3", "--data-root", str(tmp_path), "--no-progress")
    assert result.exit_code == 1
    fail = [line for line in result.output.splitlines() if line.strip().startswith("FAIL")]
    assert len(fail) == 1 and "structure" in fail[0] and "train/NORMAL holds 4" in fail[0]
    # xray3 also checks the subtypes in the file names
    (folder / "train" / "PNEUMONIA" / "person5_virus_1.jpeg").write_bytes(b"extra")
    (folder / "train" / "PNEUMONIA" / "scan_0001.jpeg").write_bytes(b"unnamed")
    result = invoke("verify", "xray3", "--data-root", str(tmp_path), "--no-progress")
    assert "1 pneumonia image(s) without _bacteria_ or _virus_ in the name: train/PNEUMONIA/scan_0001.jpeg" \
        in result.output


def test_verify_omniglot_counts_against_the_official_release(tmp_path: Path) -> None:
    """Without the scaled-down counts the generated copy is not the official release, and says how."""
    folder = write_omniglot(tmp_path)
    (folder / "images_background" / "Alpha" / "character01" / "0001_20.png").unlink()
    result = invoke("verify", "omniglot", "--data-root", str(tmp_path), "--no-progress")
    assert result.exit_code == 1
    out = result.output
    assert "images_background/ holds 2 alphabets and 4 characters where the official release has 30 and 964" in out
    assert "1 character(s) without 20 drawings: images_background/Alpha/character01 (19)" in out
    assert "1 missing: images_background/Alpha/character01/0001_20.png" in out


def test_verify_lists_the_first_few_and_counts_the_rest(tmp_path: Path, fake_official) -> None:
    folder = write_kermany(tmp_path)
    names = sorted(kermany_members())[:5]
    for rel in names:
        (folder / rel).write_bytes(b"changed")
    with (folder / "SHA256SUMS").open("a") as f:
        f.write("not a checksum line\n")
    check = base.check_sha256sums(folder, progress=False)
    assert check.ok is False
    assert f"5 differ: {names[0]}, {names[1]}, {names[2]} and 2 more" in check.detail
    assert "1 malformed line(s) in SHA256SUMS: line 12" in check.detail


def test_verify_without_sums_says_contents_were_not_checked(tmp_path: Path, fake_official) -> None:
    write_kermany(tmp_path, sums=False)
    result = invoke("verify", "xray", "--data-root", str(tmp_path), "--no-progress")
    assert result.exit_code == 0, result.output
    assert table_rows(result.output)["xray"][0] == "verified"  # the structure check passed
    assert f"--    SHA256SUMS         no SHA256SUMS in {tmp_path / 'chest_xray'}: file contents not checked" \
        in result.output


def test_verify_hashes_a_folder_once_for_xray_and_xray3(tmp_path: Path, fake_official,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    write_kermany(tmp_path)
    hashed = []
    real = base.sha256_file
    monkeypatch.setattr(base, "sha256_file", lambda path: hashed.append(path) or real(path))
    result = invoke("verify", "xray", "xray3", "--data-root", str(tmp_path), "--no-progress")
    assert result.exit_code == 0, result.output
    assert len(hashed) == len(kermany_members()) == len(set(hashed))


def test_hashing_shows_a_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for i in range(150):
        (tmp_path / f"f{i:03d}").write_bytes(bytes([i]))
    write_sums(tmp_path)
    assert base.check_sha256sums(tmp_path, progress=True).ok
    assert "hashing" in capsys.readouterr().err
    assert base.check_sha256sums(tmp_path, progress=False).ok
    assert capsys.readouterr().err == ""


def test_verify_miniimagenet_subset_is_no_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_miniimagenet(tmp_path)
    result = invoke("verify", "miniimagenet", "--data-root", str(tmp_path), "--no-progress")
    assert result.exit_code == 0, result.output
    assert table_rows(result.output)["miniimagenet"][0] == "subset"
    assert "2 images per class (200 images)" in result.output and "standard release (600 per class)" in result.output
    monkeypatch.setattr(mi, "IMAGES_PER_CLASS", 2)  # a "full" copy
    result = invoke("verify", "miniimagenet", "--data-root", str(tmp_path), "--no-progress")
    assert result.exit_code == 0 and table_rows(result.output)["miniimagenet"][0] == "verified"
    monkeypatch.undo()
    name = f"{mi.RAVI_CLASSES['val'][3]}00000001.jpg"
    (folder / "images" / name).unlink()
    result = invoke("verify", "miniimagenet", "--data-root", str(tmp_path), "--no-progress")
    assert result.exit_code == 1
    assert f"1 of the 32 images that val.csv lists are missing from {folder / 'images'}: {name}" in result.output
    assert f"1 missing: images/{name}" in result.output


def test_verify_pneumoniamnist_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = b"not the MedMNIST file"
    (tmp_path / "pneumoniamnist.npz").write_bytes(blob)
    result = invoke("verify", "pneumoniamnist", "--data-root", str(tmp_path), "--no-progress")
    assert result.exit_code == 1
    got = hashlib.md5(blob).hexdigest()
    assert f"has MD5 {got}, but the official file" in result.output and pm.PNEUMONIAMNIST_MD5 in result.output
    monkeypatch.setattr(pm.PneumoniaMNIST, "md5", got)
    result = invoke("verify", "pneumoniamnist", "--data-root", str(tmp_path), "--no-progress")
    assert result.exit_code == 0, result.output
    assert table_rows(result.output)["pneumoniamnist"] == ("verified", "pneumoniamnist.npz")


def test_verify_missing_and_unknown(tmp_path: Path) -> None:
    result = invoke("verify", "xray", "--data-root", str(tmp_path), "--no-progress")
    assert result.exit_code == 1  # asked for, not there: not a pass
    assert table_rows(result.output)["xray"][0] == "missing"
    assert "10.17632/rscbjbr9sj.2" in result.output and "verification FAILED for xray (missing)" in result.output
    # without names, missing datasets are reported but do not fail
    result = invoke("verify", "--data-root", str(tmp_path), "--no-progress")
    assert result.exit_code == 0, result.output
    assert "nothing failed: 1 generated, 7 missing" in result.output
    one_line_error(invoke("verify", "omniglot", "xrya", "--data-root", str(tmp_path)), "unknown dataset 'xrya'",
                   "did you mean 'xray'")


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


def zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return buf.getvalue()


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
