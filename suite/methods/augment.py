"""Training-time image augmentation: the recipe of Chen, Liu, Kira, Wang & Huang (ICLR 2019), batched.

"A Closer Look at Few-shot Classification" pre-trains every method's backbone with, per image:
a random resized crop (scale 0.08-1 of the area, aspect ratio 3/4-4/3) brought back to the image size,
brightness, contrast and colour (saturation) each scaled by a factor drawn from [0.6, 1.4] in that order
(Pillow's ``ImageEnhance``, the result clipped after each), and a horizontal flip with probability 1/2.

:func:`chen2019` draws all of a batch's parameters from one CPU generator (no global RNG: the same
generator state gives the same images) and applies them as one ``grid_sample`` (crop, resize and flip
together) and three blends, on whatever device the images are on. One difference from their pipeline: our
images are stored at the network's size (84x84 for miniImageNet), so a crop is enlarged back to it, where
they cropped larger originals; bilinear sampling then matches ``torchvision``'s resize, which only
antialiases when it shrinks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mtbench.data.transforms import LUMINANCE  # Pillow's RGB -> L, as the target transforms use it

SCALE = (0.08, 1.0)  # the crop's share of the image's area (torchvision's RandomResizedCrop default)
RATIO = (3 / 4, 4 / 3)  # the crop's width / height
JITTER = 0.4  # brightness, contrast and colour factors are drawn from [1 - JITTER, 1 + JITTER]
TRIES = 10  # crops drawn per image before the whole image is taken (as torchvision does)


def crop_boxes(n: int, height: int, width: int, generator: torch.Generator) -> Tensor:
    """``n`` random resized crops of a ``height x width`` image -> ``int64[n, 4]`` rows ``(top, left, h, w)``.

    Each image tries :data:`TRIES` draws of an area share in :data:`SCALE` and a log-uniform aspect ratio in
    :data:`RATIO`, and keeps the first that fits; an image none of whose draws fit keeps the whole image. Every
    image consumes the same number of random numbers, so a batch's boxes do not depend on which draws fit.
    """
    area = height * width
    share = torch.empty(n, TRIES).uniform_(*SCALE, generator=generator)
    log_ratio = torch.empty(n, TRIES).uniform_(math.log(RATIO[0]), math.log(RATIO[1]), generator=generator)
    where = torch.rand(n, TRIES, 2, generator=generator)
    ratio = log_ratio.exp()
    w = (area * share * ratio).sqrt().round().long()
    h = (area * share / ratio).sqrt().round().long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((n,), -1))
    boxes = torch.tensor([[0, 0, height, width]]).repeat(n, 1)
    ok = first >= 0
    rows = torch.arange(n)[ok]
    picked_h, picked_w = h[rows, first[ok]], w[rows, first[ok]]
    top = (where[rows, first[ok], 0] * (height - picked_h + 1)).long()
    left = (where[rows, first[ok], 1] * (width - picked_w + 1)).long()
    boxes[ok] = torch.stack([top, left, picked_h, picked_w], 1)
    return boxes


def resized_crops(images: Tensor, boxes: Tensor, flip: Tensor) -> Tensor:
    """Each image's box enlarged back to the image's size (bilinear), mirrored where ``flip``:
    ``float[N, C, H, W]``, ``int64[N, 4]`` boxes ``(top, left, h, w)``, ``bool[N]`` -> ``float[N, C, H, W]``.

    The sampling points are those of ``F.interpolate(crop, size, mode="bilinear", align_corners=False)`` on
    the cropped box (pixel centres, clamped to the box's edge pixels), so one ``grid_sample`` gives what
    torchvision's ``resized_crop`` gives image by image.
    """
    n, _, height, width = images.shape
    top, left, h, w = boxes.to(images.device, images.dtype).unbind(1)

    def centres(start: Tensor, size: Tensor, out: int) -> Tensor:
        """Input pixel coordinates of ``out`` output pixels over ``[start, start + size)`` -> ``float[N, out]``."""
        u = torch.arange(out, dtype=images.dtype, device=images.device) + 0.5
        at = start[:, None] + u * (size / out)[:, None] - 0.5
        return torch.minimum(torch.maximum(at, start[:, None]), (start + size - 1)[:, None])

    xs, ys = centres(left, w, width), centres(top, h, height)
    xs = torch.where(flip.to(images.device)[:, None], xs.flip(1), xs)
    # grid_sample's normalised coordinates (align_corners=False): pixel x sits at (2x + 1) / W - 1
    gx = ((2 * xs + 1) / width - 1)[:, None, :].expand(n, height, width)
    gy = ((2 * ys + 1) / height - 1)[:, :, None].expand(n, height, width)
    return F.grid_sample(images, torch.stack([gx, gy], -1), mode="bilinear", align_corners=False)


def _grey(images: Tensor) -> Tensor:
    """Pillow's luminance of ``float[N, C, H, W]`` (a grey image is its own) -> ``float[N, 1, H, W]``."""
    if images.shape[1] != 3:
        return images.mean(1, keepdim=True)
    weights = torch.tensor(LUMINANCE, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def jitter(images: Tensor, factors: Tensor) -> Tensor:
    """Brightness, contrast, then colour, each blended with its reference by the image's factor and clipped:
    ``float[N, C, H, W]`` in [0, 1], ``float[N, 3]`` factors -> ``float[N, C, H, W]`` in [0, 1]."""
    f = factors.to(images.device, images.dtype).view(-1, 3, 1, 1, 1).unbind(1)
    x = (images * f[0]).clamp_(0, 1)  # brightness: blended with black
    mean = _grey(x).mean((1, 2, 3), keepdim=True)
    x = (mean + f[1] * (x - mean)).clamp_(0, 1)  # contrast: with the mean grey level
    grey = _grey(x)
    return (grey + f[2] * (x - grey)).clamp_(0, 1)  # colour: with the image's own greyscale


def chen2019(images: Tensor, generator: torch.Generator) -> Tensor:
    """Chen et al.'s pre-training augmentation of ``float[N, C, H, W]`` images in [0, 1] (not yet normalised),
    every parameter drawn from ``generator`` (CPU) -> ``float[N, C, H, W]`` in [0, 1]."""
    n, _, height, width = images.shape
    boxes = crop_boxes(n, height, width, generator)
    factors = 1 + JITTER * (2 * torch.rand(n, 3, generator=generator) - 1)
    flip = torch.rand(n, generator=generator) < 0.5
    return jitter(resized_crops(images, boxes, flip), factors)
