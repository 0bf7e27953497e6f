"""Conv4 + linear head evaluated for many tasks at once, each with its own parameters, without vmap.

Second-order MAML needs, for a meta-batch of T tasks, T copies of the network that differ after the
first inner step. ``torch.func.vmap`` turns every convolution with per-task weights into a grouped
convolution (groups = T), whose double backward is slow; the per-task loop launches T small
networks. Here a convolution with per-task weights is one batched matrix product per layer: the
input is unfolded (im2col) to ``[T, C*9, N*H*W]`` and multiplied by the ``[T, O, C*9]`` weights,
so forward, backward and double backward are dense ``bmm``/``fold`` kernels. Activations stay in a
``[T, C, N, H, W]`` layout throughout, so BatchNorm (batch statistics, per task and channel) and
max pooling need no transposes.

Parameters carry a leading task dimension (``Tensor[T, *shape]``); the shared starting point is
``{k: p.expand(T, *p.shape)}``, and autograd through ``expand`` sums the per-task meta-gradients,
as vmap does. :func:`meta_loss` is checked against the per-task loop in float64
(``tests/test_maml_reference.py``).
"""

from __future__ import annotations

from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtbench.methods.functional import Params


def _conv3x3(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``x: [T, C, N, H, W]``, ``weight: [T, O, C, 3, 3]``, ``bias: [T, O]`` -> ``[T, O, N, H, W]`` (padding 1)."""
    t, c, n, h, w = x.shape
    cols = F.unfold(x.reshape(t, c * n, h, w), 3, padding=1)  # [T, C*N*9, H*W], ordered (c, n, tap)
    cols = cols.view(t, c, n, 9, h * w).transpose(2, 3).reshape(t, c * 9, n * h * w)
    out = torch.baddbmm(bias.unsqueeze(-1), weight.reshape(t, -1, c * 9), cols)
    return out.view(t, -1, n, h, w)


def _batch_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """:class:`BatchStatNorm2d` per task: statistics over (N, H, W) of each task and channel."""
    mean = x.mean(dim=(2, 3, 4), keepdim=True)
    var = (x - mean).pow(2).mean(dim=(2, 3, 4), keepdim=True)
    shape = (*weight.shape, 1, 1, 1)
    return (x - mean) * torch.rsqrt(var + eps) * weight.view(shape) + bias.view(shape)


def forward(model: nn.Module, params: Params, x: Tensor) -> Tensor:
    """Logits ``[T, N, ways]`` of ``model`` = ``Sequential(Conv4 with batch-statistics norm, Linear)`` on
    ``x: [T, N, C, H, W]``, task ``t`` using ``{k: v[t] for k, v in params.items()}``; ``params`` are
    named as ``model.named_parameters()`` names them."""
    backbone, head = model
    names = {module: name for name, module in model.named_modules()}
    layers = list(backbone.features)  # Conv4: (conv, norm, relu, pool) per block
    h = x.permute(0, 2, 1, 3, 4)  # [T, C, N, H, W]
    for i in range(0, len(layers), 4):
        conv, norm = names[layers[i]], names[layers[i + 1]]
        h = _conv3x3(h, params[f"{conv}.weight"], params[f"{conv}.bias"])
        h = F.relu(_batch_norm(h, params[f"{norm}.weight"], params[f"{norm}.bias"], layers[i + 1].eps))
        t, c, n, hh, ww = h.shape
        h = F.max_pool2d(h.reshape(t * c, n, hh, ww), 2).view(t, c, n, hh // 2, ww // 2)
    features = h.permute(0, 2, 1, 3, 4).flatten(2)  # [T, N, C*h*w], Conv4's flatten order
    out = names[head]
    return torch.baddbmm(params[f"{out}.bias"].unsqueeze(1), features, params[f"{out}.weight"].transpose(1, 2))


def _task_losses_sum(logits: Tensor, y: Tensor) -> Tensor:
    """Sum over tasks of each task's mean cross-entropy: its gradient w.r.t. per-task parameters is each task's own."""
    t, n, ways = logits.shape
    return F.cross_entropy(logits.reshape(t * n, ways), y.reshape(t * n), reduction="sum") / n


def meta_loss(model: nn.Module, params: Params, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor, steps: int,
              lr: float, first_order: bool = False, adapted: Collection[str] | None = None) -> Tensor:
    """MAML's meta-loss over a meta-batch (``sx: [T, S, C, H, W]``, ``sy: [T, S]``, ``qx``, ``qy`` alike):
    ``steps`` SGD steps of size ``lr`` on each task's support set, then the mean query cross-entropy.
    Same arguments and value as :func:`mtbench.baselines.maml.reference_meta_loss`."""
    tasks = sx.shape[0]
    fast = {k: v.expand(tasks, *v.shape) for k, v in params.items()}
    moving = [k for k in fast if adapted is None or k in adapted]
    for _ in range(steps):
        loss = _task_losses_sum(forward(model, fast, sx), sy)
        grads = torch.autograd.grad(loss, [fast[k] for k in moving], create_graph=not first_order)
        fast = {**fast, **{k: fast[k] - lr * g for k, g in zip(moving, grads)}}
    return _task_losses_sum(forward(model, fast, qx), qy) / tasks
