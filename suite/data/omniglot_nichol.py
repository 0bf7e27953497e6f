"""Omniglot as Nichol, Achiam & Schulman (2018) split it for Reptile: the ``omniglot-nichol`` dataset.

Reptile's published Omniglot figures come from their code's own split, not from the Vinyals et al. split that
``omniglot`` uses (and that MAML, Prototypical and Matching Networks report on). That code (openai/supervised-reptile,
``run_omniglot.py``) pools the 50 alphabets of both official folders, lists the 1,623 characters alphabet by
alphabet (names sorted), shuffles the list with Python's ``random`` seeded 0, and keeps:

* ``train`` — the first 1,200 characters of the shuffled list, each with its 90, 180 and 270 degree rotations as
  three more classes (4,800 classes): the fit split;
* ``test`` — the other 423 characters, **unrotated** (423 classes): the test split.

So its test characters come from alphabets it also trains on (a random split of characters, not of alphabets), and
its test episodes never hold two rotations of one character. The same list and the same shuffle
(:func:`nichol_characters`: the standard library's ``random.Random(0)``, whose shuffle is the one that code ran)
give the same characters here.

Where it differs from that code (said in every result's dataset notes): the drawings are ``omniglot``'s decoded
28x28 images (Lanczos-resized, strokes bright on black), not its nearest-neighbour resize of the 1-bit PNG with dark
strokes; and the episodes are mtbench's seeded draws (``--queries`` per class; that code scored one query per class).

Methods take ``omniglot``'s presets and budgets here (``presets_of``): the images are the same.
"""

from __future__ import annotations

import random

from mtbench.core.errors import UserError
from mtbench.data.base import DATASETS, Split
from mtbench.data.omniglot import ROTATIONS, Omniglot

#: characters of the training split; the rest (423 of the 1,623) are the test split
TRAIN_CHARACTERS = 1200
#: the seed of the shuffle (``random.seed(args.seed)``, ``--seed`` defaulting to 0 in that code)
SHUFFLE_SEED = 0
NOTE = ("Nichol et al. (2018) protocol (supervised-reptile's split): a seeded shuffle of all 1,623 characters, the "
        "first 1,200 with their rotations (4,800 classes) to fit on, the other 423 unrotated to test on, so test "
        "characters share alphabets with training ones; drawings decoded as omniglot's (Lanczos 28 px), not that "
        "code's nearest-neighbour resize")


def nichol_characters(names: list[str]) -> tuple[list[str], list[str]]:
    """(train, test) characters ``Alphabet/characterNN`` of ``names`` (every character of both folders), as
    supervised-reptile splits them: sorted by alphabet then character name, shuffled by ``random.Random(0)``, the
    first :data:`TRAIN_CHARACTERS` to train."""
    listed = sorted(names, key=lambda n: tuple(n.split("/")))  # os.listdir of alphabets, then of characters, sorted
    random.Random(SHUFFLE_SEED).shuffle(listed)
    return listed[:TRAIN_CHARACTERS], listed[TRAIN_CHARACTERS:]


@DATASETS.register
class OmniglotNichol(Omniglot):
    """Omniglot with Nichol et al.'s split for Reptile: 1,200 random characters with rotations to fit on (4,800
    classes), the other 423 unrotated to test on."""

    name = "omniglot-nichol"
    description = "Omniglot as Nichol et al. 2018 (Reptile's code): 1,200 random characters x4 rotations, 423 unrotated"
    version = "1"
    splits = ("train", "test")
    fit_split = "train"
    eval_split = "test"
    #: methods' presets and budgets are those they keep for ``omniglot`` (same images, same size)
    presets_of = "omniglot"
    protocol_note = NOTE

    def load_split(self, split: str) -> Split:
        names, images = self._decoded()
        if len(names) <= TRAIN_CHARACTERS:
            raise UserError(f"Omniglot under {self.folder} has {len(names)} characters, too few for Nichol et al.'s "
                            f"split ({TRAIN_CHARACTERS} to train, the rest to test; the official release has 1,623): "
                            f"the copy is incomplete; download it again (`mtbench data download omniglot` into an "
                            f"empty data root) and check it with `mtbench data verify omniglot`")
        train, test = nichol_characters(names)
        classes = ([f"{c}/rot{r:03d}" for c in train for r in ROTATIONS] if split == "train"
                   else [f"{c}/rot000" for c in test])
        return self._split_of(split, classes, names, images)
