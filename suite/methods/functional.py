"""Functional building blocks for gradient-based meta-learning, on ``torch.func``.

One inner loop serves meta-training and evaluation alike, so what is evaluated is exactly what
was meta-trained. Parameters are plain ``dict[str, Tensor]``; nothing is mutated in place.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad

from mtbench.methods.backbones import under_transform, under_vmap

Params = dict[str, Tensor]


def params_of(module: nn.Module) -> Params:
    """The module's parameters as a name -> tensor dict (the live ``nn.Parameter`` objects)."""
    return dict(module.named_parameters())


def detached(params: Params) -> Params:
    """Copies of ``params`` cut from any autograd graph."""
    return {k: v.detach() for k, v in params.items()}


def forward(model: nn.Module, params: Params, x: Tensor) -> Tensor:
    """``model(x)`` with ``params`` in place of its own parameters (buffers are the module's)."""
    return functional_call(model, params, (x,))


def channels_last(params: Params) -> Params:
    """``params`` with every 4-D tensor (a convolution weight) in the channels-last layout, forced where the
    layout is ambiguous (a first convolution's weight over one input channel), so that a forward pass runs
    channels-last from its first layer. On the CPU, Conv4 forward passes then took 0.42x the time of the default
    layout's (Omniglot, one thread, 2026-12-02); a first weight left in the default layout turns every later
    layer's input back to it and loses most of that."""
    return {k: v.to(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in params.items()}


def stacked_copies(params: Params, n: int) -> Params:
    """``n`` copies of every tensor of ``params`` on a new leading axis, detached, in the default (contiguous)
    layout: one parameter set per episode for a computation vmapped over episodes. Never channels-last: under
    ``vmap`` on the CPU (torch 2.14.1), channels-last convolution weights with one image per episode gave wrong
    convolution gradients wherever a BatchNorm's output did not go straight into a ReLU (ResNet12's residual
    sum, a max-pool after the BatchNorm), while the default layout gave each episode's own
    (tests/test_backbones.py)."""
    return {k: v.detach().expand(n, *v.shape).contiguous() for k, v in params.items()}


def _channels_last_names(params: Params) -> set[str]:
    """Names of the CPU tensors of ``params`` held channels-last (4-D, channel stride 1): those an inner loop
    keeps channels-last after each step, as an update of an ambiguous-layout weight would not."""
    if under_vmap():  # batched tensors: the vmapped paths keep the layout the operations give them
        return set()
    return {k for k, v in params.items() if v.dim() == 4 and v.device.type == "cpu" and v.stride(1) == 1}


def classification_loss(params: Params, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy of ``model`` with ``params`` on ``(x, y)``."""
    return F.cross_entropy(forward(model, params, x), y)


@dataclass(frozen=True)
class SGD:
    """Functional plain gradient descent: ``p <- p - lr * g``."""

    lr: float

    def init(self, params: Params) -> None:
        return None

    def step(self, params: Params, grads: Params, state: None) -> tuple[Params, None]:
        return {k: p - self.lr * grads[k] for k, p in params.items()}, state


@dataclass(frozen=True)
class Adam:
    """Functional Adam (Kingma & Ba 2015) with bias correction; state is ``(t, m, v)``."""

    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def init(self, params: Params) -> tuple[int, Params, Params]:
        zeros = {k: torch.zeros_like(p) for k, p in params.items()}
        return 0, zeros, dict(zeros)

    def step(self, params: Params, grads: Params, state: tuple[int, Params, Params]):
        t, m, v = state
        t += 1
        m = {k: self.beta1 * m[k] + (1 - self.beta1) * g for k, g in grads.items()}
        v = {k: self.beta2 * v[k] + (1 - self.beta2) * g * g for k, g in grads.items()}
        c1, c2 = 1 - self.beta1**t, 1 - self.beta2**t
        new = {k: p - self.lr * (m[k] / c1) / ((v[k] / c2).sqrt() + self.eps) for k, p in params.items()}
        return new, (t, m, v)


def _autograd_grads(model: nn.Module, frozen: Params, fast: Params, x: Tensor, y: Tensor, first_order: bool) -> Params:
    """The loss gradients at ``fast`` by plain autograd, for a step outside any ``torch.func`` transform: bit for
    bit what ``torch.func.grad`` gives, in less time (a first-order Conv4 step on 5 Omniglot images took 0.88x
    its time, CPU, one thread, 2026-12-02; Reptile evaluates with 50 such steps). First order, or parameters
    outside any autograd graph (evaluation): the gradients of detached copies, constants. Otherwise (second-order
    meta-training) with ``create_graph``, so that they stay differentiable with respect to ``params``."""
    if first_order or not any(v.requires_grad for v in fast.values()):
        fast = {k: v.detach().requires_grad_() for k, v in fast.items()}
        frozen = {k: v.detach() for k, v in frozen.items()}
        first_order = True
    with torch.enable_grad():
        loss = classification_loss({**frozen, **fast}, model, x, y)
        return dict(zip(fast, torch.autograd.grad(loss, list(fast.values()), create_graph=not first_order)))


class FlatParams:
    """A parameter dict's tensors as sections of one flat buffer, so that an optimizer's update is a dozen
    operations on one tensor instead of a dozen on each parameter. On the CPU, Reptile's inner Adam update of
    Conv4's 18 tensors took 1.2 ms against 0.4 ms on one buffer, beside a 7.5 ms gradient step on 5 Omniglot
    images, and its 50 evaluation steps of an episode 0.94x their time (one thread, AMD EPYC, another job on
    the other core, 2026-12-05). Elementwise operations round each element alike wherever it lies, so the
    update gives the same numbers bit for bit.

    Each tensor keeps its own memory order in its section (a channels-last convolution weight is a
    channels-last view of it) and each section starts on a 64-byte boundary, as a tensor of its own
    does: the kernels that read the views see the strides and the alignment they saw before. The padding
    between sections is zero, which the optimizers keep zero (a zero gradient on a zero weight)."""

    def __init__(self, like: Params, channels_last: set[str]) -> None:
        first = next(iter(like.values()))
        align = max(1, 64 // first.element_size())
        self.dtype, self.device = first.dtype, first.device
        self.sections: list[tuple[str, int, tuple[int, ...], tuple[int, ...]]] = []
        offset = 0
        for k, x in like.items():
            perm = (0, 2, 3, 1) if k in channels_last else tuple(range(x.dim()))
            stored = tuple(x.shape[d] for d in perm)  # the shape whose contiguous order is the tensor's memory order
            self.sections.append((k, offset, stored, tuple(perm.index(d) for d in range(x.dim()))))
            offset += -(-x.numel() // align) * align
        self.size = offset

    @staticmethod
    def fits(params: Params, channels_last: set[str]) -> bool:
        """Whether ``params`` can live in one buffer: one dtype and device, each tensor contiguous or (named in
        ``channels_last``) channels-last."""
        values = list(params.values())
        return bool(values) and all(
            v.dtype == values[0].dtype and v.device == values[0].device
            and v.is_contiguous(memory_format=torch.channels_last if k in channels_last else torch.contiguous_format)
            for k, v in params.items())

    def views(self, flat: Tensor) -> Params:
        """The dict whose tensors are the sections of ``flat``, each in its own layout."""
        return {k: flat[o: o + math.prod(s)].view(s).permute(inv) for k, o, s, inv in self.sections}

    def pack(self, tensors: Params) -> Tensor:
        """``tensors`` (any layout) copied into a new flat buffer, its padding zero."""
        flat = torch.zeros(self.size, dtype=self.dtype, device=self.device)
        for k, view in self.views(flat).items():
            view.copy_(tensors[k])
        return flat


def inner_loop(model: nn.Module, params: Params, batches: Iterable[tuple[Tensor, Tensor]], optimizer: SGD | Adam,
               first_order: bool = False, adapted: Collection[str] | None = None, state: Any = None,
               with_state: bool = False) -> Iterator[Any]:
    """Gradient steps on a task's labelled data; yields the parameters before and after every step.

    The one inner loop of the suite: MAML and Reptile train and evaluate through it. It works inside
    ``torch.func.vmap`` (one task per vmapped slice) and under outer autograd: with
    ``first_order=False`` the yielded parameters stay differentiable with respect to ``params``
    through the inner gradients (second-order MAML); with ``first_order=True`` the inner gradients
    are constants. The gradients are taken inside ``torch.enable_grad()`` (or by ``torch.func.grad``, which
    ignores an outer ``torch.no_grad()``), so the same loop adapts at evaluation time. Convolution weights that start channels-last on the CPU stay so after
    every step (see :func:`channels_last`).

    Args:
        model: the network, used functionally.
        params: starting parameters.
        batches: one ``(float[B, C, H, W], int64[B])`` batch per step.
        optimizer: :class:`SGD` or :class:`Adam`.
        first_order: drop second-order terms.
        adapted: names of the parameters the steps change (``None``: all); the others stay fixed
            but still carry outer gradients (ANIL adapts the head only).
        state: the optimizer state to start from (``None``: ``optimizer.init``), e.g. Adam moments
            carried across tasks as Reptile's code does.
        with_state: yield ``(params, state)`` pairs instead of parameters.

    Yields:
        The starting parameters, then the parameters after each step.
    """
    names = list(params) if adapted is None else [k for k in params if k in adapted]
    frozen = {k: v for k, v in params.items() if k not in names}
    loss_grad = grad(lambda fast, x, y: classification_loss({**frozen, **fast}, model, x, y))
    fast = {k: params[k] for k in names}
    layout = _channels_last_names(fast)
    state = optimizer.init(fast) if state is None else state
    yield (params, state) if with_state else params
    # plain autograd on the CPU outside transforms (the same numbers, faster); torch.func.grad elsewhere, which
    # also works inside vmap and is what the GPU paths (CUDA graphs included) were measured with
    plain = not under_transform() and all(v.device.type == "cpu" for v in fast.values())
    # parameters outside any autograd graph (evaluation, Reptile's inner loop): the steps are constants
    if plain and not any(v.requires_grad for v in fast.values()) and FlatParams.fits(fast, layout):
        yield from _flat_steps(model, frozen, fast, batches, optimizer, state, with_state, layout, list(params))
        return
    for x, y in batches:
        if plain:
            grads = _autograd_grads(model, frozen, fast, x, y, first_order)
        else:
            grads = loss_grad(fast, x, y)
            if first_order:
                grads = {k: g.detach() for k, g in grads.items()}
        fast, state = optimizer.step(fast, grads, state)
        fast = {k: v.to(memory_format=torch.channels_last) if k in layout else v for k, v in fast.items()}
        out = {k: fast[k] if k in fast else frozen[k] for k in params}
        yield (out, state) if with_state else out


def _flat_steps(model: nn.Module, frozen: Params, fast: Params, batches: Iterable[tuple[Tensor, Tensor]],
                optimizer: SGD | Adam, state: Any, with_state: bool, layout: set[str], order: list[str]) -> Iterator[Any]:
    """:func:`inner_loop`'s steps when the gradients are constants on the CPU: the optimizer updates one flat
    buffer of the adapted parameters (:class:`FlatParams`), with the same numbers as on their dict."""
    flat = FlatParams(fast, layout)
    grads = torch.zeros(flat.size, dtype=flat.dtype, device=flat.device)
    sections = flat.views(grads)  # made once: each step's gradients are copied in through them
    current = flat.pack(fast)
    state = _map_state(state, dict, flat.pack)  # the optimizer's state packed alike (Adam's moments; SGD has none)
    for x, y in batches:
        for k, g in _autograd_grads(model, frozen, fast, x, y, True).items():
            sections[k].copy_(g)
        # the optimizer's own step, on one-entry dicts of the flat tensors
        new, state = optimizer.step({"": current}, {"": grads}, _map_state(state, Tensor, lambda s: {"": s}))
        current, state = new[""], _map_state(state, dict, lambda s: s[""])
        fast = flat.views(current)
        out = {k: fast[k] if k in fast else frozen[k] for k in order}
        yield (out, _map_state(state, Tensor, flat.views)) if with_state else out


def _map_state(state: Any, kind: type, fn: Any) -> Any:
    """``fn`` on each ``kind`` item of a tuple optimizer state (Adam's ``(t, m, v)``); any other state (SGD's
    ``None``) as it is."""
    return tuple(fn(s) if isinstance(s, kind) else s for s in state) if isinstance(state, tuple) else state


def sgd_inner_loop(model: nn.Module, params: Params, x: Tensor, y: Tensor, steps: int, lr: float,
                   first_order: bool = False, adapted: Collection[str] | None = None) -> Iterator[Params]:
    """:func:`inner_loop` with plain SGD on the whole support set ``(x, y)`` at every step (MAML)."""
    return inner_loop(model, params, itertools.repeat((x, y), steps), SGD(lr), first_order, adapted)


def last(iterator: Iterator[Params]) -> Params:
    """The final item of an inner loop."""
    out = None
    for out in iterator:
        pass
    assert out is not None
    return out


def accuracy(logits: Tensor, y: Tensor) -> Tensor:
    """Fraction of correct argmax predictions: ``float[*B, Q, W]``, ``int64[*B, Q]`` -> ``float32[*B]``
    (a 0-d tensor for one set of queries), on the device (no host sync)."""
    return (logits.argmax(dim=-1) == y).to(torch.float32).mean(dim=-1)
