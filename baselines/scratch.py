"""Training from scratch on the support set alone: the reference line that shows what transfer buys."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtbench.methods.backbones import build_backbone, linear_head
from mtbench.methods import METHODS, Method, Predictor, at_step, positive, report_steps
from mtbench.core.errors import UserError
from mtbench.methods.training import episode_generator, minibatches


@dataclass(frozen=True)
class ScratchHparams:
    """Attributes:
        backbone: registered backbone name (the same one the other methods use).
        lr: Adam learning rate on the support set.
        steps: training steps on the support set.
        batch_size: images per step, drawn afresh each pass over the support set; 0 = all of them
            (full batch, the default for few-shot supports).
        report_steps: steps whose predictor is scored (the last always is).
    """

    backbone: str = "conv4"
    lr: float = 1e-3
    steps: int = 100
    batch_size: int = 0
    report_steps: str = "0,10,25,50"

    def __post_init__(self) -> None:
        positive("lr", self.lr)
        positive("steps", self.steps)
        if self.batch_size < 0:
            raise UserError(f"--hp batch_size={self.batch_size}: give a number of images ≥ 1, or 0 for full batch")
        report_steps(self.report_steps, 0)


@METHODS.register
class Scratch(Method):
    """The backbone + a linear head, freshly initialised per episode and trained on its support set only.

    No source data is used (``fit`` does nothing), so the gap between this and any other method
    is what transfer from the source buys. Initialisation is seeded from the episode itself.

    :meth:`adapt_batch` trains a chunk of episodes' networks as one :class:`WideConv4`, so it exists for the
    Conv4 backbones only: a ResNet-12 or timm backbone (residual blocks, other norms) has no grouped
    counterpart here, and those evaluate episode by episode (``adapt_batch`` is ``None`` on the instance).
    """

    name = "scratch"
    description = "no transfer: the same backbone trained from scratch on the support set only"
    Hparams = ScratchHparams
    # xray: 200 labelled images; minibatches of 32 (16 passes in 100 steps) instead of full-batch steps
    presets = {"synthetic": {"steps": 30, "report_steps": "0,10"}, "xray": {"batch_size": 32},
               "xray3": {"batch_size": 32}}
    budgets = {"default": {"quick": 0, "paper": 0}}
    # nothing is fitted and each episode seeds its own network and minibatches: every fit seed scores alike
    fit_seeded = False
    transductive = False
    compilable = True
    not_recipe = frozenset({"report_steps"})

    def __init__(self, hparams: ScratchHparams, in_shape, generator, device) -> None:
        super().__init__(hparams, in_shape, generator, device)
        if hparams.backbone not in WIDE_BACKBONES:
            self.adapt_batch = None  # type: ignore[assignment]
        elif torch.device(device).type == "cpu" and math.prod(in_shape) <= CPU_CHUNK_IMAGE_VALUES:
            self.chunk_episodes = CPU_CHUNK_EPISODES

    def _episode_model(self, support_x: Tensor, ways: int) -> tuple[nn.Module, torch.Generator]:
        """The episode's network, initialised from its own generator, and that generator (for minibatches)."""
        g = episode_generator(support_x, self.name)
        backbone = build_backbone(self.hparams.backbone, self.in_shape, g)
        return nn.Sequential(backbone, linear_head(backbone.out_features, ways, g)), g

    def _batches(self, n: int, g: torch.Generator) -> list[Tensor] | None:
        """Minibatch indices per step, drawn from the episode's generator, or ``None`` for full-batch steps."""
        hp = self.hparams
        return minibatches(n, hp.batch_size, -(-hp.steps * hp.batch_size // n), g) if 0 < hp.batch_size < n else None

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> Iterator[Predictor]:
        model, g = self._episode_model(support_x, ways)
        model = model.to(support_x.device)
        if self.compiled:  # built per episode, so compiled here rather than by compile_modules
            model.compile()
        batches = self._batches(len(support_y), g)

        def step_data(step: int) -> tuple[Tensor, Tensor]:
            if batches is None:
                return support_x, support_y
            pick = batches[step].to(support_x.device)
            return support_x[pick], support_y[pick]

        yield from self._train(model, step_data, F.cross_entropy)

    def adapt_batch(self, support_x: Tensor, support_y: Tensor, ways: int) -> Iterator[Predictor]:
        """:meth:`adapt` for ``E`` episodes at once (``float[E, S, C, H, W]``, ``int64[E, S]``): each episode's
        network is drawn from its own generator as :meth:`adapt` draws it, then the ``E`` networks train as
        one :class:`WideConv4` under one Adam (elementwise, so each episode's update is its own) on the sum
        of the episodes' mean losses (so each episode's gradient is its own); the predictors map
        ``float[E, Q, C, H, W]`` to ``float[E, Q, ways]`` in eval mode, each episode with its own running
        BatchNorm statistics."""
        device = support_x.device
        built = [self._episode_model(x, ways) for x in support_x]
        batches = [self._batches(support_y.shape[1], g) for _, g in built]
        model = WideConv4([m for m, _ in built]).to(device)
        if self.compiled:
            model.compile()
        rows = torch.arange(len(support_x), device=device).unsqueeze(1)

        def step_data(step: int) -> tuple[Tensor, Tensor]:
            if batches[0] is None:
                return support_x, support_y
            pick = torch.stack([b[step] for b in batches]).to(device)  # [E, B]: the same sizes in every episode
            return support_x[rows, pick], support_y[rows, pick]

        def loss(logits: Tensor, y: Tensor) -> Tensor:
            # the sum of the episodes' mean losses: episode e's parameters get episode e's gradient alone
            return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum") / y.shape[1]

        yield from self._train(model, step_data, loss)

    def _train(self, model: nn.Module, step_data: Callable[[int], tuple[Tensor, Tensor]],
               loss_fn: Callable[[Tensor, Tensor], Tensor]) -> Iterator[Predictor]:
        """Adam on ``model`` for ``steps`` steps on ``step_data(step)``, yielding an eval-mode copy at every
        step of ``report_steps``: the one training loop of :meth:`adapt` (one network) and :meth:`adapt_batch`."""
        hp = self.hparams
        opt = torch.optim.Adam(model.parameters(), lr=hp.lr)
        wanted = report_steps(hp.report_steps, hp.steps)
        for step in range(hp.steps + 1):
            if step in wanted:
                frozen = copy.deepcopy(model).eval()
                yield at_step(step, lambda query_x, frozen=frozen: frozen(query_x))
            if step == hp.steps:
                break
            model.train()
            x, y = step_data(step)
            with torch.enable_grad():
                loss = loss_fn(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()


#: on the CPU, chunks of this many episodes when their images are small (at most CPU_CHUNK_IMAGE_VALUES values,
#: Omniglot's 28x28): steps on a few small images are bound by per-call overhead, which a chunk's one grouped
#: network shares. Per episode, chunk against one by one, real Omniglot, one thread beside two other jobs
#: (2026-12-03): 5w1s 0.60-0.68x the time (chunks of 4 to 8; 0.75x of 16), 5w5s 0.95x, 20w1s 0.92x (chunks of
#: 4), the same logits bit for bit; 84x84 images are compute-bound, and a chunk of 4 miniImageNet-shaped 5w1s
#: episodes took 1.12x the time, so those stay one episode a chunk
CPU_CHUNK_EPISODES = 8
CPU_CHUNK_IMAGE_VALUES = 32 * 32

#: the backbones :class:`WideConv4` can widen
WIDE_BACKBONES = ("conv4", "conv4-32")


class WideConv4(nn.Module):
    """``E`` networks ``Sequential(Conv4, Linear)`` of one shape as one network: episode ``e`` owns channel block ``e``.

    Convolutions are grouped (``groups=E``, their weights the episodes' stacked), one ``nn.BatchNorm2d(E *
    width)`` per layer holds every episode's statistics and running statistics per channel (so training
    mode updates each episode's own), and the linear heads are one batched matrix product. Maps
    ``float[E, N, C, H, W]`` to ``float[E, N, ways]``; episode ``e``'s logits are what its own network gives.

    The weights are channels-last as :func:`~mtbench.methods.backbones.build_backbone` makes them, and the
    first convolution and the heads run episode by episode (a few percent of the work): on the CPU the
    grouped kernels of the other layers then compute each episode's block bit for bit as its own network
    does. That matters in float32: the gradients of the convolution biases (each followed by BatchNorm)
    are rounding noise that Adam scales up to steps of ``lr``, so any other rounding moves the running
    statistics and the accuracies. The grouped first layer (one input channel per group) and a batched
    matrix product for the heads round their weight gradients otherwise.
    """

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        e = len(models)
        layers: list[nn.Module] = []
        for i, layer in enumerate(models[0][0].features):
            parts = [m[0].features[i] for m in models]
            like = {"dtype": layer.weight.dtype, "device": layer.weight.device} if hasattr(layer, "weight") else {}
            if isinstance(layer, nn.Conv2d):
                wide: nn.Module = nn.Conv2d(layer.in_channels * e, layer.out_channels * e, layer.kernel_size,
                                            padding=layer.padding, groups=e, **like)
            elif isinstance(layer, nn.BatchNorm2d):
                wide = nn.BatchNorm2d(layer.num_features * e, eps=layer.eps, momentum=layer.momentum, **like)
            else:
                layers.append(copy.deepcopy(layer))
                continue
            with torch.no_grad():
                for name, tensor in wide.state_dict().items():
                    if name != "num_batches_tracked":
                        tensor.copy_(torch.cat([part.state_dict()[name] for part in parts]))
            layers.append(wide)
        self.first = layers.pop(0)
        self.features = nn.Sequential(*layers)
        self.head_weight = nn.Parameter(torch.stack([m[1].weight.detach() for m in models]))  # [E, ways, D]
        self.head_bias = nn.Parameter(torch.stack([m[1].bias.detach() for m in models]))  # [E, ways]
        self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        e, n = x.shape[:2]
        first = self.first
        h = torch.cat([F.conv2d(x[i], w, b, padding=first.padding)
                       for i, (w, b) in enumerate(zip(first.weight.chunk(e), first.bias.chunk(e)))], dim=1)
        h = self.features(h)
        features = h.reshape(n, e, -1).transpose(0, 1)  # [E, N, width*h*w], each flattened as Conv4 flattens
        return torch.stack([F.linear(f, w, b) for f, w, b in zip(features.unbind(0), self.head_weight.unbind(0),
                                                                   self.head_bias.unbind(0))])
