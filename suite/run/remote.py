"""A method that lives in a sandboxed child process (:mod:`mtbench.run.sandbox`), seen from the parent.

:func:`remote_class` turns the child's description of a submitted class into a :class:`Method` subclass
whose instances forward ``__init__``, ``fit``, ``adapt`` (one request per step), their predictors and
``predict_batch`` to the child, so the runner's stages and the evaluator run unchanged in the parent.
What crosses to the child: the fit's split (the method's business, labels included), each episode's
support images and labels and its query images; never the query labels, which stay with the evaluator
that scores the logits coming back. :func:`run_remote` is :func:`mtbench.run.runner.run` for such a
class, with a time limit per stage and the fit time, adaptation times and peak memory measured in the
child (the parent's clock would count the process boundary).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import torch
from mtbench.data import Split
from mtbench.methods import FitContext, Method
from mtbench.results import write_result
from mtbench.run.sandbox import MethodError, Sandbox, SandboxError
from mtbench.run.spec import RunSpec
from mtbench.run.stages import fit, load, record, resolve, score
from torch import Tensor

_TYPES: dict[str, Any] = {"bool": bool, "int": int, "float": float, "str": str}


def build_type(kind: Any) -> Any:
    """The type :func:`mtbench.run.served.describe_type` described."""
    if isinstance(kind, str) and kind in _TYPES:
        return _TYPES[kind]
    if isinstance(kind, dict) and isinstance(kind.get("literal"), list):
        return typing.Literal[tuple(kind["literal"])]  # type: ignore[misc]
    if isinstance(kind, dict) and "optional" in kind:
        return typing.Optional[build_type(kind["optional"])]  # noqa: UP045 - built at run time
    raise SandboxError(f"the method's process described an hparam type as {kind!r}")


def hparams_class(name: str, fields: list[dict[str, Any]]) -> type:
    """A frozen dataclass with the submitted ``Hparams``' fields, types and defaults (its checks run in the child)."""
    specs = []
    for f in fields:
        if "default" in f:
            value = f["default"]
            default = (dataclasses.field(default_factory=lambda v=value: v) if isinstance(value, (list, dict))
                       else dataclasses.field(default=value))
            specs.append((str(f["name"]), build_type(f["type"]), default))
        else:
            specs.append((str(f["name"]), build_type(f["type"])))
    return dataclasses.make_dataclass(f"{name}Hparams", specs, frozen=True, kw_only=True)


def _get(reply: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = reply.get(key)
    if not isinstance(value, kind):
        raise SandboxError(f"the method's process sent a malformed reply ({key!r} is {type(value).__name__})")
    return value


def _split_blob(split: Split) -> dict[str, Any]:
    return {"dataset": split.dataset, "name": split.name, "images": split.images.cpu(), "labels": split.labels.cpu(),
            "class_names": list(split.class_names), "mean": list(split.mean), "std": list(split.std),
            "version": split.version}


class RemotePredictor:
    """A predictor of the child's: calling it sends the query images (once per episode) and returns its logits.

    Attributes:
        measured_seconds: the time the child spent producing it inside ``adapt`` (the evaluator takes it
            instead of its own clock, which would count the process boundary).
    """

    def __init__(self, method: RemoteMethod, index: int, reply: dict[str, Any]) -> None:
        self.method, self.index = method, index
        self.measured_seconds = float(_get(reply, "seconds", (int, float)))
        if isinstance(reply.get("step"), int):
            self.step = reply["step"]

    def __call__(self, query_x: Tensor) -> Tensor:
        m = self.method
        send = None if m._query is query_x else query_x.detach().cpu()
        m._query = query_x
        reply = m._ask("predict", index=self.index, query_x=send)
        return _get(reply, "logits", Tensor).to(m.device)


class RemoteMethod(Method):
    """Base of the classes :func:`remote_class` builds; every call goes to :attr:`box`."""

    box: ClassVar[Sandbox]
    batched: ClassVar[bool] = False

    def __init__(self, hparams: Any, in_shape: tuple[int, int, int], generator: torch.Generator,
                 device: torch.device) -> None:
        super().__init__(hparams, in_shape, generator, device)
        self.box.request("build", hparams=dataclasses.asdict(hparams), in_shape=list(in_shape),
                         generator=generator.get_state(), device=str(device))
        self.episode = -1  # the episode of the latest adapt call (episodes are adapted to in order)
        self.fit_seconds = 0.0
        self.fit_peak: tuple[int, str] | None = None
        self._query: Tensor | None = None
        if self.batched:
            self.predict_batch = self._predict_batch  # type: ignore[assignment]

    def _ask(self, op: str, **fields: Any) -> dict[str, Any]:
        """A request about the current episode; an error names it."""
        try:
            return self.box.request(op, **fields)
        except MethodError as exc:
            raise MethodError(f"{exc} (episode {self.episode} of the {self.box.stage_name} stage)") from None

    def fit(self, ctx: FitContext) -> None:
        source = self.box.put("source.pt", _split_blob(ctx.source))
        unlabelled = self.box.put("unlabelled.pt", _split_blob(ctx.unlabelled)) if ctx.unlabelled else None
        reply = self.box.request("fit", source=source, spec=dataclasses.asdict(ctx.spec), iterations=ctx.iterations,
                                 progress=ctx.progress, unlabelled=unlabelled)
        ctx.count(int(_get(reply, "tasks", int)), int(_get(reply, "images", int)))
        for note in _get(reply, "notes", list):
            ctx.note(str(note))
        ctx.generator.set_state(_get(reply, "generator", Tensor))
        self.fit_seconds = float(_get(reply, "seconds", (int, float)))
        self.fit_peak = _peak(reply)

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> Iterator[RemotePredictor]:
        self.episode += 1
        self._query = None
        self._ask("adapt", support_x=support_x.detach().cpu(), support_y=support_y.detach().cpu(), ways=ways)
        index = 0
        while not (reply := self._ask("next")).get("done"):
            yield RemotePredictor(self, index, reply)
            index += 1

    def _predict_batch(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int) -> Tensor:
        self.episode += support_x.shape[0]
        reply = self._ask("predict_batch", support_x=support_x.detach().cpu(), support_y=support_y.detach().cpu(),
                          query_x=query_x.detach().cpu(), ways=ways)
        logits = _get(reply, "logits", Tensor).to(self.device)
        logits.measured_seconds = float(_get(reply, "seconds", (int, float)))  # type: ignore[attr-defined]
        return logits

    @classmethod
    def variant(cls, record: dict[str, Any]) -> str:
        shown = {k: record[k] for k in ("method", "dataset", "budget") if k in record}
        return str(_get(cls.box.request("variant", record=shown), "variant", str))


def _peak(reply: dict[str, Any]) -> tuple[int, str]:
    memory, kind = _get(reply, "peak_memory", list)
    if not isinstance(memory, int) or kind not in ("cpu_peak_rss", "cuda_max_allocated"):
        raise SandboxError("the method's process sent a malformed peak memory")
    return memory, kind


def remote_class(box: Sandbox, info: dict[str, Any]) -> type[RemoteMethod]:
    """The parent's stand-in for the class the child loaded (``info``: :meth:`mtbench.run.served.Served.op_load`)."""
    attrs = {"box": box, "batched": bool(info["batched"]), "name": info["name"], "__module__": __name__}
    if info["hparams"] is not None:  # else the conformance check says the class has no Hparams dataclass
        attrs["Hparams"] = hparams_class(info["cls"], info["hparams"])
    for key in ("presets", "quick_presets", "budgets", "transductive", "compilable", "version", "description"):
        attrs[key] = info[key]
    return type(str(info["cls"]), (RemoteMethod,), attrs)


#: the stages of a submission that run its code, each under its own time limit
STAGES = ("import", "conformance check", "fit", "evaluation", "record")


def stage_limits(timeout: float | None, budget: str, episodes: int) -> dict[str, float]:
    """Seconds per stage: ``timeout`` for every stage, else defaults that fit the budget (10 s per fit
    iteration and per episode beyond ten minutes; quick: 2 h; paper: 48 h)."""
    if timeout is not None:
        return dict.fromkeys(STAGES, float(timeout))
    fit_s = 600.0 + 10 * int(budget) if str(budget).isdigit() else {"paper": 172800.0}.get(str(budget), 7200.0)
    return {"import": 120.0, "conformance check": 300.0, "fit": fit_s, "evaluation": 600.0 + 10 * episodes,
            "record": 120.0}


@contextmanager
def idle_threads() -> Iterator[None]:
    """One torch thread in the parent while the child computes: the parent's work between requests is
    tiny, and its OpenMP threads spinning after each operation would take cores from the child."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_remote(spec: RunSpec, cls: type[RemoteMethod], limits: dict[str, float]) -> tuple[dict[str, Any], Path | None]:
    """:func:`mtbench.run.runner.run` for a class living in ``cls.box``, each stage within its limit."""
    box = cls.box
    resolved = resolve(spec, method_cls=cls)
    with box.stage("import", limits["import"]):
        box.request("check_hparams", hparams=dataclasses.asdict(resolved.hparams))
    loaded = load(resolved)
    with box.stage("fit", limits["fit"]), idle_threads():
        fitted = fit(resolved, loaded)
        method: RemoteMethod = fitted.method  # type: ignore[assignment]
        peak = method.fit_peak or _peak(box.request("peak"))
    fitted = dataclasses.replace(fitted, seconds=method.fit_seconds, peak_memory=peak)
    where = "bubblewrap" if box.contained else "no bubblewrap: NOT contained"
    fitted.ctx.note(f"run in a sandboxed child process ({where}); fit time, adaptation times and peak memory "
                    f"measured in the child; evaluation.seconds includes passing episodes and logits between processes")
    with box.stage("evaluation", limits["evaluation"]), idle_threads():
        scores = score(resolved, loaded, fitted)
        memory, kind = _peak(box.request("peak"))
    scores["evaluation"].update(peak_memory_bytes=memory, peak_memory_kind=kind)
    with box.stage("record", limits["record"]):
        doc = record(resolved, loaded, fitted, scores)
    path = write_result(doc, Path(spec.out)) if spec.out is not None else None
    return doc, path
