"""What a leaderboard calls a result: the method, its variant, the pipeline it came from, how it ran."""

from __future__ import annotations

from typing import Any

from mtbench.results import execution_label


def label(doc: dict[str, Any]) -> str:
    """``name (variant)``, as a pipeline when the run started from another method's checkpoint
    (``finetune → feature-extract``; ``maml (saved fit)`` from its own), with its precision and
    compilation when not fp32 and uncompiled (e.g. ``protonet (bf16)``)."""
    method = doc["method"]
    variant = method["variant"]
    name = method["name"] + (f" ({variant})" if variant else "")
    init = doc["init"]
    if init:
        name = f"{name} (saved fit)" if init["method"] == method["name"] else f"{init['method']} → {name}"
    return name + execution_label(doc)
