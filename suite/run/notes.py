"""What a run says before its fit where its recipe is not the one its user likely expects.

Each note names the hparams concerned and the ``--hp`` that would give the expected recipe; none stops the run (each
is also a legitimate question, e.g. how a quick fit adapts with the full recipe's test-time steps). They go to
stderr, one line each, from :func:`resolve <mtbench.run.stages.resolve>`, before any data is read.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from mtbench.methods import Method, paper_setting_left_out, quick_presets_left_out
from mtbench.run.checkpoints import hparams_changed
from mtbench.run.spec import RunSpec


def recipe_notes(spec: RunSpec, method_cls: type[Method], source: str, setting: str | None, hparams: Any,
                 checkpoint: dict[str, Any] | None) -> None:
    """Say on stderr, before the fit, where the run's recipe is not the one its user likely expects, with the ``--hp``
    that would make it so: a budget of a number of iterations fits the full recipe, not the quick one; it fits the
    dataset's recipe, not the paper's of this setting; a ``--budget 0`` score of a paper fit leaves out the paper's
    test-time recipe; a run from a checkpoint of its own method's family changes hparams it was fitted with. Each
    hparam is named once, by the first of these that concerns it; one ``--hp`` given silences what names it."""
    given = dict(spec.hparams)
    named = set(given)
    does = "adapts with" if str(spec.budget) == "0" else "fits"
    init_budget = checkpoint.get("budget") if checkpoint else None
    if init_budget != "paper" and (left := quick_presets_left_out(method_cls, spec.dataset, given, str(spec.budget),
                                                                    source)):
        # a user lengthening a quick fit with --budget N, or adapting a quick fit's checkpoint with --budget 0,
        # easily expects the quick recipe
        named |= set(left)
        print(f"mtbench: note: --budget {spec.budget} {does} {method_cls.name}'s full recipe on {spec.dataset}, as "
              f"--budget paper does, without the quick budget's changes; to keep them add {_add(left)}",
              file=sys.stderr)
    if left := paper_setting_left_out(method_cls, source, setting, given, str(spec.budget), init_budget):
        named |= set(left)
        if int(spec.budget):
            print(f"mtbench: note: --budget {spec.budget} fits {method_cls.name}'s {source} recipe, not the "
                  f"paper's {setting} one; for that recipe, part of the way: --budget paper --until {spec.budget}",
                  file=sys.stderr)
        else:  # scoring a paper fit: its row is checked against the paper's recipe (board.labels.off_paper_recipe)
            print(f"mtbench: note: --budget 0 scores the paper-budget fit at --init with {method_cls.name}'s "
                  f"{source} recipe, not the paper's {setting} one; to score it the paper's way add {_add(left)}",
                  file=sys.stderr)
    if checkpoint and (kept := hparams_changed(checkpoint, method_cls, hparams, named)):
        # e.g. scoring a fit made with --hp adapt_norm=false without saying it again: likely an oversight, but a
        # legitimate question too (how the fit adapts otherwise), so a note and not an error
        ours = dataclasses.asdict(hparams)
        print(f"mtbench: note: the fit at --init was made with {_listed(kept)}; this run {does} "
              f"{_listed({k: ours[k] for k in kept})}; to keep the fit's add {_add(kept)}", file=sys.stderr)


def _listed(hparams: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in hparams.items())


def _add(hparams: dict[str, Any]) -> str:
    return " ".join(f"--hp {k}={v}" for k, v in hparams.items())
