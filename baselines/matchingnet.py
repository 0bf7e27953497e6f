"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, NeurIPS 2016)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtbench.methods.backbones import build_backbone, init_parameters
from mtbench.data.episodes import make_episode, sample_indices
from mtbench.methods import METHODS, FitContext, Method, Predictor, non_negative, positive


@dataclass(frozen=True)
class MatchingNetHparams:
    """Defaults: the paper's Omniglot setting (no full context embeddings on Omniglot).

    Attributes:
        backbone: registered backbone name.
        fce: full context embeddings (bidirectional LSTM over the support set, attention LSTM for
            the queries), which the paper uses on miniImageNet.
        fce_steps: processing steps of the query attention LSTM.
        train_ways: classes per training episode; 0 = the evaluation ways.
        train_queries: query images per class in training.
        lr: Adam learning rate.
        scale: multiplies the cosine similarities before the softmax. The paper writes none (1),
            which leaves the attention almost uniform and trains slowly; Chen et al. (2019)
            reimplement it with 100 after a ReLU. The default, 10, is a moderate temperature in
            that spirit (not tuned on test episodes).
    """

    backbone: str = "conv4"
    fce: bool = False
    fce_steps: int = 5
    train_ways: int = 0
    train_queries: int = 15
    lr: float = 1e-3
    scale: float = 10.0

    def __post_init__(self) -> None:
        positive("lr", self.lr)
        non_negative("train_ways", self.train_ways)
        positive("scale", self.scale)
        positive("train_queries", self.train_queries)
        positive("fce_steps", self.fce_steps)


class FullContextEmbedding(nn.Module):
    """g: support embeddings read in context by a bidirectional LSTM (with a skip connection);
    f: each query embedding refined by ``steps`` attention-LSTM steps over the support set."""

    def __init__(self, dim: int, steps: int) -> None:
        super().__init__()
        self.support_lstm = nn.LSTM(dim, dim, bidirectional=True, batch_first=True)
        self.query_cell = nn.LSTMCell(2 * dim, dim)
        self.steps = steps

    def support(self, z: Tensor) -> Tensor:
        out, _ = self.support_lstm(z.unsqueeze(0))  # [1, S, 2D]
        fwd, bwd = out[0].chunk(2, dim=-1)
        return z + fwd + bwd

    def query(self, f: Tensor, g: Tensor) -> Tensor:
        h, c = torch.zeros_like(f), torch.zeros_like(f)
        for _ in range(self.steps):
            attention = torch.softmax((f + h) @ g.T, dim=-1)  # [Q, S]
            h, c = self.query_cell(torch.cat([f, attention @ g], dim=-1), (h + f, c))
        return f + h

    def support_batch(self, z: Tensor) -> Tensor:
        """:meth:`support` for ``E`` support sets at once: ``float[E, S, D]``, the sets the LSTM's batch."""
        fwd, bwd = self.support_lstm(z)[0].chunk(2, dim=-1)  # [E, S, D] each
        return z + fwd + bwd

    def query_batch(self, f: Tensor, g: Tensor) -> Tensor:
        """:meth:`query` for ``E`` episodes at once: ``f: float[E, Q, D]`` over ``g: float[E, S, D]``, each
        episode attending to its own support set; the cell runs on the ``E * Q`` queries as one batch."""
        h, c = torch.zeros_like(f), torch.zeros_like(f)
        for _ in range(self.steps):
            attention = torch.softmax((f + h) @ g.mT, dim=-1)  # [E, Q, S]
            h, c = self.query_cell(torch.cat([f, attention @ g], dim=-1).flatten(0, 1),
                                   ((h + f).flatten(0, 1), c.flatten(0, 1)))
            h, c = h.unflatten(0, f.shape[:2]), c.unflatten(0, f.shape[:2])
        return f + h


@METHODS.register
class MatchingNet(Method):
    """Matching Networks (Vinyals et al. 2016): attention over the support set with cosine similarity.

    The label distribution of a query is the softmax of its cosine similarities to the support
    embeddings, summed per class; predictors return its logarithm. Optional full context
    embeddings (``fce=true``). Backbone in eval mode at test time: not transductive.
    """

    name = "matchingnet"
    description = "Matching Networks: cosine attention over the support set (Vinyals et al. 2016)"
    Hparams = MatchingNetHparams
    presets = {"synthetic": {"train_ways": 10, "train_queries": 5}}
    # synthetic quick: 150 steps score 0.859 on tests/test_methods.py's episodes (300 scored 0.875 in twice the time)
    budgets = {"default": {"quick": 300, "paper": 20000}, "synthetic": {"quick": 150, "paper": 20000},
               "omniglot": {"quick": 2000, "paper": 20000}}
    transductive = False
    compilable = True

    def __init__(self, hparams: MatchingNetHparams, in_shape, generator, device) -> None:
        super().__init__(hparams, in_shape, generator, device)
        self.backbone = build_backbone(hparams.backbone, in_shape, generator)
        dim = self.backbone.out_features
        self.fce = init_parameters(FullContextEmbedding(dim, hparams.fce_steps), generator) if hparams.fce else None
        self.net = nn.ModuleList([self.backbone] + ([self.fce] if self.fce else [])).to(device)

    def log_probs(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        """``log P(y | query, support)``: ``float[Q, ways]`` from support/query embeddings."""
        if self.fce is not None:
            support = self.fce.support(support)
            query = self.fce.query(query, support)
        cosine = F.normalize(query, dim=-1) @ F.normalize(support, dim=-1).T  # [Q, S]
        probs = torch.softmax(self.hparams.scale * cosine, dim=-1) @ F.one_hot(support_y, ways).to(cosine.dtype)
        return probs.clamp_min(1e-8).log()

    def fit(self, ctx: FitContext) -> None:
        hp = self.hparams
        ways = min(hp.train_ways or ctx.spec.ways, ctx.source.num_classes)
        shots = ctx.spec.shots
        opt = ctx.track(torch.optim.Adam(self.net.parameters(), lr=hp.lr))
        self.net.train()
        for _ in ctx.loop(f"matchingnet {ways}-way training"):
            idx = sample_indices(ctx.source, ways, shots + hp.train_queries, ctx.generator)[0]
            ep = make_episode(ctx.source, idx.to(ctx.device, non_blocking=True), shots)
            z = self.backbone(torch.cat([ep.support_x, ep.query_x]))
            n = len(ep.support_y)
            loss = F.nll_loss(self.log_probs(z[:n], ep.support_y, z[n:], ways), ep.query_y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ctx.count(1, idx.numel())

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> Iterator[Predictor]:
        self.net.eval()
        support = self.backbone(support_x)
        yield lambda query_x: self.log_probs(support, support_y, self.backbone(query_x), ways)

    def predict_batch(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int) -> Tensor:
        """:meth:`adapt`'s log-probabilities for ``E`` episodes at once: one backbone pass (eval mode) over the
        chunk's images, the full context embeddings batched over the episodes, the attention by batched
        matrix products -> ``float[E, Q, ways]``."""
        self.net.eval()
        (e, s), q = support_y.shape, query_x.shape[1]
        z = self.backbone(torch.cat([support_x.flatten(0, 1), query_x.flatten(0, 1)]))
        support, query = z[: e * s].unflatten(0, (e, s)), z[e * s:].unflatten(0, (e, q))
        if self.fce is not None:
            support = self.fce.support_batch(support)
            query = self.fce.query_batch(query, support)
        cosine = F.normalize(query, dim=-1) @ F.normalize(support, dim=-1).mT  # [E, Q, S]
        probs = torch.softmax(self.hparams.scale * cosine, dim=-1) @ F.one_hot(support_y, ways).to(cosine.dtype)
        return probs.clamp_min(1e-8).log()
