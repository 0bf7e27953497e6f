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


@pytest.mark.parametrize("optimizer", [SGD(0.4), Adam(3e-3, beta1=0.0), Adam(1e-3)], ids=["sgd", "adam-reptile", "adam"])
@pytest.mark.parametrize("layout,dtype", [("channels-last", torch.float32), ("default", torch.float32),
                                          ("default", torch.float64)])
def test_steps_on_one_flat_buffer_give_the_numbers_of_steps_on_the_dict(optimizer, layout, dtype,
                                                                        monkeypatch) -> None:
    # on the CPU outside transforms, constant-gradient steps update one flat buffer (FlatParams); the dict path
    # (taken inside a transform, here forced) is the reference: every step's parameters and optimizer state,
    # bit for bit, in the same layouts, the carried state included
    model = _model(False).to(dtype)
    sx, sy, _ = _task()
    start = detached(params_of(model))
    if layout == "channels-last":
        start = channels_last(start)
    state = optimizer.init(start)
    if isinstance(optimizer, Adam):  # moments carried from earlier tasks, as Reptile starts from
        g = torch.Generator().manual_seed(3)
        state = (5, *({k: torch.rand(v.shape, generator=g, dtype=dtype) * 1e-3 for k, v in start.items()}
                      for _ in range(2)))
    batches = [(sx.to(dtype), sy), (sx[:3].to(dtype), sy[:3]), (sx.to(dtype), sy)]
    flat = list(inner_loop(model, start, batches, optimizer, True, state=state, with_state=True))
    assert functional.FlatParams.fits(start, functional._channels_last_names(start))
    monkeypatch.setattr(functional, "under_transform", lambda: True)
    reference = list(inner_loop(model, start, batches, optimizer, True, state=state, with_state=True))
    assert len(flat) == len(reference) == 4
    # the steps did run on one buffer: every updated tensor is a view of the same storage
    assert len({v.untyped_storage().data_ptr() for v in flat[1][0].values()}) == 1
    assert len({v.untyped_storage().data_ptr() for v in reference[1][0].values()}) == len(start)
    for (p, s), (rp, rs) in zip(flat, reference):
        assert list(p) == list(rp)
        assert all(torch.equal(p[k], rp[k]) and p[k].stride() == rp[k].stride() for k in p)
        if isinstance(optimizer, Adam):
            assert s[0] == rs[0]
            assert all(torch.equal(s[i][k], rs[i][k]) for i in (1, 2) for k in p)
    assert not torch.equal(flat[-1][0]["1.weight"], start["1.weight"])


def test_flat_sections_are_aligned_and_keep_each_layout() -> None:
    params = channels_last(detached(params_of(_model(False))))
    flat = functional.FlatParams(params, functional._channels_last_names(params))
    buffer = flat.pack(params)
    views = flat.views(buffer)
    assert all(torch.equal(views[k], params[k]) and views[k].stride() == params[k].stride() for k in params)
    assert all(v.data_ptr() % 64 == 0 for v in views.values())
    assert flat.size >= sum(v.numel() for v in params.values())
    # a tensor in neither layout it was told of is not packed
    assert not functional.FlatParams.fits({"w": torch.zeros(4, 3).t()}, set())
