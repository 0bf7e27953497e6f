"""The transfer protocol on generated data: protocol resolution, support/query drawn from two splits,
fitting on a source dataset, MAML's and Reptile's zero head for a target's ways, and ``mtbench compare``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from click.testing import CliRunner

from mtbench.cli import main
from support import init_doc, put_result, result_doc
from mtbench.board.compare import collect, render, tables
from mtbench.data import DATASETS, Dataset, Split
from mtbench.data.episodes import EpisodeSet, EpisodeSpec
from mtbench.core.errors import UserError
from mtbench.methods import METHODS, FitContext, Method, make_hparams
from mtbench.data.protocols import TransferSpec, resolve
from mtbench.results import validate
from mtbench.run.runner import RunSpec, run


# -- protocol resolution ------------------------------------------------------------------------
def test_transfer_spec_is_one_class_balanced_episode_per_trial() -> None:
    spec = TransferSpec(train_images=200, test_images=50, trials=20, seed=3).episodes(2)
    assert spec == EpisodeSpec(ways=2, shots=100, queries=25, episodes=20, seed=3)
    three = TransferSpec().episodes(3)
    assert (three.shots, three.queries) == (66, 16)


def test_transfer_spec_rejects_fewer_images_than_classes() -> None:
    with pytest.raises(UserError, match="--test-images 2 is fewer than the 3 classes"):
        TransferSpec(test_images=2).episodes(3)
    with pytest.raises(UserError, match="--trials must be a whole number"):
        TransferSpec(trials=0)


def test_resolve_follows_the_dataset_default_unless_options_say_otherwise() -> None:
    assert isinstance(resolve("transfer", None), TransferSpec)
    assert resolve("episodes", None) == EpisodeSpec()
    assert resolve("transfer", None, ways=2, shots=5) == EpisodeSpec(ways=2, shots=5)  # episode options: episodes
    assert resolve("episodes", None, trials=30) == TransferSpec(trials=30)
    assert resolve("transfer", "episodes", seed=4) == EpisodeSpec(seed=4)


@pytest.mark.parametrize("kwargs, mentions", [
    (dict(protocol="transfer", shots=5), "--shots belongs to few-shot episodes"),
    (dict(protocol="episodes", trials=5), "--trials belongs to --protocol transfer"),
    (dict(protocol="bogus"), "--protocol must be one of episodes, transfer"),
    (dict(protocol="transfer", ways=2, shots=5), "--ways, --shots belong to few-shot episodes"),
])
def test_resolve_rejects_options_of_the_other_protocol(kwargs, mentions) -> None:
    protocol = kwargs.pop("protocol")
    with pytest.raises(UserError, match=mentions):
        resolve("transfer", protocol, **kwargs)


# -- support and queries from two splits --------------------------------------------------------
def split(name: str, counts: list[int], dataset: str = "t", classes: tuple[str, ...] = ("a", "b", "c")) -> Split:
    labels = torch.arange(len(counts)).repeat_interleave(torch.tensor(counts))
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()
    return Split(dataset, name, images, labels, classes, (0.0,), (1.0 / 255,))


def test_support_comes_from_the_support_split_and_queries_from_the_other() -> None:
    train, test = split("train", [30, 40, 50]), split("test", [7, 8, 9])
    spec = EpisodeSpec(ways=3, shots=20, queries=5, episodes=6, seed=1)
    episodes = EpisodeSet(test, spec, support=train)
    for ep in episodes:
        # images hold their index in their split; labels are the episode's class order
        support_idx = ep.support_x.flatten(1)[:, 0].round().long()
        query_idx = ep.query_x.flatten(1)[:, 0].round().long()
        s_cls = train.labels[support_idx].view(3, 20)
        q_cls = test.labels[query_idx].view(3, 5)
        assert bool((s_cls == s_cls[:, :1]).all()) and bool((q_cls == q_cls[:, :1]).all())
        assert torch.equal(s_cls[:, 0], q_cls[:, 0])  # the same class in row c of both
        assert len(set(support_idx.tolist())) == 60 and len(set(query_idx.tolist())) == 15
    again = EpisodeSet(test, spec, support=train)
    assert again.sha == episodes.sha and torch.equal(again.indices, episodes.indices)
    assert EpisodeSet(test, EpisodeSpec(ways=3, shots=2, queries=5, episodes=6, seed=1)).sha != \
        EpisodeSet(test, EpisodeSpec(ways=3, shots=2, queries=5, episodes=6, seed=1), support=train).sha


def test_support_split_that_cannot_supply_the_shots_is_a_user_error() -> None:
    train, test = split("train", [30, 40, 10]), split("test", [7, 8, 9])
    with pytest.raises(UserError, match="--shots 20 is more than the 10 images"):
        EpisodeSet(test, EpisodeSpec(ways=3, shots=20, queries=5, episodes=2), support=train)
    with pytest.raises(UserError, match="--queries 8 is more than the 7 images"):
        EpisodeSet(test, EpisodeSpec(ways=3, shots=5, queries=8, episodes=2), support=train)


# -- the runner: fit on a source, adapt and score on a target ---------------------------------
class Target(Dataset):
    """Test-only target domain: 2 classes of 16x16 RGB, 40 train and 12 test images per class; the
    class is the image's brightness, so a fitted backbone is not even needed."""

    name = "test-transfer-target"
    splits = ("train", "test")
    fit_split = "train"
    eval_split = "test"
    support_split = "train"
    default_source = "synthetic"
    default_protocol = "transfer"

    def load_split(self, split: str) -> Split:
        per = {"train": 40, "test": 12}[split]
        g = torch.Generator().manual_seed(len(split))
        noise = torch.randint(0, 40, (2 * per, 3, 16, 16), generator=g, dtype=torch.uint8)
        images = noise + torch.tensor([60, 160], dtype=torch.uint8).repeat_interleave(per).view(-1, 1, 1, 1)
        return Split(self.name, split, images, torch.arange(2).repeat_interleave(per), ("dark", "bright"),
                     (0.5,) * 3, (0.25,) * 3)


class Tiny(Target):
    name = "test-transfer-tiny"
    default_source = None

    def load_split(self, split: str) -> Split:
        s = super().load_split(split)
        return Split(self.name, split, s.images[:, :1, :8, :8].contiguous(), s.labels, s.class_names, (0.5,), (0.25,))


@dataclass(frozen=True)
class SpyHparams:
    pass


class Spy(Method):
    """Test-only: records the fit context and the episodes it adapts to; predicts the class of the
    nearest support brightness."""

    name = "test-transfer-spy"
    Hparams = SpyHparams
    presets = {"synthetic": {}, "test-transfer-target": {}}
    budgets = {"default": {"quick": 1, "paper": 1}, "synthetic": {"quick": 3, "paper": 3}}
    contexts: ClassVar[list[FitContext]] = []
    supports: ClassVar[list[int]] = []

    def fit(self, ctx: FitContext) -> None:
        Spy.contexts.append(ctx)

    def adapt(self, support_x, support_y, ways):
        Spy.supports.append(len(support_y))
        level = torch.stack([support_x[support_y == c].mean() for c in range(ways)])  # brightness per class
        yield lambda q: -(q.mean((1, 2, 3)).unsqueeze(1) - level).abs()


@pytest.fixture
def registered():
    for d in (Target, Tiny):
        DATASETS.register(d)
    METHODS.register(Spy)
    Spy.contexts.clear()
    Spy.supports.clear()
    try:
        yield
    finally:
        for d in (Target, Tiny):
            DATASETS.unregister(d.name)
        METHODS.unregister(Spy.name)


def test_transfer_run_fits_on_the_source_and_scores_trials_on_the_target(registered, tmp_path: Path) -> None:
    spec = RunSpec(method=Spy.name, dataset=Target.name, episodes=TransferSpec(train_images=20, test_images=10,
                   trials=7), budget="quick", device="cpu", out=str(tmp_path), progress=False)
    doc, path = run(spec)
    assert validate(doc) == []
    ctx = Spy.contexts[0]
    assert ctx.source.dataset == "synthetic" and ctx.source.name == "train"
    assert ctx.iterations == 3  # the source's budget
    assert (ctx.spec.ways, ctx.spec.shots) == (5, 5)  # source tasks, not the target's 2-way 10-shot trials
    assert Spy.supports == [20] * 7
    p = doc["protocol"]
    assert p["kind"] == "transfer" and (p["train_images"], p["test_images"], p["trials"]) == (20, 10, 7)
    assert (p["ways"], p["shots"], p["queries"], p["episodes"]) == (2, 10, 5, 7)
    assert p["support_from"] == "train" and p["queries_from"] == "test"
    assert p["fit_episodes"]["ways"] == 5
    assert doc["source"]["name"] == "synthetic" and doc["dataset"]["name"] == Target.name
    assert len(doc["accuracy"]["per_episode"]) == 7 and doc["accuracy"]["mean"] == 1.0
    assert path.name.startswith(f"{Target.name}_transfer20-10_{Spy.name}_seed0_")


def test_source_option_overrides_the_default_and_none_fits_in_domain(registered) -> None:
    doc, _ = run(RunSpec(method=Spy.name, dataset=Target.name, episodes=TransferSpec(20, 10, 2), budget="quick",
                         device="cpu", out=None, progress=False, source=Target.name))
    assert doc["source"] is None
    assert Spy.contexts[0].source.dataset == Target.name and Spy.contexts[0].iterations == 1
    assert Spy.contexts[0].spec.ways == 2  # in-domain transfer: source tasks as wide as the target allows


def test_a_target_of_other_image_shape_is_brought_to_the_source_input(registered) -> None:
    """Before image folders, another shape was refused; now the target is converted (declared, recorded)."""
    spec = RunSpec(method=Spy.name, dataset=Tiny.name, episodes=TransferSpec(20, 10, 2), budget="quick",
                   device="cpu", out=None, progress=False, source="synthetic")
    doc, _ = run(spec)
    assert Spy.contexts[0].source.image_shape == (3, 16, 16)
    note = doc["dataset"]["notes"][-1]
    assert "8x8 grey → 16x16 RGB" in note and "grey → 3 channels by repetition" in note and "synthetic's mean" in note


def test_presets_of_source_then_target_then_overrides() -> None:
    from mtbench.baselines.maml import MAML

    hp = make_hparams(MAML, "xray", {}, "quick", source="miniimagenet")
    mini = make_hparams(MAML, "miniimagenet", {}, "quick")
    assert hp.backbone == mini.backbone == "conv4-32"
    hp = make_hparams(MAML, "xray", {"inner_lr": "0.5"}, "quick", source="miniimagenet")
    assert hp.inner_lr == 0.5


# -- MAML and Reptile on a target with other ways ------------------------------------------------
def test_maml_adapts_to_other_ways_from_a_zero_head(one_thread) -> None:
    from mtbench.baselines.maml import MAML

    # an untrained network: from the Xavier initialisation (MAML's default) the first steps tie, the tenth separates
    # (measured: accuracy 0.5 through step 3, 1.0 from step 4)
    hp = make_hparams(MAML, "synthetic", {"eval_steps": "10", "inner_lr": "0.5"})
    _adapts_to_two_ways_from_a_zero_head(MAML(hp, (3, 16, 16), torch.Generator().manual_seed(0), torch.device("cpu")))


@pytest.fixture
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.mark.parametrize("name", ["reptile", "reptile-transductive"])
def test_reptile_adapts_to_other_ways_from_a_zero_head_and_fresh_moments(name, one_thread, float64) -> None:
    """A 5-way Reptile model adapting to 2 classes (the X-ray transfer row failed with "built for 5-way tasks"),
    in float64 so that a chunk and an episode alone agree closely (fresh moments make float32's first steps
    sign-like, and their rounding shows)."""
    cls = METHODS.get(name)
    hp = make_hparams(cls, "synthetic", {"eval_steps": "10", "report_steps": "0,5", "inner_lr": "0.01"})
    reptile = cls(hp, (3, 16, 16), torch.Generator().manual_seed(0), torch.device("cpu"))
    _adapts_to_two_ways_from_a_zero_head(reptile)
    # the carried moments (5-way head) stay for 5-way tasks; a 2-way one starts from fresh ones
    assert reptile._start_state(5) is not None and reptile._start_state(2) is None
    x = torch.randn(2, 8, 3, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.arange(2).repeat_interleave(4).expand(2, 8)
    with torch.no_grad():
        chunk = list(reptile.adapt_batch(x, y, 2))[-1](x)
        alone = list(reptile.adapt(x[1], y[1], 2))[-1](x[1])
    assert chunk.shape == (2, 8, 2) and torch.allclose(chunk[1], alone, atol=1e-9)


def _adapts_to_two_ways_from_a_zero_head(method: Method) -> None:
    method.prepare(5)
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    x[4:] += 2.0
    y = torch.arange(2).repeat_interleave(4)
    with torch.no_grad():
        predictors = list(method.adapt(x, y, 2))
    first, last = predictors[0](x), predictors[-1](x)
    assert first.shape == (8, 2) and torch.equal(first, torch.zeros_like(first))  # no class favoured at step 0
    assert bool((last.argmax(1) == y).all())
    assert method.model[1].out_features == 5  # the meta-trained head is untouched


# -- compare -----------------------------------------------------------------------------------
def test_compare_ranks_on_shared_draws_with_paired_differences(tmp_path: Path) -> None:
    transfer = {"kind": "transfer", "train_images": 200, "test_images": 50, "trials": 4}

    def fake(name: str, per_episode: list[float], sha: str = "a" * 64, init: str | None = None) -> None:
        doc = result_doc(name, per_episode, dataset="xray", ways=2, shots=100, queries=25, sha=sha, by_step=[0.5],
                         init=init_doc(init, fit_seconds=5.0, dataset="miniimagenet") if init else None)
        doc["protocol"].update(transfer)
        put_result(tmp_path, doc, f"{name}-{sha[:2]}")

    fake("good", [0.9, 0.8, 1.0, 0.9])
    fake("worse", [0.5, 0.6, 0.4, 0.5], init="maml")
    fake("elsewhere", [1.0, 1.0, 1.0, 1.0], sha="b" * 64)
    found = tables(collect([tmp_path]))
    assert len(found) == 2  # other draws are never ranked together
    frame = next(f for t, f in found if "aaaaaaaaaaaa" in t)
    assert list(frame["method"]) == ["good", "maml → worse"]
    assert frame["vs best (paired)"][1].startswith("-0.4000") and frame["vs best (paired)"][1].endswith("*)")
    assert frame["fit s"][1] == "15"  # the pipeline's first stage counts
    md = render(collect([tmp_path]), "markdown")
    assert md.count("| rank | method |") == 2 and "### xray transfer200-50 (transfer, 200 labelled / 50 test" in md


def test_compare_of_nothing_is_a_user_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = CliRunner().invoke(main, ["compare", str(tmp_path)])
    assert result.exit_code == 2 and "no result files" in result.output


def test_cli_refuses_mixed_protocol_options(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", "-m", "protonet", "-d", "synthetic", "--protocol", "transfer",
                                       "--shots", "5", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--shots belongs to few-shot episodes" in result.output
    assert not (tmp_path / "r").exists()


# -- scratch in minibatches (the 200-image target) ---------------------------------------------
def test_scratch_minibatches_cover_every_step_and_full_batch_is_the_default(one_thread) -> None:
    from mtbench.baselines.scratch import Scratch

    x = torch.randn(10, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.arange(2).repeat_interleave(5)

    def final_logits(**overrides: str) -> torch.Tensor:
        hp = make_hparams(Scratch, "synthetic", {"steps": "7", "report_steps": "0", **overrides})
        method = Scratch(hp, (3, 16, 16), torch.Generator(), torch.device("cpu"))
        with torch.no_grad():
            predictors = list(method.adapt(x, y, 2))
        assert len(predictors) == 2  # step 0 and step 7: every step had a batch
        return predictors[-1](x)

    full = final_logits()
    assert torch.equal(full, final_logits(batch_size="10"))  # a batch as large as the support is full batch
    assert not torch.allclose(full, final_logits(batch_size="3"))
    with pytest.raises(UserError, match="batch_size=-1"):
        make_hparams(Scratch, "xray", {"batch_size": "-1"})
    assert make_hparams(Scratch, "xray", {}).batch_size == 32


def test_protonet_pretraining_stage_runs_before_the_episodes(one_thread) -> None:
    from mtbench.baselines.protonet import ProtoNet
    from mtbench.data import DATASETS as D

    source = D.get("synthetic")().load("train")
    hp = make_hparams(ProtoNet, "synthetic", {"pretrain_steps": "3", "pretrain_batch": "8", "train_ways": "4"})
    method = ProtoNet(hp, source.image_shape, torch.Generator().manual_seed(0), torch.device("cpu"))
    before = {k: v.clone() for k, v in method.backbone.state_dict().items()}
    ctx = FitContext(source, EpisodeSpec(4, 1, 2), 2, torch.Generator().manual_seed(1), torch.device("cpu"), False)
    method.fit(ctx)
    assert ctx.images == 3 * 8 + 2 * 4 * (1 + hp.train_queries)  # pre-training minibatches, then 2 episodes
    assert ctx.iterations == 2  # the budget counts episodes; the pre-training is the hparam's
    assert any(not torch.equal(before[k], v) for k, v in method.backbone.state_dict().items())
    with pytest.raises(UserError, match="pretrain_steps=-1"):
        make_hparams(ProtoNet, "synthetic", {"pretrain_steps": "-1"})
    quick = make_hparams(ProtoNet, "miniimagenet", {}, "quick")
    assert (quick.pretrain_steps, quick.lr, quick.train_ways) == (600, 1e-4, 5)
    assert make_hparams(ProtoNet, "miniimagenet", {}, "paper").pretrain_steps == 0
