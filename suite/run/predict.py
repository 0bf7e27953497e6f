"""``mtbench predict``: adapt a saved method on the user's labelled images and classify new ones.

The checkpoint (``mtbench run ... --save fit.pt``) says which method, with which hparams, took which
input: the image shape it was evaluated with (``in_shape``), the shape the target was decoded at
before being brought to it (``decoded_shape``), and the normalisation (``mean``/``std``). The support
and query images are decoded as an image folder's are (:mod:`mtbench.data.images`), at the decoded
shape, brought to ``in_shape`` by the same declared transform (:mod:`mtbench.data.transforms`) and
normalised as in the run: the preprocessing the checkpoint was evaluated with. The method is built and
loaded as a run's ``--init`` does (:func:`~mtbench.run.checkpoints.restore`), adapted once on the
whole support set, and its final predictor scores every query image.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mtbench.core.atomic import atomic_write
from mtbench.core.errors import UserError
from mtbench.core.runtime import select_device
from mtbench.data.base import some
from mtbench.data.images import decode, find_images, scan
from mtbench.data.transforms import convert
from mtbench.methods import METHODS
from mtbench.run.checkpoints import read_checkpoint, recalibrate_batchnorm, restore
from mtbench.run.spec import fit_seed


@dataclass
class Predictions:
    """What :func:`predict` did: the classes, one ``(file, class index, probabilities)`` per query image."""

    method: str
    classes: list[str]
    rows: list[tuple[str, int, list[float]]]
    support_images: int
    notes: list[str] = field(default_factory=list)


def _decode(root: Path, files: list[str], shape: tuple[int, int, int], skip_bad: bool, what: str,
            progress: bool) -> tuple[torch.Tensor, list[int], list[str]]:
    """``uint8[kept, *shape]``, the positions kept, and a note on skipped files; a bad file stops it unless skipped."""
    images, bad = decode([root / f for f in files], shape[1], shape[0], progress, desc=f"decoding {what}")
    if bad and not skip_bad:
        i, why = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise UserError(f"{root / files[i]} is not a readable image ({why}){more}: replace or remove it, or add "
                        f"--skip-bad-images to leave it out")
    dropped = {i for i, _ in bad}
    keep = [i for i in range(len(files)) if i not in dropped]
    note = [f"skipped {len(bad)} unreadable image(s) in {what}: {some(files[i] for i, _ in bad)}"] if bad else []
    return torch.from_numpy(images[keep]), keep, note


def predict(init: str | Path, support: str | Path, query: str | Path, device: str = "auto", progress: bool = True,
            skip_bad_images: bool = False) -> Predictions:
    """Adapt the checkpoint's method on ``support`` (one sub-folder of images per class) and classify every
    image under ``query``; a :class:`UserError` for any bad input, before anything is computed."""
    blob, _ = read_checkpoint(init)
    method_cls = METHODS.get(str(blob["method"]))
    in_shape = tuple(int(v) for v in blob["in_shape"])
    if "mean" not in blob or "std" not in blob:
        raise UserError(f"--init {init} does not record the normalisation its method was evaluated with (a checkpoint "
                        f"from an older mtbench); save it again with `mtbench run ... --save PATH`")
    decoded = tuple(int(v) for v in blob.get("decoded_shape", in_shape))
    support, query = Path(support), Path(query)
    found = scan(support, f"--support {support}")
    queries, ignored = find_images(query, f"--query {query}")
    notes = []
    if found.ignored or ignored:
        skipped = [*(f"{support.name}/{f}" for f in found.ignored), *(f"{query.name}/{f}" for f in ignored)]
        notes.append(f"ignored {len(skipped)} non-image file(s): {some(skipped)}")
    files = [f for fs in found.files for f in fs]
    labels = torch.arange(len(found.classes)).repeat_interleave(torch.tensor([len(fs) for fs in found.files]))
    sx, kept, note = _decode(support, files, decoded, skip_bad_images, "the support images", progress)
    notes += note
    sy = labels[kept]
    present = torch.bincount(sy, minlength=len(found.classes))
    if bool((present == 0).any()):
        empty = found.classes[int((present == 0).nonzero()[0])]
        raise UserError(f"class '{empty}' of --support {support} has no readable image: add images to it")
    qx, qkept, note = _decode(query, queries, decoded, skip_bad_images, "the query images", progress)
    notes += note
    if not qkept:
        raise UserError(f"--query {query} holds no readable image")
    if decoded != in_shape:
        sx, qx = convert(sx, in_shape)[0], convert(qx, in_shape)[0]
    dev = select_device(device)
    mean = torch.tensor(blob["mean"], dtype=torch.float32, device=dev).view(-1, 1, 1)
    std = torch.tensor(blob["std"], dtype=torch.float32, device=dev).view(-1, 1, 1)
    sx = (sx.to(dev).float() / 255.0 - mean) / std
    qx = (qx.to(dev).float() / 255.0 - mean) / std
    sy = sy.to(dev)
    ways = len(found.classes)
    generator = torch.Generator().manual_seed(fit_seed(0))
    method, missing = restore(blob, ways, dev, generator)
    if missing:  # BatchNorm statistics the checkpoint did not keep: estimated on the support images
        modules = method.modules()
        for attr in dict.fromkeys(k.split(".")[0] for k in missing):
            _recalibrate(modules[attr], sx, generator)
        notes.append("BatchNorm statistics re-estimated on the support images (the checkpoint has none)")
    with torch.no_grad():
        predictor = None
        for predictor in method.adapt(sx, sy, ways):
            pass
        if predictor is None:
            raise RuntimeError(f"{method_cls.name}.adapt yielded no predictor")
        probs = torch.softmax(predictor(qx).float(), dim=-1).cpu()
    rows = [(queries[i], int(p.argmax()), p.tolist()) for i, p in zip(qkept, probs)]
    return Predictions(method_cls.name, list(found.classes), rows, len(kept), notes)


class _Normalised:
    """What :func:`recalibrate_batchnorm` reads of a split (``images``, ``device``, ``gather``), over
    images that are already normalised floats."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images, self.device = images, images.device

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        return self.images[idx]


def _recalibrate(module: torch.nn.Module, images: torch.Tensor, generator: torch.Generator) -> None:
    recalibrate_batchnorm(module, _Normalised(images), generator,  # type: ignore[arg-type]
                          batch_size=min(64, images.shape[0]))


def write_csv(result: Predictions, path: str | Path) -> Path:
    """One row per query image: ``file``, ``predicted`` (class name), then ``p_<class>`` per class; atomic."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["file", "predicted", *(f"p_{c}" for c in result.classes)])
            for name, label, probs in result.rows:
                out.writerow([name, result.classes[label], *(f"{p:.6f}" for p in probs)])

    return atomic_write(Path(path), write)
