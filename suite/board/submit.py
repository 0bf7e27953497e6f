"""``mtbench submit``: an outside method through the same path as the baselines, checked first.

A submission is a Python file defining a :class:`~mtbench.methods.Method` subclass (``PATH.py`` when
it defines exactly one, else ``PATH.py:Class``). Before anything is run on real data, a
**conformance check** on the generated ``synthetic`` dataset fits the method for a few iterations
and adapts it on a few episodes of the requested shape, twice from the same seed, and refuses it
when:

* its registry name is missing or taken by a built-in method;
* ``adapt`` raises, yields nothing, or a predictor's output is not a floating tensor of shape
  ``[queries, ways]`` (``predict_batch``, when defined: ``[episodes, queries, ways]``);
* any output is NaN or infinite;
* ``adapt`` or a predictor modified the support tensors it was given;
* the two seeded attempts give different outputs (the method draws from the global RNG or from a
  nondeterministic source instead of the generator it is given).

Then the official protocol runs (:func:`mtbench.run.runner.run`) and the result, which records the
file's sha256 and marks itself a submission, is written into ``<leaderboards>/<dataset>/<setting>/``
and validated like every committed result (:mod:`mtbench.results.integrity`). A refusal writes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mtbench.core.errors import UserError
from mtbench.methods import Method

CHECK_ITERATIONS = 2  # fit iterations of the conformance check
CHECK_EPISODES = 2
CHECK_QUERIES = 3


@dataclass(frozen=True)
class Submission:
    cls: type[Method]
    path: Path
    sha256: str

    @property
    def reference(self) -> str:
        """The ``file.py:Class`` string ``mtbench run --method`` takes."""
        return f"{self.path}:{self.cls.__name__}"

    def record(self) -> dict[str, Any]:
        """The result's ``submission`` field."""
        return {"source": str(self.path), "class": self.cls.__name__, "source_sha256": self.sha256}


def load(reference: str) -> Submission:
    """Import ``PATH.py[:Class]`` and find the method class; a :class:`UserError` says what is wrong."""
    from mtbench.core.registry import import_file

    text, _, name = reference.partition(":") if not reference.endswith(".py") else (reference, "", "")
    path = Path(text)
    if path.suffix != ".py" or not path.is_file():
        raise UserError(f"submission {text!r} is not a Python file; give PATH.py or PATH.py:Class")
    try:
        module = import_file(path)
    except UserError:
        raise
    except Exception as exc:  # the user's file failed to import: say so in one line
        raise UserError(f"importing {path} failed: {type(exc).__name__}: {exc}") from None
    own = {k: v for k, v in vars(module).items()
           if isinstance(v, type) and issubclass(v, Method) and v is not Method and v.__module__ == module.__name__}
    if name:
        if name not in own:
            raise UserError(f"{path} defines no Method subclass {name!r}; it defines: {', '.join(sorted(own)) or 'none'}")
        cls = own[name]
    elif len(own) != 1:
        raise UserError(f"{path} defines {len(own)} Method subclasses ({', '.join(sorted(own)) or 'none'}); "
                        f"name one as {path}:Class")
    else:
        [cls] = own.values()
    return Submission(cls, path, hashlib.sha256(path.read_bytes()).hexdigest())


def conformance(sub: Submission, ways: int, shots: int, overrides: dict[str, str]) -> list[str]:
    """The problems the conformance check finds (empty: the method may run the official protocol)."""
    from mtbench.methods import METHODS

    name = getattr(sub.cls, "name", None)
    if not isinstance(name, str) or not name:
        return [f"{sub.cls.__name__} has no `name`: give it a class attribute name = '...'"]
    if not dataclasses.is_dataclass(getattr(sub.cls, "Hparams", None)):
        return [f"{sub.cls.__name__} has no Hparams dataclass: give it one (with no fields if it has no "
                f"hyper-parameters), as the baselines do"]
    builtin = METHODS.get(name) if name in METHODS else None
    if builtin is not None and builtin is not sub.cls:
        return [f"name {name!r} is taken by the built-in method {builtin.__module__}.{builtin.__qualname__}; "
                f"give {sub.cls.__name__} another `name`"]
    try:
        first = _attempt(sub.cls, ways, shots, overrides)
        second = _attempt(sub.cls, ways, shots, overrides)
    except _Refused as exc:
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
