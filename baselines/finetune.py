"""Fine-tuning baselines of Chen, Liu, Kira, Wang & Huang (ICLR 2019), "A Closer Look at Few-shot Classification"."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from mtbench.core.runtime import in_passes
from mtbench.methods.backbones import build_backbone
from mtbench.methods.functional import stacked_copies
from mtbench.methods import METHODS, FitContext, Method, Predictor, at_step, positive, report_steps
from mtbench.methods.training import (PRETRAIN_BUDGETS, PRETRAIN_QUICK_PRESETS, episode_generator, make_head,
                                      minibatches, pretrain_classifier)


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
        augment: pre-train on augmented images as the paper did (random resized crops, brightness, contrast and
            colour jitter, horizontal flips: :mod:`mtbench.methods.augment`). Off by default, as every committed
            row was fitted without it; its rows are labelled ``augmented``.
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
    augment: bool = False
    report_steps: str = "0,5,10,25,50,100"

    def __post_init__(self) -> None:
        for name in ("batch_size", "lr", "ft_lr", "ft_batch", "ft_epochs"):
            positive(name, getattr(self, name))
        report_steps(self.report_steps, 0)


# finetune_backbone: how adapt_batch fine-tunes a chunk's backbone copies, per device type (others: "loop").
# "vmap": stacked and run functionally under vmap, one batched (grouped) convolution per layer for the chunk,
# few launches on a GPU; "loop": each episode's adapt in lockstep, the per-episode computation itself. The CPU
# keeps "loop": there vmap's float32 rounding moved a few query predictions of 20 Omniglot 5w1s episodes (so CPU
# results would no longer be the per-episode ones) and, on a shared 2-core CPU, the chunks were not faster.
BACKBONE_BATCHING = {"cuda": "vmap"}
# the episodes of a chunk when only the head is fine-tuned (Method.chunk_episodes)
CHUNK_EPISODES = 32


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
    budgets = PRETRAIN_BUDGETS
    quick_presets = PRETRAIN_QUICK_PRESETS
    transductive = False
    compilable = True

    # added after rows were committed: a result without it ran as its default does
    later_hparams = {"augment": False}
    not_recipe = frozenset({"report_steps"})

    @classmethod
    def variant(cls, record):
        """Rows of their own: fine-tuning the backbone too (``whole network``), pre-training on augmented
        images (``augmented``)."""
        hp = record["method"]["hparams"]
        parts = (["whole network"] if hp.get("finetune_backbone") else []) + (["augmented"] if hp.get("augment") else [])
        return ", ".join(parts)

    def __init__(self, hparams: FinetuneHparams, in_shape, generator, device) -> None:
        super().__init__(hparams, in_shape, generator, device)
        self._generator = generator
        self.backbone = build_backbone(hparams.backbone, in_shape, generator).to(device)
        # a head on frozen features: the chunk's images are embedded in passes and its 100 steps are batched
        # matrix products, whose cost barely grows with the episodes, so a chunk holds many (on the CPU one pass
        # holds one Omniglot episode); fine-tuning the backbone too is per-image work: one pass's worth
        self.chunk_episodes = None if hparams.finetune_backbone else CHUNK_EPISODES

    def fit(self, ctx: FitContext) -> None:
        hp = self.hparams
        head = make_head(hp.head, self.backbone.out_features, ctx.source.num_classes, ctx.generator)
        pretrain_classifier(self.backbone, head, ctx, hp.batch_size, hp.lr,
                            f"{self.name} pre-training on {ctx.source.num_classes} classes", augment=hp.augment)

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

    def adapt_batch(self, support_x: Tensor, support_y: Tensor, ways: int) -> Iterator[Predictor]:
        """:meth:`adapt` for ``E`` episodes at once (``float[E, S, C, H, W]``, ``int64[E, S]``), yielding at the
        same ``report_steps``; the predictors map ``float[E, Q, C, H, W]`` to ``float[E, Q, ways]``.

        Every episode draws its head and minibatch order from its own :func:`episode_generator`, in
        :meth:`adapt`'s order, so both paths draw the same. The heads (and, with ``finetune_backbone``, the
        backbone's parameters) are stacked ``[E, ...]``: a step is one batched forward of every episode's
        minibatch, the loss the sum of the episodes' mean cross-entropies (so each episode's parameters get
        its own gradient) and one ``torch.optim.SGD`` step, elementwise and thus the per-episode update.
        The backbone runs in eval mode (BatchNorm on running statistics): with ``finetune_backbone`` it is
        called functionally under ``vmap`` with each episode's parameters and its buffers left untouched
        (where :data:`BACKBONE_BATCHING` says ``vmap``; elsewhere the episodes' :meth:`adapt` run in lockstep).
        """
        hp = self.hparams
        (e, s), device = support_y.shape, support_x.device
        if hp.finetune_backbone and BACKBONE_BATCHING.get(device.type, "loop") == "loop":
            yield from self._lockstep(support_x, support_y, ways)
            return
        self.backbone.eval()
        heads, orders = [], []
        for x in support_x:
            g = episode_generator(x, self.name)
            heads.append(make_head(hp.head, self.backbone.out_features, ways, g).to(device))
            orders.append(minibatches(s, hp.ft_batch, hp.ft_epochs, g))
        head = {k: torch.stack([dict(h.named_parameters())[k].detach() for h in heads]).requires_grad_()
                for k, _ in heads[0].named_parameters()}
        scale = getattr(heads[0], "scale", 1.0)  # the cosine head's temperature
        net = {k: v.requires_grad_() for k, v in stacked_copies(dict(self.backbone.named_parameters()), e).items()}
        buffers = dict(self.backbone.named_buffers())
        per_episode = vmap(lambda p, x: functional_call(self.backbone, (p, buffers), (x,)))

        def logits(params: dict[str, Tensor], z: Tensor) -> Tensor:  # float[E, N, D] -> float[E, N, ways]
            if hp.head == "linear":
                return torch.baddbmm(params["bias"].unsqueeze(1), z, params["weight"].mT)
            return scale * F.normalize(z, dim=-1) @ F.normalize(params["weight"], dim=-1).mT

        seen: list[Tensor] = []  # [query_x, its features]: the last queries the frozen backbone embedded

        def frozen_features(query_x: Tensor) -> Tensor:
            # every step's predictor is scored on the same queries and the backbone does not change: embed them once
            if not seen or seen[0] is not query_x:
                seen[:] = [query_x, in_passes(self.backbone, query_x.flatten(0, 1)).unflatten(0, query_x.shape[:2])]
            return seen[1]

        def snapshot() -> Predictor:
            h = {k: v.detach().clone() for k, v in head.items()}
            if hp.finetune_backbone:
                b = {k: v.detach().clone() for k, v in net.items()}
                return lambda query_x: logits(h, per_episode(b, query_x))
            return lambda query_x: logits(h, frozen_features(query_x))

        params = list(head.values()) + (list(net.values()) if hp.finetune_backbone else [])
        opt = torch.optim.SGD(params, lr=hp.ft_lr, momentum=hp.ft_momentum, dampening=hp.ft_dampening,
                              weight_decay=hp.ft_weight_decay)
        features = None
        if not hp.finetune_backbone:
            with torch.no_grad():
                features = in_passes(self.backbone, support_x.flatten(0, 1)).unflatten(0, (e, s))
        rows = torch.arange(e, device=device).unsqueeze(1)
        wanted = report_steps(hp.report_steps, len(orders[0]))
        if 0 in wanted:
            yield at_step(0, snapshot())
        for step in range(1, len(orders[0]) + 1):
            batch = torch.stack([order[step - 1] for order in orders]).to(device)  # [E, b]: each episode's own
            with torch.enable_grad():
                x = per_episode(net, support_x[rows, batch]) if features is None else features[rows, batch]
                out = logits(head, x)
                losses = F.cross_entropy(out.flatten(0, 1), support_y[rows, batch].flatten(), reduction="none")
                opt.zero_grad(set_to_none=True)
                losses.view(e, -1).mean(1).sum().backward()
                opt.step()
            if step in wanted:
                yield at_step(step, snapshot())

    def _lockstep(self, support_x: Tensor, support_y: Tensor, ways: int) -> Iterator[Predictor]:
        """:meth:`adapt` of each episode of a chunk, advanced together: at each scored step a predictor that
        stacks the episodes' logits (``BACKBONE_BATCHING`` ``loop``)."""
        streams = [self.adapt(x, y, ways) for x, y in zip(support_x, support_y)]
        for predictors in zip(*streams):
            yield at_step(predictors[0].step, lambda query_x, ps=predictors: torch.stack(
                [p(q) for p, q in zip(ps, query_x)]))
