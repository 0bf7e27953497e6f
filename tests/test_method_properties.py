"""Properties of individual methods on small generated data.

Where ``test_methods.py`` checks the Method contract for every registered method, these tests
check what particular methods claim to compute: Reptile's inner Adam step and outer update,
MatchingNet and ProtoNet on an episode with an obvious answer, Fine-tune's per-episode head and
its training of that head, and DANN's gradient reversal, schedule and use of the target images.
"""

from __future__ import annotations

import dataclasses

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from mtbench.baselines import dann as dann_module
from mtbench.baselines.dann import DANN, SourceOnly, adaptation_factor, reverse_gradient
from mtbench.baselines.finetune import Finetune
from mtbench.baselines.matchingnet import MatchingNet
from mtbench.baselines.protonet import ProtoNet
from mtbench.baselines.reptile import Reptile
from mtbench.data import DATASETS, Split
from mtbench.data.episodes import EpisodeSpec
from mtbench.methods.functional import detached, params_of
from mtbench.methods import FitContext, make_hparams
from mtbench.methods.training import episode_generator, make_head

CPU = torch.device("cpu")
SPEC = EpisodeSpec(ways=5, shots=1, queries=5, episodes=10, seed=0)


@pytest.fixture(scope="module")
def train_split() -> Split:
    return DATASETS.get("synthetic")().load("train")


@pytest.fixture(scope="module")
def test_split() -> Split:
    return DATASETS.get("synthetic")().load("test")


def build(cls, overrides: dict[str, str] | None = None, seed: int = 0, in_shape=(3, 16, 16)):
    hparams = make_hparams(cls, "synthetic", overrides or {})
    return cls(hparams, in_shape, torch.Generator().manual_seed(seed), CPU)


def context(source: Split, iterations: int, seed: int = 1, unlabelled: Split | None = None) -> FitContext:
    return FitContext(source, SPEC, iterations, torch.Generator().manual_seed(seed), CPU, progress=False,
                      unlabelled=unlabelled)


def state_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# -- Reptile --------------------------------------------------------------------------------------
REPTILE_ONE_STEP = {"inner_steps": "1", "inner_batch": "10", "meta_batch": "1", "inner_lr": "0.01"}


def task_batch(split: Split, ways: int = 5, per_class: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """One task's single minibatch, shaped as Reptile's ``_adapt_task`` takes it: ``[1, B, C, H, W]``."""
    idx = split.class_start[:ways, None] + torch.arange(per_class)  # first images of the first classes
    x = split.gather(idx.reshape(-1))
    y = torch.arange(ways).repeat_interleave(per_class)
    return x.unsqueeze(0), y.unsqueeze(0)


def task_gradient(method: Reptile, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor):
    """The task loss gradient at ``params``, computed with plain autograd (not torch.func)."""
    live = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    loss = F.cross_entropy(functional_call(method.model, live, (x,)), y)
    grads = torch.autograd.grad(loss, list(live.values()))
    return dict(zip(live, grads))


def test_reptile_one_inner_step_is_a_sign_like_adam_descent_step(train_split, one_thread) -> None:
    """One Adam step (beta1 = 0) from fresh state moves every weight by -lr * g / (|g| + eps)."""
    method = build(Reptile, REPTILE_ONE_STEP)
    method.prepare(5)
    method.model.train()
    params = detached(params_of(method.model))
    before = {k: v.clone() for k, v in params.items()}
    xb, yb = task_batch(train_split)
    adapted, _, _ = method._adapt_task(params, None, xb, yb)
    grads = task_gradient(method, before, xb[0], yb[0])
    lr, eps = method.hparams.inner_lr, method.optimizer.eps
    assert method.optimizer.beta1 == 0.0
    assert set(adapted) == set(before)
    total = 0.0
    for k, g in grads.items():
        delta = adapted[k] - before[k]
        inner = float((delta * g).sum())
        total += inner
        # conv biases feeding batch-statistics normalisation have a zero true gradient (round-off
        # only), which sign-like Adam still turns into full-size steps: only clear gradients count
        if float(g.norm()) > 1e-6:
            assert inner < 0.0, f"{k}: the step is not a descent direction ({inner})"
        # sign-like: no coordinate moves by more than the learning rate
        assert float(delta.abs().max()) <= lr * (1 + 1e-4), k
        # where the gradient is well above eps and round-off, the exact Adam formula
        big = g.abs() > 1e-6
        expected = -lr * g / (g.abs() + eps)
        torch.testing.assert_close(delta[big], expected[big], rtol=1e-3, atol=1e-6, msg=k)
    assert total < 0.0
    # and nothing was mutated in place: the inputs are still the starting weights
    for k, v in params.items():
        assert torch.equal(v, before[k]), k
    # a descent step lowers the task loss on that minibatch
    loss_before = F.cross_entropy(functional_call(method.model, before, (xb[0],)), yb[0])
    loss_after = F.cross_entropy(functional_call(method.model, adapted, (xb[0],)), yb[0])
    assert float(loss_after) < float(loss_before)


@pytest.mark.parametrize("meta_step", ["1.0", "0.5"])
def test_reptile_fit_moves_weights_to_the_adapted_weights(train_split, monkeypatch, meta_step: str,
                                                          one_thread) -> None:
    """One meta-iteration with one task: theta <- theta + epsilon (phi - theta), phi = that task's adapted weights.

    The minibatch the fit drew is captured where its tasks are adapted; phi is recomputed from it.
    """
    method = build(Reptile, {**REPTILE_ONE_STEP, "meta_step": meta_step})
    method.prepare(5)
    theta = {k: v.detach().clone() for k, v in params_of(method.model).items()}
    calls = []
    adapt_tasks = method._adapt_tasks

    def recording(params, state, xb, yb, loop):
        calls.append(({k: v.clone() for k, v in params.items()}, xb.clone(), yb.clone()))
        return adapt_tasks(params, state, xb, yb, loop)

    monkeypatch.setattr(method, "_adapt_tasks", recording)
    method.fit(context(train_split, iterations=1))
    monkeypatch.undo()

    assert len(calls) == 1
    params, xb, yb = calls[0]
    assert xb.shape == (1, 1, 10, 3, 16, 16) and yb.shape == (1, 1, 10)
    for k, v in params.items():
        assert torch.equal(v, theta[k]), f"{k}: the task was adapted from other weights than theta"
    # the minibatch is images of the source split, each task label one source class
    every = train_split.gather(torch.arange(len(train_split.labels))).flatten(1)
    rows = (xb[0, 0].flatten(1)[:, None, :] == every[None]).all(-1)  # [B, N]
    assert bool((rows.sum(1) >= 1).all()), "the fit trained on images that are not in the source split"
    source_class = train_split.labels[rows.float().argmax(1)]
    for label in yb[0, 0].unique():
        assert len(source_class[yb[0, 0] == label].unique()) == 1
    assert len(source_class.unique()) == len(yb[0, 0].unique())

    phi, _, _ = adapt_tasks(theta, None, xb, yb, loop=True)  # the CPU's path, as the fit took it
    epsilon = float(meta_step)
    moved = False
    for k, p in params_of(method.model).items():
        want = theta[k] + epsilon * (phi[k].mean(0) - theta[k])
        torch.testing.assert_close(p.detach(), want, rtol=0, atol=1e-6, msg=k)
        moved |= not torch.equal(p.detach(), theta[k])
    assert moved
    # the same phi through vmap (the GPU's path), for the coordinates with a clear gradient (float32 rounding
    # turns Adam's near-sign steps of the others)
    vmapped, _, _ = vmap(method._adapt_task, in_dims=(None, None, 0, 0))(theta, None, xb, yb)
    grads = task_gradient(method, theta, xb[0, 0], yb[0, 0])
    for k, g in grads.items():
        big = g.abs() > 1e-5
        torch.testing.assert_close(vmapped[k][0][big], phi[k][0][big], rtol=0, atol=1e-6, msg=k)


# -- MatchingNet and ProtoNet ---------------------------------------------------------------------
def separable_episode(split: Split, ways: int = 5, shots: int = 2, queries: int = 3):
    """Support and query images that are tiny perturbations of one distinct image per class."""
    g = torch.Generator().manual_seed(5)
    base = split.gather(split.class_start[torch.arange(ways) * 3])  # one image of each of 5 classes
    support_y = torch.arange(ways).repeat_interleave(shots)
    query_y = torch.arange(ways).repeat_interleave(queries)
    support_x = base[support_y] + 0.01 * torch.randn(base[support_y].shape, generator=g)
    query_x = base[query_y] + 0.01 * torch.randn(base[query_y].shape, generator=g)
    return support_x, support_y, query_x, query_y


@pytest.mark.parametrize("iterations", [0, 3])
def test_matchingnet_and_protonet_agree_on_a_trivially_separable_episode(test_split, train_split, iterations: int,
                                                                        one_thread) -> None:
    support_x, support_y, query_x, query_y = separable_episode(test_split)
    predictions = {}
    for cls in (MatchingNet, ProtoNet):
        method = build(cls)
        if iterations:
            method.fit(context(train_split, iterations))
        with torch.no_grad():
            predictor = list(method.adapt(support_x, support_y, 5))[-1]
            logits = predictor(query_x)
        assert logits.shape == (len(query_y), 5)
        predictions[cls.name] = logits.argmax(1)
    assert torch.equal(predictions["matchingnet"], predictions["protonet"])
    assert torch.equal(predictions["protonet"], query_y)


# -- Fine-tune ------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", ["linear", "cosine"])
def test_finetune_head_init_is_per_episode_and_training_lowers_support_loss(test_split, head: str,
                                                                            one_thread) -> None:
    method = build(Finetune, {"head": head, "report_steps": "0", "ft_epochs": "20"})
    support_x, support_y, query_x, _ = separable_episode(test_split, shots=2)
    with torch.no_grad():
        first = list(method.adapt(support_x, support_y, 5))
        second = list(method.adapt(support_x, support_y, 5))
        assert [p.step for p in first] == [0, 20 * 3]  # 10 support images in batches of 4: 3 steps a pass
        step0 = first[0](query_x)
        assert torch.equal(step0, second[0](query_x)), "the same episode must start from the same head"
        assert torch.equal(first[-1](query_x), second[-1](query_x))
        # the initial head is make_head seeded from the episode itself
        method.backbone.eval()
        expected = make_head(head, method.backbone.out_features, 5, episode_generator(support_x, "finetune"))
        torch.testing.assert_close(step0, expected(method.backbone(query_x)))
        # another episode, another initial head
        other_x = support_x.flip(0)
        other = list(method.adapt(other_x, support_y, 5))[0]
        assert not torch.equal(other(query_x), step0)
        before = F.cross_entropy(first[0](support_x), support_y)
        after = F.cross_entropy(first[-1](support_x), support_y)
        # the step-0 predictor was snapshotted: training did not change it afterwards
        assert torch.equal(first[0](query_x), step0)
    assert float(after) < float(before), f"{head}: support loss {float(before):.4f} -> {float(after):.4f}"


# -- DANN -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("coeff", [0.0, 0.5, 1.0, 3.0])
def test_reverse_gradient_is_identity_forward_and_negated_scaled_backward(coeff: float) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, generator=g, requires_grad=True)
    upstream = torch.randn(4, 6, generator=g)
    y = reverse_gradient(x, coeff)
    assert torch.equal(y, x)
    (y * upstream).sum().backward()
    assert torch.equal(x.grad, -coeff * upstream)
    # the reference: without the layer the gradient is +upstream
    x2 = x.detach().clone().requires_grad_(True)
    (x2 * upstream).sum().backward()
    assert torch.equal(x.grad, -coeff * x2.grad)


def test_adaptation_factor_schedule() -> None:
    assert adaptation_factor(0.0) == 0.0
    values = [adaptation_factor(p / 20) for p in range(21)]
    assert all(b > a for a, b in zip(values, values[1:]))
    assert 0.999 < adaptation_factor(1.0) < 1.0
    assert math.isclose(adaptation_factor(1.0), 2 / (1 + math.exp(-10)) - 1)
    assert adaptation_factor(0.5, gamma=1.0) < adaptation_factor(0.5, gamma=10.0)


DANN_SMALL = {"domain_hidden": "16", "batch_size": "8"}


def tinted(images: torch.Tensor) -> torch.Tensor:
    """A target domain for the synthetic images: half as bright, with a red cast. (Inverted colours are no
    shift here: the synthetic pixels are spread symmetrically around 128.)"""
    shifted = images // 2
    shifted[:, 0] += 128
    return shifted


@pytest.fixture(scope="module")
def shifted_pool() -> Split:
    """The synthetic val split, tinted, labels withheld: a target domain."""
    val = DATASETS.get("synthetic")().load("val")
    return Split(val.dataset, "val-tinted", tinted(val.images), val.labels, val.class_names, val.mean, val.std,
                 val.version).without_labels()


def watch_gather(split: Split, fail: bool) -> list[torch.Tensor]:
    """Record (or forbid) every ``split.gather`` call: the target images reaching the network."""
    calls: list[torch.Tensor] = []
    real = split.gather

    def gather(indices):
        if fail:
            raise AssertionError("the target images were gathered")
        calls.append(indices)
        return real(indices)

    object.__setattr__(split, "gather", gather)  # Split is a frozen dataclass
    return calls


def copy_split(split: Split) -> Split:
    return Split(split.dataset, split.name, split.images, split.labels, split.class_names, split.mean, split.std,
                 split.version)


def test_dann_trains_its_discriminator_on_the_target_images(train_split, shifted_pool, one_thread) -> None:
    method = build(DANN, DANN_SMALL)
    pool = copy_split(shifted_pool)
    calls = watch_gather(pool, fail=False)
    disc_before, backbone_before = state_of(method.discriminator), state_of(method.backbone)
    ctx = context(train_split, iterations=3, unlabelled=pool)
    method.fit(ctx)
    assert len(calls) == 3 and all(len(c) == 8 for c in calls)
    assert ctx.notes == []
    disc_after = state_of(method.discriminator)
    assert any(not torch.equal(disc_before[k], disc_after[k]) for k in disc_before), "discriminator untouched"
    assert any(not torch.equal(v, method.backbone.state_dict()[k]) for k, v in backbone_before.items())
    assert ctx.images == 3 * 2 * 8


def domain_loss(method: DANN, source: Split) -> float:
    """The fitted discriminator's cross-entropy on 64 held-out source images and their tinted copies, forwarded
    as in training (one batch, BatchNorm on its statistics): log 2 = 0.69 when it cannot tell them apart."""
    images = torch.cat([source.gather(torch.arange(64)), source.normalize(tinted(source.images[:64]))])
    method.backbone.train()
    with torch.no_grad():
        logits = method.discriminator(method.backbone(images)).squeeze(1)
    return float(F.binary_cross_entropy_with_logits(logits, torch.cat([torch.zeros(64), torch.ones(64)])))


def test_the_reversed_gradient_keeps_the_discriminator_from_telling_the_domains_apart(
        test_split, train_split, shifted_pool, monkeypatch, one_thread) -> None:
    """DANN's point, on a tint it is trained to ignore: after 100 iterations its discriminator is at chance on
    held-out images. The reference is the same fit with the gradient stopped instead of reversed, which
    learns the tint (measured, fit seeds 0-3: 0.68-0.71 reversed, 0.12-0.39 stopped)."""
    reversed_ = build(DANN, DANN_SMALL)
    reversed_.fit(context(train_split, iterations=100, unlabelled=shifted_pool))
    monkeypatch.setattr(dann_module, "reverse_gradient", lambda features, coeff: features.detach())
    stopped = build(DANN, DANN_SMALL)
    stopped.fit(context(train_split, iterations=100, unlabelled=shifted_pool))
    assert domain_loss(stopped, test_split) < 0.5  # the tint is there to learn
    assert domain_loss(reversed_, test_split) > 0.6  # and DANN's features hide it


def test_source_only_never_forwards_the_target_images(train_split, shifted_pool, one_thread) -> None:
    """``source-only`` with a target pool: not one target image gathered, discriminator unchanged, and the
    backbone it trains is exactly the one it trains without a pool."""
    method = build(SourceOnly, DANN_SMALL)
    assert method.hparams.domain_weight == 0.0
    pool = copy_split(shifted_pool)
    watch_gather(pool, fail=True)
    disc_before = state_of(method.discriminator)
    ctx = context(train_split, iterations=3, unlabelled=pool)
    method.fit(ctx)
    for k, v in state_of(method.discriminator).items():
        assert torch.equal(v, disc_before[k]), k
    assert ctx.notes == []
    alone = build(SourceOnly, DANN_SMALL)
    alone.fit(context(train_split, iterations=3))
    after, reference = state_of(method.backbone), state_of(alone.backbone)
    for k in reference:
        assert torch.equal(after[k], reference[k]), k


def test_dann_without_an_unlabelled_pool_notes_it_and_trains_on_the_source(train_split, one_thread) -> None:
    method = build(DANN, DANN_SMALL)
    disc_before = state_of(method.discriminator)
    ctx = context(train_split, iterations=2)
    method.fit(ctx)
    assert len(ctx.notes) == 1 and "unlabelled" in ctx.notes[0] and train_split.dataset in ctx.notes[0]
    for k, v in state_of(method.discriminator).items():
        assert torch.equal(v, disc_before[k]), k
    assert ctx.tasks == 2 and ctx.images == 2 * 8


def test_reptile_carries_adam_moments_into_training_and_evaluation(train_split, one_thread) -> None:
    """As the paper's code: the inner Adam's moments persist across tasks and seed each evaluation."""
    method = build(Reptile, {"inner_steps": "3", "meta_batch": "2"})
    method.fit(context(train_split, iterations=2))
    t, m, v = method.moments.state()
    assert t == 2 * 3 and all(float(x.abs().sum()) > 0 for x in v.values())
    episode_x, episode_y = task_batch(train_split, per_class=1)
    with torch.no_grad():
        carried = list(method.adapt(episode_x[0], episode_y[0], 5))[-1](episode_x[0])
        method.hparams = dataclasses.replace(method.hparams, carry_moments=False)
        fresh = list(method.adapt(episode_x[0], episode_y[0], 5))[-1](episode_x[0])
    assert not torch.allclose(carried, fresh)
    assert method.moments.state()[0] == t  # evaluation reads the moments, never updates them
