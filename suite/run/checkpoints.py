"""Fitted methods saved and loaded, for meta-then-transfer pipelines (``--save`` / ``--init``).

A checkpoint holds the state of every module of a fitted method and where it came from (method,
hparams, dataset, budget, provenance). Loading it into the **same** method, or a variant of it
(a subclass either way, e.g. ``reptile-transductive``), restores everything;
loading it into **another** method transfers what the Method contract calls ``transferable`` (the
backbone, for every built-in method), so e.g. MAML's meta-learned
backbone can be fine-tuned by ``finetune``, or ``finetune``'s pre-trained backbone meta-trained by
``maml``. BatchNorm statistics that the source did not keep (MAML normalises with batch
statistics) are re-estimated on the new method's source images before it runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtbench.core.atomic import atomic_write
from mtbench.data import Split
from mtbench.core.errors import UserError
from mtbench.methods import METHODS, Method
from mtbench.methods.hparams import defaults

FORMAT = "mtbench-checkpoint"
VERSION = 1


def save_checkpoint(method: Method, info: dict[str, Any], path: Path) -> Path:
    """Write ``method``'s modules and ``info`` (what was fitted, how, where) to ``path`` atomically."""
    blob = {"format": FORMAT, "version": VERSION, **info,
            "state": {k: {n: t.detach().cpu() for n, t in m.state_dict().items()} for k, m in method.modules().items()}}
    return atomic_write(Path(path), lambda tmp: torch.save(blob, tmp), what="checkpoint")


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], str]:
    """The checkpoint at ``path`` and its sha256; a :class:`UserError` when it is not one."""
    path = Path(path)
    try:
        data = path.read_bytes()
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        # an empty or truncated file raises with an empty message
        reason = ("not a checkpoint file" if isinstance(exc, pickle.UnpicklingError)
                  else (str(exc).splitlines() or [f"{type(exc).__name__}: the file is empty or truncated"])[0])
        raise UserError(f"--init {path}: cannot read it as an mtbench checkpoint ({reason})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise UserError(f"--init {path} is not an mtbench checkpoint; make one with `mtbench run ... --save PATH`")
    return blob, hashlib.sha256(data).hexdigest()


def init_record(blob: dict[str, Any], sha256: str, path: str, recalibrated: bool) -> dict[str, Any]:
    """The ``init`` section of a result: which fitted method a run started from (at which version), and how it was
    made (``fit_seed`` and ``method_version`` are ``None`` where the checkpoint did not keep them)."""
    keys = ("method", "method_version", "hparams", "dataset", "fit_split", "budget", "iterations", "fit_seconds",
            "fit_seed")
    return {"path": path, "sha256": sha256, "recalibrated_batchnorm": recalibrated,
            **{k: blob.get(k) for k in keys}, "init": _filled(blob.get("init")),
            "git_commit": blob.get("provenance", {}).get("git_commit")}


def _filled(init: dict[str, Any] | None) -> dict[str, Any] | None:
    """A checkpoint's own ``init`` record (the checkpoint its fit started from, and so on down), with ``fit_seed``
    and ``method_version`` ``None`` where it was recorded before results kept them."""
    if init is None:
        return None
    return {**init, "fit_seed": init.get("fit_seed"), "method_version": init.get("method_version"),
            "init": _filled(init.get("init"))}


def same_family(saved: str, method: type[Method]) -> bool:
    """Whether a checkpoint of method ``saved`` restores all of ``method`` (a method's class): the same method, or a
    registered variant of it (``reptile`` <-> ``reptile-transductive``, ``dann`` <-> ``source-only``),
    i.e. one is a subclass of the other, so one fit can be evaluated both ways."""
    if saved == method.name:
        return True
    ours = {getattr(c, "name", None) for c in method.__mro__}
    try:
        theirs = {getattr(c, "name", None) for c in METHODS.get(saved).__mro__}
    except UserError:
        return False
    return saved in ours or method.name in theirs


def hparams_changed(blob: dict[str, Any], method: type[Method], hparams: Any, given: Any) -> dict[str, Any]:
    """The recipe hparams that a run from a checkpoint of its own method's family changes from those the checkpoint
    was fitted with, less those ``--hp`` sets (``given``), as ``{name: the checkpoint's value}``: the run builds its
    hparams from its own budget and presets, so e.g. a fit made with ``--hp adapt_norm=false`` adapts with the
    default unless the run says it again. ``{}`` for another method's checkpoint (it moves only a backbone), and
    for hparams outside a recipe (``not_recipe``, ``device_hparams``), that the method does not have, or whose
    defaults make a variant what it is (``source-only`` is ``dann`` with ``domain_weight`` 0)."""
    if not same_family(str(blob.get("method")), method):
        return {}
    ran = method.recipe_hparams(dataclasses.asdict(hparams))
    saved_cls = method if blob["method"] == method.name else METHODS.get(str(blob["method"]))
    ours, theirs = defaults(method.Hparams), defaults(saved_cls.Hparams)
    saved = {k: tuple(v) if isinstance(v, list) else v for k, v in (blob.get("hparams") or {}).items()}
    return {k: v for k, v in saved.items()
            if k in ran and k not in given and v != ran[k] and ours.get(k) == theirs.get(k)}


def check_backbone(blob: dict[str, Any], hparams: Any) -> None:
    """A :class:`UserError` unless the checkpoint's backbone is the one ``hparams`` builds: its weights fit no other."""
    theirs, ours = (blob.get("hparams") or {}).get("backbone"), getattr(hparams, "backbone", None)
    if theirs != ours:
        raise UserError(f"--init: the checkpoint's backbone is {theirs!r}, this run's is {ours!r}; "
                        f"add --hp backbone={theirs} to use it")


def load_into(method: Method, blob: dict[str, Any], ways: int) -> list[str]:
    """Load a checkpoint into ``method``; return the names of BatchNorm statistics it did not provide."""
    check_backbone(blob, method.hparams)
    whole = same_family(blob["method"], type(method))
    # the whole method is rebuilt as it was fitted (its heads for its own ways); another method only
    # takes the backbone and builds its heads for this run's ways
    method.prepare(int(blob.get("ways", ways)) if whole else ways)
    state = blob["state"]
    targets = method.modules()
    names = list(state) if whole else list(method.transferable)
    missing_stats: list[str] = []
    for attr in names:
        if attr not in targets or attr not in state:
            raise UserError(f"checkpoint of {blob['method']} has no '{attr}' that {method.name} can load")
        module = targets[attr]
        try:
            missing, unexpected = module.load_state_dict(state[attr], strict=False)
        except RuntimeError as exc:
            raise UserError(f"checkpoint of {blob['method']} ({blob['hparams'].get('backbone')}) does not fit "
                            f"{method.name}'s {attr} ({method.hparams.backbone}): {str(exc).splitlines()[0]}") from None
        stats = ("running_mean", "running_var", "num_batches_tracked")
        bad = [k for k in missing if not k.endswith(stats)]
        if bad or unexpected:
            raise UserError(f"checkpoint of {blob['method']} does not fit {method.name}'s {attr}: "
                            f"missing {', '.join(bad[:4]) or '-'}, unexpected {', '.join(unexpected[:4]) or '-'}")
        missing_stats += [f"{attr}.{k}" for k in missing]
    return missing_stats


def restore(blob: dict[str, Any], ways: int, device: torch.device,
            generator: torch.Generator | None = None) -> tuple[Method, list[str]]:
    """The checkpoint's own method rebuilt as it was fitted (its recorded hparams and input shape) and loaded
    (:func:`load_into`; heads built per run are for ``ways``), with the BatchNorm statistics it did not provide."""
    cls = METHODS.get(str(blob["method"]))
    known = {f.name for f in dataclasses.fields(cls.Hparams)}
    hparams = cls.Hparams(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in blob["hparams"].items()
                             if k in known})
    method = cls(hparams, tuple(int(v) for v in blob["in_shape"]), generator or torch.Generator().manual_seed(0),
                 device)
    return method, load_into(method, blob, ways)


def recalibrate_batchnorm(module: nn.Module, source: Split, generator: torch.Generator, batches: int = 50,
                          batch_size: int = 64) -> None:
    """Re-estimate BatchNorm running statistics of ``module`` on source images (weights unchanged)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training = module.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    module.train()
    n = source.images.shape[0]
    with torch.no_grad():
        for _ in range(batches):
            idx = torch.randint(n, (batch_size,), generator=generator).to(source.device)
            module(source.gather(idx))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    module.train(was_training)
