"""``mtbench data list / verify``: tiny generated copies and the real data."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from mtbench.data import base
from mtbench.data import miniimagenet as mi
from mtbench.data import pneumoniamnist as pm

from data_copies import (invoke, kermany_members, one_line_error, table_rows, write_kermany, write_miniimagenet,
                         write_omniglot, write_sums)
from support import requires_real_data, shared_root


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
        "omniglot-nichol": ("found", "omniglot/"),
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
    assert "nothing failed: 1 generated, 8 missing" in result.output
    one_line_error(invoke("verify", "omniglot", "xrya", "--data-root", str(tmp_path)), "unknown dataset 'xrya'",
                   "did you mean 'xray'")
