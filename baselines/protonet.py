"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mtbench.methods.backbones import build_backbone
from mtbench.data.episodes import make_episode, sample_indices
from mtbench.core.errors import UserError
from mtbench.methods.graphs import GraphedStep, capturable_adam, set_lr
from mtbench.methods import METHODS, FitContext, Method, Predictor, non_negative, positive
from mtbench.methods.training import make_head, pretrain_classifier


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
        pretrain_steps: minibatches of plain cross-entropy training over every source class before
            the episodes (the classifier pre-training of Meta-Baseline, Chen et al. ICCV 2021);
            0 = the paper's ProtoNet, trained on episodes only.
        pretrain_batch: images per pre-training minibatch.
        pretrain_lr: Adam learning rate of the pre-training (``lr`` is the episodes').
        pretrain_augment: pre-train on augmented images (Chen et al. 2019's crops, jitter and flips:
            :mod:`mtbench.methods.augment`); its rows are labelled ``augmented pre-training``.
        cuda_graph: on a CUDA device, replay the training step as a CUDA graph after 3 eager steps
            (the same computation, without the launch cost of its small kernels; see
            :mod:`mtbench.methods.graphs`). No effect on the CPU.
    """

    backbone: str = "conv4"
    train_ways: int = 60
    train_shots: int = 0
    train_queries: int = 5
    lr: float = 1e-3
    lr_halve_every: int = 2000
    pretrain_steps: int = 0
    pretrain_batch: int = 64
    pretrain_lr: float = 1e-3
    pretrain_augment: bool = False
    cuda_graph: bool = True

    def __post_init__(self) -> None:
        positive("lr", self.lr)
        non_negative("train_shots", self.train_shots)
        positive("train_ways", self.train_ways)
        positive("train_queries", self.train_queries)
        positive("lr_halve_every", self.lr_halve_every)
        positive("pretrain_batch", self.pretrain_batch)
        positive("pretrain_lr", self.pretrain_lr)
        if self.pretrain_steps < 0:
            raise UserError(f"--hp pretrain_steps={self.pretrain_steps}: must be ≥ 0")


def squared_distances(queries: Tensor, prototypes: Tensor) -> Tensor:
    """``float[*B, Q, D]``, ``float[*B, W, D]`` -> ``float[*B, Q, W]`` squared Euclidean distances."""
    return (queries.unsqueeze(-2) - prototypes.unsqueeze(-3)).pow(2).sum(-1)


def prototypes(embeddings: Tensor, labels: Tensor, ways: int) -> Tensor:
    """Class means: ``float[*B, S, D]``, ``int64[*B, S]`` -> ``float[*B, ways, D]``."""
    one_hot = F.one_hot(labels, ways).to(embeddings.dtype)  # [*B, S, W]
    return (one_hot.transpose(-2, -1) @ embeddings) / one_hot.sum(-2).unsqueeze(-1)


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
    # miniImageNet: the paper's 5-shot training (20-way, 15 queries)
    presets = {"omniglot": {"train_ways": 60, "train_queries": 5}, "synthetic": {"train_ways": 20},
               "miniimagenet": {"train_ways": 20, "train_queries": 15}}
    # synthetic quick: 75 steps score 0.883 on tests/test_methods.py's episodes (150 scored 0.869 in twice the time)
    budgets = {"default": {"quick": 300, "paper": 20000}, "synthetic": {"quick": 75, "paper": 20000},
               "omniglot": {"quick": 1000, "paper": 20000}, "miniimagenet": {"quick": 200, "paper": 20000}}
    # quick on miniImageNet (2 CPU cores): 600 steps of classifier pre-training, then 200 5-way episodes
    # at lr 1e-4. Episodes alone reached 0.41 (5-way 5-shot) after 600 5-way or 400 20-way episodes
    # (~7 min); pre-training reached 0.505 in 2.8 min, 100 episodes at 1e-4 then 0.516, at 1e-3 0.415.
    quick_presets = {"miniimagenet": {"pretrain_steps": 600, "train_ways": 5, "lr": 1e-4}}
    # --budget paper on 1-shot miniImageNet: the paper trains 1-shot with 30-way episodes, 5-shot with 20-way
    # (Snell et al. 2017, section 3.2), whose 20 the dataset's presets hold
    paper_settings = {"miniimagenet": {"5w1s": {"train_ways": 30}}}
    transductive = False
    compilable = True
    # added after rows were committed: a result without it ran as its default does
    later_hparams = {"pretrain_augment": False}
    # CUDA graphs are a CUDA matter: on the CPU a result with or without the hparam ran the same code
    device_hparams = {"cuda_graph": "cuda"}

    @classmethod
    def variant(cls, record):
        """Pre-training on augmented images is a row of its own: ``augmented pre-training``."""
        hp = record["method"]["hparams"]
        return "augmented pre-training" if hp.get("pretrain_steps") and hp.get("pretrain_augment") else ""

    def __init__(self, hparams: ProtoNetHparams, in_shape, generator, device) -> None:
        super().__init__(hparams, in_shape, generator, device)
        self.backbone = build_backbone(hparams.backbone, in_shape, generator).to(device)

    def fit(self, ctx: FitContext) -> None:
        hp = self.hparams
        ways = min(hp.train_ways, ctx.source.num_classes)
        shots = hp.train_shots or ctx.spec.shots
        if hp.pretrain_steps:
            head = make_head("linear", self.backbone.out_features, ctx.source.num_classes, ctx.generator)
            pretrain_classifier(self.backbone, head, ctx, hp.pretrain_batch, hp.pretrain_lr,
                                f"protonet pre-training on {ctx.source.num_classes} classes", steps=hp.pretrain_steps,
                                augment=hp.pretrain_augment)
        opt = ctx.track(capturable_adam(self.backbone.parameters(), hp.lr, ctx.device))
        n_support = ways * shots
        self.backbone.train()

        def step(idx: Tensor) -> None:
            ep = make_episode(ctx.source, idx, shots)
            z = self.backbone(torch.cat([ep.support_x, ep.query_x]))
            protos = prototypes(z[:n_support], ep.support_y, ways)
            loss = F.cross_entropy(-squared_distances(z[n_support:], protos), ep.query_y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        run = GraphedStep(step, ctx.device, enabled=hp.cuda_graph)
        for it in ctx.loop(f"protonet {ways}-way training"):
            if it % hp.lr_halve_every == 0:  # halve the learning rate every lr_halve_every episodes
                set_lr(opt, hp.lr * 0.5 ** (it // hp.lr_halve_every))
            idx = sample_indices(ctx.source, ways, shots + hp.train_queries, ctx.generator)[0]
            run(idx)
            ctx.count(1, idx.numel())
        if ctx.device.type == "cuda":
            ctx.note(f"protonet training steps ran as {run.mode}")

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> Iterator[Predictor]:
        self.backbone.eval()
        protos = prototypes(self.backbone(support_x), support_y, ways)
        yield lambda query_x: -squared_distances(self.backbone(query_x), protos)

    def predict_batch(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int) -> Tensor:
        """:meth:`adapt`'s logits for ``E`` episodes at once: one backbone pass (eval mode) over every
        support and query image, prototypes by a batched one-hot product -> ``float[E, Q, ways]``."""
        self.backbone.eval()
        (e, s), q = support_y.shape, query_x.shape[1]
        z = self.backbone(torch.cat([support_x.flatten(0, 1), query_x.flatten(0, 1)]))
        protos = prototypes(z[: e * s].view(e, s, -1), support_y, ways)
        return -squared_distances(z[e * s:].view(e, q, -1), protos)
