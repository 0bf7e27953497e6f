"""Helpers for transfer-style methods: classifier heads, standard pre-training, per-episode seeds."""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtbench.methods.augment import chen2019
from mtbench.methods.backbones import init_parameters
from mtbench.methods import FitContext
from mtbench.core.seeding import generator


class CosineClassifier(nn.Module):
    """``scale * cos(w_c, x)`` logits: the Baseline++ head of Chen et al. (2019).

    Args:
        in_features: feature size.
        classes: number of outputs.
        scale: temperature (Chen et al.: 2 up to 200 classes, else 10).
    """

    def __init__(self, in_features: int, classes: int, scale: float | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(classes, in_features))
        nn.init.normal_(self.weight, std=0.01)  # replaced by init_parameters when a generator is given
        self.scale = scale if scale is not None else (2.0 if classes <= 200 else 10.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * F.normalize(x, dim=-1) @ F.normalize(self.weight, dim=-1).T


def make_head(kind: str, in_features: int, classes: int, generator: torch.Generator) -> nn.Module:
    """A ``linear`` or ``cosine`` classifier head, initialised from ``generator``."""
    if kind == "linear":
        return init_parameters(nn.Linear(in_features, classes), generator)
    head = CosineClassifier(in_features, classes)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.01)
    return head


# The pre-training schedule of the methods that pre-train a classifier on the base classes (finetune,
# feature-extract), in steps. quick: 4x the paper's minibatch, so 3,000 steps see ~40 images per class of Omniglot.
PRETRAIN_BUDGETS = {"default": {"quick": 300, "paper": 30000}, "omniglot": {"quick": 3000, "paper": 30000},
                    "miniimagenet": {"quick": 1000, "paper": 30000}}
PRETRAIN_QUICK_PRESETS = {"omniglot": {"batch_size": 64}, "miniimagenet": {"batch_size": 64}}


def pretrain_classifier(backbone: nn.Module, head: nn.Module, ctx: FitContext, batch_size: int, lr: float,
                        desc: str, steps: int | None = None, augment: bool = False) -> None:
    """Standard supervised training of ``head(backbone(x))`` on every class of ``ctx.source``, for
    ``steps`` minibatches (default: the budget's ``ctx.iterations``).

    Adam, cross-entropy, minibatches drawn uniformly (with a CPU generator) from all images; with ``augment``,
    each minibatch is augmented as Chen et al. (2019) did (:func:`mtbench.methods.augment.chen2019`, its
    draws from the same generator) before it is normalised.
    """
    model = ctx.track(nn.Sequential(backbone, head).to(ctx.device).train())  # the head is the fit's, not the method's
    opt = ctx.track(torch.optim.Adam(model.parameters(), lr=lr))
    n = ctx.source.images.shape[0]
    for _ in ctx.loop(desc, steps):
        idx = torch.randint(n, (batch_size,), generator=ctx.generator).to(ctx.device, non_blocking=True)
        x = ctx.source.gather(idx) if not augment else \
            ctx.source.standardize(chen2019(ctx.source.images[idx].float().div_(255.0), ctx.generator))
        loss = F.cross_entropy(model(x), ctx.source.labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ctx.count(1, batch_size)


def episode_generator(support_x: Tensor, salt: str) -> torch.Generator:
    """A CPU generator seeded from the support images: the same episode gets the same random draws
    (head initialisation, minibatch order) whatever the order episodes run in."""
    return generator(salt, support_x.detach().to("cpu", torch.float32).numpy().tobytes())


def minibatches(n: int, batch_size: int, epochs: int, generator: torch.Generator) -> list[Tensor]:
    """Index batches for ``epochs`` shuffled passes over ``n`` items (the last batch of a pass may be short)."""
    out = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        out.extend(order[i:i + batch_size] for i in range(0, n, batch_size))
    return out


def cycled_batches(n: int, batch_size: int, count: int, generator: torch.Generator) -> Tensor:
    """``count`` index batches of ``batch_size`` taken one after the other from shuffled passes over ``n`` items, a
    batch running on into the next pass where one ends (so every batch is full; how Nichol et al.'s Reptile code
    draws its minibatches): ``int64[count, batch_size]``."""
    passes = -(-count * batch_size // n)
    order = torch.cat([torch.randperm(n, generator=generator) for _ in range(passes)])
    return order[: count * batch_size].view(count, batch_size)
