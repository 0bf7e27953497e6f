"""Training from scratch on the support set alone: the reference line that shows what transfer buys."""

from __future__ import annotations

import copy
from collections.abc import Iterator
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
    """

    name = "scratch"
    description = "no transfer: the same backbone trained from scratch on the support set only"
    Hparams = ScratchHparams
    # xray: 200 labelled images; minibatches of 32 (16 passes in 100 steps) instead of full-batch steps
    presets = {"synthetic": {"steps": 30, "report_steps": "0,10"}, "xray": {"batch_size": 32},
               "xray3": {"batch_size": 32}}
    budgets = {"default": {"quick": 0, "paper": 0}}
    transductive = False
    compilable = True

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> Iterator[Predictor]:
        hp = self.hparams
        g = episode_generator(support_x, self.name)
        backbone = build_backbone(hp.backbone, self.in_shape, g)
        model = nn.Sequential(backbone, linear_head(backbone.out_features, ways, g)).to(support_x.device)
        if self.compiled:  # built per episode, so compiled here rather than by compile_modules
            model.compile()
        opt = torch.optim.Adam(model.parameters(), lr=hp.lr)
        wanted = report_steps(hp.report_steps, hp.steps)

        def snapshot() -> Predictor:
            frozen = copy.deepcopy(model).eval()
            return lambda query_x: frozen(query_x)

        n = len(support_y)
        batches = minibatches(n, hp.batch_size, -(-hp.steps * hp.batch_size // n), g) if 0 < hp.batch_size < n else None
        for step in range(hp.steps + 1):
            if step in wanted:
                yield at_step(step, snapshot())
            if step == hp.steps:
                break
            model.train()
            x, y = support_x, support_y
            if batches is not None:
                pick = batches[step].to(support_x.device)
                x, y = support_x[pick], support_y[pick]
            with torch.enable_grad():
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
