"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mtbench.backbones import build_backbone
from mtbench.episodes import make_episode, sample_indices
from mtbench.methods import METHODS, FitContext, Method, Predictor, positive


@dataclass(frozen=True)
class ProtoNetHparams:
    """Defaults: the paper's Omniglot settings.

    Attributes:
        backbone: registered backbone name.
        train_ways: classes per training episode (the paper trains 1-shot Omniglot with 60).
        train_shots: support images per class in training; 0 = the evaluation shots.
        train_queries: query images per class in training.
        lr: Adam learning rate.
        lr_halve_every: halve the learning rate every this many episodes.
    """

    backbone: str = "conv4"
    train_ways: int = 60
    train_shots: int = 0
    train_queries: int = 5
    lr: float = 1e-3
    lr_halve_every: int = 2000

    def __post_init__(self) -> None:
        positive("lr", self.lr)
        positive("train_ways", self.train_ways)
        positive("train_queries", self.train_queries)
        positive("lr_halve_every", self.lr_halve_every)


def squared_distances(queries: Tensor, prototypes: Tensor) -> Tensor:
    """``float[Q, D]``, ``float[W, D]`` -> ``float[Q, W]`` squared Euclidean distances."""
    return (queries.unsqueeze(1) - prototypes.unsqueeze(0)).pow(2).sum(-1)


def prototypes(embeddings: Tensor, labels: Tensor, ways: int) -> Tensor:
    """Class means: ``float[S, D]``, ``int64[S]`` -> ``float[ways, D]``."""
    one_hot = F.one_hot(labels, ways).to(embeddings.dtype)  # [S, W]
    return (one_hot.T @ embeddings) / one_hot.sum(0).unsqueeze(1)


@METHODS.register
class ProtoNet(Method):
    """Prototypical Networks (Snell et al. 2017): nearest class mean in a learned embedding.

    Training episodes use ``train_ways`` classes (60 for Omniglot in the paper) with the evaluation's
    shots; logits are negative squared Euclidean distances to the prototypes. Evaluation runs
    the backbone in eval mode (BatchNorm running statistics): not transductive.
    """

    name = "protonet"
    description = "Prototypical Networks: nearest class mean in a learned embedding (Snell et al. 2017)"
    Hparams = ProtoNetHparams
    presets = {"omniglot": {"train_ways": 60, "train_queries": 5}, "synthetic": {"train_ways": 20}}
    budgets = {"default": {"quick": 300, "paper": 20000}, "synthetic": {"quick": 150, "paper": 20000}, "omniglot": {"quick": 1000, "paper": 20000}}
    transductive = False

    def __init__(self, hparams: ProtoNetHparams, in_shape, generator, device) -> None:
        super().__init__(hparams, in_shape, generator, device)
        self.backbone = build_backbone(hparams.backbone, in_shape, generator).to(device)

    def fit(self, ctx: FitContext) -> None:
        hp = self.hparams
        ways = min(hp.train_ways, ctx.source.num_classes)
        shots = hp.train_shots or ctx.spec.shots
        opt = torch.optim.Adam(self.backbone.parameters(), lr=hp.lr)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=hp.lr_halve_every, gamma=0.5)
        self.backbone.train()
        for _ in ctx.loop(f"protonet {ways}-way training"):
            idx = sample_indices(ctx.source, ways, shots + hp.train_queries, ctx.generator)[0]
            ep = make_episode(ctx.source, idx.to(ctx.device, non_blocking=True), shots)
            z = self.backbone(torch.cat([ep.support_x, ep.query_x]))
            protos = prototypes(z[: len(ep.support_y)], ep.support_y, ways)
            loss = F.cross_entropy(-squared_distances(z[len(ep.support_y):], protos), ep.query_y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            ctx.count(1, idx.numel())

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> Iterator[Predictor]:
        self.backbone.eval()
        protos = prototypes(self.backbone(support_x), support_y, ways)
        yield lambda query_x: -squared_distances(self.backbone(query_x), protos)
