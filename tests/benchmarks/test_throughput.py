"""Throughput on Omniglot-shaped tasks (5-way 1-shot, 15 queries, 1x28x28, Conv4), CPU and CUDA.

Run with ``python -m pytest tests/benchmarks --benchmark-only``; the default test run does not collect
it. Each benchmark's ``extra_info`` has tasks/s, images/s, ms per step and peak memory; MAML's vmap and
loop meta-steps carry their ratio, the evaluator and the bare forward passes theirs (printed at the end).
"""

from __future__ import annotations

import pytest
import torch

from mtbench.bench import workloads as bench

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
        not torch.cuda.is_available(), reason="no CUDA GPU visible to PyTorch: CUDA measurements skipped")]),
]
pytestmark = pytest.mark.parametrize("device", DEVICES)


def test_episode_sampling(measure, data, spec, device):
    """One training episode: sample_indices + gather on the device (episodes/s)."""
    measure(lambda: bench.episode_sampling(data(device), spec), "episode sampling")


def test_fixed_episode_set(measure, data, spec, device):
    """Build the fixed evaluation episodes (600, or --bench-episodes) (EpisodeSet) and gather each of them."""
    measure(lambda: bench.fixed_episodes(data(device), spec), "episode sampling")


def test_protonet_training(measure, data, spec, device):
    """One ProtoNet training episode through ProtoNet.fit: sample, embed, loss, backward, Adam."""
    measure(lambda: bench.protonet_train(data(device), spec), "protonet")


@pytest.mark.parametrize("measurement", ["evaluate", "forward"])
def test_protonet_evaluation(measure, data, spec, device, measurement):
    """The evaluator on 600 episodes (or --bench-episodes), and the bare forward passes it needs: their ratio is the evaluator's
    overhead (target ≤ 1.5x on the CPU; reported, not asserted)."""
    build = bench.protonet_evaluate if measurement == "evaluate" else bench.protonet_forward
    measure(lambda: build(data(device), spec), "protonet evaluation")


@pytest.mark.parametrize("meta_batch", bench.META_BATCHES)
@pytest.mark.parametrize("batching", ["bmm", "vmap", "loop"])
def test_maml_meta_step(measure, data, spec, device, batching, meta_batch):
    """Second-order MAML meta-steps: the suite's batched meta-losses (bmm: per-task weights as batched matrix
    products; vmap: torch.func), CUDA graphs on CUDA as `mtbench run` does, or the eager per-task
    autograd.grad(create_graph=True) reference loop; same sampling and Adam step."""
    measure(lambda: bench.maml_meta_step(data(device), meta_batch, batching, spec), f"maml meta-batch {meta_batch}")
