"""The child side of :mod:`mtbench.run.sandbox`: ``python -m mtbench.run.worker LIMITS``.

It sets its own CPU and memory limits before importing anything, keeps the parent's pipes for the
messages (what the method prints goes to stderr), imports the submitted file only when asked, and then
serves one request at a time: describe the class, build the method, fit it, adapt it one step per
request, run a predictor on query images, run ``predict_batch``, the method's ``variant``, the peak
memory. Query labels never reach this process: the parent scores the logits it gets back.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import sys
from typing import Any

_HEADER = struct.Struct("<Q")


def _set_limits(limits: dict[str, Any]) -> None:
    cpu = int(limits["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))  # soft: SIGXCPU, hard: SIGKILL
    if limits.get("memory_bytes"):
        resource.setrlimit(resource.RLIMIT_AS, (int(limits["memory_bytes"]),) * 2)


def _read(stream: Any, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def main(argv: list[str]) -> int:
    limits = json.loads(argv[0])
    _set_limits(limits)
    # the messages keep private copies of the pipes; the method's prints go to stderr, its stdin is empty
    inbox, outbox = os.fdopen(os.dup(0), "rb", buffering=0), os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    import torch
    from mtbench.core.errors import UserError
    from mtbench.core.runtime import tune_malloc
    from mtbench.run.sandbox import encode
    from mtbench.run.served import Served, one_line

    torch.set_num_threads(int(limits["threads"]))
    if limits.get("malloc_tuning"):
        tune_malloc()
    served = Served()
    outbox.write(encode({"ready": True}))
    while True:
        header = _read(inbox, _HEADER.size)
        data = _read(inbox, _HEADER.unpack(header)[0]) if header else None
        if data is None:
            return 0
        import io

        request = torch.load(io.BytesIO(data), weights_only=True)
        op = request.pop("op")
        if op == "exit":
            return 0
        try:
            reply = getattr(served, f"op_{op}")(**request)
        except UserError as exc:
            reply = {"error": one_line(str(exc))}
        except BaseException as exc:  # noqa: BLE001 - the method's code raised: the parent says so in one line
            reply = {"error": served.raised(exc)}
        outbox.write(encode(reply))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
