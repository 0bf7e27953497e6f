"""Feature extraction: a frozen pre-trained backbone and a classifier fitted on the support features."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from mtbench.core.runtime import in_passes
from mtbench.methods.backbones import build_backbone
from mtbench.methods import METHODS, FitContext, Method, Predictor, positive
from mtbench.methods.logreg import fit_logistic_regression
from mtbench.methods.training import PRETRAIN_BUDGETS, PRETRAIN_QUICK_PRESETS, make_head, pretrain_classifier


@dataclass(frozen=True)
class FeatureExtractHparams:
    """Pre-training as :class:`~mtbench.baselines.finetune.Finetune` (Adam 1e-3, batch 16), then:

    Attributes:
        backbone: registered backbone name.
        classifier: ``logreg`` (multinomial logistic regression on L2-normalised features, fitted
            exactly by Newton's method: :mod:`mtbench.methods.logreg`) or ``centroid`` (nearest class
            mean by cosine similarity).
        l2: weight decay of the logistic regression.
        newton_steps: most Newton steps of the logistic regression (it stops on its own at the optimum,
            in about ten).
        batch_size, lr: pre-training minibatch and Adam learning rate.
    """

    backbone: str = "conv4"
    classifier: Literal["logreg", "centroid"] = "logreg"
    l2: float = 1e-3
    newton_steps: int = 50
    batch_size: int = 16
    lr: float = 1e-3

    def __post_init__(self) -> None:
        positive("newton_steps", self.newton_steps)
        positive("batch_size", self.batch_size)
        positive("lr", self.lr)


@METHODS.register
class FeatureExtract(Method):
    """Frozen pre-trained features + logistic regression or nearest centroid (the "linear probe").

    The backbone is pre-trained with cross-entropy on all source classes and never changes after;
    adaptation fits only a closed-form-like classifier on the support features, so it is a single
    step. Not transductive. ``predict_batch`` scores a chunk of episodes at once.
    """

    name = "feature-extract"
    description = "frozen pre-trained backbone + logistic regression or nearest centroid on support features"
    Hparams = FeatureExtractHparams
    budgets = PRETRAIN_BUDGETS
    quick_presets = PRETRAIN_QUICK_PRESETS
    transductive = False
    compilable = True
    # 2: the logistic regression solved exactly by batched Newton steps instead of torch.optim.LBFGS run to its
    # default tolerances (weights agree to the L-BFGS tolerance), so a chunk of episodes is fitted at once
    version = "2"
    # the episodes of a chunk (Method.chunk_episodes): the backbone embeds them in passes of one forward pass's
    # images (the same features bit for bit as one pass a chunk), then one Newton solve fits all their regressions.
    # At a forward pass's images a chunk held one Omniglot 5w1s episode on the CPU, and the solver's small
    # operations, run for each episode, took about as long as the backbone (1.5 of 3.3 s, 42 episodes, one thread)
    chunk_episodes = 32

    def __init__(self, hparams: FeatureExtractHparams, in_shape, generator, device) -> None:
        super().__init__(hparams, in_shape, generator, device)
        self.backbone = build_backbone(hparams.backbone, in_shape, generator).to(device)

    def fit(self, ctx: FitContext) -> None:
        head = make_head("linear", self.backbone.out_features, ctx.source.num_classes, ctx.generator)
        pretrain_classifier(self.backbone, head, ctx, self.hparams.batch_size, self.hparams.lr,
                            f"{self.name} pre-training on {ctx.source.num_classes} classes")

    def features(self, x: Tensor) -> Tensor:
        return F.normalize(in_passes(self.backbone, x), dim=-1)

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> Iterator[Predictor]:
        self.backbone.eval()
        z = self.features(support_x)
        if self.hparams.classifier == "centroid":
            centroids = F.normalize(torch.stack([z[support_y == c].mean(0) for c in range(ways)]), dim=-1)
            yield lambda query_x: self.features(query_x) @ centroids.T
            return
        w, b = fit_logistic_regression(z[None], support_y[None], ways, self.hparams.l2, self.hparams.newton_steps)
        yield lambda query_x: self.features(query_x) @ w[0].T + b[0]

    def predict_batch(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int) -> Tensor:
        """:meth:`adapt`'s logits for ``E`` episodes at once: one backbone pass (eval mode) over every support
        and query image of the chunk -> ``float[E, Q, ways]``. ``centroid``: class means by a batched one-hot
        product. ``logreg``: every episode's regression in one batched Newton solve, each episode stepping and
        stopping on its own, so it gets the weights it gets alone."""
        self.backbone.eval()
        (e, s), q = support_y.shape, query_x.shape[1]
        z = self.features(torch.cat([support_x.flatten(0, 1), query_x.flatten(0, 1)]))
        support, query = z[: e * s].unflatten(0, (e, s)), z[e * s:].unflatten(0, (e, q))
        if self.hparams.classifier == "centroid":
            one_hot = F.one_hot(support_y, ways).to(z.dtype)  # [E, S, ways]
            means = (one_hot.mT @ support) / one_hot.sum(1).unsqueeze(-1)
            return query @ F.normalize(means, dim=-1).mT
        w, b = fit_logistic_regression(support, support_y, ways, self.hparams.l2, self.hparams.newton_steps)
        return query @ w.mT + b.unsqueeze(1)
