"""A run fails before the work, in one line, or not at all: incomplete data, paths it cannot write, memory it
cannot have, non-finite hparams and scores; decoded caches are rebuilt when stale or damaged."""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import pkgutil
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from mtbench.cli import main
from mtbench.core.errors import UserError
from mtbench.data import omniglot as om
from mtbench.data.episodes import EpisodeSpec
from mtbench.data.protocols import TransferSpec
from mtbench.results import write_result
from mtbench.run.preflight import check_finite, check_memory
from mtbench.run.spec import RunSpec
from mtbench.run.stages import resolve

from support import result_doc

FAST = ("--budget", "2", "--episodes", "3", "--queries", "2")
TINY = ("--dataset", "synthetic", *FAST)


def invoke(tmp_path: Path, *extra: str, env: dict[str, str] | None = None):
    """``mtbench run`` in process, with a result folder that does not exist yet and the cache in ``tmp_path``."""
    args = ["run", "--out", str(tmp_path / "X"), "--no-progress", "--no-malloc-tuning", "--no-download", *extra]
    return CliRunner().invoke(main, args, env={"MTBENCH_CACHE": str(tmp_path / "cache"), **(env or {})})


def one_line_error(result, tmp_path: Path, *mentions: str) -> str:
    """The run failed with one ``mtbench: error:`` line naming ``mentions``, exit 2, and wrote nothing."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtbench: error:"), result.output
    for text in mentions:
        assert text in lines[0], (text, lines[0])
    assert not (tmp_path / "X").exists()
    return lines[0]


def fake_omniglot(root: Path, background=("Alpha", "Beta"), evaluation=("Kannada",), chars: int = 2) -> Path:
    """A tiny Omniglot layout under ``root/omniglot``: ``chars`` characters per alphabet, 20 one-dot drawings each
    (``Kannada`` is a test alphabet of the Vinyals split)."""
    for folder, alphabets in (("images_background", background), ("images_evaluation", evaluation)):
        (root / "omniglot" / folder).mkdir(parents=True)
        for a, alphabet in enumerate(alphabets):
            for c in range(1, chars + 1):
                char = root / "omniglot" / folder / alphabet / f"character{c:02d}"
                char.mkdir(parents=True)
                for j in range(1, 21):
                    img = Image.new("L", (105, 105), 255)
                    img.putpixel((j * 5, c * 10 + a), 0)
                    img.save(char / f"{c:04d}_{j:02d}.png")
    return root / "omniglot"


# -- incomplete data ---------------------------------------------------------------------------------
def test_an_incomplete_omniglot_is_refused_before_the_fit(tmp_path: Path) -> None:
    fake_omniglot(tmp_path / "data")
    result = invoke(tmp_path, "--method", "protonet", "--dataset", "omniglot", *FAST, "--data-root", str(tmp_path / "data"))
    line = one_line_error(result, tmp_path, "omniglot", "incomplete", "images_background/ holds 2 alphabets and 4 "
                          "characters where the official release has 30 and 964", "mtbench data verify omniglot")
    assert "mtbench data download omniglot" in line
    assert not (tmp_path / "cache").exists()  # refused before a single image was decoded


def test_a_copy_without_test_alphabets_is_one_line(tmp_path: Path) -> None:
    fake_omniglot(tmp_path / "data", evaluation=("Angelic",))  # a training alphabet: no test class at all
    data = om.Omniglot(root=tmp_path / "data", cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(UserError, match=r"has no test classes .*incomplete.*mtbench data verify omniglot"):
        data.load("test")
    result = invoke(tmp_path, "--method", "protonet", "--dataset", "omniglot", *FAST, "--data-root", str(tmp_path / "data"))
    one_line_error(result, tmp_path, "incomplete")


def test_an_unreadable_data_folder_is_one_line(tmp_path: Path) -> None:
    # the data and the cache outside pytest's private tmp_path, so that only the chmod keeps a reader out
    base = Path(tempfile.mkdtemp(prefix="mtbench-perm-"))
    try:
        os.chmod(base, 0o755)
        folder = fake_omniglot(base / "data") / "images_background"
        os.chmod(folder, 0)
        with as_unprivileged(base):
            result = invoke(base, "--method", "protonet", "--dataset", "omniglot", *FAST, "--data-root", str(base / "data"))
            verified = CliRunner().invoke(main, ["data", "verify", "omniglot", "--no-progress", "--data-root",
                                                 str(base / "data")], env={"MTBENCH_CACHE": str(base / "cache")})
        one_line_error(result, base, f"cannot access {folder}", "chmod -R u+rX")
        one_line_error(verified, base, f"cannot access {folder}", "chmod -R u+rX")
    finally:
        os.chmod(base / "data" / "omniglot" / "images_background", 0o755)
        shutil.rmtree(base)


@contextlib.contextmanager
def as_unprivileged(writable: Path):
    """Root ignores file modes: run the block as ``nobody`` (effective ids only, restored after)."""
    if os.geteuid() != 0:
        yield
        return
    # the checkout may not be readable by nobody (a clone under a 0700 folder): import every module and
    # discover the registries' built-ins first, so that the commands' lazy imports find them loaded
    import mtbench
    import mtbench.baselines
    from mtbench.data import DATASETS
    from mtbench.methods import METHODS
    from mtbench.methods.backbones import BACKBONES

    for package in (mtbench, mtbench.baselines):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)
    for registry in (DATASETS, METHODS, BACKBONES):
        registry.names()
    for path in (writable, *(p for p in writable.rglob("*") if p.is_dir() and os.stat(p).st_mode & 0o777)):
        os.chown(path, 65534, 65534)
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_mtbench_data_pointing_at_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "datasets.txt").write_text("")
    result = invoke(tmp_path, "--method", "protonet", "--dataset", "omniglot",
                    env={"MTBENCH_DATA": str(tmp_path / "datasets.txt")})
    one_line_error(result, tmp_path, f"MTBENCH_DATA={tmp_path / 'datasets.txt'}", "is a file, not a folder")


# -- decoded caches ----------------------------------------------------------------------------------
def test_a_damaged_image_is_named(tmp_path: Path) -> None:
    folder = fake_omniglot(tmp_path / "data")
    png = folder / "images_evaluation" / "Kannada" / "character02" / "0002_07.png"
    png.write_bytes(png.read_bytes()[:40])
    data = om.Omniglot(root=tmp_path / "data", cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(UserError, match=rf"^{png} is not a readable image \(.*\): .*mtbench data verify omniglot"):
        data.load("test")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_an_image_rewritten_at_the_same_size_is_decoded_again(tmp_path: Path) -> None:
    folder = fake_omniglot(tmp_path / "data")
    data = om.Omniglot(root=tmp_path / "data", cache_dir=tmp_path / "cache", progress=False)
    before = data.load("test")
    chars = folder / "images_evaluation" / "Kannada"
    target = chars / "character01" / "0001_01.png"
    same_size = [p for p in sorted((chars / "character02").glob("*.png")) if p.stat().st_size == target.stat().st_size]
    assert same_size, "the fake drawings should include two of the same file size"
    st = target.stat()
    target.write_bytes(same_size[0].read_bytes())  # other content, same size: what a corrupted copy looks like
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a rewrite's new mtime, whatever the clock's grain
    after = om.Omniglot(root=tmp_path / "data", cache_dir=tmp_path / "cache", progress=False).load("test")
    changed = (after.images != before.images).flatten(1).any(1)
    # exactly the rewritten drawing, in each of its four rotations
    assert [after.class_names[int(i)] for i in after.labels[changed]] == [f"Kannada/character01/rot{r:03d}"
                                                                          for r in (0, 90, 180, 270)]


def test_a_truncated_cache_is_rebuilt_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_omniglot(tmp_path / "data")
    first = om.Omniglot(root=tmp_path / "data", cache_dir=tmp_path / "cache", progress=False).load("test")
    (cache,) = (tmp_path / "cache").glob("omniglot-*.pt")
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    capsys.readouterr()
    again = om.Omniglot(root=tmp_path / "data", cache_dir=tmp_path / "cache", progress=False).load("test")
    assert torch.equal(again.images, first.images)
    note = capsys.readouterr().err.strip().splitlines()
    assert len(note) == 1 and note[0].startswith(f"mtbench: note: the decoded cache {cache} cannot be read"), note
    assert torch.load(cache, weights_only=True)["images"].shape[0] == 6  # rebuilt whole: 2 + 2 + 2 characters


# -- paths, memory, numbers ----------------------------------------------------------------------------
def test_paths_that_cannot_be_written_are_refused_by_resolve(tmp_path: Path) -> None:
    """resolve is the first stage: nothing is loaded or fitted when a path the run will write is bad."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    base = RunSpec(method="protonet", dataset="synthetic", out=str(tmp_path / "out"), progress=False, device="cpu")
    for field, value, mention in (("save", blocker / "fit.pt", "--save"), ("out", blocker / "results", "--out"),
                                  ("out", blocker, "--out"), ("save", tmp_path, "--save")):
        with pytest.raises(UserError, match=mention) as info:
            resolve(RunSpec(**{**base.__dict__, field: str(value)}))
        assert str(value) in str(info.value)
    resolve(RunSpec(**{**base.__dict__, "save": str(tmp_path / "new" / "fit.pt")}))  # a folder to be made is fine
    assert not (tmp_path / "new").exists() and not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]  # the probes left nothing behind


def test_a_bad_save_path_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    result = invoke(tmp_path, "--method", "protonet", *TINY, "--save", str(tmp_path / "a-file" / "fit.pt"))
    one_line_error(result, tmp_path, f"--save {tmp_path / 'a-file' / 'fit.pt'} cannot be written")


def test_too_many_episodes_are_refused_by_a_memory_estimate(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--episodes"):  # by resolve, before the episodes are drawn
        resolve(RunSpec(method="protonet", dataset="synthetic", episodes=EpisodeSpec(episodes=10**12), out=None))
    result = invoke(tmp_path, "--method", "protonet", *TINY, "--episodes", str(10**12))
    line = one_line_error(result, tmp_path, f"--episodes {10**12} would need about", "TiB")
    most = int(line.split("use --episodes ")[1].split()[0])
    check_memory(EpisodeSpec(5, 1, 2, most))  # the count it suggests passes the same check
    with pytest.raises(UserError, match="--trials 1000000 would need about"):
        check_memory(TransferSpec(trials=10**6), available=2**30)
    check_memory(EpisodeSpec(5, 1, 15, 600), available=2**30)  # the usual 600 need ~2 MiB


@pytest.mark.parametrize(("method", "hp"), [("protonet", "lr=inf"), ("maml", "inner_lr=inf"),
                                            ("protonet", "train_shots=-1"), ("reptile", "meta_step=1e999")])
def test_bad_hparams_are_one_line(tmp_path: Path, method: str, hp: str) -> None:
    one_line_error(invoke(tmp_path, "--method", method, *TINY, "--hp", hp), tmp_path, f"--hp {hp}")


def test_a_non_finite_accuracy_is_an_error_not_a_result() -> None:
    acc = {"mean": 0.5, "ci95": 0.1, "per_episode": [0.5, 0.5], "by_step": [{"step": 0, "mean": 0.5, "ci95": 0.1}]}
    assert check_finite({"accuracy": acc}, "m")["accuracy"] is acc
    for broken in ({**acc, "mean": math.nan}, {**acc, "per_episode": [0.5, math.inf]},
                   {**acc, "by_step": [{"step": 0, "mean": 0.5, "ci95": math.nan}]}):
        with pytest.raises(UserError, match="m scored a non-finite accuracy"):
            check_finite({"accuracy": broken}, "m")


def test_an_empty_init_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    result = invoke(tmp_path, "--method", "protonet", *TINY, "--init", str(tmp_path / "empty.pt"))
    one_line_error(result, tmp_path, f"--init {tmp_path / 'empty.pt'}", "empty or truncated")


def test_results_are_strict_json(tmp_path: Path) -> None:
    """No Infinity or NaN in a result file (not JSON): writing one fails and leaves nothing."""
    doc = result_doc("protonet", [0.5, 0.7])
    doc["fit"]["tasks_per_s"] = math.inf
    with pytest.raises(ValueError, match="JSON"):
        write_result(doc, tmp_path / "results")
    assert list((tmp_path / "results").iterdir()) == []
    doc["fit"]["tasks_per_s"] = 1.0
    assert json.loads(write_result(doc, tmp_path / "results").read_text())["fit"]["tasks_per_s"] == 1.0
