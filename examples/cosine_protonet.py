"""An outside method, submitted the way any user's would be: ``mtbench submit examples/cosine_protonet.py``.

Cosine prototypes: ProtoNet's nearest class mean, scored by cosine similarity times a learned scale
instead of squared Euclidean distance (the classifier of Gidaris & Komodakis 2018 and of
Meta-Baseline, Chen et al. 2021). It uses only mtbench's public API: the ``Method`` protocol, a
registered backbone, episode sampling from the ``FitContext`` and its generator (never the global
RNG, so two runs from one seed agree). It is not registered: ``mtbench submit`` loads it from this
file, checks it on generated data and runs the official protocol.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtbench.methods.backbones import build_backbone
from mtbench.data.episodes import make_episode, sample_indices
from mtbench.methods import FitContext, Method, Predictor, positive


@dataclass(frozen=True)
class CosineHparams:
    """backbone: a registered backbone; train_ways/train_queries: training episode shape; lr: Adam's;
    scale: initial value of the learned logit scale."""

    backbone: str = "conv4"
    train_ways: int = 20
    train_queries: int = 5
    lr: float = 1e-3
    scale: float = 10.0

    def __post_init__(self) -> None:
        for name in ("train_ways", "train_queries", "lr", "scale"):
            positive(name, getattr(self, name))


def cosine_logits(queries: Tensor, support: Tensor, labels: Tensor, ways: int, scale: Tensor) -> Tensor:
    """``scale * cos(query, prototype)``: ``float[Q, D]``, ``float[S, D]``, ``int64[S]`` -> ``float[Q, ways]``."""
    one_hot = F.one_hot(labels, ways).to(support.dtype)
    protos = (one_hot.T @ support) / one_hot.sum(0).unsqueeze(1)
    return scale * F.normalize(queries, dim=-1) @ F.normalize(protos, dim=-1).T


class CosinePrototypes(Method):
    """Nearest class mean by scaled cosine similarity, trained on episodes."""

    name = "cosine-protonet"
    description = "ProtoNet with scaled cosine similarity to the prototypes (an example submission)"
    Hparams = CosineHparams
    budgets = {"default": {"quick": 300, "paper": 20000}}
    transductive = False

    def __init__(self, hparams: CosineHparams, in_shape, generator: torch.Generator, device: torch.device) -> None:
        super().__init__(hparams, in_shape, generator, device)
        self.backbone = build_backbone(hparams.backbone, in_shape, generator).to(device)
        self.scale = nn.Parameter(torch.tensor(float(hparams.scale), device=device))

    def fit(self, ctx: FitContext) -> None:
        hp = self.hparams
        ways, shots = min(hp.train_ways, ctx.source.num_classes), ctx.spec.shots
        opt = torch.optim.Adam([*self.backbone.parameters(), self.scale], lr=hp.lr)
        self.backbone.train()
        for _ in ctx.loop(f"{self.name} {ways}-way training"):
            idx = sample_indices(ctx.source, ways, shots + hp.train_queries, ctx.generator)[0]
            ep = make_episode(ctx.source, idx, shots)
            z = self.backbone(torch.cat([ep.support_x, ep.query_x]))
            n = ep.support_y.numel()
            loss = F.cross_entropy(cosine_logits(z[n:], z[:n], ep.support_y, ways, self.scale), ep.query_y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ctx.count(1, idx.numel())

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> Iterator[Predictor]:
        self.backbone.eval()
        support = self.backbone(support_x)
        yield lambda query_x: cosine_logits(self.backbone(query_x), support, support_y, ways, self.scale)
