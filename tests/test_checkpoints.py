"""--save / --init: exact restore for the same method, backbone transfer between methods, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtbench.run.checkpoints import load_into, read_checkpoint, restore
from mtbench.data.episodes import EpisodeSpec
from mtbench.core.errors import UserError
from mtbench.methods import METHODS, make_hparams
from mtbench.results import validate
from mtbench.run.runner import RunSpec, run

SPEC = EpisodeSpec(5, 1, 5, 12, seed=1)


def spec(method: str, **kw) -> RunSpec:
    return RunSpec(method=method, dataset="synthetic", episodes=SPEC, device="cpu", out=None, progress=False, **kw)


@pytest.fixture(scope="module")
def maml_checkpoint(tmp_path_factory, one_thread):
    path = tmp_path_factory.mktemp("ckpt") / "maml.pt"
    doc, _ = run(spec("maml", budget="8", save=str(path)))
    return path, doc


def test_same_method_restores_exactly(maml_checkpoint) -> None:
    path, saved = maml_checkpoint
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # atomic: no temp files left
    restored, _ = run(spec("maml", budget="0", init=str(path)))
    assert restored["accuracy"]["per_episode"] == saved["accuracy"]["per_episode"]
    assert restored["init"]["method"] == "maml" and restored["init"]["iterations"] == 8
    assert restored["init"]["recalibrated_batchnorm"] is False
    assert saved["init"] is None and validate(restored) == []


def test_meta_then_transfer_names_both_stages_and_moves_the_backbone(maml_checkpoint, monkeypatch) -> None:
    path, _ = maml_checkpoint
    blob = torch.load(path, weights_only=True)
    seen = {}
    from mtbench.baselines.finetune import Finetune

    original = Finetune.adapt_batch  # what the evaluator calls (a chunk of episodes at a time)

    def spy(self, support_x, support_y, ways):
        seen["conv"] = self.backbone.features[0].weight.detach().clone()
        return original(self, support_x, support_y, ways)

    monkeypatch.setattr(Finetune, "adapt_batch", spy)
    doc, _ = run(spec("finetune", budget="0", init=str(path)))
    assert doc["method"]["name"] == "finetune" and doc["init"]["method"] == "maml"
    assert doc["init"]["dataset"] == "synthetic" and len(doc["init"]["sha256"]) == 64
    assert doc["init"]["recalibrated_batchnorm"] is True  # MAML keeps no running statistics
    assert torch.equal(seen["conv"], blob["state"]["backbone"]["features.0.weight"])
    assert validate(doc) == []


def test_bad_checkpoints_are_user_errors(maml_checkpoint, tmp_path) -> None:
    path, _ = maml_checkpoint
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    out = tmp_path / "out"
    for bad, match in [(tmp_path / "missing.pt", "cannot read"), (junk, "not a checkpoint")]:
        with pytest.raises(UserError, match=match):
            run(RunSpec(method="protonet", dataset="synthetic", episodes=SPEC, budget="0", init=str(bad),
                        out=str(out), progress=False))
    with pytest.raises(UserError, match="backbone=conv4"):
        run(RunSpec(method="protonet", dataset="synthetic", episodes=SPEC, budget="0", init=str(path),
                    hparams=(("backbone", "resnet12"),), out=str(out), progress=False))
    assert not out.exists()


def test_maml_checkpoint_adapts_to_other_ways_from_a_zero_head(maml_checkpoint) -> None:
    """A 5-way MAML restored whole meets 4-way episodes with a zero head: every class alike at step 0."""
    path, _ = maml_checkpoint
    doc, _ = run(RunSpec(method="maml", dataset="synthetic", episodes=EpisodeSpec(4, 1, 5, 12, seed=1), budget="0",
                         init=str(path), out=None, progress=False))
    assert doc["accuracy"]["by_step"][0]["mean"] == 0.25  # equal logits: the first class for every query
    assert doc["accuracy"]["mean"] > 0.25


def test_feature_extract_from_a_finetune_checkpoint_is_feature_extract(tmp_path: Path, one_thread) -> None:
    """The two methods pre-train alike, so the two-stage pipeline equals feature-extract's own fit."""
    spec = dict(dataset="synthetic", episodes=EpisodeSpec(5, 1, 5, 8, seed=2), budget="20", device="cpu",
                out=None, progress=False)
    ckpt = tmp_path / "ft.pt"
    run(RunSpec(method="finetune", save=str(ckpt), **spec))
    direct, _ = run(RunSpec(method="feature-extract", **spec))
    staged, _ = run(RunSpec(method="feature-extract", init=str(ckpt), **{**spec, "budget": "0"}))
    assert staged["init"]["method"] == "finetune"
    assert staged["accuracy"]["per_episode"] == direct["accuracy"]["per_episode"]


def test_restore_rebuilds_the_saved_method_as_it_was_fitted(tmp_path: Path, one_thread) -> None:
    """restore: the checkpoint's own method, its recorded hparams (not the dataset's presets) and every tensor."""
    ckpt = tmp_path / "maml.pt"
    run(spec("maml", budget="2", save=str(ckpt), hparams=(("inner_lr", "0.3"), ("eval_steps", "2"))))
    blob, _ = read_checkpoint(ckpt)
    method, missing = restore(blob, 5, torch.device("cpu"))
    assert method.name == "maml" and missing == []
    assert (method.hparams.inner_lr, method.hparams.eval_steps) == (0.3, 2)
    for attr, state in blob["state"].items():
        ours = method.modules()[attr].state_dict()
        assert all(torch.equal(ours[k], t) for k, t in state.items())


def test_a_reptile_fit_evaluates_transductively_in_full(tmp_path: Path, one_thread) -> None:
    """A variant (subclass) restores everything: the meta-learned head too, not only the backbone."""
    ckpt = tmp_path / "reptile.pt"
    run(spec("reptile", budget="3", save=str(ckpt)))
    blob, _ = read_checkpoint(ckpt)
    cls = METHODS.get("reptile-transductive")
    method = cls(make_hparams(cls, "synthetic", {}), (3, 16, 16), torch.Generator().manual_seed(9), torch.device("cpu"))
    load_into(method, blob, 5)
    assert torch.equal(method.model[1].weight, blob["state"]["model"]["1.weight"])  # the head came along
    doc, _ = run(spec("reptile-transductive", budget="0", init=str(ckpt)))
    assert doc["init"]["method"] == "reptile" and doc["method"]["transductive"] is True


def test_a_run_from_its_own_fit_names_the_hparams_it_changes_and_a_wrong_backbone_fails_before_the_data(
        tmp_path: Path, capsys) -> None:
    """A fit made with ``--hp adapt_norm=false`` and scored with ``--budget 0 --init`` adapts with the default unless
    the run says it again: the run names the hparam and the --hp that keeps it; what --hp sets, hparams outside the
    recipe (task_batching) and another method's checkpoint (only its backbone moves) are not named. A checkpoint of
    another backbone is refused by resolve, before any data is read."""
    import dataclasses

    from mtbench.run.checkpoints import FORMAT
    from mtbench.run.stages import resolve

    fitted = dataclasses.asdict(make_hparams(METHODS.get("maml"), "omniglot",
                                             {"adapt_norm": "false", "task_batching": "loop"}, "quick"))
    ckpt = tmp_path / "maml.pt"
    torch.save({"format": FORMAT, "method": "maml", "budget": "quick", "hparams": fitted}, ckpt)

    def note(method: str = "maml", *hp: tuple[str, str]) -> str:
        resolve(RunSpec(method=method, dataset="omniglot", budget="0", init=str(ckpt), out=None, hparams=hp))
        return capsys.readouterr().err.strip()

    assert note() == ("mtbench: note: the fit at --init was made with adapt_norm=False; this run adapts with "
                      "adapt_norm=True; to keep the fit's add --hp adapt_norm=False")
    assert note("maml", ("adapt_norm", "false")) == ""
    assert note("maml", ("adapt_norm", "true")) == ""  # asked for: the question is the user's
    assert "the fit at --init" not in note("finetune")
    # a variant's own defaults are what it is: source-only scores a DANN fit without being told domain_weight=1
    dann = tmp_path / "dann.pt"
    torch.save({"format": FORMAT, "method": "dann", "budget": "quick", "hparams": dataclasses.asdict(
        make_hparams(METHODS.get("dann"), "omniglot-shift", {}, "quick"))}, dann)
    resolve(RunSpec(method="source-only", dataset="omniglot-shift", budget="0", init=str(dann), out=None))
    assert "the fit at --init" not in capsys.readouterr().err
    with pytest.raises(UserError, match=r"backbone is 'conv4', this run's is 'conv4-strided'; add --hp backbone=conv4"):
        note("maml", ("backbone", "conv4-strided"))
