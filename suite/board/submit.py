"""``mtbench submit``: an outside method, run only in a sandboxed child process, checked first and throughout.

A submission is a Python file defining a :class:`~mtbench.methods.Method` subclass (``PATH.py`` when
it defines exactly one, else ``PATH.py:Class``). mtbench never imports it: the file's bytes (those
whose sha256 is recorded) are copied into a :class:`~mtbench.run.sandbox.Sandbox`, whose child
process imports it and runs every call of the method, each stage (import, conformance check, fit,
evaluation) within a time limit. The parent sees a stand-in class (:mod:`mtbench.run.remote`) and keeps
the query labels: it scores the logits the child sends back.

First a **conformance check** on the generated ``synthetic`` dataset fits the method for a few
iterations and adapts it on a few episodes of the requested shape, twice from the same seed, and
refuses it when:

* its registry name is missing or taken by a built-in method, or it has no ``Hparams`` dataclass;
* ``adapt`` raises, yields nothing, or a predictor's output is not a floating tensor of shape
  ``[queries, ways]`` (``predict_batch``, when defined: ``[episodes, queries, ways]``);
* any output is NaN or infinite;
* ``adapt``, a predictor or ``predict_batch`` modified the support tensors it was given;
* the two seeded attempts give different outputs (the method draws from the global RNG or from a
  nondeterministic source instead of the generator it is given).

Then the official protocol runs (:func:`mtbench.run.remote.run_remote`), where every evaluated episode's
logits are checked the same way (:func:`mtbench.run.evaluate.check_logits`) and a fit that leaves NaN or
infinite parameters is refused; the result, which records the file's sha256 and marks itself a
submission, is written into ``<leaderboards>/<dataset>/<setting>/`` and validated like every committed
result (:mod:`mtbench.results.integrity`). A refusal writes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from mtbench.core.errors import UserError
from mtbench.core.runtime import select_device
from mtbench.data.protocols import TransferSpec
from mtbench.methods import Method
from mtbench.run.evaluate import OutputError
from mtbench.run.remote import (
    RemoteMethod,
    idle_threads,
    remote_class,
    run_remote,
    stage_limits,
)
from mtbench.run.sandbox import (
    Limits,
    MethodError,
    Sandbox,
    SandboxError,
    physical_memory,
)
from mtbench.run.spec import RunSpec
from torch import Tensor

CHECK_ITERATIONS = 2  # fit iterations of the conformance check
CHECK_EPISODES = 2
CHECK_QUERIES = 3


@dataclass(frozen=True)
class Submission:
    """A submitted file as given (never imported here): its path, the class asked for, its bytes."""

    path: Path
    cls_name: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def record(self, cls_name: str) -> dict[str, Any]:
        """The result's ``submission`` field."""
        return {"source": str(self.path), "class": cls_name, "source_sha256": self.sha256}


def parse(reference: str) -> Submission:
    """``PATH.py[:Class]`` -> the file's path, class name and bytes; a :class:`UserError` when it is no Python file."""
    text, _, name = reference.partition(":") if not reference.endswith(".py") else (reference, "", "")
    path = Path(text)
    if path.suffix != ".py" or not path.is_file():
        raise UserError(f"submission {text!r} is not a Python file; give PATH.py or PATH.py:Class")
    try:
        return Submission(path, name, path.read_bytes())
    except OSError as exc:
        raise UserError(f"cannot read submission {path}: {exc.strerror}; check its permissions") from None


def submit(sub: Submission, spec: RunSpec, overrides: dict[str, str], timeout: float | None,
           memory_gib: float | None, echo: Callable[[str], None]) -> tuple[dict[str, Any], Path | None]:
    """Load ``sub`` in a sandbox, check it, run ``spec``'s protocol with it and write the result (``spec.out``).

    ``timeout``: seconds for each stage (default: :func:`~mtbench.run.remote.stage_limits`); ``memory_gib``:
    the child's address space (default: the machine's memory; none on CUDA). Every refusal is a
    :class:`UserError` saying that nothing was written."""
    from mtbench.data import resolve_cache_dir, resolve_data_root

    e = spec.episodes
    limits = stage_limits(timeout, str(spec.budget), e.trials if isinstance(e, TransferSpec) else e.episodes)
    device = select_device(spec.device)
    threads = torch.get_num_threads()
    memory = None if device.type == "cuda" else int(memory_gib * 2**30) if memory_gib else physical_memory()
    box_limits = Limits(cpu_seconds=int(sum(limits.values()) * threads) + 60, memory_bytes=memory, threads=threads,
                        malloc_tuning=device.type != "cuda")
    refused = f"{sub.path} is refused, nothing was written"
    with Sandbox(box_limits, [resolve_data_root(spec.data_root), resolve_cache_dir()],
                 device.type) as box:
        echo(box.description)
        try:
            with box.stage("import", limits["import"]):
                cls = load_into(box, sub)
            echo(f"checking {cls.__name__} ({cls.name!r}, sha256 {sub.sha256[:12]}) on synthetic data ...")
            with box.stage("conformance check", limits["conformance check"]), idle_threads():
                problems = conformance(cls, getattr(e, "ways", 5), getattr(e, "shots", 1), overrides)
            if problems:
                raise UserError(f"{refused}: {'; '.join(problems)}")
            echo("conformance check passed")
            spec = dataclasses.replace(spec, method=f"{sub.path}:{cls.__name__}", submission=sub.record(cls.__name__))
            return run_remote(spec, cls, limits)
        except (MethodError, SandboxError, OutputError) as exc:
            raise UserError(f"{refused}: {exc}") from None


def load_into(box: Sandbox, sub: Submission) -> type[RemoteMethod]:
    """Import ``sub`` in ``box``'s child; the parent's stand-in for its class."""
    copy = box.put_bytes(f"{sub.sha256[:16]}/{sub.path.name}", sub.data)  # a folder per content: one import each
    info = box.request("load", path=copy, shown=str(sub.path), cls_name=sub.cls_name)
    return remote_class(box, info)


def conformance(cls: type[Method], ways: int, shots: int, overrides: dict[str, str]) -> list[str]:
    """The problems the conformance check finds (empty: the method may run the official protocol)."""
    from mtbench.methods import METHODS

    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        return [f"{cls.__name__} has no `name`: give it a class attribute name = '...'"]
    if not dataclasses.is_dataclass(getattr(cls, "Hparams", None)):
        return [f"{cls.__name__} has no Hparams dataclass: give it one (with no fields if it has no "
                f"hyper-parameters), as the baselines do"]
    builtin = METHODS.get(name) if name in METHODS else None
    if builtin is not None and builtin is not cls:
        return [f"name {name!r} is taken by the built-in method {builtin.__module__}.{builtin.__qualname__}; "
                f"give {cls.__name__} another `name`"]
    try:
        first = _attempt(cls, ways, shots, overrides)
        second = _attempt(cls, ways, shots, overrides)
    except (_Refused, MethodError, SandboxError) as exc:
        return [str(exc)]
    except UserError:
        raise
    except Exception as exc:
        return [f"{name} raised {type(exc).__name__}: {exc}"]
    if len(first) != len(second) or not all(torch.equal(a, b) for a, b in zip(first, second)):
        return [f"{name} is not deterministic: two runs from the same seed gave different outputs; draw random "
                f"numbers from the torch.Generator the method is given, not from the global RNG"]
    return []


class _Refused(Exception):
    pass


def _check_output(what: str, out: Any, shape: tuple[int, ...]) -> Tensor:
    if not isinstance(out, Tensor) or not out.is_floating_point():
        raise _Refused(f"{what} returned {type(out).__name__ if not isinstance(out, Tensor) else out.dtype}; "
                       f"it must return floating-point logits of shape {list(shape)}")
    if tuple(out.shape) != shape:
        raise _Refused(f"{what} returned shape {list(out.shape)}; expected {list(shape)} (queries x ways)")
    if not torch.isfinite(out).all():
        raise _Refused(f"{what} returned NaN or infinite values")
    return out.detach().clone()


def _attempt(cls: type[Method], ways: int, shots: int, overrides: dict[str, str]) -> list[Tensor]:
    """Fit on synthetic data for a few iterations and adapt on a few episodes; every output, in order."""
    from mtbench.data import DATASETS
    from mtbench.data.episodes import EpisodeSet, EpisodeSpec
    from mtbench.methods import FitContext, make_hparams

    data = DATASETS.get("synthetic")(root=Path("."), progress=False)
    source, test = data.load(data.fit_split), data.load(data.eval_split)
    spec = EpisodeSpec(ways=min(ways, test.num_classes), shots=shots, queries=CHECK_QUERIES, episodes=CHECK_EPISODES)
    spec.check(test)
    device = torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    method = cls(make_hparams(cls, "synthetic", overrides, str(CHECK_ITERATIONS)), test.image_shape, generator, device)
    method.fit(FitContext(source, spec, CHECK_ITERATIONS, generator, device, False, None))
    outputs = []
    shape = (spec.ways * spec.queries, spec.ways)
    for ep in EpisodeSet(test, spec):
        sx, sy = ep.support_x.clone(), ep.support_y.clone()
        with torch.no_grad():
            predictors = list(method.adapt(ep.support_x, ep.support_y, spec.ways))
            if not predictors:
                raise _Refused(f"{cls.name}.adapt yielded no predictor")
            for step, predictor in enumerate(predictors):
                outputs.append(_check_output(f"the predictor of adaptation step {step}", predictor(ep.query_x), shape))
        if not (torch.equal(sx, ep.support_x) and torch.equal(sy, ep.support_y)):
            raise _Refused(f"{cls.name}.adapt modified the support tensors it was given; work on a copy")
    if method.predict_batch is not None:
        episodes = EpisodeSet(test, spec)
        support_x, support_y, query_x, _ = episodes.batch(0, len(episodes))
        before = support_x.clone()
        with torch.no_grad():
            out = method.predict_batch(support_x, support_y, query_x, spec.ways)
        outputs.append(_check_output(f"{cls.name}.predict_batch", out, (len(episodes), *shape)))
        if not torch.equal(before, support_x):
            raise _Refused(f"{cls.name}.predict_batch modified the support tensors it was given; work on a copy")
    return outputs
