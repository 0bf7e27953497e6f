"""The declared transforms that bring a target's images to a source network's input.

A method fitted on one dataset takes images of that dataset's shape. A target of another size or
number of channels is brought to it, on its uint8 images, once, before any episode is drawn:

* RGB → grey: ITU-R 601-2 luminance, ``L = 0.299 R + 0.587 G + 0.114 B`` (what Pillow's ``L`` does);
* resize: bilinear with antialiasing (``torch.nn.functional.interpolate``), rounded to uint8;
* grey → 3 channels: the grey channel repeated;
* the images are then normalised with the source's mean and std, as the network saw its inputs.

:func:`to_input` returns the transformed split and one sentence saying what ran, which a result
records among its dataset notes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mtbench.core.errors import UserError
from mtbench.data.base import Split

LUMINANCE = (0.299, 0.587, 0.114)


def describe_shape(shape: tuple[int, ...]) -> str:
    c, h, w = shape
    return f"{h}x{w} {'grey' if c == 1 else 'RGB' if c == 3 else f'{c}-channel'}"


def convert(images: torch.Tensor, shape: tuple[int, int, int]) -> tuple[torch.Tensor, list[str]]:
    """``uint8[N, C, H, W]`` -> ``uint8[N, *shape]`` and the steps that ran, in words."""
    c, h, w = images.shape[1:]
    tc, th, tw = shape
    steps: list[str] = []
    if c not in (1, 3) or tc not in (1, 3):
        raise UserError(f"cannot bring {c}-channel images to a {tc}-channel network: only grey (1) and RGB (3) "
                        f"images convert; choose a source with {c} channel(s)")
    x = images
    if c == 3 and tc == 1:
        weights = torch.tensor(LUMINANCE, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        x = (x.float() * weights).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
        steps.append("RGB → grey by luminance (0.299 R + 0.587 G + 0.114 B)")
    if (h, w) != (th, tw):
        chunks = [F.interpolate(part.float(), size=(th, tw), mode="bilinear", align_corners=False, antialias=True)
                  .round_().clamp_(0, 255).to(torch.uint8) for part in x.split(1024)]
        x = torch.cat(chunks) if chunks else x.new_zeros((0, x.shape[1], th, tw))
        steps.append(f"resized {h}x{w} → {th}x{tw} (bilinear, antialiased)")
    if x.shape[1] == 1 and tc == 3:
        x = x.expand(-1, 3, -1, -1).contiguous()
        steps.append("grey → 3 channels by repetition")
    return x, steps


def to_input(split: Split, shape: tuple[int, int, int], mean: tuple[float, ...], std: tuple[float, ...],
             source: str) -> tuple[Split, str]:
    """``split`` brought to ``shape`` and normalised with ``mean``/``std`` (the source's), and the note saying so."""
    images, steps = convert(split.images, shape)
    out = Split(split.dataset, split.name, images, split.labels, split.class_names, tuple(mean), tuple(std),
                split.version)
    note = (f"brought to the input of a network fitted on {source}: {describe_shape(split.image_shape)} → "
            f"{describe_shape(shape)}: {'; '.join(steps)}; normalised with {source}'s mean "
            f"{tuple(round(m, 4) for m in mean)} and std {tuple(round(s, 4) for s in std)}")
    return out, note
