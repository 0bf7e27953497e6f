"""A learn2learn-style MAML in plain PyTorch: the peer that mtbench's MAML is measured against.

learn2learn is what most users would pick for MAML, but it does not build on Python 3.11, so it is
not a dependency; this module follows its conventions closely enough to stand in for it, in plain
PyTorch:

* the network is an ``nn.Module`` (the max-pool Conv4: conv 3x3 with bias, ``nn.BatchNorm2d``
  normalising with the statistics of its batch, ReLU, max-pool 2), initialised as learn2learn's
  ``CNN4``: Xavier-uniform convolution and head weights, zero biases, BatchNorm weights uniform
  in [0, 1];
* a task adapts a *clone* of the parameters with ``torch.autograd.grad(create_graph=True)`` (the
  ``clone``/``adapt`` loop of ``l2l.algorithms.MAML``), one task after the other;
* meta-training: each task's query loss, divided by the meta-batch, is back-propagated as soon as
  the task is done, then one Adam step;
* evaluation: per episode, adapt ``steps`` times on the support set and score the last step only.

:func:`meta_step` and :func:`evaluate_episodes` are what ``mtbench bench`` times against
``mtbench run --method maml`` (:mod:`mtbench.bench.workloads`), and what the MAML learning-curve
comparison trains (:mod:`mtbench.bench.curves`). Every random draw comes from a given generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from mtbench.data.episodes import EpisodeSet


def conv4(in_shape: tuple[int, int, int], ways: int, generator: torch.Generator, width: int = 64) -> nn.Module:
    """The max-pool Conv4 with a linear head, initialised as learn2learn's ``CNN4`` (see the module docstring)."""
    layers: list[nn.Module] = []
    channels, h, w = in_shape
    for _ in range(4):
        conv = nn.Conv2d(channels, width, 3, padding=1)
        nn.init.xavier_uniform_(conv.weight, generator=generator)
        nn.init.zeros_(conv.bias)
        norm = nn.BatchNorm2d(width, track_running_stats=False)  # batch statistics, in training and at test
        nn.init.uniform_(norm.weight, generator=generator)
        layers += [conv, norm, nn.ReLU(), nn.MaxPool2d(2)]
        channels, h, w = width, h // 2, w // 2
    head = nn.Linear(width * h * w, ways)
    nn.init.xavier_uniform_(head.weight, generator=generator)
    nn.init.zeros_(head.bias)
    return nn.Sequential(*layers, nn.Flatten(), head)


def adapt(model: nn.Module, x: Tensor, y: Tensor, steps: int, lr: float, create_graph: bool) -> dict[str, Tensor]:
    """The clone/adapt loop: ``steps`` SGD steps on ``(x, y)`` from the model's parameters, by
    ``autograd.grad``; with ``create_graph`` the result stays differentiable in the parameters (2nd order)."""
    params = dict(model.named_parameters())
    for _ in range(steps):
        params = adapt_from(model, params, x, y, lr, create_graph)
    return params


def adapt_from(model: nn.Module, params: dict[str, Tensor], x: Tensor, y: Tensor, lr: float,
               create_graph: bool = False) -> dict[str, Tensor]:
    """One step of :func:`adapt` from ``params``."""
    loss = F.cross_entropy(functional_call(model, params, (x,)), y)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
    return {k: p - lr * g for (k, p), g in zip(params.items(), grads)}


def meta_step(model: nn.Module, optimizer: torch.optim.Optimizer, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor,
              lr: float, steps: int, first_order: bool = False) -> float:
    """One meta-update on a meta-batch (``sx: float[T, S, C, H, W]`` etc.); returns the mean query loss."""
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for t in range(sx.shape[0]):
        fast = adapt(model, sx[t], sy[t], steps, lr, create_graph=not first_order)
        loss = F.cross_entropy(functional_call(model, fast, (qx[t],)), qy[t]) / sx.shape[0]
        loss.backward()
        total += float(loss.detach())
    optimizer.step()
    return total


def evaluate_episodes(model: nn.Module, episodes: EpisodeSet, steps: int, lr: float) -> Tensor:
    """Accuracy after ``steps`` adaptation steps on each episode's support set, episode by episode:
    ``float[episodes]``."""
    out = []
    for ep in episodes:
        fast = {k: v.detach() for k, v in adapt(model, ep.support_x, ep.support_y, steps, lr, False).items()}
        with torch.no_grad():
            logits = functional_call(model, fast, (ep.query_x,))
        out.append((logits.argmax(-1) == ep.query_y).float().mean())
    return torch.stack(out)


def accuracy_by_step(model: nn.Module, episodes: EpisodeSet, steps: int, lr: float) -> Tensor:
    """Accuracy after each of ``steps`` adaptation steps on each episode's support set, the steps of one
    adaptation per episode (what :func:`evaluate_episodes` gives for 1, 2, ... steps): ``float[steps, episodes]``."""
    out = []
    for ep in episodes:
        params, scored = dict(model.named_parameters()), []
        for _ in range(steps):
            params = adapt_from(model, params, ep.support_x, ep.support_y, lr)
            with torch.no_grad():
                logits = functional_call(model, {k: v.detach() for k, v in params.items()}, (ep.query_x,))
            scored.append((logits.argmax(-1) == ep.query_y).float().mean())
        out.append(torch.stack(scored))
    return torch.stack(out, 1)
