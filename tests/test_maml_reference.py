"""MAML's torch.func meta-gradient against a hand-unrolled per-task autograd reference, in float64;
and the per-task loop that `mtbench bench` times against it computes the same meta-gradient."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from mtbench.baselines.maml import MAML, MAMLReferenceLoop
from mtbench.methods import make_hparams
from mtbench.methods.backbones import NORMS

WAYS, SHOTS, QUERIES, TASKS = 3, 2, 2, 4


def build(batching: str, first_order: bool, inner_steps: int = 2, head_only: bool = False,
          cls: type[MAML] = MAML, inner_loss: str = "mean", adapt_norm: bool = True) -> MAML:
    hp = make_hparams(MAML, "synthetic", {"task_batching": batching, "first_order": str(first_order),
                                          "inner_steps": str(inner_steps), "inner_lr": "0.3",
                                          "head_only": str(head_only), "inner_loss": inner_loss,
                                          "adapt_norm": str(adapt_norm)})
    m = cls(hp, (1, 16, 16), torch.Generator().manual_seed(1), torch.device("cpu"))
    m._build(WAYS).double()
    return m


def data(tasks: int = TASKS) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(2)
    sx = torch.randn(tasks, WAYS * SHOTS, 1, 16, 16, generator=g, dtype=torch.float64)
    qx = torch.randn(tasks, WAYS * QUERIES, 1, 16, 16, generator=g, dtype=torch.float64)
    sy = torch.arange(WAYS).repeat_interleave(SHOTS).expand(tasks, -1)
    qy = torch.arange(WAYS).repeat_interleave(QUERIES).expand(tasks, -1)
    return sx, sy, qx, qy


def names_in(model: torch.nn.Module, kinds: tuple[type, ...]) -> set[str]:
    """The names of the parameters that belong to modules of ``kinds``."""
    return {f"{a}.{p}" for a, mod in model.named_modules() if isinstance(mod, kinds)
            for p, _ in mod.named_parameters(recurse=False)}


def meta_gradient(m: MAML, tasks: int = TASKS) -> list[torch.Tensor]:
    params = dict(m.model.named_parameters())
    loss = m.meta_loss(params, *data(tasks))
    return list(torch.autograd.grad(loss, list(params.values())))


def reference_gradient(m: MAML, second_order: bool) -> list[torch.Tensor]:
    """The textbook loop: per task, unrolled SGD with autograd.grad(create_graph=True); with
    ``head_only`` (ANIL) the inner steps move the head's parameters only; with ``inner_loss=sum`` the support
    loss is Finn et al.'s, the per-example cross-entropy summed and divided by the shots; with ``adapt_norm=false``
    the norm layers' scale and offset stay put."""
    norms = names_in(m.model, NORMS)
    names = [n for n, _ in m.model.named_parameters()]
    params = [p for _, p in m.model.named_parameters()]
    sx, sy, qx, qy = data()
    total = 0.0
    for t in range(TASKS):
        fast = params
        for _ in range(m.hparams.inner_steps):
            logits = functional_call(m.model, dict(zip(names, fast)), (sx[t],))
            if m.hparams.inner_loss == "sum":
                loss = F.cross_entropy(logits, sy[t], reduction="sum") / SHOTS
            else:
                loss = F.cross_entropy(logits, sy[t])
            grads = torch.autograd.grad(loss, fast, create_graph=second_order)
            moves = [(not m.hparams.head_only or n.startswith("1.")) and (m.hparams.adapt_norm or n not in norms)
                     for n in names]
            fast = [p - m.hparams.inner_lr * g if move else p for p, g, move in zip(fast, grads, moves)]
        total = total + F.cross_entropy(functional_call(m.model, dict(zip(names, fast)), (qx[t],)), qy[t])
    return list(torch.autograd.grad(total / TASKS, params))


def max_abs_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


@pytest.mark.parametrize("batching", ["bmm", "vmap", "loop"])
@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_matches_unrolled_reference(batching: str, first_order: bool) -> None:
    m = build(batching, first_order)
    ours, ref = meta_gradient(m), reference_gradient(m, second_order=not first_order)
    for (name, _), x, y in zip(m.model.named_parameters(), ours, ref):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-11, msg=f"meta-gradient of {name}")


@pytest.mark.parametrize("batching", ["bmm", "vmap"])
@pytest.mark.parametrize("first_order", [False, True])
def test_anil_meta_gradient_matches_unrolled_reference(first_order: bool, batching: str) -> None:
    m = build(batching, first_order, head_only=True)
    ours, ref = meta_gradient(m), reference_gradient(m, second_order=not first_order)
    for (name, _), x, y in zip(m.model.named_parameters(), ours, ref):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-11, msg=f"ANIL meta-gradient of {name}")
    full = reference_gradient(build("vmap", first_order), second_order=not first_order)
    assert max_abs_diff(ref, full) > 1e-4  # adapting the head only is a different algorithm here


@pytest.mark.parametrize("batching", ["bmm", "vmap", "loop"])
def test_finns_summed_inner_loss_matches_unrolled_reference(batching: str) -> None:
    """``inner_loss=sum``, run as the mean with the step times the ways, takes Finn et al.'s steps: the meta-gradient
    of a reference that descends their summed support loss; and the benchmarked loop and evaluation
    take them too."""
    m = build(batching, first_order=False, inner_loss="sum")
    ours, ref = meta_gradient(m), reference_gradient(m, second_order=True)
    for (name, _), x, y in zip(m.model.named_parameters(), ours, ref):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-11, msg=f"meta-gradient of {name}")
    loop = build(batching, first_order=False, inner_loss="sum", cls=MAMLReferenceLoop)
    assert max_abs_diff(meta_gradient(loop), ref) < 1e-10
    assert max_abs_diff(ref, reference_gradient(build(batching, first_order=False), second_order=True)) > 1e-4
    sx, sy, qx, _ = data()
    start = dict(m.model.named_parameters())
    summed = F.cross_entropy(functional_call(m.model, start, (sx[0],)), sy[0], reduction="sum") / SHOTS
    grads = torch.autograd.grad(summed, list(start.values()))
    stepped = {k: p - m.hparams.inner_lr * g for (k, p), g in zip(start.items(), grads)}
    with torch.no_grad():
        one_step = list(m.adapt(sx[0], sy[0], WAYS))[1]
        torch.testing.assert_close(one_step(qx[0]), functional_call(m.model, stepped, (qx[0],)), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("batching", ["bmm", "vmap", "loop"])
def test_norms_left_to_the_meta_update_match_unrolled_reference(batching: str) -> None:
    """``adapt_norm=false`` (Finn et al.'s code): the inner steps leave BatchNorm's scale and offset alone, which
    still get a meta-gradient; the rest moves as before."""
    m = build(batching, first_order=False, adapt_norm=False)
    ours, ref = meta_gradient(m), reference_gradient(m, second_order=True)
    for (name, _), x, y in zip(m.model.named_parameters(), ours, ref):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-11, msg=f"meta-gradient of {name}")
    assert max_abs_diff(ref, reference_gradient(build(batching, first_order=False), second_order=True)) > 1e-4
    sx, sy, _, _ = data()
    start = dict(m.model.named_parameters())
    adapted = list(m.inner_loop(start, sx[0], sy[0], 2))[-1]
    moved = {name for name in start if not torch.equal(adapted[name], start[name])}
    assert moved == names_in(m.model, (torch.nn.Conv2d, torch.nn.Linear)), moved  # convolutions and head, not norms
    assert all(float(g.abs().max()) > 0 for (name, _), g in zip(m.model.named_parameters(), ours) if name not in moved)


def test_anil_adaptation_leaves_the_backbone_alone() -> None:
    m = build("vmap", first_order=False, head_only=True)
    sx, sy, _, _ = data()
    start = dict(m.model.named_parameters())
    adapted = list(m.inner_loop(start, sx[0], sy[0], 2))[-1]
    assert list(adapted) == list(start)
    for name in start:
        assert torch.equal(adapted[name], start[name]) is (not name.startswith("1.")), name


def test_second_order_terms_are_not_negligible_here() -> None:
    """Guards the test above: on this data first- and second-order gradients differ clearly."""
    m = build("vmap", first_order=False)
    assert max_abs_diff(reference_gradient(m, True), reference_gradient(m, False)) > 1e-4


def test_evaluation_uses_the_training_inner_loop() -> None:
    """The predictor after k adaptation steps equals k steps of the loop used in meta-training."""
    m = build("vmap", first_order=False, inner_steps=2)
    m.hparams = dataclasses.replace(m.hparams, eval_steps=2)
    sx, sy, qx, qy = data()
    with torch.no_grad():
        predictors = list(m.adapt(sx[0], sy[0], WAYS))
    assert len(predictors) == 3
    adapted = list(m.inner_loop(dict(m.model.named_parameters()), sx[0], sy[0], 2))[-1]
    expected = functional_call(m.model, adapted, (qx[0],))
    torch.testing.assert_close(predictors[-1](qx[0]), expected.detach(), rtol=1e-10, atol=1e-12)
    assert not torch.allclose(predictors[0](qx[0]), predictors[-1](qx[0]))


# -- the per-task loop that `mtbench bench` times against the vmapped meta-batch ------------------
@pytest.mark.parametrize("tasks", [1, 8])
@pytest.mark.parametrize(("first_order", "head_only"), [(False, False), (True, False), (False, True)])
def test_benchmarked_reference_loop_equals_the_batched_meta_gradient(tasks: int, first_order: bool,
                                                                     head_only: bool) -> None:
    """MAMLReferenceLoop (autograd.grad per task) and MAML with vmapped tasks: same meta-gradient in
    float64 at meta-batch 1 and 8, so their speed ratio compares identical computations."""
    batched = build("vmap", first_order, head_only=head_only)
    loop = build("vmap", first_order, head_only=head_only, cls=MAMLReferenceLoop)
    for (name, a), b in zip(batched.model.named_parameters(), loop.model.parameters()):
        assert torch.equal(a, b), name  # the same initialisation
    ours, ref = meta_gradient(batched, tasks), meta_gradient(loop, tasks)
    for (name, _), x, y in zip(batched.model.named_parameters(), ours, ref):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-11, msg=f"meta-gradient of {name}")


def test_task_batching_auto_picks_per_device_and_records_the_choice() -> None:
    from mtbench.baselines.maml import AUTO_BATCHING

    m = build("auto", first_order=False)
    assert m.hparams.task_batching == AUTO_BATCHING["cpu"] != "auto"
    hp = make_hparams(MAML, "synthetic", {"task_batching": "auto", "backbone": "resnet12"})
    m = MAML(hp, (3, 16, 16), torch.Generator().manual_seed(1), torch.device("cuda"))  # nothing is allocated on it
    assert m.hparams.task_batching == "vmap"  # bmm computes Conv4 only


def test_bmm_refuses_other_backbones() -> None:
    from mtbench.core.errors import UserError

    hp = make_hparams(MAML, "synthetic", {"task_batching": "bmm", "backbone": "resnet12"})
    with pytest.raises(UserError, match="task_batching=bmm computes Conv4 backbones only"):
        MAML(hp, (3, 16, 16), torch.Generator().manual_seed(1), torch.device("cpu"))


def test_benchmarked_reference_loop_differs_from_maml_only_in_the_meta_loss() -> None:
    """Sampling, the meta-optimiser and evaluation are MAML's own: only ``meta_loss`` is replaced."""
    overridden = {k for k, v in vars(MAMLReferenceLoop).items() if callable(v)}
    assert overridden == {"meta_loss"}
    assert MAMLReferenceLoop.fit is MAML.fit and MAMLReferenceLoop.adapt is MAML.adapt


def test_batch_statistics_norm_runs_fused_outside_vmap_and_primitive_under_it() -> None:
    """BatchStatNorm2d: the fused kernel outside vmap, primitive ops under it, the same numbers (float64); and the
    reason for the split: vmapped, the fused kernel's second-order meta-gradient is wrong (pytorch/functorch#534)
    while the primitive one's matches the loop. If a torch release fixes the kernel, the last assert fails and the
    primitive branch can go."""
    from mtbench.methods import backbones

    norm = backbones.BatchStatNorm2d(4).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(0))
    x = torch.randn(3, 5, 4, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    seen = []
    torch.func.vmap(lambda v: seen.append(backbones.under_vmap()) or norm(v))(x)
    assert seen == [True] and not backbones.under_vmap()
    assert torch.allclose(torch.func.vmap(norm)(x), torch.stack([norm(v) for v in x]), atol=1e-12)

    loop = meta_gradient(build("loop", first_order=False))
    assert max_abs_diff(meta_gradient(build("vmap", first_order=False)), loop) < 1e-10
    fused = backbones.BatchStatNorm2d.forward
    try:  # the fused kernel under vmap too
        backbones.BatchStatNorm2d.forward = lambda self, v: F.batch_norm(v, None, None, self.weight, self.bias,
                                                                          True, 0.0, self.eps)
        assert max_abs_diff(meta_gradient(build("vmap", first_order=False)), loop) > 1e-3
    finally:
        backbones.BatchStatNorm2d.forward = fused
