"""The domain-shift dataset (``omniglot-shift``) and how the runner hands target images to ``fit``.

The MNIST-M blend is checked on tiny generated tensors; the real dataset (Omniglot characters in
miniImageNet patches) only where both real datasets are present; the protocol plumbing
(``unlabelled_split`` -> ``FitContext.unlabelled`` -> the result record) with a test-only
dataset and method registered for the duration of the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from support import requires_real_data, shared_root

from mtbench.data import DATASETS, Dataset, Split
from mtbench.core.seeding import generator
from mtbench.data.omniglot_shift import blend_into_patches
from mtbench.data.episodes import EpisodeSpec
from mtbench.methods import METHODS, FitContext, Method
from mtbench.results import validate
from mtbench.run.runner import RunSpec, run


# -- the blend ------------------------------------------------------------------------------------
def photos_and_chars(n: int = 24, p: int = 3, size: int = 8, h: int = 4):
    g = torch.Generator().manual_seed(11)
    photos = torch.randint(0, 256, (p, 3, size, size), generator=g, dtype=torch.uint8)
    chars = torch.randint(0, 256, (n, 1, h, h), generator=g, dtype=torch.uint8)
    return photos, chars


def all_crops(photos: torch.Tensor, h: int) -> torch.Tensor:
    """Every ``h x h`` crop of every photo: ``uint8[P * positions, 3, h, h]``."""
    _, _, ph, pw = photos.shape
    return torch.stack([photos[i, :, t:t + h, l:l + h] for i in range(photos.shape[0])
                        for t in range(ph - h + 1) for l in range(pw - h + 1)])


def blend(chars: torch.Tensor, photos: torch.Tensor, seed: int) -> torch.Tensor:
    return blend_into_patches(chars, photos, torch.Generator().manual_seed(seed))


def test_blend_is_the_photo_crop_where_blank_and_its_inverse_under_strokes() -> None:
    photos, chars = photos_and_chars()
    n, h = chars.shape[0], chars.shape[-1]
    blank, full = torch.zeros_like(chars), torch.full_like(chars, 255)

    crops = blend(blank, photos, seed=1)  # character 0 everywhere: the crops themselves
    assert crops.shape == (n, 3, h, h) and crops.dtype == torch.uint8
    candidates = all_crops(photos, h).flatten(1)
    match = (crops.flatten(1)[:, None, :] == candidates[None]).all(-1)  # [n, candidates]
    assert bool((match.sum(1) == 1).all()), "each blank output must be exactly one crop of one photo"
    assert len(match.float().argmax(1).unique()) > 1, "every image got the same crop"

    assert torch.equal(blend(full, photos, seed=1), 255 - crops)  # strokes everywhere: inverted crop
    # a mixed character: crop where 0, inverted crop where 255
    mask = torch.rand(chars.shape, generator=torch.Generator().manual_seed(2)) < 0.5
    binary = torch.where(mask, 255, 0).to(torch.uint8)
    mixed = blend(binary, photos, seed=1)
    assert torch.equal(mixed, torch.where(mask.expand_as(crops), 255 - crops, crops))
    # any grey level: |crop - character| per channel
    graded = blend(chars, photos, seed=1)
    assert torch.equal(graded, (crops.to(torch.int16) - chars.to(torch.int16)).abs().to(torch.uint8))


def test_blend_is_deterministic_per_seed() -> None:
    photos, chars = photos_and_chars()
    assert torch.equal(blend(chars, photos, seed=3), blend(chars, photos, seed=3))
    assert not torch.equal(blend(chars, photos, seed=3), blend(chars, photos, seed=4))
    # the draws do not depend on the characters: the same seed gives the same crops for any input
    blank = torch.zeros_like(chars)
    assert torch.equal(blend(blank, photos, seed=3), blend(blank, photos, seed=3))


# -- the real dataset -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shift():
    requires_real_data("omniglot")
    requires_real_data("mini-imagenet")
    data = DATASETS.get("omniglot-shift")(root=shared_root(), progress=False)
    if not data.is_available():
        pytest.skip("omniglot-shift needs omniglot/ and mini-imagenet/train.csv under the data root")
    splits = {name: data.load(name) for name in ("source", "target", "test")}
    return data, splits


def drawings(split: Split, per_class: int = 20) -> torch.Tensor:
    """A split whose classes all have ``per_class`` images, as ``uint8[classes, per_class, C, H, W]``."""
    assert bool((split.class_count == per_class).all())
    return split.images.view(split.num_classes, per_class, *split.image_shape)


@pytest.mark.realdata
def test_source_and_target_split_the_drawings_of_the_same_classes(shift) -> None:
    """Source: the even-position drawings, grey in 3 channels; target: the odd ones, blended."""
    data, s = shift
    source, target = s["source"], s["target"]
    trainval = data.omniglot.load("trainval")
    assert data.fit_split == "source" and data.unlabelled_split == "target" and data.eval_split == "test"
    assert source.class_names == target.class_names == trainval.class_names
    assert len(source.labels) == len(target.labels) == len(trainval.labels) // 2
    assert torch.equal(source.labels, target.labels)
    assert source.image_shape == target.image_shape == (3, 28, 28)

    per_class = drawings(trainval)  # [classes, 20, 1, 28, 28]
    even, odd = per_class[:, 0::2], per_class[:, 1::2]
    assert torch.equal(source.images, even.reshape(-1, 1, 28, 28).expand(-1, 3, -1, -1))
    rebuilt = blend_into_patches(odd.reshape(-1, 1, 28, 28), data.photos(),
                                 generator(f"{data.name}/v{data.version}/target"))
    assert torch.equal(target.images, rebuilt), "target must be the odd-position drawings, blended"

    # no drawing is in both: within every class the even and odd drawings are different images
    weights = torch.randint(1, 2**31, (28 * 28,), generator=torch.Generator().manual_seed(0))
    h_even = (even[:, :, 0].reshape(*even.shape[:2], -1).long() * weights).sum(-1)  # [classes, 10]
    h_odd = (odd[:, :, 0].reshape(*odd.shape[:2], -1).long() * weights).sum(-1)
    assert not bool((h_even[:, :, None] == h_odd[:, None, :]).any())


@pytest.mark.realdata
def test_test_split_is_the_omniglot_test_classes_blended(shift) -> None:
    data, s = shift
    test, omni_test = s["test"], data.omniglot.load("test")
    assert test.class_names == omni_test.class_names
    assert torch.equal(test.labels, omni_test.labels)
    assert test.image_shape == (3, 28, 28)
    assert not set(test.class_names) & set(s["source"].class_names)
    rebuilt = blend_into_patches(omni_test.images, data.photos(),
                                 generator(f"{data.name}/v{data.version}/test"))
    assert torch.equal(test.images, rebuilt)


def colourful(images: torch.Tensor) -> torch.Tensor:
    """Per image: whether its channels differ anywhere."""
    return ((images[:, 0] != images[:, 1]) | (images[:, 1] != images[:, 2])).flatten(1).any(1)


@pytest.mark.realdata
def test_target_and_test_are_colour_while_source_is_grey(shift) -> None:
    _, s = shift
    assert not bool(colourful(s["source"].images).any())
    for name in ("target", "test"):
        share = float(colourful(s[name].images).float().mean())
        # a few miniImageNet photos are black-and-white: their patches stay grey
        assert share > 0.9, f"{name}: only {share:.1%} of the images have colour"


@pytest.mark.realdata
def test_loading_twice_gives_identical_tensors(shift) -> None:
    _, s = shift
    again = DATASETS.get("omniglot-shift")(root=shared_root(), progress=False)
    for name in ("source", "target", "test"):
        split = again.load(name)
        assert torch.equal(split.images, s[name].images), name
        assert torch.equal(split.labels, s[name].labels), name
        assert split.class_names == s[name].class_names
        assert split.fingerprint == s[name].fingerprint


# -- the runner hands the unlabelled split to fit -----------------------------------------------
class PoolData(Dataset):
    """Test-only: 3 classes x 4 images per split, and a ``pool`` split as unlabelled target."""

    name = "test-domain-shift-pool"
    splits = ("train", "pool", "test")
    fit_split = "train"
    eval_split = "test"
    unlabelled_split = "pool"
    loaded: ClassVar[list[str]] = []

    def load_split(self, split: str) -> Split:
        PoolData.loaded.append(split)
        g = torch.Generator().manual_seed({"train": 1, "pool": 2, "test": 3}[split])
        images = torch.randint(0, 256, (12, 3, 8, 8), generator=g, dtype=torch.uint8)
        labels = torch.arange(3).repeat_interleave(4)
        return Split(self.name, split, images, labels, tuple(f"{split}-{i}" for i in range(3)),
                     mean=(0.5,) * 3, std=(0.25,) * 3)


@dataclass(frozen=True)
class RecorderHparams:
    pass


class Recorder(Method):
    """Test-only: records the context ``fit`` receives; predicts class 0."""

    name = "test-domain-shift-recorder"
    description = "records FitContext.unlabelled (test only)"
    Hparams = RecorderHparams
    budgets = {"default": {"quick": 1, "paper": 1}}
    contexts: ClassVar[list[FitContext]] = []

    def fit(self, ctx: FitContext) -> None:
        Recorder.contexts.append(ctx)
        ctx.note("recorded the unlabelled pool")

    def adapt(self, support_x, support_y, ways):
        yield lambda query_x: torch.zeros(len(query_x), ways)


@pytest.fixture
def registered():
    DATASETS.register(PoolData)
    METHODS.register(Recorder)
    PoolData.loaded.clear()
    Recorder.contexts.clear()
    try:
        yield
    finally:
        DATASETS.unregister(PoolData.name)
        METHODS.unregister(Recorder.name)


def run_recorder(dataset: str, budget: str) -> dict:
    spec = RunSpec(method=Recorder.name, dataset=dataset, episodes=EpisodeSpec(ways=2, shots=1, queries=1,
                   episodes=2, seed=0), budget=budget, device="cpu", out=None, progress=False)
    doc, path = run(spec)
    assert path is None and validate(doc) == []
    return doc


def test_runner_passes_the_unlabelled_split_without_labels(registered) -> None:
    doc = run_recorder(PoolData.name, "2")
    assert len(Recorder.contexts) == 1
    ctx = Recorder.contexts[0]
    pool, test = PoolData().load("pool"), PoolData().load("test")
    got = ctx.unlabelled
    assert got is not None
    assert got.num_classes == 1 and got.class_names == ("unlabelled",)
    assert bool((got.labels == 0).all()) and len(got.labels) == len(pool.labels)
    assert torch.equal(got.images, pool.images) and not torch.equal(got.images, test.images)
    assert got.dataset == PoolData.name and "pool" in got.name
    assert ctx.source.name == "train" and ctx.iterations == 2
    assert doc["dataset"]["unlabelled_split"] == "pool"
    assert doc["fit"]["notes"] == ["recorded the unlabelled pool"]


def test_runner_without_a_fit_loads_no_unlabelled_split(registered) -> None:
    doc = run_recorder(PoolData.name, "0")
    assert Recorder.contexts == []
    assert PoolData.loaded == ["test"], PoolData.loaded
    assert doc["dataset"]["unlabelled_split"] is None
    assert doc["fit"]["notes"] == []


def test_runner_on_a_dataset_without_target_images_passes_none(registered) -> None:
    doc = run_recorder("synthetic", "1")
    assert Recorder.contexts[0].unlabelled is None
    assert doc["dataset"]["unlabelled_split"] is None
    assert isinstance(doc["fit"]["notes"], list)


def test_photos_are_the_first_of_each_class_whatever_the_copy(tmp_path: Path) -> None:
    """The full miniImageNet and a first-k-per-class subset give the same photos, hence the same target."""
    from PIL import Image

    from mtbench.data.omniglot_shift import PHOTOS_PER_CLASS

    def make(root: Path, per_class: int) -> None:
        (root / "mini-imagenet" / "images").mkdir(parents=True)
        rows = ["filename,label"]
        for c in range(3):
            for i in range(per_class):
                name = f"n{c:08d}{i:08d}.jpg"
                Image.new("RGB", (84, 84), (40 * c, 10 * i, 5)).save(root / "mini-imagenet" / "images" / name)
                rows.append(f"{name},n{c:08d}")
        (root / "mini-imagenet" / "train.csv").write_text("\n".join(rows) + "\n")

    make(tmp_path / "full", 3 * PHOTOS_PER_CLASS)
    make(tmp_path / "subset", PHOTOS_PER_CLASS + 1)
    full = DATASETS.get("omniglot-shift")(root=tmp_path / "full").photos()
    subset = DATASETS.get("omniglot-shift")(root=tmp_path / "subset").photos()
    assert full.shape == (3 * PHOTOS_PER_CLASS, 3, 84, 84)
    assert torch.equal(full, subset)
