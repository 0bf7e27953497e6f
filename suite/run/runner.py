"""One run, end to end: a frozen :class:`RunSpec` in, a validated result record out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtbench.results import write_result
from mtbench.run.resume import discard
from mtbench.run.spec import SOURCE_EPISODES, RunSpec, fit_seed
from mtbench.run.stages import fit, load, partial, record, resolve, score

__all__ = ["RunSpec", "SOURCE_EPISODES", "fit_seed", "run"]


def run(spec: RunSpec) -> tuple[dict[str, Any], Path | None]:
    """Fit the method on the source's fit split, evaluate it on the fixed test episodes, write the result.

    The source is the dataset itself unless it is a transfer target (``default_source``) or
    ``spec.source`` names one. Returns the result and the path it was written to (``None`` when
    ``spec.out`` is ``None``).
    """
    resolved = resolve(spec)
    loaded = load(resolved)
    fitted = fit(resolved, loaded)
    doc = record(resolved, loaded, fitted, score(resolved, loaded, fitted))
    path = write_result(doc, Path(spec.out)) if spec.out is not None else None
    # the result is written: the saved evaluation is no longer needed, nor the saved fit, unless the fit stopped
    # part-way (--until, --fit-minutes): --resume continues it
    discard(resolved.fit_state, keep_fit=partial(resolved, fitted.ctx))
    return doc, path
