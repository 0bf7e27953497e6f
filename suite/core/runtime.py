"""Where a run executes: device choice, device names, numeric precision, peak memory, and the CPU
allocator setting."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import resource
import time

from typing import Any

import torch

from mtbench.core.errors import UserError

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
MALLOC_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_malloc_tuned = False

#: ``--precision``: ``fp32`` as PyTorch runs by default; ``bf16`` under ``torch.autocast`` to bfloat16
PRECISIONS = ("fp32", "bf16")

#: bound on the input values (images x C x H x W) of one forward pass of a batched path, by device type (others:
#: the CPU's), never less than one image: on a GPU 16384 Omniglot (1x28x28) images, few launches for 600 episodes.
#: On the CPU Conv4 ran twice as slow per image from ~160 Omniglot images a batch as from 80 (its activations
#: outgrow the cache), so a pass there is 128.
PASS_VALUES = {"cpu": 128 * 28 * 28, "cuda": 16384 * 28 * 28}
#: and on the CPU at most this many images a pass: on an AMD EPYC (one thread, 2026-12-03) the step came between
#: 64 and 96 Omniglot images (768 in passes of 16 to 64: 207-234 ms, of 96 to 256: 368-445 ms; the same features
#: bit for bit at every pass size but 1), and fine-tune's evaluation of 32 Omniglot episodes took 0.8-0.95 s in
#: passes of 64 against 1.6-1.9 s of 128 (5w5s: 1.1-1.3 against 2.2-2.5 s), the same accuracies; 84x84 images
#: (4 a pass by the values) ran alike 2, 4 or 8 to a pass
PASS_IMAGES = {"cpu": 64}


def in_passes(module: Any, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` computed over ``x``'s first axis in passes of at most :data:`PASS_VALUES` input values and
    :data:`PASS_IMAGES` images (at least one image each), concatenated: one call where ``x`` fits in one pass. (The
    passes are full but the last, as before the image bound, so the leaderboard's fine-tune rows keep their
    numbers: Conv4's features are the same bit for bit at every batch size but 1.)"""
    per_image = max(1, x[0].numel()) if len(x) else 1
    size = max(1, PASS_VALUES.get(x.device.type, PASS_VALUES["cpu"]) // per_image)
    size = min(size, PASS_IMAGES.get(x.device.type, size))
    if len(x) <= size:
        return module(x)
    return torch.cat([module(part) for part in x.split(size)])


def select_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cpu``; ``cuda`` / ``cuda:N`` (checked to exist)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is visible to PyTorch here; use --device cpu or auto")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: only cpu and cuda are supported")
    return device


def device_name(device: torch.device) -> str:
    """A human-readable name: the GPU model, or the CPU model with the number of torch threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU {model} ({torch.get_num_threads()} threads)"


def ran_on(before: list[list[Any]], here: str, seconds: float) -> list[list[Any]]:
    """The devices a resumable fit or evaluation has run on, in order, each as ``[name, seconds]``: ``before`` (what
    its saved state recorded), then ``here`` (a :func:`device_name`) for this process's ``seconds``; consecutive
    parts on one device are one entry."""
    out = [list(entry) for entry in before]
    if out and out[-1][0] == here:
        out[-1][1] = float(out[-1][1]) + seconds
    else:
        out.append([here, seconds])
    return out


def mixed_devices_note(what: str, devices: list[list[Any]]) -> str | None:
    """A result note when ``devices`` (from :func:`ran_on`) names more than one device: ``what``'s seconds, and the
    rates made from them, then mix devices (say a fit resumed on another GPU, or with another number of threads)."""
    if len({name for name, _ in devices if name is not None}) < 2:  # None: a part saved before states recorded it
        return None
    parts = ", ".join(f"{float(seconds):.1f} s on {name or 'a device not recorded'}" for name, seconds in devices)
    return f"{what} ran on more than one device: {parts}; its seconds and the rates made from them add these parts"


def check_precision(precision: str) -> None:
    """A :class:`UserError` unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision!r}: use one of {', '.join(PRECISIONS)}")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context a run's fit and evaluation execute in: ``torch.autocast`` to bfloat16 on ``device``
    for ``bf16``; for ``fp32`` no autocast at all (a do-nothing context), so fp32 runs exactly as
    without the option. Nothing process-wide is changed either way.

    The region spans whole training loops (``fit``, and ``adapt`` of methods that train per
    episode), so autocast's cache of bfloat16 copies of the weights is off: it lives until the
    region exits and is not refreshed by an optimiser step, so every forward after the first would
    use the initial weights (a scratch run on synthetic stayed at chance).
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timer(device: torch.device) -> float:
    """A wall-clock reading taken after the device has finished its queued work."""
    synchronize(device)
    return time.perf_counter()


class Laps:
    """Marks in the device's stream of work, read as intervals once it is all done: on CUDA, events recorded
    on the current stream (``enable_timing``), so marking costs no synchronisation and the interval between
    two marks is the device's own time; elsewhere ``time.perf_counter`` readings (CPU work is done when the
    call returns). The evaluator marks each adaptation step this way, and reads the intervals after its
    one synchronisation at the end."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.marks: list[Any] = []

    def mark(self) -> int:
        """Record a mark now (in stream order on CUDA); its index."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())
        return len(self.marks) - 1

    def seconds(self, start: int, stop: int) -> float:
        """Seconds from mark ``start`` to mark ``stop`` (on CUDA, waiting for ``stop`` first)."""
        a, b = self.marks[start], self.marks[stop]
        if self.cuda:
            b.synchronize()
            return a.elapsed_time(b) / 1000.0
        return b - a


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> tuple[int, str]:
    """``(bytes, kind)``: CUDA max allocated since the last reset, or the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "cpu_peak_rss"


def tune_malloc() -> bool:
    """Keep freed memory in glibc's heap instead of unmapping it (large activations are reused).

    The in-process equivalent of ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736
    MALLOC_TOP_PAD_=1073741824``. Returns whether it took effect (glibc only).
    """
    global _malloc_tuned
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        # mallopt takes a C int, so the trim threshold is capped at 2 GiB (the env variable allows more)
        ok = libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) \
            and libc.mallopt(_M_TOP_PAD, 2**30)
    except (OSError, AttributeError):
        return False
    _malloc_tuned = bool(ok)
    return _malloc_tuned


def malloc_setting() -> dict[str, object]:
    """What the CPU allocator ran with, for the result's provenance."""
    env = {k: os.environ[k] for k in MALLOC_ENV if k in os.environ}
    return {"tuned_in_process": _malloc_tuned, "env": env}
