"""Tiny generated copies of the datasets (Omniglot, Kermany chest X-rays, miniImageNet) and the CLI helpers on them."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

from click.testing import CliRunner
from PIL import Image

from mtbench.cli import main
from mtbench.data import miniimagenet as mi
from mtbench.data import omniglot as om


# archive -> alphabet -> characters: alphabets of unequal sizes, so that 4-way episodes fit only some
FAKE_ALPHABETS = {"images_background": {"Alpha": 4, "Beta": 3, "Gamma": 5},
                  "images_evaluation": {"Delta": 4, "Epsilon": 6, "Zeta": 2}}


def write_alphabets(root: Path) -> None:
    """``root/omniglot/<archive>/<alphabet>/characterNN/*.png`` of :data:`FAKE_ALPHABETS`: 20 tiny drawings per
    character, each different (omniglot-lake's and omniglot-nichol's splits on a few characters)."""
    for archive, alphabets in FAKE_ALPHABETS.items():
        for k, (alphabet, chars) in enumerate(alphabets.items()):
            for c in range(1, chars + 1):
                folder = root / "omniglot" / archive / alphabet / f"character{c:02d}"
                folder.mkdir(parents=True)
                for j in range(20):
                    img = Image.new("L", (8, 8), 255)
                    img.putpixel((j % 8, (k + c) % 8), 0)
                    img.save(folder / f"{k:02d}{c:02d}_{j:02d}.png")


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


def zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return buf.getvalue()
