"""Throughput measurements, shared by ``mtbench bench`` and the pytest-benchmark suite (``tests/benchmarks``).

Each measurement is a :class:`Workload`: one step of real work through the suite's own code (episode
sampling, ProtoNet's ``fit`` and the evaluator, MAML's ``fit``), which returns once the device has
finished, with the number of tasks and images the step covers. ``mtbench bench`` times workloads with
:func:`measure`; the pytest-benchmark suite hands the same callables to its ``benchmark`` fixture, so
the two cannot measure different things. Inputs are Omniglot-shaped: 1x28x28, 5-way 1-shot with 15
queries per class, Conv4; real Omniglot when it is under the data root, else random images of that
shape (the timings do not depend on the pixel values).
"""

from __future__ import annotations

import dataclasses
import statistics
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from mtbench.data import DATASETS, Split, resolve_data_root
from mtbench.data.episodes import EpisodeSet, EpisodeSpec, make_episode, sample_indices
from mtbench.core.errors import UserError
from mtbench.run.evaluate import episode_chunks, evaluate
from mtbench.methods import METHODS, FitContext, make_hparams
from mtbench.results import git_state
from mtbench.core.runtime import device_name, malloc_setting, peak_memory, reset_peak_memory, synchronize, timer
from mtbench.core.seeding import generator

SHAPE = (1, 28, 28)
SPEC = EpisodeSpec(ways=5, shots=1, queries=15, episodes=600, seed=0)
BACKBONE = "conv4"
META_BATCHES = (1, 8, 32)
EVAL_OVERHEAD_TARGET = 1.5  # evaluator time / bare forward passes, on the CPU


# -- data ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchData:
    """Where the images come from: ``fit`` for training steps, ``test`` for evaluation episodes."""

    fit: Split
    test: Split
    description: str
    real: bool


def synthetic_split(name: str, classes: int, per_class: int = 20, seed: int = 0) -> Split:
    """Random uint8 images of Omniglot's shape, ``classes`` x ``per_class``, the same on every machine."""
    g = generator(f"bench/{name}/{seed}")
    images = torch.randint(0, 256, (classes * per_class, *SHAPE), generator=g, dtype=torch.uint8)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return Split("bench-synthetic", name, images, labels, tuple(f"{name}-{i:04d}" for i in range(classes)),
                 mean=(0.5,), std=(0.25,))


def load_data(device: torch.device, data_root: str | None = None) -> BenchData:
    """Omniglot's trainval and test splits when ``<data root>/omniglot`` holds the dataset, else synthetic
    splits of the same image shape; both on ``device``."""
    omniglot = DATASETS.get("omniglot")(root=resolve_data_root(data_root), progress=False)
    if omniglot.is_available():
        fit, test = omniglot.load(omniglot.fit_split), omniglot.load(omniglot.eval_split)
        where = f"omniglot {omniglot.fit_split} ({fit.num_classes} classes) / {omniglot.eval_split} " \
                f"({test.num_classes} classes) splits, from {omniglot.folder}"
        return BenchData(fit.to(device), test.to(device), where, True)
    fit, test = synthetic_split("fit", 256), synthetic_split("test", 64)
    return BenchData(fit.to(device), test.to(device),
                     f"synthetic {'x'.join(map(str, SHAPE))} images, 256 / 64 classes x 20 (no omniglot under "
                     f"{omniglot.root})", False)


# -- workloads -----------------------------------------------------------------------------------
@dataclass
class Workload:
    """One step of work: calling it runs ``step`` and waits for the device.

    Attributes:
        method: what runs (``episodes``, ``protonet``, ``maml-bmm``, ``maml-vmap``, ``maml-loop``, ``maml-loop-graph``).
        measurement: which part (``sample``, ``fixed set``, ``train``, ``evaluate``, ``forward``, ``meta-step``).
        tasks, images: episodes (tasks) and images one step covers.
        meta_batch: tasks per MAML meta-step, else ``None``.
        config: what defines the work (hparams, episodes), for the record.
    """

    method: str
    measurement: str
    step: Callable[[], object]
    tasks: int
    images: int
    device: torch.device
    meta_batch: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    close: Callable[[], None] = lambda: None  # frees what the workload holds (e.g. ends a running fit)

    def __call__(self) -> None:
        self.step()
        synchronize(self.device)


def _warm(w: Workload) -> Workload:
    w()  # first calls allocate and initialise lazily; never timed
    return w


def episode_sampling(data: BenchData, spec: EpisodeSpec = SPEC) -> Workload:
    """Draw one training episode's indices (:func:`sample_indices`) and gather its images on the device."""
    g, device = torch.Generator().manual_seed(0), data.fit.device

    def step() -> object:
        idx = sample_indices(data.fit, spec.ways, spec.per_class, g)[0]
        return make_episode(data.fit, idx.to(device, non_blocking=True), spec.shots)

    return _warm(Workload("episodes", "sample", step, 1, spec.ways * spec.per_class, device,
                          config={"split": data.fit.name}))


def fixed_episodes(data: BenchData, spec: EpisodeSpec = SPEC) -> Workload:
    """Build the fixed evaluation :class:`EpisodeSet` (``spec.episodes`` seeded draws) and gather every episode."""

    def step() -> object:
        return [ep.query_x for ep in EpisodeSet(data.test, spec)]

    return _warm(Workload("episodes", "fixed set", step, spec.episodes, spec.episodes * spec.ways * spec.per_class,
                          data.test.device, config={"split": data.test.name, "episodes": spec.episodes}))


class _SteppedContext(FitContext):
    """A :class:`FitContext` whose ``loop`` runs ``segment`` iterations each time :meth:`advance` asks, in a
    background thread, so that one long ``fit`` (optimizer, CUDA graph and all, as ``mtbench run`` builds
    them once) can be timed segment by segment in its steady state."""

    def __init__(self, *args: Any, segment: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.segment = segment
        self._go, self._done = threading.Semaphore(0), threading.Semaphore(0)
        self._stop, self._error = False, None

    def loop(self, desc: str, steps: int | None = None) -> Iterator[int]:
        if steps is not None:  # a stage of its own (e.g. ProtoNet's pre-training) would never end here
            raise ValueError("a stepped fit times one-stage fits; this one asked for a stage of its own")
        i = 0
        while True:
            self._go.acquire()
            if self._stop:
                return
            for _ in range(self.segment):
                yield i
                i += 1
            synchronize(self.device)
            self._done.release()

    def start(self, fit: Callable[["_SteppedContext"], None]) -> None:
        def body() -> None:
            try:
                fit(self)
            except BaseException as exc:  # noqa: BLE001 - handed to the measuring thread
                self._error = exc
            self._done.release()

        threading.Thread(target=body, name="mtbench-bench-fit", daemon=True).start()

    def advance(self) -> None:
        """Run one segment of the fit and wait for the device to finish it."""
        self._go.release()
        self._done.acquire()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._stop = True
        self._go.release()
        self._done.acquire()


def _fit_workload(method: Any, name: str, data: BenchData, spec: EpisodeSpec, segment: int,
                  meta_batch: int | None = None) -> Workload:
    """``segment`` training iterations per step; the tasks and images they cover are what it counts.

    On CUDA, the steps are segments of one running ``method.fit`` (its optimizer and CUDA graph built
    once, as in a run; the first segment, with the capture, is the warm-up). Elsewhere each step is a
    ``fit`` of ``segment`` iterations in the calling thread: nothing there is built once for many steps,
    and on the CPU a fit running in a side thread measured 20-25 % slower than in the main thread."""
    config = {"hparams": dataclasses.asdict(method.hparams), "steps_per_timed_step": segment}
    kind = "meta-step" if meta_batch else "train"
    generator = torch.Generator().manual_seed(0)
    if data.fit.device.type == "cuda":
        ctx: FitContext = _SteppedContext(data.fit, spec, 0, generator, data.fit.device, progress=False,
                                          segment=segment)
        ctx.start(method.fit)
        w = Workload(name, kind, ctx.advance, 0, 0, data.fit.device, meta_batch, config, close=ctx.close)
    else:
        ctx = FitContext(data.fit, spec, segment, generator, data.fit.device, progress=False)
        w = Workload(name, kind, lambda: method.fit(ctx), 0, 0, data.fit.device, meta_batch, config)
    _warm(w)
    w.tasks, w.images = ctx.tasks, ctx.images  # of one step: the warm-up ran exactly one
    return w


def train_segment(device: torch.device, meta_batch: int | None = None) -> int:
    """Training iterations per timed step: enough on a GPU to time replayed CUDA graphs, one (MAML) or
    a few (ProtoNet) on the CPU."""
    if device.type != "cuda":
        return 1 if meta_batch else 5
    return 500 if meta_batch is None else max(5, 160 // meta_batch)


def protonet(data: BenchData, spec: EpisodeSpec = SPEC) -> Any:
    """An (untrained) ProtoNet with a Conv4 backbone, training on episodes of the evaluation's shape."""
    ProtoNet = METHODS.get("protonet")
    hp = make_hparams(ProtoNet, "omniglot", {"backbone": BACKBONE, "train_ways": str(spec.ways),
                                             "train_queries": str(spec.queries)})
    return ProtoNet(hp, data.fit.image_shape, torch.Generator().manual_seed(0), data.fit.device)


def protonet_train(data: BenchData, spec: EpisodeSpec = SPEC) -> Workload:
    """One ProtoNet training episode: sample, gather, embed, loss, backward, Adam (``ProtoNet.fit``)."""
    return _fit_workload(protonet(data, spec), "protonet", data, spec, train_segment(data.fit.device))


def protonet_evaluate(data: BenchData, spec: EpisodeSpec = SPEC, method: Any = None) -> Workload:
    """The evaluator (:func:`mtbench.run.evaluate.evaluate`) on ``spec.episodes`` fixed episodes."""
    method = method or protonet(data, spec)
    episodes = EpisodeSet(data.test, spec)
    n = spec.episodes
    return _warm(Workload("protonet", "evaluate", lambda: evaluate(method, episodes, progress=False), n,
                          n * spec.ways * spec.per_class, data.test.device, config={"episodes": n}))


def protonet_forward(data: BenchData, spec: EpisodeSpec = SPEC, method: Any = None) -> Workload:
    """The bare work the evaluator needs: gather each chunk of episodes the batched evaluator takes
    (:func:`~mtbench.run.evaluate.episode_chunks`), embed its support and query images in one pass (eval mode,
    no autograd), nothing else; the yardstick of the evaluator's overhead."""
    method = method or protonet(data, spec)
    episodes = EpisodeSet(data.test, spec)
    backbone = method.backbone

    def step() -> None:
        backbone.eval()
        with torch.no_grad():
            for lo, hi in episode_chunks(episodes):
                support_x, _, query_x, _ = episodes.batch(lo, hi)
                backbone(torch.cat([support_x.flatten(0, 1), query_x.flatten(0, 1)]))

    n = spec.episodes
    return _warm(Workload("protonet", "forward", step, n, n * spec.ways * spec.per_class, data.test.device,
                          config={"episodes": n}))


def maml_meta_step(data: BenchData, meta_batch: int, batching: str, spec: EpisodeSpec = SPEC,
                   graph: bool | None = None) -> Workload:
    """Second-order MAML meta-steps of ``meta_batch`` tasks (``MAML.fit``). ``batching``: ``auto`` is what
    ``mtbench run`` does on this device; ``bmm``, ``vmap`` the suite's batched meta-losses; ``loop`` the
    textbook per-task ``autograd.grad`` loop (``MAML.ReferenceLoop``, reached through the registry), eager
    unless ``graph`` (default: CUDA graphs for the suite's own, not for the reference loop). Sampling and
    the Adam step are shared."""
    MAML = METHODS.get("maml")
    if batching not in ("auto", "bmm", "vmap", "loop"):
        raise ValueError(f"batching must be auto, bmm, vmap or loop, got {batching!r}")
    graph = batching != "loop" if graph is None else graph
    hp = make_hparams(MAML, "omniglot", {"backbone": BACKBONE, "meta_batch": str(meta_batch),
                                         "train_queries": str(spec.queries), "cuda_graph": str(graph),
                                         "task_batching": "vmap" if batching == "loop" else batching})
    cls = MAML.ReferenceLoop if batching == "loop" else MAML
    method = cls(hp, data.fit.image_shape, torch.Generator().manual_seed(0), data.fit.device)
    name = f"maml-{batching}" + ("-graph" if batching == "loop" and graph and data.fit.device.type == "cuda" else "")
    return _fit_workload(method, name, data, spec, train_segment(data.fit.device, meta_batch), meta_batch)


# -- timing --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measurement:
    """Timed steps of one workload; rates use the median step time."""

    method: str
    measurement: str
    meta_batch: int | None
    tasks: int
    images: int
    seconds: tuple[float, ...]
    peak_memory_bytes: int
    peak_memory_kind: str
    device: str
    config: dict[str, Any]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def as_dict(self) -> dict[str, Any]:
        m = self.median
        return {"method": self.method, "measurement": self.measurement, "meta_batch": self.meta_batch,
                "tasks_per_step": self.tasks, "images_per_step": self.images, "seconds": list(self.seconds),
                "ms_per_step": m * 1000.0, "steps_per_s": 1.0 / m if m > 0 else 0.0,
                "tasks_per_s": self.tasks / m if m > 0 else 0.0, "images_per_s": self.images / m if m > 0 else 0.0,
                "peak_memory_bytes": self.peak_memory_bytes, "peak_memory_kind": self.peak_memory_kind, "device": self.device, "config": self.config}


def measure(build: Callable[[], Workload], repeats: int) -> Measurement:
    """Build (and warm up) a workload, then time ``repeats`` steps. Peak memory: CUDA's maximum allocated
    over the timed steps, or on the CPU the process's peak RSS so far (it cannot be reset)."""
    return measure_pair((build,), repeats)[0]


def measure_pair(builds: tuple[Callable[[], Workload], ...], repeats: int) -> list[Measurement]:
    """Workloads whose ratio is reported (MAML against the peer loop), built and warmed up together, then timed
    step for step in turn, ``a b b a a b ...``: a load that changes during the run (another job on a shared
    machine) weighs on both alike, where one after the other it could fall on one of them only. Peak memory:
    theirs together. One workload alone is :func:`measure`."""
    works = [build() for build in builds]
    device = works[0].device
    reset_peak_memory(device)
    seconds: list[list[float]] = [[] for _ in works]
    try:
        for r in range(repeats):
            for i in (range(len(works)) if r % 2 == 0 else reversed(range(len(works)))):
                t0 = timer(device)
                works[i]()
                seconds[i].append(timer(device) - t0)
        mem, kind = peak_memory(device)
    finally:
        for w in works:
            w.close()
    return [Measurement(w.method, w.measurement, w.meta_batch, w.tasks, w.images, tuple(t), mem, kind, str(device),
                        w.config) for w, t in zip(works, seconds)]


def ratios(rows: Iterable[dict[str, Any]], device_type: str = "cpu") -> dict[str, Any]:
    """From :meth:`Measurement.as_dict` rows:

    * ``maml_over_loop``: per MAML variant (``bmm``, ``vmap``, ``loop-graph``, ...) and meta-batch, its
      tasks/s over the eager per-task reference loop's (above 1: faster than the loop);
    * ``maml_batched_variant`` and ``maml_batched_over_loop``: the batched variant ``mtbench run`` uses on
      this device type (``task_batching=auto``; where that is the loop, ``bmm``) and its ratios;
    * ``protonet_eval_overhead``: evaluator time over the bare forward passes (target ≤
      :data:`EVAL_OVERHEAD_TARGET` on the CPU).
    """
    by = {(r["method"], r["measurement"], r["meta_batch"]): r for r in rows}
    over: dict[str, dict[str, float]] = {}
    for (method, _, batch), row in by.items():
        loop = by.get(("maml-loop", "meta-step", batch))
        if method.startswith("maml-") and method not in ("maml-loop", "maml-peer") and loop and loop["tasks_per_s"] > 0:
            over.setdefault(method.removeprefix("maml-"), {})[str(batch)] = row["tasks_per_s"] / loop["tasks_per_s"]
    default = METHODS.get("maml").AUTO_BATCHING.get(device_type, "loop")
    variant = default if default != "loop" else "bmm"
    out: dict[str, Any] = {"maml_over_loop": over, "maml_run_default": default, "maml_batched_variant": variant,
                           "maml_batched_over_loop": over.get(variant, {})}
    ev, fw = by.get(("protonet", "evaluate", None)), by.get(("protonet", "forward", None))
    if ev and fw and fw["ms_per_step"] > 0:
        out["protonet_eval_overhead"] = ev["ms_per_step"] / fw["ms_per_step"]
        out["protonet_eval_overhead_target"] = EVAL_OVERHEAD_TARGET
    return out


def machine_info(device: torch.device | None = None) -> dict[str, Any]:
    """Device name (GPU model, else CPU model), torch version and git commit, for a benchmark's record."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    commit, dirty = git_state()
    return {"device_name": device_name(device), "device_type": device.type,
            "cpu": device_name(torch.device("cpu")),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": str(torch.__version__), "git_commit": commit, "git_dirty": dirty,
            "threads": torch.get_num_threads(), "malloc": malloc_setting(),
            # PyTorch's defaults: cuDNN convolutions may use TF32 tensor cores, matrix products may not
            "tf32": {"cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                     "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                     "float32_matmul_precision": torch.get_float32_matmul_precision()}}


def parse_meta_batches(values: Iterable[str]) -> tuple[int, ...]:
    """``("1,8", "32")`` -> ``(1, 8, 32)``; a :class:`UserError` on anything but whole numbers ≥ 1."""
    out: list[int] = []
    for text in values:
        for item in str(text).split(","):
            item = item.strip()
            if not item.isdigit() or int(item) < 1:
                raise UserError(f"--meta-batch {text}: give whole numbers ≥ 1 separated by commas, e.g. 1,8,32")
            if int(item) not in out:
                out.append(int(item))
    if not out:
        raise UserError("--meta-batch: give at least one meta-batch size, e.g. 1,8,32")
    return tuple(out)
