"""One run as stages (resolve, load, fit, score, record), the evaluator and checkpoints."""

from mtbench.run.runner import run
from mtbench.run.spec import RunSpec

__all__ = ["RunSpec", "run"]
