"""Evaluation measurements of ``mtbench bench``: each method's evaluator against the work it must do, and
MAML against a learn2learn-style per-episode loop (:mod:`mtbench.bench.peer`).

**Work-bound time.** The floating-point operations an evaluation needs are counted by running it under
``torch.utils.flop_counter.FlopCounterMode`` on a few episodes (forward passes, and backward passes for the
methods that adapt by gradient steps, at every scored step; the count is the same on the batched and the
per-episode paths). The same Conv4 backbone is timed on that device at several batch sizes, forward alone
(no autograd) and forward + backward (a training pass), and each kind's best rate (FLOP/s) is the fastest the
hardware runs that pass of this network. The work-bound time of an evaluation is what its passes would take,
each kind at its own best batch size: its training passes' FLOPs (its convolution-backward FLOPs, over the
share they have of the backbone's own training pass) at the training pass's best rate, the rest at the forward
pass's. A method's evaluation time over it (``evaluation_over_work_bound``) says how far the evaluator is from
the work it must do. Files before 2026-12-03 timed every FLOP at the faster of the two rates (the forward
pass's, on the CPU), which made the methods that adapt by gradient steps look further from their work than
they were; ``evaluation_over_one_rate_bound`` keeps that ratio beside the new one.

The methods are evaluated untrained (their weights as built from a fixed seed): the work, not the
accuracy, is measured.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from mtbench.bench import peer
from mtbench.bench.workloads import BACKBONE, SPEC, BenchData, Workload, _warm
from mtbench.data.episodes import EpisodeSet, EpisodeSpec, sample_indices
from mtbench.methods import METHODS, make_hparams
from mtbench.methods.backbones import build_backbone
from mtbench.core.runtime import synchronize, timer
from mtbench.run.evaluate import chunk_bounds, chunk_capacity, evaluate

#: batch sizes at which the backbone's best rate is looked for, per device type
RATE_BATCHES = {"cpu": (16, 64, 256), "cuda": (256, 1024, 4096)}
#: target of the issue: an evaluation within 1.5x its work-bound time
WORK_BOUND_TARGET = 1.5
#: MAML's evaluation in Finn et al.'s Omniglot setting, which the peer loop runs too
MAML_EVAL_STEPS, MAML_INNER_LR = 3, 0.4


def flops(fn: Any) -> int:
    """Floating-point operations ``fn()`` runs (multiply-adds count 2), by ``FlopCounterMode``."""
    return flops_and_backward(fn)[0]


def flops_and_backward(fn: Any) -> tuple[int, int]:
    """:func:`flops` of ``fn()``, and those of its convolution backward passes (which only training passes run)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    per_op = counter.get_flop_counts().get("Global", {})
    backward = sum(int(n) for op, n in per_op.items() if "convolution_backward" in str(op))
    return int(counter.get_total_flops()), backward


def best_rate(image_shape: tuple[int, ...], device: torch.device, repeats: int = 3) -> dict[str, Any]:
    """The Conv4 backbone's fastest FLOP rate on ``device``, over the batch sizes of :data:`RATE_BATCHES`:
    ``{"flops_per_s", "batch", "pass"}`` of the faster kind, and under ``"forward"`` and ``"forward+backward"``
    each kind's own (``flops_per_s``, ``batch``; the training pass also its ``backward_share``: its
    convolution-backward FLOPs over all of its FLOPs)."""
    net = build_backbone(BACKBONE, tuple(image_shape), torch.Generator().manual_seed(0)).to(device)
    best: dict[str, Any] = {"flops_per_s": 0.0, "batch": None, "pass": None}
    kinds: dict[str, dict[str, Any]] = {}
    g = torch.Generator().manual_seed(1)
    for batch in RATE_BATCHES.get(device.type, RATE_BATCHES["cpu"]):
        x = torch.randn((batch, *image_shape), generator=g).to(device)
        for kind in ("forward", "forward+backward"):
            def once(x: torch.Tensor = x, kind: str = kind) -> None:
                if kind == "forward":
                    net.eval()
                    with torch.no_grad():
                        net(x)
                else:
                    net.train()
                    net(x).square().mean().backward()
            work, backward = flops_and_backward(once)
            once()  # warm-up
            seconds = []
            for _ in range(repeats):
                t0 = timer(device)
                once()
                synchronize(device)
                seconds.append(timer(device) - t0)
            rate = work / min(seconds)
            if rate > best["flops_per_s"]:
                best = {"flops_per_s": rate, "batch": batch, "pass": kind}
            if rate > kinds.get(kind, {}).get("flops_per_s", 0.0):
                kinds[kind] = {"flops_per_s": rate, "batch": batch}
                if kind == "forward+backward":
                    kinds[kind]["backward_share"] = backward / work
    return {**best, **kinds}


def work_bound_seconds(total: float, backward: float, rate: dict[str, Any]) -> float:
    """The seconds of ``total`` FLOPs, of which ``backward`` are convolution backward passes, each pass at its
    kind's best rate (:func:`best_rate`): the training passes' FLOPs (``backward`` over the backbone's training
    pass's ``backward_share``) at the training pass's rate, the rest at the forward pass's."""
    train = rate["forward+backward"]
    training = min(total, backward / train["backward_share"]) if backward else 0.0
    return (total - training) / rate["forward"]["flops_per_s"] + training / train["flops_per_s"]


def untrained(name: str, data: BenchData, ways: int, overrides: dict[str, str] | None = None) -> Any:
    """Method ``name`` as ``mtbench run`` builds it for Omniglot (its presets), weights from seed 0, ready to adapt."""
    cls = METHODS.get(name)
    method = cls(make_hparams(cls, "omniglot", overrides or {}, "quick"), data.test.image_shape,
                 torch.Generator().manual_seed(0), data.test.device)
    method.prepare(ways)
    return method


def method_evaluate(data: BenchData, name: str, rate: dict[str, Any], spec: EpisodeSpec = SPEC,
                    last_only: bool = False) -> Workload:
    """The evaluator on ``spec.episodes`` episodes for method ``name``, with its FLOPs per episode (counted on
    two episodes) and its work-bound time at ``rate`` (:func:`best_rate`) in the config."""
    method = untrained(name, data, spec.ways)
    episodes = EpisodeSet(data.test, spec)
    sample = EpisodeSet(data.test, EpisodeSpec(spec.ways, spec.shots, spec.queries, 2, seed=spec.seed))
    total, backward = flops_and_backward(lambda: evaluate(method, sample, progress=False, last_only=last_only))
    per_episode, backward_per_episode = total / 2, backward / 2
    work_bound = work_bound_seconds(per_episode, backward_per_episode, rate) * spec.episodes
    one_rate = per_episode * spec.episodes / rate["flops_per_s"]
    measurement = "evaluate (last step)" if last_only else "evaluate"
    chunks = chunk_sizes(method, episodes)
    return _warm(Workload(name, measurement,
                          lambda: evaluate(method, episodes, progress=False, last_only=last_only), spec.episodes,
                          spec.episodes * spec.ways * spec.per_class, data.test.device,
                          config={"episodes": spec.episodes, "flops_per_episode": per_episode,
                                  "backward_flops_per_episode": backward_per_episode,
                                  "work_bound_ms": work_bound * 1000.0, "one_rate_bound_ms": one_rate * 1000.0,
                                  "best_rate": rate, **chunks,
                                  "hparams": dataclasses.asdict(method.hparams)}))


def chunk_sizes(method: Any, episodes: EpisodeSet, standard: int = 600) -> dict[str, int]:
    """How many episodes the evaluator adapts at once for ``method`` on ``episodes``: its largest chunk there
    (``chunk_episodes``), the most a chunk may hold (``chunk_capacity``) and the largest chunk of an evaluation of
    ``standard`` episodes (``chunk_episodes_600``), all 1 on the per-episode path. A measurement whose chunks are
    smaller than the last spreads a chunk's fixed cost over fewer episodes than a 600-episode evaluation does."""
    if method.adapt_batch is None and method.predict_batch is None:
        return {"chunk_episodes": 1, "chunk_capacity": 1, "chunk_episodes_600": 1}
    capacity = chunk_capacity(episodes, None, getattr(method, "chunk_episodes", None))

    def largest(n: int) -> int:
        return max(b - a for a, b in chunk_bounds(n, capacity))

    return {"chunk_episodes": largest(len(episodes)), "chunk_capacity": capacity,
            "chunk_episodes_600": largest(standard)}


def peer_evaluate(data: BenchData, spec: EpisodeSpec = SPEC) -> Workload:
    """The learn2learn-style loop's evaluation: per episode, 3 SGD steps (lr 0.4) on a clone, the last scored."""
    model = peer.conv4(data.test.image_shape, spec.ways, torch.Generator().manual_seed(0)).to(data.test.device)
    episodes = EpisodeSet(data.test, spec)
    return _warm(Workload("maml-peer", "evaluate (last step)",
                          lambda: peer.evaluate_episodes(model, episodes, MAML_EVAL_STEPS, MAML_INNER_LR),
                          spec.episodes, spec.episodes * spec.ways * spec.per_class, data.test.device,
                          config={"episodes": spec.episodes, "steps": MAML_EVAL_STEPS, "inner_lr": MAML_INNER_LR}))


def peer_meta_step(data: BenchData, meta_batch: int, spec: EpisodeSpec = SPEC) -> Workload:
    """One second-order meta-step of the learn2learn-style loop on ``meta_batch`` tasks of ``spec``'s shape (the
    tasks ``maml_meta_step`` trains on: ``spec.queries`` queries per class), Adam 1e-3, one inner step."""
    fit, g = data.fit, torch.Generator().manual_seed(0)
    model = peer.conv4(fit.image_shape, spec.ways, g).to(fit.device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    labels = torch.arange(spec.ways, device=fit.device)
    sy = labels.repeat_interleave(spec.shots).expand(meta_batch, -1)
    qy = labels.repeat_interleave(spec.queries).expand(meta_batch, -1)

    def step() -> None:
        x = fit.gather(sample_indices(fit, spec.ways, spec.per_class, g, n=meta_batch).to(fit.device))
        peer.meta_step(model, opt, x[:, :, : spec.shots].flatten(1, 2), sy, x[:, :, spec.shots:].flatten(1, 2), qy,
                       MAML_INNER_LR, 1)

    return _warm(Workload("maml-peer", "meta-step", step, meta_batch, meta_batch * spec.ways * spec.per_class,
                          fit.device, meta_batch, config={"inner_lr": MAML_INNER_LR, "inner_steps": 1,
                                                          "meta_lr": 1e-3}))


def ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """From the measurement rows: every method's evaluation over its work-bound time
    (``evaluation_over_work_bound``, target :data:`WORK_BOUND_TARGET`), and MAML against the peer loop:
    ``maml_eval_last_over_peer`` (time, below 1: faster than the peer) and ``maml_train_over_peer`` (tasks/s per
    meta-batch, above 1: faster)."""
    out: dict[str, Any] = {}
    bound = {r["method"]: r["ms_per_step"] / r["config"]["work_bound_ms"] for r in rows
             if r["measurement"] == "evaluate" and r.get("config", {}).get("work_bound_ms")}
    if bound:
        out["evaluation_over_work_bound"] = bound
        out["work_bound_target"] = WORK_BOUND_TARGET
    one_rate = {r["method"]: r["ms_per_step"] / r["config"]["one_rate_bound_ms"] for r in rows
                if r["measurement"] == "evaluate" and r.get("config", {}).get("one_rate_bound_ms")}
    if one_rate:  # the definition of the files before 2026-12-03: every FLOP at the faster pass's rate
        out["evaluation_over_one_rate_bound"] = one_rate
    by = {(r["method"], r["measurement"], r["meta_batch"]): r for r in rows}
    ours, theirs = by.get(("maml", "evaluate (last step)", None)), by.get(("maml-peer", "evaluate (last step)", None))
    if ours and theirs and theirs["ms_per_step"] > 0:
        out["maml_eval_last_over_peer"] = ours["ms_per_step"] / theirs["ms_per_step"]
    train = {}
    for (method, measurement, batch), row in by.items():
        p = by.get(("maml-peer", "meta-step", batch))
        if method == "maml-auto" and measurement == "meta-step" and p and p["tasks_per_s"] > 0:
            train[str(batch)] = row["tasks_per_s"] / p["tasks_per_s"]
    if train:
        out["maml_train_over_peer"] = train
    return out
