"""What ``mtbench bench`` does: run the :mod:`mtbench.bench.workloads` measurements, print a table, write the JSON."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mtbench.bench import evaluation
from mtbench.bench import workloads as bench
from mtbench.core.atomic import atomic_write
from mtbench.core.errors import UserError
from mtbench.results import NUMBER, check_fields, provenance
from mtbench.core.runtime import device_name, malloc_setting, select_device

SCHEMA_VERSION = 1
KIND = "mtbench-bench"
Build = Callable[[], bench.Workload]  # builds (and warms up) one measurement

#: What readers of a bench file (``mtbench report``) rely on; :func:`read` checks it.
SCHEMA: dict[str, Any] = {
    "schema_version": int,
    "kind": str,
    "config": {"ways": int, "shots": int, "queries": int, "image_shape": list, "backbone": str, "episodes": int,
               "repeats": int, "data": str},
    "measurements": list,
    "ratios": {"maml_batched_over_loop": dict},
    "machine": {"device_name": str, "torch": str, "git_commit": (str, type(None)), "git_dirty": (bool, type(None)),
                "threads": int, "malloc": {"tuned_in_process": bool, "env": dict}},
    "provenance": {"device": str, "timestamp": str},
}
MEASUREMENT_SCHEMA: dict[str, Any] = {
    "method": str, "measurement": str, "meta_batch": (int, type(None)), "tasks_per_s": NUMBER,
    "images_per_s": NUMBER, "ms_per_step": NUMBER, "peak_memory_bytes": int, "peak_memory_kind": str,
}


@dataclasses.dataclass(frozen=True)
class BenchSpec:
    """The command's options, checked by :func:`check` before anything is measured."""

    device: str = "auto"
    meta_batches: tuple[int, ...] = bench.META_BATCHES
    repeats: int = 3
    episodes: int = bench.SPEC.episodes
    data_root: str | None = None
    out: str | None = None
    command: str | None = None
    #: methods whose evaluator is timed against its work-bound time (``()``: none)
    evaluation: tuple[str, ...] = ()
    #: the throughput measurements (episode sampling, ProtoNet, MAML meta-steps); off: only the extras asked for
    measurements: bool = True
    #: meta-iterations of the MAML learning curves against the peer loop (0: none), scored every ``curve_every``
    maml_curves: int = 0
    curve_every: int = 50
    #: what the curves train and score on (:data:`mtbench.bench.curves.RECIPES`)
    curves_recipe: str = "omniglot-finn"
    #: the seed of the curves' initial weights and training tasks (their test episodes stay those of seed 0)
    curves_fit_seed: int = 0


def check(spec: BenchSpec) -> None:
    """A :class:`UserError` for options that cannot work, before minutes of measuring."""
    if spec.repeats < 1:
        raise UserError(f"--repeats {spec.repeats}: must be a whole number ≥ 1")
    if spec.episodes < 1:
        raise UserError(f"--episodes {spec.episodes}: must be a whole number ≥ 1")
    if spec.maml_curves < 0 or spec.curve_every < 1:
        raise UserError(f"--maml-curves {spec.maml_curves} --curve-every {spec.curve_every}: give meta-iterations "
                        f"≥ 0 and a scoring interval ≥ 1")
    if spec.curves_fit_seed < 0:
        raise UserError(f"--curves-fit-seed {spec.curves_fit_seed}: give a whole number ≥ 0")
    from mtbench.bench.curves import recipe, recipe_dataset
    from mtbench.methods import METHODS

    r = recipe(spec.curves_recipe)
    if spec.maml_curves and r.dataset != "omniglot":  # Omniglot's curves run on the bench's data, real or generated
        recipe_dataset(r, spec.data_root)

    for name in spec.evaluation:
        METHODS.get(name)  # an unknown name is a UserError listing the registered ones
    if spec.out is not None:
        out = Path(spec.out)
        if out.is_dir():
            raise UserError(f"--out {out} is a folder; give a file name for the JSON, e.g. {out / 'bench.json'}")
        if out.suffix.lower() != ".json":
            raise UserError(f"--out {out}: give a .json file name")
        folder = next(p for p in (out.absolute().parent, *out.absolute().parents) if p.exists())
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise UserError(f"--out {out}: cannot write in {folder}; choose another file")


def workloads(data: bench.BenchData, spec: BenchSpec) -> list[Build | tuple[Build, Build]]:
    """The measurements, in order: episode sampling, ProtoNet, then per meta-batch MAML bmm, vmap, the
    reference loop (and, on CUDA, the loop in a CUDA graph), what ``mtbench run`` uses (``auto``) and the
    learn2learn-style peer loop; then, for ``spec.evaluation``, each method's evaluator with its work-bound
    time, MAML scoring its last step only, and the peer's evaluation. A pair, MAML and the peer, is timed
    in turn (:func:`~mtbench.bench.workloads.measure_pair`)."""
    episodes = dataclasses.replace(bench.SPEC, episodes=spec.episodes)
    out: list[Build | tuple[Build, Build]] = [] if not spec.measurements else [
        lambda: bench.episode_sampling(data, episodes),
        lambda: bench.fixed_episodes(data, episodes),
        lambda: bench.protonet_train(data, episodes),
        lambda: bench.protonet_evaluate(data, episodes),
        lambda: bench.protonet_forward(data, episodes),
    ]
    for b in spec.meta_batches if spec.measurements else ():
        for batching in ("bmm", "vmap", "loop"):
            out.append(lambda b=b, batching=batching: bench.maml_meta_step(data, b, batching, episodes))
        if data.fit.device.type == "cuda":  # how much of the gain is the CUDA graph alone
            out.append(lambda b=b: bench.maml_meta_step(data, b, "loop", episodes, graph=True))
    for b in spec.meta_batches if spec.measurements or spec.evaluation else ():  # MAML as run trains, and the peer
        out.append((lambda b=b: bench.maml_meta_step(data, b, "auto", episodes),
                    lambda b=b: evaluation.peer_meta_step(data, b, episodes)))
    if spec.evaluation:
        rate = evaluation.best_rate(data.test.image_shape, data.test.device)
        for name in spec.evaluation:
            out.append(lambda name=name: evaluation.method_evaluate(data, name, rate, episodes))
        if "maml" in spec.evaluation:
            out.append((lambda: evaluation.method_evaluate(data, "maml", rate, episodes, last_only=True),
                        lambda: evaluation.peer_evaluate(data, episodes)))
    return out


def run(spec: BenchSpec, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Measure everything on the chosen device and return the JSON document."""
    check(spec)
    device = select_device(spec.device)
    origin = provenance(device_name(device), device.type, malloc_setting(), spec.command)
    data = bench.load_data(device, spec.data_root)
    log(f"data: {data.description}")
    rows = []
    for build in workloads(data, spec):
        # a pair (MAML and the peer loop) is timed in turn, step for step: see bench.measure_pair
        pair = isinstance(build, tuple)
        for m in bench.measure_pair(build, spec.repeats) if pair else [bench.measure(build, spec.repeats)]:
            row = m.as_dict()
            log(f"  {label(row)}: {row['ms_per_step']:.1f} ms per step")
            rows.append(row)
    doc = document(spec, data.description, data.real, rows, device, origin)
    if spec.maml_curves:
        from mtbench.bench.curves import maml_curves, recipe, recipe_splits

        r = recipe(spec.curves_recipe)
        fit, test = (data.fit, data.test) if r.dataset == "omniglot" else recipe_splits(r, device, spec.data_root)
        log(f"MAML learning curves ({spec.curves_recipe}), {spec.maml_curves} meta-iterations, scored every "
            f"{spec.curve_every} on {spec.episodes} episodes:")
        doc["maml_curves"] = maml_curves(fit, test, spec.maml_curves, spec.curve_every, spec.episodes, log=log, r=r,
                                         name=spec.curves_recipe, fit_seed=spec.curves_fit_seed)
        # the config's "data" is the throughput measurements' (Omniglot's); the curves say what they ran on
        doc["maml_curves"]["data"] = (f"{fit.dataset} {fit.name} ({fit.num_classes} classes) / {test.name} "
                                      f"({test.num_classes} classes)")
    return doc


def document(spec: BenchSpec, data: str, real: bool, rows: list[dict[str, Any]], device: torch.device,
             origin: dict[str, Any]) -> dict[str, Any]:
    """The JSON document of a bench run: ``rows`` from :meth:`bench.Measurement.as_dict`, ``origin`` from
    :func:`mtbench.results.schema.provenance`, ``data`` the description of the images (``real``: Omniglot's)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "config": {"ways": bench.SPEC.ways, "shots": bench.SPEC.shots, "queries": bench.SPEC.queries,
                   "image_shape": list(bench.SHAPE), "backbone": bench.BACKBONE, "episodes": spec.episodes,
                   "meta_batches": list(spec.meta_batches), "repeats": spec.repeats,
                   "data": data, "real_data": real},
        "measurements": rows,
        "ratios": {**bench.ratios(rows, device.type), **evaluation.ratios(rows)},
        "machine": bench.machine_info(device),
        "provenance": origin,
    }


def label(row: dict[str, Any]) -> str:
    """``maml-vmap meta-step (meta-batch 8)``: what a measurement row measured."""
    batch = f" (meta-batch {row['meta_batch']})" if row["meta_batch"] else ""
    return f"{row['method']} {row['measurement']}{batch}"


def render(doc: dict[str, Any]) -> str:
    """The measurements as an aligned text table, then the ratios."""
    head = ("method", "measurement", "meta-batch", "tasks/s", "images/s", "ms/step", "peak memory", "device")
    body = [(r["method"], r["measurement"], str(r["meta_batch"] or "-"), f"{r['tasks_per_s']:.1f}",
             f"{r['images_per_s']:.0f}", f"{r['ms_per_step']:.2f}", memory_text(r), r["device"])
            for r in doc["measurements"]]
    widths = [max(len(row[i]) for row in (head, *body)) for i in range(len(head))]
    numeric = {3, 4, 5}

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    cfg, prov = doc["config"], doc["provenance"]
    lines = [f"device: {prov['device']}, torch {prov['torch']}, commit {commit_text(prov)}",
             f"data: {cfg['data']}", f"tasks: {tasks_text(cfg)}", "", line(head), *(line(r) for r in body), ""]
    ratio = doc["ratios"]
    for variant, by_batch in ratio.get("maml_over_loop", {}).items():
        parts = ", ".join(f"meta-batch {b}: {x:.2f}x" for b, x in by_batch.items())
        used = " (mtbench run's choice here)" if variant == ratio.get("maml_run_default") else ""
        lines.append(f"MAML {variant}{used} / per-task reference loop, tasks/s: {parts}")
    if "protonet_eval_overhead" in ratio:
        lines.append(f"ProtoNet evaluator / bare forward passes, time: {ratio['protonet_eval_overhead']:.2f}x "
                     f"(target ≤ {ratio['protonet_eval_overhead_target']}x on the CPU)")
    one_rate = ratio.get("evaluation_over_one_rate_bound", {})
    evaluated = {r["method"]: r.get("config", {}) for r in doc["measurements"] if r["measurement"] == "evaluate"}
    for name, x in ratio.get("evaluation_over_work_bound", {}).items():
        also = f"; {one_rate[name]:.2f}x with every FLOP at the forward pass's rate" if name in one_rate else ""
        cfg_of = evaluated.get(name, {})
        # files of 065f06f record the capacity alone (their chunks were full), earlier ones neither
        full = cfg_of.get("chunk_episodes_600", cfg_of.get("chunk_capacity", 1))
        if cfg_of.get("chunk_episodes", 1) < full:
            also += (f"; chunks of {cfg_of['chunk_episodes']} episodes here, of {full} in an evaluation of 600: "
                     f"measure with --episodes {full} or more")
        lines.append(f"{name} evaluation / its work-bound time: {x:.2f}x (target ≤ {ratio['work_bound_target']}x{also})")
    if "maml_eval_last_over_peer" in ratio:
        lines.append(f"MAML evaluation scoring the last step / learn2learn-style loop, time: "
                     f"{ratio['maml_eval_last_over_peer']:.2f}x (≤ 1: no slower)")
    lines += curves_text(doc.get("maml_curves"))
    for b, x in ratio.get("maml_train_over_peer", {}).items():
        lines.append(f"MAML as mtbench run trains / learn2learn-style loop, tasks/s, meta-batch {b}: {x:.2f}x (≥ 1: no slower)")
    return "\n".join(lines).rstrip()


def curves_text(curves: dict[str, Any] | None) -> list[str]:
    """The MAML learning curves of a bench run as text lines: accuracy after the last test step by meta-iteration."""
    if not curves:
        return []
    iterations = [p["iteration"] for p in next(iter(curves["curves"].values()))]
    width = max(len(name) for name in curves["curves"])
    lines = [f"MAML learning curves: accuracy after {curves['settings']['test_steps']} test steps on "
             f"{curves['episodes']} episodes, by meta-iteration (seed {curves['seed']})",
             " " * width + "".join(f"{i:>9}" for i in iterations)]
    for name, points in curves["curves"].items():
        lines.append(name.ljust(width) + "".join(f"{p['by_step'][-1]['mean']:>9.4f}" for p in points))
    return lines


def memory_text(row: dict[str, Any]) -> str:
    """A measurement's peak memory and what kind of peak it is: ``941 MiB (process RSS)``."""
    kind = row["peak_memory_kind"]
    return f"{row['peak_memory_bytes'] / 2**20:.0f} MiB " + \
        {"cpu_peak_rss": "(process RSS)", "cuda_max_allocated": "(CUDA)"}.get(kind, f"({kind})")


def commit_text(info: dict[str, Any]) -> str:
    """The git commit in ``info`` (provenance or machine info), short, and whether the checkout was modified."""
    return f"{(info['git_commit'] or 'unknown')[:12]}{' (modified)' if info['git_dirty'] else ''}"


def tasks_text(cfg: dict[str, Any]) -> str:
    """The tasks a bench run measured on, from its ``config``."""
    return (f"{cfg['ways']}-way {cfg['shots']}-shot, {cfg['queries']} queries per class, "
            f"{'x'.join(map(str, cfg['image_shape']))} images, {cfg['backbone']}; median of {cfg['repeats']} "
            f"step(s) after a warm-up")


def read(path: Path) -> dict[str, Any]:
    """Load a bench file and check what readers rely on (:data:`SCHEMA`); a :class:`UserError` naming the file."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read bench file {path}: {exc}") from None
    problems = check_fields(doc, SCHEMA, what="bench file")
    if not problems:
        if doc["kind"] != KIND or doc["schema_version"] != SCHEMA_VERSION:
            problems.append(f"kind {doc['kind']!r}, schema_version {doc['schema_version']}: expected {KIND!r}, "
                            f"{SCHEMA_VERSION}")
        for i, row in enumerate(doc["measurements"]):
            problems += check_fields(row, MEASUREMENT_SCHEMA, f"measurements[{i}]", "bench file")
        if not all(isinstance(v, NUMBER) for v in doc["ratios"]["maml_batched_over_loop"].values()):
            problems.append("ratios.maml_batched_over_loop: expected numbers")
        if not isinstance(doc["ratios"].get("protonet_eval_overhead", 0.0), NUMBER):
            problems.append("ratios.protonet_eval_overhead: expected a number")
    if problems:
        raise UserError(f"{path} is not a valid mtbench bench file: {'; '.join(problems)}")
    return doc


def write(doc: dict[str, Any], path: str | Path) -> Path:
    """Write ``doc`` as JSON to ``path`` atomically (temp file + rename)."""
    try:
        return atomic_write(Path(path), lambda tmp: tmp.write_text(json.dumps(doc, indent=1) + "\n"))
    except OSError as exc:
        raise UserError(f"cannot write --out {path} ({exc.strerror}); choose another file") from None
