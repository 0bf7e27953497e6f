"""DANN (Ganin, Ustinova, Ajakan, Germain, Larochelle, Laviolette, Marchand & Lempitsky, JMLR 2016,
"Domain-Adversarial Training of Neural Networks"), and its source-only reference."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtbench.methods.backbones import init_parameters
from mtbench.baselines.feature_extract import FeatureExtract, FeatureExtractHparams
from mtbench.methods import METHODS, FitContext, positive
from mtbench.methods.training import make_head, pretrain_classifier


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, coeff: float) -> Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.coeff * grad, None


def reverse_gradient(x: Tensor, coeff: float) -> Tensor:
    """The gradient reversal layer: identity forward, gradient multiplied by ``-coeff`` backward."""
    return _ReverseGrad.apply(x, coeff)


def adaptation_factor(progress: float, gamma: float = 10.0) -> float:
    """Ganin et al.'s schedule ``2 / (1 + exp(-gamma p)) - 1``: 0 at the start of training, -> 1 at the end."""
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


@dataclass(frozen=True)
class DannHparams(FeatureExtractHparams):
    """Pre-training and classifier as :class:`FeatureExtractHparams`, plus the adversarial terms.

    Attributes:
        domain_weight: maximum gradient-reversal coefficient lambda (0 = source-only training).
        gamma: steepness of the lambda schedule ``lambda_p = domain_weight (2 / (1 + exp(-gamma p)) - 1)``.
        domain_hidden: width of the two hidden layers of the domain classifier (1024 in the paper).
    """

    domain_weight: float = 1.0
    gamma: float = 10.0
    domain_hidden: int = 1024

    def __post_init__(self) -> None:
        super().__post_init__()
        positive("domain_hidden", self.domain_hidden)
        if self.domain_weight < 0:
            positive("domain_weight", self.domain_weight)


@METHODS.register
class DANN(FeatureExtract):
    """Domain-adversarial training: labelled source, unlabelled target, a gradient reversal layer.

    ``fit`` trains backbone + label classifier with cross-entropy on labelled source minibatches
    while a domain classifier (two hidden layers of ``domain_hidden`` units, as the paper's) learns
    to tell source from target features; its gradient reaches the backbone reversed and scaled by
    ``lambda_p`` (the paper's schedule), so the features become domain-invariant. Each step sees
    ``batch_size`` source and ``batch_size`` target images, as the paper's half-and-half batches.
    The target images come from the dataset's ``unlabelled_split`` (``ctx.unlabelled``), labels
    withheld; on a dataset without one there is nothing to align and ``fit`` trains on the source
    alone (recorded in the result's ``fit.notes``). Adaptation to an episode is the linear probe of
    :class:`FeatureExtract`.

    Deviation: Adam (as our fine-tune/feature-extract pre-training) instead of the paper's annealed
    SGD, so that DANN and ``source-only`` differ only by the adversarial term.
    """

    name = "dann"
    description = "DANN: domain-adversarial training with gradient reversal on unlabelled target images (Ganin et al. 2016)"
    Hparams = DannHparams
    budgets = {"default": {"quick": 300, "paper": 30000}, "synthetic": {"quick": 150, "paper": 30000},
               "omniglot": {"quick": 3000, "paper": 30000},
               "omniglot-shift": {"quick": 3000, "paper": 30000}}
    quick_presets = {"omniglot": {"batch_size": 64}, "omniglot-shift": {"batch_size": 64}}

    @classmethod
    def variant(cls, record):
        """A DANN fitted where the dataset has no unlabelled target images trained on the source alone; its
        row says so, or it would pass for domain adaptation."""
        fitted_alone = record["budget"]["iterations"] and not record["dataset"].get("unlabelled_split")
        return "no target images: source only" if fitted_alone else ""

    def __init__(self, hparams: DannHparams, in_shape, generator, device) -> None:
        super().__init__(hparams, in_shape, generator, device)
        width = hparams.domain_hidden
        self.discriminator = init_parameters(nn.Sequential(
            nn.Linear(self.backbone.out_features, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
            nn.Linear(width, 1)), generator).to(device)

    def fit(self, ctx: FitContext) -> None:
        hp = self.hparams
        target = ctx.unlabelled if hp.domain_weight > 0 else None
        if hp.domain_weight > 0 and target is None:
            ctx.note(f"{ctx.source.dataset} has no unlabelled target split: trained on the source alone")
        head = make_head("linear", self.backbone.out_features, ctx.source.num_classes, ctx.generator).to(ctx.device)
        if target is None:  # the plain supervised pre-training feature-extract does
            pretrain_classifier(self.backbone, head, ctx, hp.batch_size, hp.lr,
                                f"{self.name}: source-only training on {ctx.source.num_classes} source classes")
            return
        modules = ctx.track(nn.ModuleList([self.backbone, head, self.discriminator]).train())  # the head is the fit's
        opt = ctx.track(torch.optim.Adam(modules.parameters(), lr=hp.lr))
        n, b = ctx.source.images.shape[0], hp.batch_size
        is_target = torch.cat([torch.zeros(b), torch.ones(b)]).to(ctx.device)  # domain labels, made once
        for it in ctx.loop(f"{self.name}: DANN training on {ctx.source.num_classes} source classes"):
            idx = torch.randint(n, (b,), generator=ctx.generator).to(ctx.device)
            t_idx = torch.randint(target.images.shape[0], (b,), generator=ctx.generator).to(ctx.device)
            features = self.backbone(torch.cat([ctx.source.gather(idx), target.gather(t_idx)]))
            coeff = hp.domain_weight * adaptation_factor(it / max(ctx.iterations - 1, 1), hp.gamma)
            domain = self.discriminator(reverse_gradient(features, coeff)).squeeze(1)
            loss = (F.cross_entropy(head(features[:b]), ctx.source.labels[idx])
                    + F.binary_cross_entropy_with_logits(domain, is_target))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ctx.count(1, 2 * b)


@dataclass(frozen=True)
class SourceOnlyHparams(DannHparams):
    """DANN's hparams with ``domain_weight`` 0: the target images are never used."""

    domain_weight: float = 0.0


@METHODS.register
class SourceOnly(DANN):
    """DANN's reference: the same backbone, optimiser and budget trained on the labelled source alone.

    Identical to ``dann`` with ``domain_weight=0``: target images never reach the network (not
    even its BatchNorm statistics), so every gain of ``dann`` over it is the adversarial term's.
    """

    name = "source-only"
    description = "DANN's reference: the same network trained on labelled source images only"
    Hparams = SourceOnlyHparams

    @classmethod
    def variant(cls, record):
        """Training on the source alone is what this method is: nothing to add."""
        return ""
