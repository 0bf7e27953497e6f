"""Feature extractors, registered by name; every backbone maps ``float[N, C, H, W]`` to ``float[N, D]``.

A backbone factory takes the input shape and keyword options and returns an ``nn.Module`` with an
``out_features`` attribute. Parameters are initialised from an explicit ``torch.Generator`` (see
:func:`init_parameters`), never from the global RNG.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._C._functorch import TransformType
from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

from mtbench.core.errors import UserError
from mtbench.core.registry import Registry

BackboneFactory = Callable[..., nn.Module]
BACKBONES: Registry[BackboneFactory] = Registry("backbones")


class BatchStatNorm2d(nn.Module):
    """BatchNorm that always normalises with the statistics of the batch it is given.

    This is the normalisation MAML and Reptile use (no running statistics), so they are transductive
    at test time. It runs the fused ``F.batch_norm`` kernel, except under ``torch.func.vmap``: there the
    fused kernel's batching rule gives a wrong second-order gradient (pytorch/functorch#534; still so in
    torch 2.14: tests/test_maml_reference.py), so under vmap the same normalisation is written with
    primitive tensor ops. The two agree to float rounding; outside vmap the fused one is the faster
    (MAML's second-order meta-step on a CPU: reports/throughput.md).
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        if not under_vmap():
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        if not torch.is_grad_enabled():
            # no gradient to keep (predictions, e.g. Reptile's non-transductive queries, vmapped): the same values
            # bit for bit as below, with x - mean computed once and the rest in place (fewer full-size temporaries)
            centred = x - mean
            scale = torch.rsqrt(centred.pow(2).mean(dim=(0, 2, 3), keepdim=True) + self.eps)
            return centred.mul_(scale).mul_(self.weight.view(1, -1, 1, 1)).add_(self.bias.view(1, -1, 1, 1))
        var = (x - mean).pow(2).mean(dim=(0, 2, 3), keepdim=True)
        x_hat = (x - mean) * torch.rsqrt(var + self.eps)
        return x_hat * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def under_transform() -> bool:
    """Whether any ``torch.func`` transform (vmap, grad, ...) is active."""
    return bool(retrieve_all_functorch_interpreters())


def under_vmap() -> bool:
    """Whether a ``torch.func.vmap`` transform is active (at any level of the functorch stack)."""
    return any(i.key() == TransformType.Vmap for i in retrieve_all_functorch_interpreters())


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
        layers: list[nn.Module] = []
        channels, h, w = in_shape
        for _ in range(4):
            layers += [
                nn.Conv2d(channels, width, 3, padding=1),
                _norm(width, norm),
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


def conv4_32(in_shape: tuple[int, int, int], norm: str = "running") -> nn.Module:
    """Conv4 with 32 channels per layer: MAML's miniImageNet network (Finn et al. 2017), ~4x cheaper."""
    return Conv4(in_shape, width=32, norm=norm)


conv4_32.name = "conv4-32"  # type: ignore[attr-defined]
BACKBONES.register(conv4_32)


class Conv4Strided(nn.Module):
    """4 x [conv3x3-``width`` with stride 2, BatchNorm, ReLU]: Conv4 with strided convolutions instead of
    max-pooling. With ``average=False`` the last map is flattened, Reptile's Omniglot network (Nichol et al. 2018):
    on 28x28 images 64 x 2 x 2 = 256-d (padding 1 takes 28, 14, 7, 4 to 14, 7, 4, 2), where Conv4's max-pooling
    floors 7 to 3 and ends at 64-d. With ``average=True`` the last map is averaged over its positions to 64-d, the
    Omniglot network of MAML's code (Finn et al. 2017: ``tf.reduce_mean(hidden4, [1, 2])`` in its ``forward_conv``
    for every dataset but miniImageNet)."""

    def __init__(self, in_shape: tuple[int, int, int], width: int = 64, norm: str = "running",
                 average: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, h, w = in_shape
        for _ in range(4):
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), _norm(width, norm), nn.ReLU()]
            channels, h, w = width, (h + 1) // 2, (w + 1) // 2
        self.features = nn.Sequential(*layers)
        self.average = average
        self.out_features = width if average else width * h * w

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        return x.mean(dim=(2, 3)) if self.average else x.flatten(1)


def conv4_strided(in_shape: tuple[int, int, int], norm: str = "running") -> nn.Module:
    """4 x [conv3x3-64 stride 2, BatchNorm, ReLU], flattened: Reptile's Omniglot network (256-d on 28x28)."""
    return Conv4Strided(in_shape, norm=norm)


conv4_strided.name = "conv4-strided"  # type: ignore[attr-defined]
BACKBONES.register(conv4_strided)


def conv4_strided_avg(in_shape: tuple[int, int, int], norm: str = "running") -> nn.Module:
    """4 x [conv3x3-64 stride 2, BatchNorm, ReLU], averaged over positions: MAML's Omniglot network (64-d)."""
    return Conv4Strided(in_shape, norm=norm, average=True)


conv4_strided_avg.name = "conv4-strided-avg"  # type: ignore[attr-defined]
BACKBONES.register(conv4_strided_avg)


def _norm(channels: int, norm: str) -> nn.Module:
    if norm not in ("running", "batch"):
        raise ValueError(f"norm must be 'running' or 'batch', got {norm!r}")
    return nn.BatchNorm2d(channels) if norm == "running" else BatchStatNorm2d(channels)


class ResBlock12(nn.Module):
    """3 x [conv3x3, BatchNorm] with LeakyReLU(0.1) between, a 1x1 conv shortcut, then maxpool 2."""

    def __init__(self, cin: int, cout: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), _norm(cout, norm), nn.LeakyReLU(0.1),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), _norm(cout, norm), nn.LeakyReLU(0.1),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), _norm(cout, norm),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), _norm(cout, norm))
        self.out = nn.Sequential(nn.LeakyReLU(0.1), nn.MaxPool2d(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.body(x) + self.shortcut(x))


@BACKBONES.register
def resnet12(in_shape: tuple[int, int, int], widths: tuple[int, ...] = (64, 160, 320, 640),
             norm: str = "running") -> nn.Module:
    """ResNet-12 (Oreshkin et al. 2018; Lee et al. 2019): 4 residual blocks 64-160-320-640, global average pool."""
    blocks, cin = [], in_shape[0]
    for width in widths:
        blocks.append(ResBlock12(cin, width, norm))
        cin = width
    net = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net.out_features = cin  # type: ignore[assignment]
    return net


def timm_backbone(model_name: str, in_shape: tuple[int, int, int], generator: torch.Generator,
                  weights: str | None = None) -> nn.Module:
    """Any timm model as a feature extractor (``num_classes=0``); weights from a local file when given.

    timm initialises from the global RNG, so it runs inside ``fork_rng`` seeded from ``generator``:
    the result is reproducible and the caller's global RNG state is left untouched. Weights load
    through timm's own pretrained path (``pretrained_cfg_overlay=dict(file=...)``), which drops a
    classifier the file may hold and adapts the first convolution to ``in_shape``'s channels
    (e.g. ImageNet RGB weights on 1-channel Omniglot).
    """
    import timm

    if model_name not in timm.list_models():
        close = timm.list_models(f"*{model_name}*")[:5]
        raise UserError(f"timm has no model '{model_name}'" + (f"; close: {', '.join(close)}" if close else ""))
    if weights and not Path(weights).is_file():
        raise UserError(f"backbone weights {weights} not found: give the path of a local .pth/.safetensors file")
    seed = int(torch.randint(2**62, (1,), generator=generator))
    options = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(weights)}} if weights else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            net = timm.create_model(model_name, num_classes=0, in_chans=in_shape[0], **options)
        except (RuntimeError, KeyError, OSError, pickle.UnpicklingError) as exc:
            raise UserError(f"weights {weights} do not fit timm:{model_name}: {str(exc).splitlines()[0][:300]}") from None
    if weights:  # timm loads non-strictly once the classifier is dropped: check the file covered the model
        from timm.models import load_state_dict

        given = set(load_state_dict(str(weights)))
        missing = [k for k in net.state_dict() if k not in given and not k.endswith("num_batches_tracked")]
        if missing:
            raise UserError(f"weights {weights} do not fit timm:{model_name}: missing {', '.join(missing[:5])}")
    net.out_features = net.num_features  # type: ignore[assignment]
    return net


#: the initialisation schemes of :func:`init_parameters`
INIT_SCHEMES = ("default", "xavier", "finn")


#: the norm layers of our backbones, whose scale and offset init_parameters sets apart (and MAML can leave unadapted)
NORMS = (nn.BatchNorm2d, BatchStatNorm2d)


def init_parameters(module: nn.Module, generator: torch.Generator, scheme: str = "default") -> nn.Module:
    """Re-initialise ``module`` in place from ``generator``, module by module in registration order.

    ``default``: PyTorch's own schemes. Conv and Linear weights: Kaiming-uniform (a=sqrt(5)); biases uniform
    in ±1/sqrt(fan_in); norm layers: weight 1, bias 0; recurrent layers: uniform in ±1/sqrt(hidden_size).
    ``xavier``: MAML's as its reference implementations have it: Xavier-uniform conv and linear weights, zero
    biases (Finn et al.'s code, but for its Omniglot head, drawn from N(0, 1)), norm weights uniform in [0, 1] and
    zero biases (learn2learn's ``CNN4``);
    the draws of :func:`mtbench.bench.peer.conv4`, in its order.
    ``finn``: Finn et al.'s Omniglot code: Xavier-uniform convolution weights, linear weights from
    N(0, 1) (its head, ``tf.random_normal``), zero biases, and norm weights 1 (its ``batch_norm`` has no scale;
    here the scale exists, starts at 1 and is meta-learned).
    Parameters must be on the CPU (generators are CPU ones), so the same seed gives the same weights on every
    device.
    """
    if scheme not in INIT_SCHEMES:
        raise UserError(f"initialisation {scheme!r}: use one of {', '.join(INIT_SCHEMES)}")
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and scheme in ("xavier", "finn"):
            if isinstance(m, nn.Linear) and scheme == "finn":
                nn.init.normal_(m.weight, generator=generator)
            else:  # drawn into a contiguous tensor: filling a channels-last weight in place draws in its memory order
                with torch.no_grad():
                    m.weight.copy_(nn.init.xavier_uniform_(torch.empty(m.weight.shape), generator=generator))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                fan_in = m.weight[0].numel()
                bound = 1 / math.sqrt(fan_in) if fan_in else 0.0
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        elif isinstance(m, NORMS):
            if scheme == "xavier":
                nn.init.uniform_(m.weight, generator=generator)
            else:
                nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LSTM, nn.LSTMCell, nn.GRU, nn.GRUCell)):
            bound = 1 / math.sqrt(m.hidden_size)
            for p in m.parameters(recurse=False):
                nn.init.uniform_(p, -bound, bound, generator=generator)
    return module


def build_backbone(name: str, in_shape: tuple[int, int, int], generator: torch.Generator, init: str = "default",
                   channels_last: bool = True, **options) -> nn.Module:
    """Build a registered backbone, or ``timm:<model>`` (``timm:<model>@<file>`` loads pretrained weights
    from a local file), for ``in_shape``, initialised from ``generator`` by the scheme ``init``
    (:func:`init_parameters`; a timm model keeps timm's), with channels-last convolution weights unless
    ``channels_last`` is false."""
    if name.startswith("timm:"):
        options.pop("norm", None)  # timm models bring their own normalisation layers
        model, _, weights = name.removeprefix("timm:").partition("@")  # timm:<model>@<weights file>
        return timm_backbone(model, in_shape, generator, weights=weights or options.pop("weights", None), **options)
    model = init_parameters(BACKBONES.get(name)(in_shape, **options), generator, init)
    # channels-last convolution weights: 1.36x faster training steps of conv4 on a 2-core CPU, at
    # 84x84 and at 28x28 alike (inputs stay NCHW: the convolutions pick the weights' layout); but 0.80x
    # for MAML's second-order meta-steps on the CPU, which therefore asks for the default layout
    return model.to(memory_format=torch.channels_last) if channels_last else model


def linear_head(in_features: int, ways: int, generator: torch.Generator, init: str = "default") -> nn.Linear:
    """A ``ways``-output linear classifier initialised from ``generator`` by the scheme ``init``."""
    return init_parameters(nn.Linear(in_features, ways), generator, init)  # type: ignore[return-value]


def zero_head(backbone: nn.Module, ways: int, device: torch.device) -> nn.Sequential:
    """``backbone`` under a zero-initialised ``ways``-output linear head: the model with which a meta-learned
    backbone adapts to a target with another number of classes than meta-training (a transfer). Every class
    starts alike, none favoured by a head meant for other classes (Ye & Chao, ICLR 2022)."""
    head = nn.Linear(backbone.out_features, ways).to(device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return nn.Sequential(backbone, head)


class ZeroHeadForOtherWays:
    """For a method whose meta-trained ``model`` (built by ``_build(ways)``, which sets ``ways``) is ``backbone``
    under a linear head: :meth:`_target_model` adapts a target of another number of classes than meta-training
    through :func:`zero_head`, leaving the meta-trained head untouched."""

    model: nn.Module | None
    ways: int
    backbone: nn.Module
    device: torch.device

    def _target_model(self, ways: int) -> nn.Module:
        """The model that adapts to a ``ways``-way task: the meta-trained one, or for a transfer to other ways the
        meta-learned backbone under a zero-initialised head (one per number of ways, made once)."""
        if self.model is None or ways == self.ways:
            return self._build(ways)  # type: ignore[attr-defined]
        heads = self.__dict__.setdefault("_zero_heads", {})
        if ways not in heads:
            heads[ways] = zero_head(self.backbone, ways, self.device)
        return heads[ways]


__all__ = ["BACKBONES", "BatchStatNorm2d", "Conv4", "INIT_SCHEMES", "NORMS", "build_backbone", "conv4", "conv4_32", "init_parameters", "linear_head", "under_transform", "under_vmap",
           "resnet12", "timm_backbone", "zero_head", "ZeroHeadForOtherWays"]
