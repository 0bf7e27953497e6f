"""Runs on image folders: a cross-size transfer (16x16 RGB source to a 28 px grey folder), ``mtbench
predict`` writing its CSV, and on the real X-rays, a folder copy giving what the built-in ``xray`` gives."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner

from mtbench.cli import main
from mtbench.data.protocols import TransferSpec
from mtbench.run.spec import RunSpec
from mtbench.run.stages import fit, load, resolve, score
from support import requires_real_data, shared_root
from test_folder_data import make_folder, write_image


@pytest.fixture(autouse=True)
def private_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("MTBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MTBENCH_CONFIG", str(tmp_path / "config"))


def test_cross_size_transfer_and_predict(tmp_path, one_thread):
    """A 28 px grey folder target, fitted on the 16x16 RGB synthetic source: the target is brought to the
    source's input (recorded); the saved method then predicts a query folder as one CSV row per image."""
    root = make_folder(tmp_path / "imgs", classes=3, per_class=8)
    runner = CliRunner()
    assert runner.invoke(main, ["data", "add", "grey28", str(root), "--image-size", "28", "--channels", "1"]).exit_code == 0
    out = tmp_path / "results"
    done = runner.invoke(main, ["run", "--method", "protonet", "--dataset", "grey28", "--source", "synthetic",
                                "--protocol", "transfer", "--train-images", "12", "--test-images", "3", "--trials", "2",
                                "--budget", "2", "--out", str(out), "--no-progress", "--save", str(tmp_path / "fit.pt")])
    assert done.exit_code == 0, done.output
    doc = json.loads(next(out.glob("*.json")).read_text())
    notes = " | ".join(doc["dataset"]["notes"])
    assert "28x28 grey → 16x16 RGB" in notes and "grey → 3 channels by repetition" in notes and "resized" in notes
    assert doc["source"]["name"] == "synthetic" and doc["protocol"]["kind"] == "transfer"
    blob = torch.load(tmp_path / "fit.pt", weights_only=True)
    assert blob["in_shape"] == [3, 16, 16] and blob["decoded_shape"] == [1, 28, 28] and blob["mean"] == [0.5] * 3

    query = tmp_path / "query"
    write_image(query / "a.png", "RGB", (30, 30), seed=5)
    write_image(query / "sub" / "b.jpg", "L", (20, 20), seed=6)
    write_image(query / "c.tif", "I;16", (25, 25), seed=7)
    (query / "notes.txt").write_text("ignored")
    csv_path = tmp_path / "predictions.csv"
    done = runner.invoke(main, ["predict", "--init", str(tmp_path / "fit.pt"), "--support", str(root),
                                "--query", str(query), "--out", str(csv_path), "--no-progress"])
    assert done.exit_code == 0, done.output
    assert "ignored 1 non-image file(s)" in done.output and "wrote 3 predictions" in done.output
    rows = list(csv.reader(csv_path.open()))
    assert rows[0] == ["file", "predicted", "p_c0", "p_c1", "p_c2"]
    assert [r[0] for r in rows[1:]] == ["a.png", "c.tif", "sub/b.jpg"]
    for r in rows[1:]:
        probs = [float(p) for p in r[2:]]
        assert abs(sum(probs) - 1) < 1e-4 and r[1] == rows[0][2 + probs.index(max(probs))][2:]

    one_class = tmp_path / "one"
    make_folder(one_class, classes=1)
    done = runner.invoke(main, ["predict", "--init", str(tmp_path / "fit.pt"), "--support", str(one_class),
                                "--query", str(query), "--out", str(tmp_path / "p2.csv"), "--no-progress"])
    assert done.exit_code == 2 and "has one class" in done.output and not (tmp_path / "p2.csv").exists()


@pytest.mark.realdata
def test_a_folder_copy_of_the_xrays_gives_what_xray_gives(tmp_path, monkeypatch, one_thread):
    """The Kermany X-rays copied as a user would (here: symlinked class folders), declared 84 px grey and
    brought to miniImageNet's input (grey → 3 channels, ImageNet normalisation): the same images as the
    built-in ``xray`` and, on the same trials, the same per-trial accuracies: the folder route adds nothing."""
    real = requires_real_data("chest_xray")
    requires_real_data("mini-imagenet")
    monkeypatch.delenv("MTBENCH_CACHE")  # the decoded X-rays and miniImageNet are shared with the other real-data tests
    copy_root = tmp_path / "my_xrays"
    for split in ("train", "test"):
        (copy_root / split).mkdir(parents=True)
        for cls in ("NORMAL", "PNEUMONIA"):
            (copy_root / split / cls).symlink_to(real / split / cls)
    assert CliRunner().invoke(main, ["data", "add", "my-xrays", str(copy_root), "--image-size", "84",
                                     "--channels", "1"]).exit_code == 0
    base = RunSpec(method="protonet", dataset="xray", episodes=TransferSpec(trials=3), budget="0", device="cpu",
                   data_root=str(shared_root()), out=None, download=False, progress=False)
    rx, rf = resolve(base), resolve(dataclasses.replace(base, dataset="my-xrays", source="miniimagenet"))
    lx, lf = load(rx), load(rf)
    for a, b in ((lx.test, lf.test), (lx.episodes.support, lf.episodes.support)):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
        assert (a.mean, a.std) == (b.mean, b.std)
    assert any("grey → 3 channels by repetition" in n for n in lf.data.notes)
    same_trials = copy.copy(lx.episodes)  # the class names differ (NORMAL / normal), so the draws' seeds do too
    same_trials.split, same_trials.support = lf.test, lf.episodes.support
    lf = dataclasses.replace(lf, episodes=same_trials)
    by_xray = score(rx, lx, fit(rx, lx))["accuracy"]["per_episode"]
    by_folder = score(rf, lf, fit(rf, lf))["accuracy"]["per_episode"]
    assert by_folder == by_xray and len(by_xray) == 3
