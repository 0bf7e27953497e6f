"""What a leaderboard calls a result: the method, its variant, the pipeline it came from, how it ran."""

from __future__ import annotations

import dataclasses
from typing import Any

from mtbench.core.errors import UserError
from mtbench.methods import METHODS, make_hparams, setting_key
from mtbench.results import execution_label, partial_fit


def label(doc: dict[str, Any]) -> str:
    """``name (variant)``, as a pipeline when the run started from another method's checkpoint
    (``finetune → feature-extract``; ``maml (saved fit)`` from its own), with its precision and
    compilation when not fp32 and uncompiled (e.g. ``protonet (bf16)``); ``maml v1`` when the installed
    method of that name is at another version (a change to its numbers bumps it), so that a result of
    older code never stands in a row of today's, and ``mtbench official`` runs it again; the same for the
    checkpoint's method where the result recorded its version (``reptile v3 → reptile-transductive``)."""
    method = doc["method"]
    variant = method["variant"]
    name = method["name"] + stale_version(method) + (f" ({variant})" if variant else "")
    init = doc["init"]
    if init:
        first = stale_version({"name": init["method"], "version": init.get("method_version")})
        name = (f"{name} (saved fit{first})" if init["method"] == method["name"]
                else f"{init['method']}{first} → {name}")
    return name + execution_label(doc)


def budget(doc: dict[str, Any]) -> str:
    """The budget, saying a quick budget on the CPU is one (a GPU row with the paper's schedule is not), how far
    a partial fit got (``paper, 8000 of 20000 iterations``), and the hparams of a paper-budget row that are not the
    paper's recipe (:func:`off_paper_recipe`)."""
    b = doc["budget"]
    name = b["name"] if not b["name"].isdigit() else f"{b['name']} iterations"
    off = ", ".join(f"{k}={ran}" for k, (ran, _) in off_paper_recipe(doc).items())
    off = f" (not --budget paper's hparams: {off})" if off else ""
    if partial_fit(doc):
        return f"{b['name']}, {doc['fit']['iterations']} of {b['iterations']} iterations (partial){off}"
    if first := partial_first_stage(doc):
        return (f"{name}, from a {doc['init']['budget']} fit stopped at {first[0]} of {first[1]} iterations "
                f"(partial){off}")
    cpu = doc["provenance"]["device_type"] == "cpu"
    return f"{name}{' (CPU)' if cpu and b['name'] == 'quick' else ''}{off}"


def fit_seeded(doc: dict[str, Any]) -> bool:
    """Whether a fit seed could change the result's numbers (``Method.fit_seeded``: not scratch's, which fits
    nothing); a method not installed here (a submission) is taken to be seeded."""
    try:
        return METHODS.get(doc["method"]["name"]).fit_seeded
    except UserError:
        return True


def stale_version(method: dict[str, Any]) -> str:
    """`` v<version>`` when the installed method called ``method["name"]`` is at another version than the
    result's, else (and for a method not installed here, e.g. a submitted one, or a version not recorded)
    nothing."""
    if method.get("version") is None:  # a label being derived for a plan entry, or a checkpoint's unrecorded version
        return ""
    try:
        installed = METHODS.get(method["name"])
    except UserError:
        return ""
    return "" if str(installed.version) == str(method["version"]) else f" v{method['version']}"


def partial_first_stage(doc: dict[str, Any]) -> tuple[int, int] | None:
    """For a run that only adapts a saved fit (``--budget 0 --init FILE``, e.g. ``reptile → reptile-transductive``):
    the iterations that fit ran and its budget's, when ``--until`` stopped it part-way (its checkpoint records the
    iterations it ran); ``None`` for a whole fit, a run that trains itself, and a fitted method not installed here
    (its budgets are not known)."""
    init = doc["init"]
    if doc["budget"]["iterations"] or not init:
        return None
    try:
        # the paper's length where it depends on the setting: the run's own (a saved fit is scored in the setting it
        # was fitted for; a checkpoint does not record its setting)
        protocol = doc["protocol"]
        setting = setting_key(protocol["ways"], protocol["shots"]) if protocol["kind"] == "episodes" else None
        whole = METHODS.get(init["method"]).iterations_for(init["budget"], init["dataset"], setting)
    except UserError:
        return None
    return (init["iterations"], whole) if init["iterations"] < whole else None


def hparams_as_ran(method: dict[str, Any], device_type: str) -> dict[str, Any]:
    """``method`` as it ran: with the hparams its installed method added later (``Method.later_hparams``) filled in
    where a result of the same version lacks them, and without those that act only on another device type than
    the result's (``Method.device_hparams``: ``cuda_graph`` on a CPU)."""
    try:
        installed = METHODS.get(method["name"])
    except UserError:  # a submitted method, not installed here
        return method
    if str(installed.version) != str(method.get("version")):
        return method
    hparams = {**installed.later_hparams, **method["hparams"]}
    hparams = {k: v for k, v in hparams.items() if installed.device_hparams.get(k, device_type) == device_type}
    return {**method, "hparams": hparams}


def init_hparams_as_ran(init: dict[str, Any]) -> dict[str, Any]:
    """The hparams a checkpoint (a result's ``init``) was fitted with, with those its installed method added later
    (``Method.later_hparams``) filled in where the checkpoint lacks them: it was saved before they existed, so it
    ran as their filled value says. As for :func:`hparams_as_ran`, not where its recorded method version differs
    from the installed one; an unrecorded version (``null``, a result before schema 6) is taken to be the same."""
    try:
        installed = METHODS.get(init["method"])
    except UserError:  # a method not installed here
        return init["hparams"]
    version = init.get("method_version")
    if version is not None and str(installed.version) != str(version):
        return init["hparams"]
    return {**installed.later_hparams, **init["hparams"]}


def off_paper_recipe(doc: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """For a result at the paper budget (its own, or that of the fit it adapts with ``--budget 0 --init``): the
    hparams of either stage that differ from what ``--budget paper`` resolves to today for its method, dataset and
    setting, as ``{name: (ran, paper's)}``: a ``--hp`` given with ``--budget paper``, or a scoring stage that did
    not take the paper's test-time recipe. The result's hparams are read as they ran (:func:`hparams_as_ran`); those
    outside a recipe (``not_recipe``, ``device_hparams``) do not count; ``{}`` at other budgets, for a transfer and
    for a method not installed here."""
    protocol, init = doc["protocol"], doc["init"]
    if protocol.get("kind", "episodes") != "episodes":
        return {}
    setting = setting_key(protocol["ways"], protocol["shots"])
    source = (doc.get("source") or {}).get("name")
    device_type = doc["provenance"]["device_type"]
    own = (doc["method"]["name"], hparams_as_ran(doc["method"], device_type)["hparams"], doc["dataset"]["name"], source)
    stages = []
    if doc["budget"]["name"] == "paper":
        stages.append(own)
    elif not doc["budget"]["iterations"] and init and init["budget"] == "paper":
        # a checkpoint's hparams are read as recorded
        stages += [(init["method"], init["hparams"], init["dataset"], None), own]
    off: dict[str, tuple[Any, Any]] = {}
    for i, (name, ran, dataset, fitted_on) in enumerate(stages):
        try:
            cls = METHODS.get(name)
        except UserError:
            return {}
        paper = dataclasses.asdict(make_hparams(cls, dataset, {}, "paper", source=fitted_on or dataset,
                                                setting=setting))
        ran = cls.recipe_hparams(ran)
        differ = {k: (ran[k], v) for k, v in paper.items() if k in ran and ran[k] != v}
        if i == len(stages) - 1:  # what makes the result's variant (FOMAML's first_order) is its row's own recipe
            def variant(hparams: dict[str, Any]) -> str:
                return cls.variant({**doc, "method": {**doc["method"], "hparams": hparams}})
            differ = {k: d for k, d in differ.items() if variant({**paper, k: d[0]}) == variant(paper)}
        off.update(differ)
    return off


def distinct_labels(docs: list[dict[str, Any]]) -> list[str]:
    """:func:`label` of each result, where results of one label and :func:`budget` ran different hparams
    (``finetune`` with a linear and with a cosine head) followed by the hparams that tell them apart: ``finetune
    (head=cosine)``. Hparams one result lacks (added to its method later: :func:`hparams_as_ran`) do not count."""
    labels = [(label(d), budget(d)) for d in docs]
    ran = [hparams_as_ran(d["method"], d["provenance"]["device_type"])["hparams"] for d in docs]
    out = []
    for i, name in enumerate(labels):
        same = [ran[j] for j, other in enumerate(labels) if other == name]
        keys = sorted(k for k in ran[i] if all(k in hp for hp in same) and len({repr(hp[k]) for hp in same}) > 1)
        out.append(f"{name[0]} ({', '.join(f'{k}={ran[i][k]}' for k in keys)})" if keys else name[0])
    return out
