"""What the sandboxed child (:mod:`mtbench.run.worker`) does for each request: the real method lives here.

Each ``op_*`` takes a request's fields and returns the reply's. An exception is sent back as one line
naming where the method's code raised (:meth:`Served.raised`). The child checks what only it can see:
that ``adapt``, a predictor or ``predict_batch`` did not modify the support tensors, and that ``fit``
left no NaN or infinite parameter behind.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from mtbench.core.errors import UserError
from mtbench.core.registry import import_file
from mtbench.core.runtime import peak_memory, reset_peak_memory, timer
from mtbench.data import Split
from mtbench.data.episodes import EpisodeSpec
from mtbench.methods import FitContext, Method
from torch import Tensor

_PLAIN = {bool: "bool", int: "int", float: "float", str: "str"}


def one_line(text: str, limit: int = 400) -> str:
    """``text`` on one line, at most ``limit`` characters (an error message for the parent)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def describe_type(kind: Any) -> Any:
    """An hparam's type as plain data (:func:`mtbench.run.remote.build_type` reads it back), or ``None``."""
    if kind in _PLAIN:
        return _PLAIN[kind]
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Literal and all(type(a) in _PLAIN for a in args):
        return {"literal": list(args)}
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = describe_type(rest[0]) if len(rest) == 1 and len(args) == 2 else None
        return {"optional": inner} if inner is not None else None
    return None


def _plain(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        raise UserError(f"{what} must be plain data (numbers, strings, booleans, lists, dicts)") from None


def hparam_fields(cls: type[Method]) -> list[dict[str, Any]]:
    """The fields of ``cls.Hparams``: name, type (:func:`describe_type`) and default (absent: none)."""
    hints = typing.get_type_hints(cls.Hparams)
    fields = []
    for f in dataclasses.fields(cls.Hparams):
        kind = describe_type(hints.get(f.name))
        if kind is None:
            raise UserError(f"hparam {f.name} of {cls.__name__} has type {hints.get(f.name)}; a submission's hparams "
                            f"are bool, int, float, str, a Literal of these or Optional of one")
        field: dict[str, Any] = {"name": f.name, "type": kind}
        if f.default is not dataclasses.MISSING:
            field["default"] = _plain(f.default, f"the default of hparam {f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            field["default"] = _plain(f.default_factory(), f"the default of hparam {f.name}")
        fields.append(field)
    return fields


def _split(blob: dict[str, Any], device: torch.device) -> Split:
    return Split(blob["dataset"], blob["name"], blob["images"], blob["labels"], tuple(blob["class_names"]),
                 tuple(blob["mean"]), tuple(blob["std"]), blob["version"]).to(device)


class Served:
    """The child's state: the imported class, the method, the current adaptation and its predictors."""

    def __init__(self) -> None:
        self.cls: type[Method] | None = None
        self.method: Method | None = None
        self.generator = torch.Generator()
        self.device = torch.device("cpu")
        self.stream: Iterator[Any] | None = None
        self.predictors: list[Any] = []
        self.support: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
        self.query: Tensor | None = None
        self.where = "at import"

    @property
    def name(self) -> str:
        return str(getattr(self.cls, "name", None) or getattr(self.cls, "__name__", "the submission"))

    def raised(self, exc: BaseException) -> str:
        return one_line(f"{self.name} raised {type(exc).__name__}: {exc} {self.where}")

    # -- the class --------------------------------------------------------------------------------
    def op_load(self, path: str, shown: str, cls_name: str) -> dict[str, Any]:
        self.where = "at import"
        try:
            module = import_file(Path(path))
        except Exception as exc:  # noqa: BLE001 - the user's file failed to import: say so in one line
            raise UserError(f"importing {shown} failed: {type(exc).__name__}: {exc}") from None
        own = {k: v for k, v in vars(module).items() if isinstance(v, type) and issubclass(v, Method)
               and v is not Method and v.__module__ == module.__name__}
        if cls_name:
            if cls_name not in own:
                raise UserError(f"{shown} defines no Method subclass {cls_name!r}; it defines: "
                                f"{', '.join(sorted(own)) or 'none'}")
            cls = own[cls_name]
        elif len(own) != 1:
            raise UserError(f"{shown} defines {len(own)} Method subclasses ({', '.join(sorted(own)) or 'none'}); "
                            f"name one as {shown}:Class")
        else:
            [cls] = own.values()
        self.cls = cls
        name = getattr(cls, "name", None)
        info: dict[str, Any] = {"cls": cls.__name__, "name": name if isinstance(name, str) and name else None,
                                "hparams": None, "batched": cls.predict_batch is not None}
        if dataclasses.is_dataclass(getattr(cls, "Hparams", None)):
            info["hparams"] = hparam_fields(cls)
        for attr in ("presets", "quick_presets", "budgets"):
            info[attr] = _plain(getattr(cls, attr), f"{cls.__name__}.{attr}")
        for attr, kind in (("transductive", bool), ("compilable", bool), ("version", str), ("description", str)):
            value = getattr(cls, attr)
            if not isinstance(value, kind):
                raise UserError(f"{cls.__name__}.{attr} must be a {kind.__name__}, got {type(value).__name__}")
            info[attr] = value
        return info

    def op_variant(self, record: dict[str, Any]) -> dict[str, Any]:
        self.where = "in variant"
        value = self.cls.variant(record)  # type: ignore[union-attr]
        if not isinstance(value, str):
            raise UserError(f"{self.name}.variant returned {type(value).__name__}; it must return a string")
        return {"variant": value}

    # -- the method -------------------------------------------------------------------------------
    def _hparams(self, hparams: dict[str, Any]) -> Any:
        self.where = "building its hparams"
        try:
            return self.cls.Hparams(**hparams)  # type: ignore[union-attr]
        except (TypeError, ValueError) as exc:
            raise UserError(f"bad hparams for {self.name}: {exc}") from None

    def op_check_hparams(self, hparams: dict[str, Any]) -> dict[str, Any]:
        self._hparams(hparams)
        return {}

    def op_build(self, hparams: dict[str, Any], in_shape: list[int], generator: Tensor, device: str) -> dict[str, Any]:
        hp = self._hparams(hparams)
        self.device, self.method = torch.device(device), None
        self.generator = torch.Generator()
        self.generator.set_state(generator)
        self.where = "in __init__"
        self.method = self.cls(hp, tuple(in_shape), self.generator, self.device)  # type: ignore[misc]
        return {}

    def op_fit(self, source: str, spec: dict[str, Any], iterations: int, progress: bool,
               unlabelled: str | None) -> dict[str, Any]:
        method = self.method
        load = lambda path: _split(torch.load(path, mmap=True, weights_only=True), self.device)
        ctx = FitContext(load(source), EpisodeSpec(**spec), iterations, self.generator, self.device, progress,
                         load(unlabelled) if unlabelled else None)
        self.where = "in fit"
        reset_peak_memory(self.device)
        start = timer(self.device)
        method.fit(ctx)  # type: ignore[union-attr]
        seconds = timer(self.device) - start
        for attr, module in method.modules().items():  # type: ignore[union-attr]
            for pname, param in module.named_parameters():
                if not bool(torch.isfinite(param.detach()).all()):
                    raise UserError(f"after fit, {self.name}'s parameter {attr}.{pname} holds NaN or infinite values")
        memory, kind = peak_memory(self.device)
        return {"seconds": seconds, "tasks": ctx.tasks, "images": ctx.images, "notes": list(map(str, ctx.notes)),
                "generator": self.generator.get_state(), "peak_memory": [memory, kind]}

    # -- adaptation -------------------------------------------------------------------------------
    def _untouched(self, what: str) -> None:
        sx, sy, sx0, sy0 = self.support  # type: ignore[misc]
        if not (torch.equal(sx, sx0) and torch.equal(sy, sy0)):
            raise UserError(f"{self.name}.{what} modified the support tensors it was given; work on a copy")

    def op_adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> dict[str, Any]:
        sx, sy = support_x.to(self.device), support_y.to(self.device)
        self.support = (sx, sy, sx.clone(), sy.clone())
        self.predictors, self.query = [], None
        self.stream = iter(self.method.adapt(sx, sy, ways))  # type: ignore[union-attr]
        return {}

    def op_next(self) -> dict[str, Any]:
        self.where = "in adapt"
        with torch.no_grad():
            start = timer(self.device)
            try:
                predictor = next(self.stream)  # type: ignore[arg-type]
            except StopIteration:
                return {"done": True}
            seconds = timer(self.device) - start
        self._untouched("adapt")
        self.predictors.append(predictor)
        step = getattr(predictor, "step", None)
        return {"seconds": seconds, "step": step if isinstance(step, int) else None}

    def op_predict(self, index: int, query_x: Tensor | None = None) -> dict[str, Any]:
        if query_x is not None:
            self.query = query_x.to(self.device)
        self.where = f"in the predictor of adaptation step {index}"
        with torch.no_grad():
            out = self.predictors[index](self.query)
        self._untouched("adapt")
        return {"logits": _logits(out, f"the predictor of adaptation step {index}")}

    def op_predict_batch(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int) -> dict[str, Any]:
        sx, sy = support_x.to(self.device), support_y.to(self.device)
        self.support = (sx, sy, sx.clone(), sy.clone())
        self.where = "in predict_batch"
        with torch.no_grad():
            start = timer(self.device)
            out = self.method.predict_batch(sx, sy, query_x.to(self.device), ways)  # type: ignore[union-attr,misc]
            seconds = timer(self.device) - start
        self._untouched("predict_batch")
        return {"logits": _logits(out, f"{self.name}.predict_batch"), "seconds": seconds}

    def op_peak(self) -> dict[str, Any]:
        memory, kind = peak_memory(self.device)
        return {"peak_memory": [memory, kind]}


def _logits(out: Any, what: str) -> Tensor:
    """``out`` as a plain CPU tensor for the reply (the parent checks its dtype, shape and values)."""
    if not isinstance(out, Tensor):
        raise UserError(f"{what} returned {type(out).__name__}; it must return floating-point logits of shape "
                        f"[queries, ways]")
    return out.detach().to("cpu").as_subclass(Tensor).contiguous().clone()
