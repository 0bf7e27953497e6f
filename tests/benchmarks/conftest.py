"""The pytest-benchmark suite's fixtures and hooks.

The default ``pytest`` run does not collect this folder (``norecursedirs`` in ``pyproject.toml``); run it with
``python -m pytest tests/benchmarks --benchmark-only``. The workloads are :mod:`mtbench.bench.workloads`'s, the
same that ``mtbench bench`` times.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from mtbench.bench import workloads as bench
from mtbench.core.runtime import peak_memory, reset_peak_memory, tune_malloc

_rows: dict[str, list[dict[str, Any]]] = {}  # device -> Measurement rows measured so far
_fixtures: dict[tuple[str, str, str, int | None], Any] = {}  # (device, method, measurement, meta_batch) -> benchmark
_ratios: dict[str, dict[str, Any]] = {}  # device -> bench.ratios of its rows


def pytest_benchmark_update_machine_info(config, machine_info: dict[str, Any]) -> None:
    """Device name (GPU model, else CPU model), torch version and git commit beside pytest-benchmark's own."""
    info = bench.machine_info()
    machine_info.update({k: info[k] for k in ("device_name", "torch", "git_commit", "git_dirty")})
    machine_info["mtbench"] = info


def pytest_addoption(parser) -> None:
    parser.addoption("--bench-episodes", type=int, default=bench.SPEC.episodes,
                     help="mtbench: fixed evaluation episodes the evaluator and episode-set benchmarks run (default 600)")


@pytest.fixture(scope="session")
def spec(request) -> bench.EpisodeSpec:
    """The episode shape of every benchmark: 5-way 1-shot, 15 queries, ``--bench-episodes`` fixed episodes."""
    return dataclasses.replace(bench.SPEC, episodes=request.config.getoption("--bench-episodes"))


@pytest.fixture(scope="session", autouse=True)
def _allocator() -> None:
    """Keep freed CPU memory in glibc's heap, as ``mtbench run`` and ``mtbench bench`` do by default."""
    tune_malloc()


@pytest.fixture(scope="session")
def data():
    """``data(device)``: the Omniglot-shaped splits on that device (real Omniglot when present), loaded once."""
    cache: dict[str, bench.BenchData] = {}

    def get(device: str) -> bench.BenchData:
        if device not in cache:
            cache[device] = bench.load_data(torch.device(device))
        return cache[device]

    return get


@pytest.fixture
def measure(benchmark):
    """``measure(build, group)``: build (and warm up) a :class:`mtbench.bench.workloads.Workload`, benchmark its step and
    record tasks/s, images/s, ms per step, peak memory and any ratio it completes in ``extra_info``."""

    def run(build, group: str) -> dict[str, Any] | None:
        workload = build()
        device = workload.device
        reset_peak_memory(device)
        benchmark.group = f"{group} ({device.type})"
        try:
            benchmark(workload)
            mem, kind = peak_memory(device)
        finally:
            workload.close()
        if benchmark.stats is None:  # --benchmark-disable: the step ran once, untimed
            return None
        row = bench.Measurement(workload.method, workload.measurement, workload.meta_batch, workload.tasks,
                                workload.images, tuple(benchmark.stats.stats.data), mem, kind, str(device),
                                workload.config).as_dict()
        benchmark.extra_info.update({k: v for k, v in row.items() if k not in ("seconds", "config")})
        benchmark.extra_info["config"] = row["config"]
        _pair(device.type, row, benchmark)
        return row

    return run


def _pair(device: str, row: dict[str, Any], fixture: Any) -> None:
    """Put a ratio on both benchmarks of a pair once both have run: MAML vmap / loop, evaluator / forward."""
    _fixtures[(device, row["method"], row["measurement"], row["meta_batch"])] = fixture
    rows = _rows.setdefault(device, [])
    rows.append(row)
    ratios = _ratios[device] = bench.ratios(rows, device)
    for variant, by_batch in ratios["maml_over_loop"].items():
        for batch, value in by_batch.items():
            if (f := _fixtures.get((device, f"maml-{variant}", "meta-step", int(batch)))) is not None:
                f.extra_info["over_loop"] = value
    if "protonet_eval_overhead" in ratios:
        for measurement in ("evaluate", "forward"):
            if (f := _fixtures.get((device, "protonet", measurement, None))) is not None:
                f.extra_info["eval_overhead"] = ratios["protonet_eval_overhead"]
                f.extra_info["eval_overhead_target"] = ratios["protonet_eval_overhead_target"]


def pytest_terminal_summary(terminalreporter) -> None:
    for device, ratios in _ratios.items():
        for variant, by_batch in ratios["maml_over_loop"].items():
            parts = ", ".join(f"meta-batch {b}: {x:.2f}x" for b, x in sorted(by_batch.items(), key=lambda kv: int(kv[0])))
            terminalreporter.write_line(f"MAML {variant} / per-task reference loop, tasks/s, {device}: {parts}")
        rates = {r["measurement"]: r["tasks_per_s"] for r in _rows.get(device, []) if r["method"] == "protonet"}
        if rates:
            terminalreporter.write_line(f"ProtoNet episodes/s, {device}: " + ", ".join(
                f"{measurement} {rate:,.1f}" for measurement, rate in rates.items()))
        if "protonet_eval_overhead" in ratios:
            terminalreporter.write_line(
                f"ProtoNet evaluator / bare forward passes, time, {device}: {ratios['protonet_eval_overhead']:.2f}x "
                f"(target ≤ {ratios['protonet_eval_overhead_target']}x on the CPU)")
