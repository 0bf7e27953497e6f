"""The one inner loop (``mtbench.methods.functional.inner_loop``): its two ways of taking gradients give the same
numbers, and it keeps channels-last convolution weights channels-last on the CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtbench.methods import functional
from mtbench.methods.backbones import build_backbone, linear_head
from mtbench.methods.functional import (SGD, Adam, channels_last, detached, forward, inner_loop, last, params_of,
                                        sgd_inner_loop)


def _model(channels_last_weights: bool) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    backbone = build_backbone("conv4", (1, 28, 28), g, norm="batch", channels_last=channels_last_weights)
    return nn.Sequential(backbone, linear_head(backbone.out_features, 5, g)).train()


def _task(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(5, 1, 28, 28, generator=g), torch.arange(5), torch.randn(10, 1, 28, 28, generator=g)


def _meta_grads(model: nn.Module, first_order: bool, adapted: list[str] | None) -> dict:
    """The meta-gradient of two tasks' query losses after 2 inner SGD steps each."""
    model.zero_grad()
    params = params_of(model)
    loss = 0
    for seed in (1, 2):
        x, y, q = _task(seed)
        adapted_params = last(sgd_inner_loop(model, params, x, y, 2, 0.4, first_order, adapted))
        loss = loss + F.cross_entropy(forward(model, adapted_params, q), torch.cat([y, y]))
    loss.backward()
    return {k: v.grad.clone() for k, v in model.named_parameters()}


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("adapted", [None, ["1.weight", "1.bias"]], ids=["all", "head"])
def test_plain_autograd_steps_give_the_meta_gradient_of_torch_func_steps(first_order: bool, adapted,
                                                                         monkeypatch) -> None:
    # outside transforms on the CPU the steps take torch.autograd.grad, inside them torch.func.grad: bit for bit
    # the same meta-gradient (the second-order one included), which is why a method's numbers did not move
    model = _model(False)
    plain = _meta_grads(model, first_order, adapted)
    monkeypatch.setattr(functional, "under_transform", lambda: True)  # as inside a transform: torch.func.grad
    func = _meta_grads(model, first_order, adapted)
    assert all(torch.equal(plain[k], func[k]) for k in plain)
    assert all(plain[k].abs().sum() > 0 for k in plain)


def test_evaluation_steps_under_no_grad_equal_those_with_grad_enabled() -> None:
    model = _model(True)
    sx, sy, _ = _task()
    start = detached(params_of(model))
    enabled = last(inner_loop(model, start, [(sx, sy)] * 3, Adam(3e-3, beta1=0.0), True))
    with torch.no_grad():
        disabled = last(inner_loop(model, start, [(sx, sy)] * 3, Adam(3e-3, beta1=0.0), True))
    assert all(torch.equal(enabled[k], disabled[k]) for k in enabled)
    assert not torch.equal(enabled["1.weight"], start["1.weight"])


@pytest.mark.parametrize("optimizer", [SGD(0.4), Adam(3e-3, beta1=0.0)], ids=["sgd", "adam"])
def test_channels_last_weights_stay_channels_last_after_every_step(optimizer) -> None:
    # the first convolution's weight has one input channel, so its layout is ambiguous and an update alone
    # returns it in the default layout (and with it every later layer's input)
    model = _model(False)
    sx, sy, _ = _task()
    start = channels_last(detached(params_of(model)))
    first = "0.features.0.weight"
    assert start[first].stride(1) == 1
    assert (start[first] - 0.1 * start[first]).stride(1) != 1  # what the loop must undo
    for params in inner_loop(model, start, [(sx, sy)] * 2, optimizer, True):
        assert all(v.stride(1) == 1 for v in params.values() if v.dim() == 4)


def test_default_layout_weights_stay_in_the_default_layout() -> None:
    # MAML meta-trains in the default layout on the CPU (its faster one for second-order steps)
    model = _model(False)
    sx, sy, _ = _task()
    for params in inner_loop(model, params_of(model), [(sx, sy)] * 2, SGD(0.4)):
        assert all(v.is_contiguous() for v in params.values())
