"""Fine-tuning baselines of Chen, Liu, Kira, Wang & Huang (ICLR 2019), "A Closer Look at Few-shot Classification"."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtbench.methods.backbones import build_backbone
from mtbench.methods import METHODS, FitContext, Method, Predictor, at_step, positive, report_steps
from mtbench.methods.training import episode_generator, make_head, minibatches, pretrain_classifier


@dataclass(frozen=True)
class FinetuneHparams:
    """Defaults: the paper's settings (pre-training: Adam 1e-3, batch 16; fine-tuning: SGD 0.01,
    momentum 0.9, dampening 0.9, weight decay 1e-3, batch 4, 100 passes over the support set).

    Attributes:
        backbone: registered backbone name.
        head: ``linear`` ("Baseline") or ``cosine`` ("Baseline++").
        batch_size: pre-training minibatch.
        lr: pre-training Adam learning rate.
        ft_lr, ft_momentum, ft_dampening, ft_weight_decay, ft_batch, ft_epochs: fine-tuning SGD.
        finetune_backbone: also update the backbone on the support set (a copy: nothing persists).
        report_steps: fine-tuning steps whose predictor is scored (the last step always is).
    """

    backbone: str = "conv4"
    head: Literal["linear", "cosine"] = "linear"
    batch_size: int = 16
    lr: float = 1e-3
    ft_lr: float = 0.01
    ft_momentum: float = 0.9
    ft_dampening: float = 0.9
    ft_weight_decay: float = 1e-3
    ft_batch: int = 4
    ft_epochs: int = 100
    finetune_backbone: bool = False
    report_steps: str = "0,5,10,25,50,100"

    def __post_init__(self) -> None:
        for name in ("batch_size", "lr", "ft_lr", "ft_batch", "ft_epochs"):
            positive(name, getattr(self, name))
        report_steps(self.report_steps, 0)


@METHODS.register
class Finetune(Method):
    """Baseline / Baseline++ (Chen et al. 2019): pre-train on all base classes, fine-tune a new head.

    ``fit`` trains backbone + classifier with cross-entropy over every class of the source split;
    ``adapt`` trains a fresh ``linear`` or ``cosine`` head on the support features (optionally the
    backbone too, on a copy) and yields predictors along the way: the adaptation trajectory is
    accuracy per fine-tuning step. Random draws in ``adapt`` come from a generator seeded by the
    episode itself. Backbone in eval mode: not transductive.
    """

    name = "finetune"
    description = "Baseline/Baseline++: pre-train on base classes, fine-tune a new head (Chen et al. 2019)"
    Hparams = FinetuneHparams
    budgets = {"default": {"quick": 300, "paper": 30000}, "omniglot": {"quick": 3000, "paper": 30000},
               "miniimagenet": {"quick": 1000, "paper": 30000}}
    # quick: 4x the paper's minibatch, so 3,000 steps see ~40 images per class of Omniglot
    quick_presets = {"omniglot": {"batch_size": 64}, "miniimagenet": {"batch_size": 64}}
    transductive = False
    compilable = True

    @classmethod
    def variant(cls, record):
        """Fine-tuning the backbone too is a row of its own: ``whole network``."""
        return "whole network" if record["method"]["hparams"].get("finetune_backbone") else ""

    def __init__(self, hparams: FinetuneHparams, in_shape, generator, device) -> None:
        super().__init__(hparams, in_shape, generator, device)
        self._generator = generator
        self.backbone = build_backbone(hparams.backbone, in_shape, generator).to(device)

    def fit(self, ctx: FitContext) -> None:
        hp = self.hparams
        head = make_head(hp.head, self.backbone.out_features, ctx.source.num_classes, ctx.generator)
        pretrain_classifier(self.backbone, head, ctx, hp.batch_size, hp.lr,
                            f"{self.name} pre-training on {ctx.source.num_classes} classes")

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> Iterator[Predictor]:
        hp = self.hparams
        g = episode_generator(support_x, self.name)
        backbone = copy.deepcopy(self.backbone) if hp.finetune_backbone else self.backbone
        backbone.eval()
        head = make_head(hp.head, backbone.out_features, ways, g).to(support_x.device)
        params = list(head.parameters()) + (list(backbone.parameters()) if hp.finetune_backbone else [])
        opt = torch.optim.SGD(params, lr=hp.ft_lr, momentum=hp.ft_momentum, dampening=hp.ft_dampening,
                              weight_decay=hp.ft_weight_decay)
        features = None if hp.finetune_backbone else backbone(support_x)
        batches = minibatches(len(support_y), hp.ft_batch, hp.ft_epochs, g)
        wanted = report_steps(hp.report_steps, len(batches))

        def snapshot() -> Predictor:
            model = copy.deepcopy(nn.Sequential(backbone, head) if hp.finetune_backbone else head)
            if hp.finetune_backbone:
                return lambda query_x: model(query_x)
            return lambda query_x: model(self.backbone(query_x))

        if 0 in wanted:
            yield at_step(0, snapshot())
        for step, batch in enumerate(batches, 1):
            batch = batch.to(support_x.device)
            with torch.enable_grad():
                x = backbone(support_x[batch]) if features is None else features[batch]
                loss = F.cross_entropy(head(x), support_y[batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if step in wanted:
                yield at_step(step, snapshot())
