"""omniglot-nichol: Reptile's split of Omniglot (Nichol et al. 2018) on a tiny generated Omniglot layout; one cheap
check of the split on the real data."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from mtbench.core.errors import UserError
from mtbench.data import DATASETS
from mtbench.data import omniglot as om
from mtbench.data import omniglot_nichol as on
from mtbench.data.omniglot_nichol import OmniglotNichol, nichol_characters
from mtbench.methods import METHODS, make_hparams

from data_copies import FAKE_ALPHABETS, write_alphabets
from support import requires_real_data, shared_root

#: the generated copy has 24 characters: 10 of them to train, as 1,200 of the 1,623 are in the real split
FAKE_TRAIN = 10


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_alphabets(root)
    return root


@pytest.fixture
def nichol(root: Path, monkeypatch: pytest.MonkeyPatch) -> OmniglotNichol:
    monkeypatch.setattr(on, "TRAIN_CHARACTERS", FAKE_TRAIN)
    return OmniglotNichol(root=root, cache_dir=root / "cache", progress=False)


def characters() -> list[str]:
    return [f"{a}/character{c:02d}" for alphabets in FAKE_ALPHABETS.values() for a, n in alphabets.items()
            for c in range(1, n + 1)]


def test_is_registered_with_its_own_name_splits_and_omniglots_presets() -> None:
    cls = DATASETS.get("omniglot-nichol")
    assert cls is OmniglotNichol and (cls.fit_split, cls.eval_split) == ("train", "test")
    assert "Nichol" in cls.description
    reptile = METHODS.get("reptile")
    for budget in ("quick", "paper"):
        assert reptile.iterations_for(budget, "omniglot-nichol") == reptile.iterations_for(budget, "omniglot")
        assert make_hparams(reptile, "omniglot-nichol", {}, budget) == make_hparams(reptile, "omniglot", {}, budget)


def test_the_split_is_the_seeded_shuffle_of_the_sorted_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(on, "TRAIN_CHARACTERS", FAKE_TRAIN)
    names = characters()
    expected = sorted(names)
    random.Random(0).shuffle(expected)
    train, test = nichol_characters(list(reversed(names)))  # the order they are given in does not matter
    assert train == expected[:FAKE_TRAIN] and test == expected[FAKE_TRAIN:]
    assert nichol_characters(names) == (train, test)
    # a character split, not an alphabet split: with 10 of 24 characters some alphabet is on both sides
    assert {c.split("/")[0] for c in train} & {c.split("/")[0] for c in test}


def test_train_has_every_rotation_and_test_only_the_upright_characters(nichol: OmniglotNichol) -> None:
    train, test = nichol.load("train"), nichol.load("test")
    assert (train.num_classes, test.num_classes) == (4 * FAKE_TRAIN, len(characters()) - FAKE_TRAIN)
    assert all(n.endswith("/rot000") for n in test.class_names)
    train_chars = {n.rsplit("/", 1)[0] for n in train.class_names}
    assert len(train_chars) == FAKE_TRAIN and not train_chars & {n.rsplit("/", 1)[0] for n in test.class_names}
    assert int(train.class_count.min()) == int(train.class_count.max()) == 20
    # the images are omniglot's decoded drawings, turned counter-clockwise for the rotated classes
    names, images = om.Omniglot(root=nichol.root, cache_dir=nichol.cache_dir, progress=False)._decoded()
    char = sorted(train_chars)[0]
    upright = images[names.index(char)]
    for k, rot in enumerate(om.ROTATIONS):
        got = train.images[train.labels == train.class_names.index(f"{char}/rot{rot:03d}")][:, 0]
        assert torch.equal(got, torch.rot90(upright, k, dims=(-2, -1)))
    first = test.class_names[0].rsplit("/", 1)[0]
    assert torch.equal(test.images[test.labels == 0][:, 0], images[names.index(first)])
    assert any("Nichol et al. (2018)" in n for n in nichol.notes)


def test_a_copy_too_small_for_the_split_is_a_one_line_error(root: Path) -> None:
    small = OmniglotNichol(root=root, cache_dir=root / "cache", progress=False)  # 24 characters, 1,200 to train
    with pytest.raises(UserError) as err:
        small.load("test")
    message = str(err.value)
    assert "24 characters" in message and "1,623" in message and "mtbench data verify omniglot" in message
    assert "\n" not in message


@pytest.mark.realdata
def test_real_nichol_split() -> None:
    """4,800 training classes (1,200 characters x 4 rotations) and 423 upright test characters from 49 of the 50
    alphabets; the shuffle's first test characters pinned (the standard library's seeded shuffle)."""
    requires_real_data("omniglot")
    data = OmniglotNichol(root=shared_root(), progress=False)
    train, test = data.load("train"), data.load("test")
    assert (train.num_classes, test.num_classes) == (4800, 423)
    assert len({n.split("/")[0] for n in test.class_names}) == 49
    assert test.class_names[:3] == ("Malayalam/character17/rot000", "Mkhedruli_(Georgian)/character07/rot000",
                                    "Japanese_(hiragana)/character33/rot000")
