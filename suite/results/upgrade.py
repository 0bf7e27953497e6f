"""Reading older result documents: :func:`upgrade` brings a ``schema_version`` 1 to 5 record to the current one.

Version 1 grew fields over time, and older records lack the newer ones; version 2 requires every field
(see :mod:`mtbench.results.schema`); version 3 adds the ``reproduced`` records; version 4 the fit's own seed
(``fit.seed``); version 5 the fit seed of the checkpoint a run started from (``init.fit_seed``); version 6 the
version of that checkpoint's method (``init.method_version``). Each missing field is filled with what its absence
meant when the record was written, and nothing else changes: numbers, shas and every field present stay as they are.
"""

from __future__ import annotations

import copy
from typing import Any

from mtbench.core.errors import UserError
from mtbench.results.schema import SCHEMA_VERSION


def upgrade(doc: Any) -> Any:
    """``doc`` as a result of :data:`SCHEMA_VERSION`, as a new object (``doc`` is not modified).

    An older record gets what it lacks (see :func:`_from_1`, :func:`_from_2`, :func:`_from_3`, :func:`_from_4`,
    then :func:`_from_5`); a current one is returned as a copy; a document that is not a result object, or has no
    known version, is returned as a copy for :func:`~mtbench.results.schema.validate` to name its problems. A
    version newer than this mtbench knows is a :class:`UserError`.
    """
    doc = copy.deepcopy(doc)
    if not isinstance(doc, dict):
        return doc
    version = doc.get("schema_version")
    if version in (1, 2, 3, 4, 5) and not isinstance(version, bool):
        if version == 1:
            _from_1(doc)
        if version in (1, 2):
            _from_2(doc)
        if version in (1, 2, 3):
            _from_3(doc)
        if version in (1, 2, 3, 4):
            _from_4(doc)
        return _from_5(doc)
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise UserError(f"schema_version {version} is newer than this mtbench reads (up to {SCHEMA_VERSION}); "
                        f"upgrade mtbench (pip install -U mtbench) to read it")
    return doc


def _fill(doc: dict[str, Any], section: str, **missing: Any) -> None:
    """Set each of ``missing`` that ``doc[section]`` lacks (a section that is not an object is left for
    validate to report)."""
    part = doc.get(section)
    if isinstance(part, dict):
        for key, value in missing.items():
            if key not in part:
                part[key] = value


def _from_1(doc: dict[str, Any]) -> dict[str, Any]:
    """Version 1 to 2, in place on a copy (``schema_version``: by :func:`_from_5`). A field absent from a version-1
    record meant:

    * ``init``, ``source``, ``submission``: null (no checkpoint, fitted on the dataset itself, a
      registered method: the features did not exist yet);
    * ``dataset.unlabelled_split``, ``dataset.support_split``: null; ``dataset.notes``, ``fit.notes``: none;
    * ``protocol.kind``: ``episodes``; ``support_from`` and ``queries_from``: ``dataset.split`` (support
      and queries both came from the evaluated split); ``fit_episodes``: null (fitted on the protocol's own);
    * ``evaluation.batched_episodes``: null (evaluated episode by episode);
    * ``provenance.precision``: ``fp32``; ``provenance.compile``: false;
    * ``method.variant``: what the registered method says of the record now, ``""`` for a name that is not
      registered (a submission).
    """
    for key in ("init", "source", "submission"):
        doc.setdefault(key, None)
    _fill(doc, "dataset", unlabelled_split=None, support_split=None, notes=[])
    split = doc["dataset"].get("split") if isinstance(doc.get("dataset"), dict) else None
    _fill(doc, "protocol", kind="episodes", support_from=split, queries_from=split, fit_episodes=None)
    _fill(doc, "fit", notes=[])
    _fill(doc, "evaluation", batched_episodes=None)
    _fill(doc, "provenance", precision="fp32", compile=False)
    if isinstance(doc.get("method"), dict) and "variant" not in doc["method"]:
        from mtbench.methods import METHODS

        name = doc["method"].get("name")
        try:
            doc["method"]["variant"] = METHODS.get(name).variant(doc) if name in METHODS else ""
        except (KeyError, TypeError, AttributeError):  # a record too broken to say: validate names what is wrong
            doc["method"]["variant"] = ""
    return doc


def _from_2(doc: dict[str, Any]) -> dict[str, Any]:
    """Version 2 to 3, in place: ``reproduced`` absent meant nobody had re-run the result (``[]``)."""
    doc.setdefault("reproduced", [])
    return doc


def _from_3(doc: dict[str, Any]) -> dict[str, Any]:
    """Version 3 to 4, in place: before ``--fit-seed``, the episodes' seed also seeded the fit (the generator of
    ``fit_seed(--seed)``, the formula ``--fit-seed`` keeps), so ``fit.seed`` is ``protocol.seed``."""
    protocol = doc.get("protocol")
    if isinstance(protocol, dict) and "seed" in protocol:  # else validate names what is missing
        _fill(doc, "fit", seed=protocol["seed"])
    return doc


def _from_4(doc: dict[str, Any]) -> dict[str, Any]:
    """Version 4 to 5, in place: a checkpoint saved before version 5 did not keep its fit seed, so the ``init`` a
    run started from (and the one that checkpoint's fit started from, and so on) has ``fit_seed`` null: unknown."""
    _fill_init(doc, fit_seed=None)
    return doc


def _from_5(doc: dict[str, Any]) -> dict[str, Any]:
    """Version 5 to 6, in place: a result before version 6 did not record the method version of the checkpoint it
    started from (its checkpoint kept it), so ``init.method_version`` is null down the chain: unknown. A leaderboard
    row never joins such a result with one whose first stage's version is known."""
    doc["schema_version"] = SCHEMA_VERSION
    _fill_init(doc, method_version=None)
    return doc


def _fill_init(doc: dict[str, Any], **missing: Any) -> None:
    """Set each of ``missing`` that the ``init`` chain's records lack (a record that is not an object is left for
    validate to report)."""
    init = doc.get("init")
    while isinstance(init, dict):
        for key, value in missing.items():
            init.setdefault(key, value)
        init = init.get("init")
