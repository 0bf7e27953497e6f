"""Hyper-parameters: a method's ``Hparams`` from its defaults, its per-dataset and per-setting presets, the
budget's deviations and ``--hp`` overrides, and the checks their ``__post_init__`` share."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

from mtbench.data import DATASETS
from mtbench.core.errors import UserError

_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def _convert(method: str, key: str, text: str, kind: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        choices = typing.get_args(kind)
        if text not in [str(c) for c in choices]:
            raise UserError(f"--hp {key}={text}: {method} accepts {key} in {{{', '.join(map(str, choices))}}}")
        return next(c for c in choices if str(c) == text)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if text.lower() in ("none", "null"):
            return None
        return _convert(method, key, text, args[0])
    if kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise UserError(f"--hp {key}={text}: {key} of {method} is true/false")
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise UserError(f"--hp {key}={text}: {key} of {method} must be {getattr(kind, '__name__', kind)}") from None
    if isinstance(value, float) and not math.isfinite(value):  # inf and nan parse as floats but train nothing
        raise UserError(f"--hp {key}={text}: {key} of {method} must be a finite number, e.g. --hp {key}=0.001")
    return value


def parse_overrides(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``, with a clear error on a malformed item."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--hp '{item}' is not name=value; write e.g. --hp inner_lr=0.4")
        out[key.strip()] = value.strip()
    return out


def for_dataset(table: Mapping[str, Any], dataset: str, default: Any) -> Any:
    """A method's ``presets``/``budgets`` entry for ``dataset``: its own, else that of the dataset whose settings
    a built-in variant takes (its ``presets_of``: ``omniglot-lake`` takes ``omniglot``'s), else ``default``."""
    if dataset in table:
        return table[dataset]
    of = getattr(DATASETS.get(dataset), "presets_of", None) if DATASETS.builtin(dataset) else None
    return table.get(of, default) if of else default


def defaults(hparams_cls: type) -> dict[str, Any]:
    """The dataclass defaults of a method's ``Hparams`` (fields without a plain default are left out)."""
    return {f.name: f.default for f in dataclasses.fields(hparams_cls) if f.default is not dataclasses.MISSING}


def setting_key(ways: int, shots: int) -> str:
    """``"20w1s"``: how ``paper_settings`` (and leaderboard folders) name a few-shot setting."""
    return f"{ways}w{shots}s"


def paper_setting(cls: Any, dataset: str, setting: str | None) -> dict[str, Any]:
    """The method's ``paper_settings`` entry for ``setting`` (e.g. ``"20w1s"``) on ``dataset``: the paper's recipe
    where it differs from the dataset's presets in that setting, with its ``iterations``; ``{}`` for none."""
    return dict(for_dataset(cls.paper_settings, dataset, {}).get(setting, {})) if setting else {}


def make_hparams(cls: Any, dataset: str, overrides: dict[str, str], budget: str | None = None,
                 source: str | None = None, setting: str | None = None) -> Any:
    """The method's hparams: dataclass defaults, the presets of the ``source`` it is fitted on (when
    not ``dataset`` itself) then of ``dataset``, the paper's recipe for ``setting`` (``"20w1s"``; when
    ``budget == "paper"``), the quick-budget deviations of both datasets (when ``budget == "quick"``), then
    ``--hp`` overrides."""
    fields = {f.name: f for f in dataclasses.fields(cls.Hparams)}
    hints = typing.get_type_hints(cls.Hparams)
    names = [n for n in (source, dataset) if n] if source != dataset else [dataset]
    values: dict[str, Any] = {}
    for name in names:
        values.update(for_dataset(cls.presets, name, {}))
    if budget == "paper":
        for name in names:
            values.update({k: v for k, v in paper_setting(cls, name, setting).items() if k != "iterations"})
    if budget == "quick":
        for name in names:
            values.update(for_dataset(cls.quick_presets, name, {}))
    for key, text in overrides.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=2)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise UserError(f"--hp {key}: {cls.name} has no hparam '{key}'{hint}; its hparams are {', '.join(fields)}")
        values[key] = _convert(cls.name, key, text, hints[key])
    try:
        return cls.Hparams(**values)
    except (TypeError, ValueError) as exc:
        raise UserError(f"bad hparams for {cls.name}: {exc}") from None


def quick_presets_left_out(cls: Any, dataset: str, overrides: Mapping[str, str], budget: str,
                           source: str | None = None) -> dict[str, Any]:
    """The quick budget's deviations from the full recipe that a budget of a number of iterations leaves out
    (it fits the dataset's full recipe, as ``paper`` does outside ``paper_settings``), less those ``--hp`` sets:
    what to add as ``--hp`` to fit the quick recipe longer or shorter. Empty for a named budget."""
    if not str(budget).isdigit():
        return {}
    quick = dataclasses.asdict(make_hparams(cls, dataset, {}, "quick", source))
    full = dataclasses.asdict(make_hparams(cls, dataset, {}, str(budget), source))
    return {k: v for k, v in quick.items() if v != full[k] and k not in overrides}


def paper_setting_left_out(cls: Any, dataset: str, setting: str | None, overrides: Mapping[str, str],
                           budget: str, init_budget: str | None = None) -> dict[str, Any]:
    """The paper's recipe of ``setting`` (``paper_settings``, less its ``iterations``) that a budget of a number of
    iterations ≥ 1 does not fit (that recipe is the paper budget's alone; ``--budget paper --until N`` fits it part of
    the way), or that ``--budget 0`` does not score a fit of the paper budget with (``init_budget``: the budget of the
    fit at ``--init``; e.g. the paper's test-time steps), less the hparams ``--hp`` sets. Empty for a named budget,
    ``0`` from a fit of another budget, and settings without a paper recipe of their own."""
    if not str(budget).isdigit() or (not int(budget) and init_budget != "paper"):
        return {}
    return {k: v for k, v in paper_setting(cls, dataset, setting).items() if k != "iterations" and k not in overrides}


def report_steps(text: str, last: int) -> set[int]:
    """``"0,10,50"`` -> the adaptation steps to score (those ≤ ``last``), always including ``last``.

    For the ``report_steps`` hparam of methods with long adaptations; a clear error on bad text.
    """
    try:
        steps = {int(s) for s in text.split(",") if s.strip()}
    except ValueError:
        raise UserError(f"--hp report_steps={text}: give step numbers separated by commas, e.g. 0,10,50") from None
    if any(s < 0 for s in steps):
        raise UserError(f"--hp report_steps={text}: steps must be ≥ 0")
    return {s for s in steps if s <= last} | {last}


def positive(name: str, value: float) -> None:
    """For ``Hparams.__post_init__``: reject a value ≤ 0 with the field's name."""
    if not value > 0:
        raise UserError(f"--hp {name}={value}: must be > 0")


def non_negative(name: str, value: float) -> None:
    """For ``Hparams.__post_init__``: reject a value < 0 with the field's name (0 often means "the default")."""
    if not value >= 0:
        raise UserError(f"--hp {name}={value}: must be ≥ 0")
