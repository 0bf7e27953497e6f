"""Feature extractors, registered by name; every backbone maps ``float[N, C, H, W]`` to ``float[N, D]``.

A backbone factory takes the input shape and keyword options and returns an ``nn.Module`` with an
``out_features`` attribute. Parameters are initialised from an explicit ``torch.Generator`` (see
:func:`init_parameters`), never from the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .registry import Registry

BackboneFactory = Callable[..., nn.Module]
BACKBONES: Registry[BackboneFactory] = Registry("backbones")


class BatchStatNorm2d(nn.Module):
    """BatchNorm that always normalises with the statistics of the batch it is given.

    Written with primitive tensor ops instead of the fused ``F.batch_norm``: under ``torch.func.vmap``
    the fused kernel gives a wrong second-order gradient (pytorch/functorch#534). This is the
    normalisation MAML uses (no running statistics), so it is transductive at test time.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = (x - mean).pow(2).mean(dim=(0, 2, 3), keepdim=True)
        x_hat = (x - mean) * torch.rsqrt(var + self.eps)
        return x_hat * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class Conv4(nn.Module):
    """The standard few-shot backbone: 4 x [conv3x3-``width``, BatchNorm, ReLU, maxpool 2].

    Vinyals et al. (2016), Snell et al. (2017), Finn et al. (2017). On 28x28 Omniglot it gives a
    64-d feature; on 84x84 images a 1600-d one (64 x 5 x 5).

    Args:
        in_shape: ``(C, H, W)`` of the input images.
        width: channels of every conv layer.
        norm: ``"running"`` for standard BatchNorm (running statistics at eval), ``"batch"`` for
            :class:`BatchStatNorm2d` (batch statistics always; what MAML uses, safe under vmap).
    """

    def __init__(self, in_shape: tuple[int, int, int], width: int = 64, norm: str = "running") -> None:
        super().__init__()
        if norm not in ("running", "batch"):
            raise ValueError(f"norm must be 'running' or 'batch', got {norm!r}")
        layers: list[nn.Module] = []
        channels, h, w = in_shape
        for _ in range(4):
            layers += [
                nn.Conv2d(channels, width, 3, padding=1),
                nn.BatchNorm2d(width) if norm == "running" else BatchStatNorm2d(width),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            channels, h, w = width, h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(f"conv4 needs images of at least 16x16, got {in_shape[1]}x{in_shape[2]}")
        self.features = nn.Sequential(*layers)
        self.out_features = width * h * w

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x).flatten(1)


@BACKBONES.register
def conv4(in_shape: tuple[int, int, int], width: int = 64, norm: str = "running") -> nn.Module:
    """4 x [conv3x3-64, BatchNorm, ReLU, maxpool] (Vinyals et al. 2016); the few-shot standard."""
    return Conv4(in_shape, width=width, norm=norm)


def init_parameters(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-initialise ``module`` in place from ``generator``, with PyTorch's default schemes.

    Conv and Linear weights: Kaiming-uniform (a=sqrt(5)); biases uniform in ±1/sqrt(fan_in);
    norm layers: weight 1, bias 0; recurrent layers: uniform in ±1/sqrt(hidden_size). Parameters must be on the CPU (generators are CPU ones), so
    the same seed gives the same weights on every device.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                fan_in = m.weight[0].numel()
                bound = 1 / math.sqrt(fan_in) if fan_in else 0.0
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        elif isinstance(m, (nn.BatchNorm2d, BatchStatNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LSTM, nn.LSTMCell, nn.GRU, nn.GRUCell)):
            bound = 1 / math.sqrt(m.hidden_size)
            for p in m.parameters(recurse=False):
                nn.init.uniform_(p, -bound, bound, generator=generator)
    return module


def build_backbone(name: str, in_shape: tuple[int, int, int], generator: torch.Generator, **options) -> nn.Module:
    """Build a registered backbone for ``in_shape`` and initialise it from ``generator``."""
    return init_parameters(BACKBONES.get(name)(in_shape, **options), generator)


def linear_head(in_features: int, ways: int, generator: torch.Generator) -> nn.Linear:
    """A ``ways``-output linear classifier initialised from ``generator``."""
    return init_parameters(nn.Linear(in_features, ways), generator)  # type: ignore[return-value]


__all__ = ["BACKBONES", "BatchStatNorm2d", "Conv4", "build_backbone", "conv4", "init_parameters", "linear_head"]
