"""Omniglot as Lake, Salakhutdinov & Tenenbaum (Science 2015) defined it: the ``omniglot-lake`` dataset.

The same copy and decoded images as ``omniglot`` (:mod:`mtbench.data.omniglot`), with Lake et al.'s
splits instead of the Vinyals et al. split:

* ``background`` — the 964 characters of the 30 alphabets of ``images_background/``: the fit split;
* ``evaluation`` — the 659 characters of the 20 alphabets of ``images_evaluation/``: the test split.

Each character is one class, named ``Alphabet/characterNN``; there are no rotated copies. The split
keeps the alphabet of each class (a :class:`~mtbench.data.episodes.GroupedSplit`), so every evaluation
episode takes all its classes from one alphabet, picked uniformly among the alphabets with at least
``--ways`` characters: Lake et al.'s within-alphabet one-shot classification is ``--ways 20 --shots 1``
(every evaluation alphabet has 20 characters or more, so all 20 take part).

Where it differs from Lake et al.'s 20 published runs (said in every result's dataset notes): the
episodes are mtbench's seeded draws (``--episodes``, ``--queries``), and the support and query drawings
of a character are drawn among its 20 drawings, not taken from two drawers. A method's training
episodes are drawn over all background characters, as on ``omniglot``.

Methods take ``omniglot``'s presets and budgets here (``presets_of``): the images are the same.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mtbench.core.errors import UserError
from mtbench.data.base import DATASETS
from mtbench.data.episodes import GroupedSplit
from mtbench.data.omniglot import Omniglot

#: split -> the official folder it is made of
LAKE_FOLDERS = {"background": "images_background", "evaluation": "images_evaluation"}
NOTE = ("Lake et al. (2015) protocol: fit on the 30 background alphabets, scored on episodes whose classes all "
        "come from one of the 20 evaluation alphabets; one class per character, no rotations; support and query "
        "drawings drawn among each character's 20 (not from two drawers as in Lake et al.'s 20 runs)")


def character_folders(folder: Path) -> list[str]:
    """``["Alphabet/characterNN", ...]`` of one extracted Omniglot folder, in the order :meth:`Omniglot.characters`
    lists them (a directory listing: no drawing is read)."""
    return [f"{a.name}/{c.name}" for a in sorted(p for p in folder.iterdir() if p.is_dir())
            for c in sorted(p for p in a.iterdir() if p.is_dir())]


@DATASETS.register
class OmniglotLake(Omniglot):
    """Omniglot with Lake et al.'s split: 30 background alphabets to fit on, within-alphabet episodes of the 20
    evaluation alphabets (964 + 659 classes, no rotations)."""

    name = "omniglot-lake"
    description = "Omniglot as Lake et al. 2015: 30 background alphabets to fit, within-alphabet episodes of the 20 others"
    version = "1"
    splits = ("background", "evaluation")
    fit_split = "background"
    eval_split = "evaluation"
    #: methods' presets and budgets are those they keep for ``omniglot`` (same images, same size)
    presets_of = "omniglot"
    protocol_note = NOTE

    def configure(self, protocol: str, source_shape: tuple[int, int, int] | None = None,
                  skip_bad_images: bool = False) -> None:
        """Refuse what would lose the alphabets: the transfer protocol (its trials take every class at once) and a
        source network of another input shape (the images brought to it would be a plain split)."""
        if protocol == "transfer":
            raise UserError("omniglot-lake is scored on within-alphabet episodes, but --protocol transfer draws over "
                            "all 659 evaluation characters at once; use --protocol episodes (e.g. --ways 20 --shots 1)")
        own = (1, self.size, self.size)
        if source_shape is not None and tuple(source_shape) != own:
            c, h, w = source_shape
            raise UserError(f"--source: its networks take {h}x{w} images of {c} channel(s), and omniglot-lake's "
                            f"{own[1]}x{own[2]} grey characters brought to them would lose the alphabets its episodes "
                            f"are drawn within; fit on a source of {own[1]}x{own[2]} grey images (omniglot-lake's own "
                            f"background split: drop --source)")

    def load_split(self, split: str) -> GroupedSplit:
        names, images = self._decoded()  # background characters first, then evaluation (Omniglot.characters)
        first = len(character_folders(self.folder / LAKE_FOLDERS["background"]))
        keep = range(first) if split == "background" else range(first, len(names))
        if not keep:
            raise UserError(f"Omniglot under {self.folder} has no characters in {LAKE_FOLDERS[split]}/: the copy is "
                            f"incomplete; download it again (`mtbench data download omniglot` into an empty data "
                            f"root) and check it with `mtbench data verify omniglot`")
        classes = tuple(names[i] for i in keep)
        picked = images[torch.tensor(list(keep))]  # [n_classes, 20, H, W]
        n_cls, per, h, w = picked.shape
        return GroupedSplit(
            self.name, split, picked.reshape(n_cls * per, 1, h, w).contiguous(),
            torch.arange(n_cls).repeat_interleave(per), classes, mean=(0.0,), std=(1.0,), version=self.version,
            groups=tuple(c.split("/")[0] for c in classes), group_kind="alphabet",
        )
