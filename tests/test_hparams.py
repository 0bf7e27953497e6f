"""Tests for hyper-parameter parsing: ``--hp`` items, presets, type conversion and error messages."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from mtbench.baselines.maml import MAML
from mtbench.baselines.protonet import ProtoNet
from mtbench.core.errors import UserError
from mtbench.methods import METHODS, make_hparams, parse_overrides


def defaults(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls.Hparams)}


# -- parse_overrides ----------------------------------------------------------------------------
def test_parse_overrides_splits_name_and_value():
    assert parse_overrides(["inner_lr=0.4", " meta_batch = 8 ", "backbone=conv4"]) == {
        "inner_lr": "0.4", "meta_batch": "8", "backbone": "conv4"}
    assert parse_overrides(("a=b=c",)) == {"a": "b=c"}  # only the first '=' splits
    assert parse_overrides([]) == {}


def test_parse_overrides_last_value_wins():
    assert parse_overrides(["lr=1", "lr=2"]) == {"lr": "2"}


@pytest.mark.parametrize("item", ["noequals", "=x", " =x"])
def test_parse_overrides_rejects_malformed_items(item):
    with pytest.raises(UserError) as info:
        parse_overrides(["lr=0.1", item])
    assert f"'{item}'" in str(info.value)
    assert "name=value" in str(info.value)


# -- defaults and presets -----------------------------------------------------------------------
@pytest.mark.parametrize("cls", [ProtoNet, MAML])
def test_make_hparams_defaults_without_preset(cls):
    hp = make_hparams(cls, "no-such-dataset-preset", {})
    assert isinstance(hp, cls.Hparams)
    assert dataclasses.asdict(hp) == defaults(cls)


def test_protonet_defaults_are_the_papers():
    hp = make_hparams(ProtoNet, "no-such-dataset-preset", {})
    assert hp.backbone == "conv4"
    assert hp.lr == pytest.approx(1e-3)
    assert hp.train_shots == 0


@pytest.mark.parametrize(("cls", "dataset"), [(ProtoNet, "synthetic"), (ProtoNet, "omniglot"), (MAML, "synthetic")])
def test_make_hparams_applies_the_dataset_preset(cls, dataset):
    preset = cls.presets[dataset]
    assert preset, "the preset under test should set something"
    hp = dataclasses.asdict(make_hparams(cls, dataset, {}))
    expected = {**defaults(cls), **preset}
    assert hp == expected


def test_protonet_synthetic_preset_differs_from_default():
    assert ProtoNet.presets["synthetic"]["train_ways"] != defaults(ProtoNet)["train_ways"]
    assert make_hparams(ProtoNet, "synthetic", {}).train_ways == ProtoNet.presets["synthetic"]["train_ways"]


def test_override_beats_preset():
    preset = MAML.presets["synthetic"]
    assert "meta_batch" in preset and preset["meta_batch"] != 3
    hp = make_hparams(MAML, "synthetic", {"meta_batch": "3"})
    assert hp.meta_batch == 3
    assert hp.inner_lr == preset.get("inner_lr", defaults(MAML)["inner_lr"])  # the rest of the preset stays


# -- type conversion ----------------------------------------------------------------------------
def test_protonet_overrides_are_converted():
    hp = make_hparams(ProtoNet, "synthetic", {"lr": "0.01", "train_ways": "7", "backbone": "conv4"})
    assert hp.lr == 0.01 and type(hp.lr) is float
    assert hp.train_ways == 7 and type(hp.train_ways) is int
    assert hp.backbone == "conv4"


@pytest.mark.parametrize(("text", "value"), [("true", True), ("0", False), ("False", False), ("yes", True),
                                             ("1", True), ("off", False)])
def test_maml_bool_override(text, value):
    hp = make_hparams(MAML, "synthetic", {"first_order": text})
    assert hp.first_order is value


def test_maml_literal_override():
    choices = typing.get_args(typing.get_type_hints(MAML.Hparams)["task_batching"])
    assert "loop" in choices
    hp = make_hparams(MAML, "synthetic", {"task_batching": "loop"})
    assert hp.task_batching == "loop"
    for choice in choices:
        assert make_hparams(MAML, "synthetic", {"task_batching": str(choice)}).task_batching == choice


def test_maml_numeric_overrides_are_converted():
    hp = make_hparams(MAML, "omniglot", {"inner_steps": "2", "eval_steps": "5", "meta_lr": "3e-4"})
    assert (hp.inner_steps, hp.eval_steps) == (2, 5)
    assert type(hp.inner_steps) is int
    assert hp.meta_lr == pytest.approx(3e-4) and type(hp.meta_lr) is float


def test_hparams_are_frozen():
    hp = make_hparams(MAML, "synthetic", {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        hp.inner_lr = 1.0  # type: ignore[misc]


# -- errors -------------------------------------------------------------------------------------
def test_unknown_hparam_suggests_and_lists():
    with pytest.raises(UserError) as info:
        make_hparams(MAML, "synthetic", {"inner_l": "0.1"})
    message = str(info.value)
    assert "'inner_l'" in message
    assert "did you mean" in message and "inner_lr" in message
    for field in dataclasses.fields(MAML.Hparams):
        assert field.name in message  # the full list


def test_unknown_hparam_without_near_miss_still_lists():
    with pytest.raises(UserError) as info:
        make_hparams(ProtoNet, "synthetic", {"zzzzzz": "1"})
    message = str(info.value)
    assert "did you mean" not in message
    assert "protonet has no hparam 'zzzzzz'" in message
    assert "train_ways" in message and "lr_halve_every" in message


@pytest.mark.parametrize(
    ("cls", "key", "text"),
    [
        (ProtoNet, "lr", "abc"),
        (MAML, "inner_lr", "abc"),
        (ProtoNet, "train_ways", "2.5"),
        (MAML, "first_order", "maybe"),
        (MAML, "task_batching", "gpu"),
        (ProtoNet, "lr", "-0.1"),
        (MAML, "inner_lr", "0"),
        (MAML, "inner_lr", "nan"),
        (MAML, "meta_batch", "0"),
        (MAML, "inner_steps", "0"),
        (ProtoNet, "train_ways", "-3"),
    ],
)
def test_bad_values_name_the_hparam(cls, key, text):
    with pytest.raises(UserError) as info:
        make_hparams(cls, "synthetic", {key: text})
    assert key in str(info.value)


def test_bad_literal_lists_the_choices():
    choices = typing.get_args(typing.get_type_hints(MAML.Hparams)["task_batching"])
    with pytest.raises(UserError) as info:
        make_hparams(MAML, "synthetic", {"task_batching": "gpu"})
    message = str(info.value)
    assert "gpu" in message
    for choice in choices:
        assert str(choice) in message


def test_bad_float_message_says_the_type():
    with pytest.raises(UserError, match=r"--hp lr=abc: lr of protonet must be float"):
        make_hparams(ProtoNet, "synthetic", {"lr": "abc"})


def test_report_steps_parsing_is_shared_and_strict() -> None:
    from mtbench.methods import report_steps

    assert report_steps("0, 10,50,999", 200) == {0, 10, 50, 200}
    for bad in ("a,b", "-1,3"):
        with pytest.raises(UserError, match="report_steps"):
            report_steps(bad, 10)
    for name in ("reptile", "finetune", "scratch"):
        cls = METHODS.get(name)
        with pytest.raises(UserError, match="report_steps"):
            make_hparams(cls, "omniglot", {"report_steps": "x"})


def test_quick_presets_apply_to_the_quick_budget_only() -> None:
    from mtbench.baselines.reptile import Reptile

    paper = Reptile.Hparams().inner_lr
    assert make_hparams(Reptile, "omniglot", {}, "quick").inner_lr == Reptile.quick_presets["omniglot"]["inner_lr"] != paper
    assert make_hparams(Reptile, "omniglot", {}, "paper").inner_lr == paper
    assert make_hparams(Reptile, "omniglot", {}, "500").inner_lr == paper
    assert make_hparams(Reptile, "omniglot", {"inner_lr": "0.01"}, "quick").inner_lr == 0.01  # --hp wins


def _typed_fields(kind: type) -> list[tuple[type, str]]:
    """``(method class, hparam)`` of every registered method's hparams of type ``kind``."""
    return [(cls, name) for _, cls in METHODS.items()
            for name, hint in typing.get_type_hints(cls.Hparams).items() if hint is kind]


@pytest.mark.parametrize(("cls", "key"), _typed_fields(float), ids=lambda x: getattr(x, "name", x))
@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "1e999"])
def test_every_float_hparam_rejects_non_finite_values(cls, key, text):
    with pytest.raises(UserError, match=rf"--hp {key}={text}: .*finite"):
        make_hparams(cls, "synthetic", {key: text})


@pytest.mark.parametrize(("cls", "key"), _typed_fields(int), ids=lambda x: getattr(x, "name", x))
def test_every_count_hparam_rejects_negative_values(cls, key):
    """Every int hparam is a count or a size (0 meaning "the default" for some): -1 is a one-line error."""
    with pytest.raises(UserError, match=rf"--hp {key}=-1\b"):
        make_hparams(cls, "synthetic", {key: "-1"})


def test_a_numeric_budget_says_which_quick_presets_it_leaves_out(capsys) -> None:
    """--budget N fits the full recipe; the quick budget's deviations are named, with the --hp that keep them."""
    from mtbench.methods import quick_presets_left_out
    from mtbench.run.runner import RunSpec
    from mtbench.run.stages import resolve

    quick = MAML.quick_presets["miniimagenet"]
    assert quick_presets_left_out(MAML, "miniimagenet", {}, "2000") == quick
    assert quick_presets_left_out(MAML, "miniimagenet", {"meta_batch": "2"}, "2000") == {
        k: v for k, v in quick.items() if k != "meta_batch"}  # what --hp sets is not left out
    for budget in ("quick", "paper"):
        assert quick_presets_left_out(MAML, "miniimagenet", {}, budget) == {}
    assert quick_presets_left_out(MAML, "omniglot", {}, "2000") == {}  # no quick presets there

    resolve(RunSpec(method="maml", dataset="miniimagenet", budget="2000", out=None))
    note = capsys.readouterr().err.strip()
    assert note.count("\n") == 0 and "--budget 2000 fits maml's full recipe" in note
    assert note.endswith("add --hp inner_steps=1 --hp meta_batch=2 --hp task_batching=loop")
    resolve(RunSpec(method="maml", dataset="miniimagenet", budget="0", out=None))  # e.g. adapting an --init
    assert "--budget 0 adapts with maml's full recipe" in capsys.readouterr().err
    resolve(RunSpec(method="maml", dataset="miniimagenet", budget="2000", out=None,
                    hparams=tuple((k, str(v)) for k, v in quick.items())))
    assert capsys.readouterr().err == ""  # the quick recipe, asked for: nothing to say


# -- the paper's recipe per setting ---------------------------------------------------------------------------------
def test_the_paper_budget_fits_the_settings_own_recipe_where_the_paper_changes_it() -> None:
    """20-way Omniglot: --budget paper takes the method's ``paper_settings`` (hparams and length); 5-way, the quick
    budget and a number of iterations keep the dataset's presets; --hp still wins."""
    from mtbench.baselines.reptile import Reptile, ReptileTransductive

    for cls in (MAML, Reptile, ReptileTransductive):
        recipe = {k: v for k, v in cls.paper_settings["omniglot"]["20w1s"].items() if k != "iterations"}
        paper = dataclasses.asdict(make_hparams(cls, "omniglot", {}, "paper", setting="20w1s"))
        assert recipe and {k: paper[k] for k in recipe} == recipe
        assert {k: paper[k] for k in recipe} != {k: defaults(cls)[k] for k in recipe}  # it changes something
        for budget, setting in (("paper", "5w1s"), ("paper", None), ("quick", "20w1s"), ("3000", "20w1s")):
            assert make_hparams(cls, "omniglot", {}, budget, setting=setting) == make_hparams(cls, "omniglot", {}, budget)
        # the Omniglot variants take Omniglot's recipes, as they take its presets
        assert make_hparams(cls, "omniglot-nichol", {}, "paper", setting="20w1s") == \
            make_hparams(cls, "omniglot", {}, "paper", setting="20w1s")
    assert make_hparams(MAML, "omniglot", {"inner_lr": "0.2"}, "paper", setting="20w5s").inner_lr == 0.2
    # the length: the recipe's where it has one, else the budget's
    assert Reptile.iterations_for("paper", "omniglot", "20w1s") == 200000 != Reptile.iterations_for("paper", "omniglot")
    assert Reptile.iterations_for("paper", "omniglot", "5w1s") == Reptile.iterations_for("paper", "omniglot")
    assert MAML.iterations_for("paper", "omniglot", "20w1s") == MAML.iterations_for("paper", "omniglot") == 60000
    assert Reptile.iterations_for("quick", "omniglot", "20w1s") == Reptile.iterations_for("quick", "omniglot")


def test_a_paper_run_resolves_its_settings_recipe() -> None:
    """``mtbench run`` passes the run's setting: a 20-way paper run gets the 20-way recipe and length."""
    from mtbench.data.episodes import EpisodeSpec
    from mtbench.run.runner import RunSpec
    from mtbench.run.stages import resolve

    twenty = resolve(RunSpec(method="reptile", dataset="omniglot", episodes=EpisodeSpec(20, 1, 5, 10, 0),
                             budget="paper", out=None))
    five = resolve(RunSpec(method="reptile", dataset="omniglot", episodes=EpisodeSpec(5, 1, 5, 10, 0),
                           budget="paper", out=None))
    assert (twenty.hparams.inner_steps, twenty.hparams.eval_batch, twenty.iterations) == (10, 10, 200000)
    assert (five.hparams.inner_steps, five.hparams.eval_batch, five.iterations) == (5, 0, 100000)
    # the paper's Tables 3 and 4: 5-shot tasks test on batches of 5 (Omniglot) or 15 (miniImageNet); miniImageNet
    # trains 8 steps on tasks of 15 images a class, whatever the test shots; its quick budget keeps the dataset's
    for dataset, shots, want in (("omniglot", 5, (5, 10, 5)), ("miniimagenet", 1, (8, 15, 0)),
                                 ("miniimagenet", 5, (8, 15, 15))):
        r = resolve(RunSpec(method="reptile-transductive", dataset=dataset, episodes=EpisodeSpec(5, shots, 5, 10, 0),
                            budget="paper", out=None))
        assert (r.hparams.inner_steps, r.hparams.train_shots, r.hparams.eval_batch) == want
    quick = resolve(RunSpec(method="reptile", dataset="miniimagenet", episodes=EpisodeSpec(5, 5, 5, 10, 0),
                            budget="quick", out=None))
    assert (quick.hparams.inner_steps, quick.hparams.train_shots, quick.hparams.eval_batch) == (5, 10, 0)
    # ProtoNet (Snell et al. 2017, section 3.2): 30-way training episodes for 1-shot miniImageNet, 20-way for 5-shot
    for shots, ways in ((1, 30), (5, 20)):
        r = resolve(RunSpec(method="protonet", dataset="miniimagenet", episodes=EpisodeSpec(5, shots, 5, 10, 0),
                            budget="paper", out=None))
        assert (r.hparams.train_ways, r.hparams.train_queries, r.iterations) == (ways, 15, 20000)
    quick = resolve(RunSpec(method="protonet", dataset="miniimagenet", episodes=EpisodeSpec(5, 1, 5, 10, 0),
                            budget="quick", out=None))
    assert quick.hparams.train_ways == 5


def test_a_numeric_budget_in_a_setting_with_its_own_paper_recipe_says_it_fits_the_datasets(capsys) -> None:
    """--budget N at 20 ways fits the dataset's recipe (the evidence commands' meaning); the run says so at its start
    and names the paper recipe's shortened fit, unless --hp already sets that recipe's every hparam."""
    from mtbench.data.episodes import EpisodeSpec
    from mtbench.run.runner import RunSpec
    from mtbench.run.stages import resolve

    twenty = EpisodeSpec(20, 1, 5, 10, 0)
    r = resolve(RunSpec(method="maml", dataset="omniglot", episodes=twenty, budget="300", out=None))
    assert r.hparams.inner_steps == 1  # the dataset's recipe
    note = capsys.readouterr().err.strip()
    assert note == ("mtbench: note: --budget 300 fits maml's omniglot recipe, not the paper's 20w1s one; for that "
                    "recipe, part of the way: --budget paper --until 300")
    recipe = {k: str(v) for k, v in MAML.paper_settings["omniglot"]["20w1s"].items()}
    resolve(RunSpec(method="maml", dataset="omniglot", episodes=twenty, budget="300", out=None,
                    hparams=tuple(recipe.items())))
    resolve(RunSpec(method="maml", dataset="omniglot", budget="300", out=None))  # 5-way: no recipe of its own
    resolve(RunSpec(method="maml", dataset="omniglot", episodes=twenty, budget="0", out=None))  # adapting only
    assert capsys.readouterr().err == ""


def test_paper_setting_left_out_names_the_recipe_a_numeric_budget_does_not_fit() -> None:
    from mtbench.methods import paper_setting_left_out

    recipe = {k: v for k, v in MAML.paper_settings["omniglot"]["20w1s"].items() if k != "iterations"}
    assert paper_setting_left_out(MAML, "omniglot", "20w1s", {}, "300") == recipe
    assert paper_setting_left_out(MAML, "omniglot", "20w1s", {"inner_lr": "0.1"}, "300") == \
        {k: v for k, v in recipe.items() if k != "inner_lr"}
    assert paper_setting_left_out(MAML, "omniglot-lake", "20w1s", {}, "300") == recipe  # the variant takes omniglot's
    for budget, setting in (("paper", "20w1s"), ("quick", "20w1s"), ("0", "20w1s"), ("300", "5w1s"), ("300", None)):
        assert paper_setting_left_out(MAML, "omniglot", setting, {}, budget) == {}


def test_scoring_a_paper_fit_with_budget_0_names_the_papers_test_recipe_it_leaves_out(tmp_path, capsys) -> None:
    """--budget 0 --init FILE adapts with the dataset's recipe; when FILE is a paper-budget fit of a setting with a
    recipe of its own (Reptile's 20-way one: its test-time steps and batches too), the run says what to add."""
    import torch

    from mtbench.baselines.reptile import Reptile
    from mtbench.data.episodes import EpisodeSpec
    from mtbench.run.checkpoints import FORMAT
    from mtbench.run.runner import RunSpec
    from mtbench.run.stages import resolve

    def scored(budget: str, ways: int, hparams: tuple = ()) -> str:
        ckpt = tmp_path / f"{budget}.pt"
        torch.save({"format": FORMAT, "method": "reptile", "budget": budget, "hparams": {"backbone": "conv4"}}, ckpt)
        resolve(RunSpec(method="reptile-transductive", dataset="omniglot", episodes=EpisodeSpec(ways, 1, 5, 10, 0),
                        budget="0", init=str(ckpt), out=None, hparams=hparams))
        return capsys.readouterr().err.strip()

    recipe = {k: v for k, v in Reptile.paper_settings["omniglot"]["20w1s"].items() if k != "iterations"}
    assert scored("paper", 20) == (
        "mtbench: note: --budget 0 scores the paper-budget fit at --init with reptile-transductive's omniglot recipe, "
        "not the paper's 20w1s one; to score it the paper's way add " + " ".join(f"--hp {k}={v}" for k, v in
                                                                                 recipe.items()))
    assert scored("paper", 20, tuple((k, str(v)) for k, v in recipe.items())) == ""  # given: nothing to add
    assert scored("paper", 5) == ""  # 5-way: the dataset's recipe is the paper's
    assert "paper's 20w1s" not in scored("quick", 20)  # a quick fit: not the paper's to keep
