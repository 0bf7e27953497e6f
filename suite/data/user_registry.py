"""The user's own datasets by name: a small JSON file in the user's config folder, never in the project.

``mtbench data add NAME PATH`` writes ``{"NAME": {"path": ..., "image_size": ..., "channels": ...}}`` into
``$MTBENCH_CONFIG/datasets.json`` (default ``~/.config/mtbench/datasets.json``, or under
``$XDG_CONFIG_HOME``); :mod:`mtbench.data.folder` turns each entry into an image-folder dataset that the
registry lists beside the built-in ones.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from mtbench.core.atomic import atomic_write
from mtbench.core.errors import UserError

FILE = "datasets.json"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def config_dir() -> Path:
    """``$MTBENCH_CONFIG``, else ``$XDG_CONFIG_HOME/mtbench``, else ``~/.config/mtbench``."""
    env = os.environ.get("MTBENCH_CONFIG")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "mtbench"


def registry_file() -> Path:
    return config_dir() / FILE


def read() -> dict[str, dict[str, Any]]:
    """The registered folders, ``{name: {"path", "image_size", "channels"}}``; empty when there is no file."""
    path = registry_file()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read the dataset registry {path} ({exc}); fix or remove the file") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) and isinstance(v.get("path"), str)
                                             for v in data.values()):
        raise UserError(f"{path} is not an mtbench dataset registry ({{name: {{\"path\": ...}}}}); fix or remove it")
    return data


def add(name: str, path: Path, image_size: int | None, channels: int | None, builtin: bool) -> Path:
    """Register ``name`` for the image folder at ``path`` (absolute), atomically; return the registry file.

    ``builtin``: whether ``name`` is taken by a built-in dataset (refused)."""
    if not NAME.match(name):
        raise UserError(f"dataset name '{name}' must be letters, digits, '_', '.' or '-' (starting with a letter or "
                        f"digit), e.g. my-xrays")
    if builtin:
        raise UserError(f"'{name}' is the name of a built-in dataset; choose another name for {path}")
    if image_size is not None and not 4 <= image_size <= 1024:
        raise UserError(f"--image-size must be between 4 and 1024 pixels, got {image_size}")
    if channels not in (None, 1, 3):
        raise UserError(f"--channels must be 1 (grey) or 3 (RGB), got {channels}")
    entries = read()
    entries[name] = {"path": str(path), "image_size": image_size, "channels": channels}
    text = json.dumps(dict(sorted(entries.items())), indent=1) + "\n"
    file = registry_file()
    file.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(file, lambda tmp: tmp.write_text(text, encoding="utf-8"))
