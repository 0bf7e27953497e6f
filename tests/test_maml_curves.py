"""The MAML learning-curve comparison of ``mtbench bench --maml-curves`` (tiny, generated Omniglot-shaped data)."""

from __future__ import annotations

import pytest
import torch

from mtbench.bench import peer
from mtbench.bench.curves import LEARNERS, RECIPES, Recipe, maml_curves, recipe_hparams
from mtbench.bench.record import BenchSpec, check
from mtbench.bench.workloads import synthetic_split
from mtbench.core.errors import UserError
from mtbench.data.episodes import EpisodeSet, EpisodeSpec
from mtbench.methods import METHODS, make_hparams


def test_mtbench_maml_starts_from_the_peers_very_weights() -> None:
    """MAML's default initialisation (``init=xavier``) draws what the learn2learn-style network draws, in its order."""
    cls = METHODS.get("maml")
    method = cls(make_hparams(cls, "omniglot", {}), (1, 28, 28), torch.Generator().manual_seed(7), torch.device("cpu"))
    method.prepare(5)
    theirs = [p for p in peer.conv4((1, 28, 28), 5, torch.Generator().manual_seed(7)).parameters()]
    ours = list(method.model.parameters())
    assert [tuple(p.shape) for p in ours] == [tuple(p.shape) for p in theirs]
    for a, b in zip(ours, theirs):
        assert torch.equal(a.detach(), b.detach())


def test_curves_score_every_learner_on_the_same_episodes(one_thread) -> None:
    doc = maml_curves(synthetic_split("fit", 20), synthetic_split("test", 10), iterations=1, every=1, episodes=1)
    assert list(doc["curves"]) == list(LEARNERS) and len(doc["episodes_sha"]) == 64
    for points in doc["curves"].values():
        assert [p["iteration"] for p in points] == [0, 1]
        assert all([s["step"] for s in p["by_step"]] == [1, 2, 3] for p in points)
        assert all(0.0 <= s["mean"] <= 1.0 for p in points for s in p["by_step"])
    # before any meta-update mtbench's MAML is the peer's network: the same predictions; from PyTorch's default
    # initialisation, other ones
    start = {name: [s["mean"] for s in doc["curves"][name][0]["by_step"]] for name in LEARNERS}
    assert start["mtbench maml"] == start["learn2learn-style"] != start["mtbench maml, PyTorch default init"]


def test_peer_scores_every_step_of_one_adaptation_as_adapting_anew_for_each() -> None:
    episodes = EpisodeSet(synthetic_split("test", 10), EpisodeSpec(5, 1, 3, 2, seed=0))
    model = peer.conv4((1, 28, 28), 5, torch.Generator().manual_seed(0))
    by_step = peer.accuracy_by_step(model, episodes, 3, 0.4)
    assert by_step.shape == (3, 2)
    for s in range(3):
        assert torch.equal(by_step[s], peer.evaluate_episodes(model, episodes, s + 1, 0.4))


def test_a_recipe_sets_the_tasks_the_network_and_the_learners() -> None:
    """A 32-channel, 2-shot recipe with 3 training queries per class and 2 test steps: both learners start from the
    same weights (the same scores before any meta-update), each test step is scored, the file records the recipe."""
    r = Recipe("omniglot", 5, 2, inner_lr=0.1, meta_batch=2, meta_lr=1e-3, train_steps=1, test_steps=2,
               train_queries=3, width=32, learners=("mtbench maml", "learn2learn-style"))
    doc = maml_curves(synthetic_split("fit", 20), synthetic_split("test", 10), iterations=1, every=1, episodes=2,
                      r=r, name="tiny")
    assert list(doc["curves"]) == ["mtbench maml", "learn2learn-style"]
    assert doc["recipe"] == "tiny" and doc["settings"]["width"] == 32 and doc["settings"]["shots"] == 2
    for points in doc["curves"].values():
        assert [p["iteration"] for p in points] == [0, 1]
        assert all([s["step"] for s in p["by_step"]] == [1, 2] for p in points)
    start = [[s["mean"] for s in doc["curves"][name][0]["by_step"]] for name in doc["curves"]]
    assert start[0] == start[1]


def test_the_20_way_recipe_is_what_maml_trains_at_the_paper_budget() -> None:
    """omniglot-finn-20w1s compares the learners in the settings of `mtbench run --method maml --budget paper` at
    Omniglot 20w1s (one query per class in training: the evaluation shots), so its curves speak for that row."""
    r = RECIPES["omniglot-finn-20w1s"]
    hp = make_hparams(METHODS.get("maml"), "omniglot", {}, "paper", setting="20w1s")
    assert (r.dataset, r.ways, r.shots, r.width) == ("omniglot", 20, 1, 64) and hp.backbone == "conv4"
    assert (r.inner_lr, r.train_steps, r.test_steps, r.meta_batch, r.meta_lr) == \
        (hp.inner_lr, hp.inner_steps, hp.eval_steps, hp.meta_batch, hp.meta_lr)
    assert r.train_queries == (hp.train_queries or r.shots) and not hp.first_order


def test_an_unknown_recipe_or_a_missing_dataset_is_named_before_measuring(tmp_path) -> None:
    with pytest.raises(UserError, match="--curves-recipe nope: not a recipe; choose one of omniglot-finn"):
        check(BenchSpec(maml_curves=10, curves_recipe="nope"))
    with pytest.raises(UserError, match=f"needs miniimagenet under {tmp_path}"):
        check(BenchSpec(maml_curves=10, curves_recipe="miniimagenet-quick-5w1s", data_root=str(tmp_path)))
    check(BenchSpec(maml_curves=0, curves_recipe="miniimagenet-quick-5w1s", data_root=str(tmp_path)))  # no curves
    assert {"omniglot-finn", "miniimagenet-quick-5w1s", "miniimagenet-quick-5w5s"} <= set(RECIPES)


def test_the_bench_file_says_what_the_curves_ran_on(tmp_path, one_thread) -> None:
    from mtbench.bench.record import run

    doc = run(BenchSpec(device="cpu", episodes=1, measurements=False, maml_curves=1, data_root=str(tmp_path)))
    assert doc["maml_curves"]["recipe"] == "omniglot-finn"
    assert doc["maml_curves"]["data"].startswith("bench-synthetic fit (256 classes) / test")


def test_each_point_keeps_every_episodes_last_step_accuracy(one_thread) -> None:
    doc = maml_curves(synthetic_split("fit", 20), synthetic_split("test", 10), iterations=1, every=1, episodes=3)
    for points in doc["curves"].values():
        for p in points:
            assert len(p["per_episode"]) == 3
            assert abs(sum(p["per_episode"]) / 3 - p["by_step"][-1]["mean"]) < 1e-9


def test_the_bench_help_names_every_recipe() -> None:
    """`mtbench bench --help` lists the recipes by hand (the CLI does not import torch to print its help): a new
    recipe must be named there too."""
    from click.testing import CliRunner

    from mtbench.cli import main

    text = " ".join(CliRunner().invoke(main, ["bench", "--help"], terminal_width=400).output.split())
    assert [name for name in RECIPES if name not in text] == []


def test_the_fit_seed_changes_the_start_and_not_the_episodes(one_thread) -> None:
    """``--curves-fit-seed`` reseeds the initial weights and the training tasks; the test episodes stay those of
    the episode seed, so fits of several seeds compare on the same episodes."""
    fit, test = synthetic_split("fit", 20), synthetic_split("test", 10)
    a, b = (maml_curves(fit, test, iterations=0, every=1, episodes=4, fit_seed=s) for s in (0, 1))
    assert (a["fit_seed"], b["fit_seed"]) == (0, 1) and a["episodes_sha"] == b["episodes_sha"]
    assert a["curves"]["learn2learn-style"][0]["by_step"] != b["curves"]["learn2learn-style"][0]["by_step"]
    with pytest.raises(UserError, match="--curves-fit-seed -1"):
        check(BenchSpec(maml_curves=10, curves_fit_seed=-1))


@pytest.mark.parametrize("name", list(RECIPES))
def test_in_float64_mtbench_maml_and_the_peer_take_the_same_steps(name: str, one_thread) -> None:
    """From the same weights on the same tasks, in float64, mtbench's MAML (meta-loss and Adam as ``fit`` runs
    them) and the learn2learn-style loop move every parameter that the network's output depends on alike, meta-step
    after meta-step, and adapt alike at test, in every recipe of the curves: the two compute the same thing, so
    where their float32 fits part (the curves files), that is rounding amplified by training, not a difference of
    method. The convolution biases are left out: each is followed by BatchNorm, which subtracts it again, so its
    true gradient is zero and Adam scales the rounding noise of its computed gradient into steps that no output
    depends on."""
    r = RECIPES[name]
    shape = (1, 28, 28) if r.dataset == "omniglot" else (3, 32, 32)  # smaller than miniImageNet's 84: the same layers
    tasks = 2  # per meta-batch; the recipe's own count would only repeat the same computation
    cls = METHODS.get("maml")
    hp = make_hparams(cls, r.dataset, recipe_hparams(r, meta_batch=tasks))  # what the curves train
    ours = cls(hp, shape, torch.Generator().manual_seed(3), torch.device("cpu"))
    ours.prepare(r.ways)
    theirs = peer.conv4(shape, r.ways, torch.Generator().manual_seed(3), r.width)
    ours.model.double(), theirs.double()
    opt_ours = torch.optim.Adam(ours.model.parameters(), r.meta_lr)
    opt_theirs = torch.optim.Adam(theirs.parameters(), r.meta_lr)
    names = [name for name, _ in theirs.named_parameters()]
    convs = {f"{i}.bias" for i, m in enumerate(theirs) if isinstance(m, torch.nn.Conv2d)}
    images = torch.Generator().manual_seed(4)
    labels = torch.arange(r.ways)
    sy, qy = (labels.repeat_interleave(n).expand(tasks, -1) for n in (r.shots, r.train_queries))

    def close(a: torch.Tensor, b: torch.Tensor) -> bool:
        return bool((a - b).abs().max() <= 1e-10 * b.abs().max())

    for _ in range(3):
        x = torch.rand(tasks, r.ways, r.shots + r.train_queries, *shape, generator=images, dtype=torch.float64)
        sx, qx = x[:, :, : r.shots].flatten(1, 2), x[:, :, r.shots:].flatten(1, 2)
        loss = ours.meta_loss(dict(ours.model.named_parameters()), sx, sy, qx, qy)
        opt_ours.zero_grad(), loss.backward(), opt_ours.step()
        peer.meta_step(theirs, opt_theirs, sx, sy, qx, qy, r.inner_lr, r.train_steps)
        moved = {n for n, a, b in zip(names, ours.model.parameters(), theirs.parameters()) if not close(a, b)}
        assert moved <= convs
    sx = torch.rand(r.ways * r.shots, *shape, generator=images, dtype=torch.float64)
    qx = torch.rand(3 * r.ways, *shape, generator=images, dtype=torch.float64)
    predictors = list(ours.adapt(sx, sy[0], r.ways))
    params = dict(theirs.named_parameters())
    for step in range(1, r.test_steps + 1):
        params = peer.adapt_from(theirs, params, sx, sy[0], r.inner_lr)
        with torch.no_grad():
            theirs_logits = torch.func.functional_call(theirs, {k: v.detach() for k, v in params.items()}, (qx,))
            assert close(predictors[step](qx), theirs_logits)
