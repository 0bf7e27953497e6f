"""Functional building blocks for gradient-based meta-learning, on ``torch.func``.

One inner loop serves meta-training and evaluation alike, so what is evaluated is exactly what
was meta-trained. Parameters are plain ``dict[str, Tensor]``; nothing is mutated in place.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad

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


def classification_loss(params: Params, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy of ``model`` with ``params`` on ``(x, y)``."""
    return F.cross_entropy(forward(model, params, x), y)


def sgd_inner_loop(model: nn.Module, params: Params, x: Tensor, y: Tensor, steps: int, lr: float,
                   first_order: bool = False) -> Iterator[Params]:
    """Plain gradient descent on the support set; yields the parameters before and after every step.

    Works inside ``torch.func.vmap`` (one task per vmapped slice) and under outer autograd: with
    ``first_order=False`` the yielded parameters stay differentiable with respect to ``params``
    through the inner gradients (second-order MAML); with ``first_order=True`` the inner gradients
    are treated as constants. ``torch.func.grad`` ignores an outer ``torch.no_grad()``, so the same
    loop adapts at evaluation time.

    Args:
        model: the network, used functionally.
        params: starting parameters.
        x: ``float[S, C, H, W]`` support images.
        y: ``int64[S]`` support labels.
        steps: number of gradient steps.
        lr: inner step size.
        first_order: drop second-order terms.

    Yields:
        ``steps + 1`` parameter dicts: the starting ones, then after each step.
    """
    loss_grad = grad(classification_loss)
    yield params
    for _ in range(steps):
        grads = loss_grad(params, model, x, y)
        if first_order:
            grads = {k: g.detach() for k, g in grads.items()}
        params = {k: p - lr * grads[k] for k, p in params.items()}
        yield params


def last(iterator: Iterator[Params]) -> Params:
    """The final item of an inner loop."""
    out = None
    for out in iterator:
        pass
    assert out is not None
    return out


def accuracy(logits: Tensor, y: Tensor) -> Tensor:
    """Fraction of correct argmax predictions, as a 0-d tensor (no host sync)."""
    return (logits.argmax(dim=-1) == y).to(torch.float32).mean()
