"""Tests for mtbench.data.episodes: the spec's validation, the sampler and the fixed evaluation episodes."""

from __future__ import annotations

import pytest
import torch

from mtbench.data import Split
from mtbench.data.synthetic import Synthetic
from mtbench.data.episodes import EpisodeSet, EpisodeSpec, make_episode, sample_indices
from mtbench.core.errors import UserError


def tiny_split(sizes: tuple[int, ...], *, name: str = "test", version: str = "1",
               class_names: tuple[str, ...] | None = None) -> Split:
    """A hand-built split; image ``i`` is a 1x2x2 image whose pixels all equal ``i`` (so indices can be read back)."""
    n = sum(sizes)
    assert n < 256
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    labels = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    names = class_names if class_names is not None else tuple(f"class{i}" for i in range(len(sizes)))
    return Split("tiny", name, images, labels, names, mean=(0.5,), std=(0.25,), version=version)


def pixel_to_index(x: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation of :func:`tiny_split` images: ``float[N, 1, 2, 2]`` -> ``int64[N]``."""
    return ((x[:, 0, 0, 0] * 0.25 + 0.5) * 255.0).round().long()


@pytest.fixture(scope="module")
def synthetic_test(tmp_path_factory) -> Split:
    root = tmp_path_factory.mktemp("data")
    return Synthetic(root=root, cache_dir=root / "cache", progress=False).load("test")


SPEC = EpisodeSpec(ways=5, shots=2, queries=3, episodes=10, seed=0)


# -- EpisodeSpec --------------------------------------------------------------------------------
def test_spec_defaults_and_per_class():
    spec = EpisodeSpec()
    assert (spec.ways, spec.shots, spec.queries, spec.episodes, spec.seed) == (5, 1, 15, 600, 0)
    assert EpisodeSpec(ways=3, shots=4, queries=6).per_class == 10
    assert EpisodeSpec(ways=3, shots=4, queries=6).describe() == "3-way 4-shot, 6 queries/class"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"ways": 1}, "--ways"),
        ({"ways": 0}, "--ways"),
        ({"shots": 0}, "--shots"),
        ({"queries": 0}, "--queries"),
        ({"episodes": 0}, "--episodes"),
        ({"seed": -1}, "--seed"),
        ({"ways": True}, "--ways"),
        ({"shots": True}, "--shots"),
        ({"queries": False}, "--queries"),
        ({"ways": 5.0}, "--ways"),
        ({"seed": 1.5}, "--seed"),
    ],
)
def test_spec_rejects_bad_values(kwargs, field):
    with pytest.raises(UserError) as info:
        EpisodeSpec(**kwargs)
    assert field in str(info.value)
    assert repr(next(iter(kwargs.values()))) in str(info.value)


def test_spec_rejects_a_bool_seed():
    with pytest.raises(UserError, match="--seed"):
        EpisodeSpec(seed=True)


def test_spec_is_frozen():
    spec = EpisodeSpec()
    with pytest.raises(AttributeError):
        spec.ways = 3  # type: ignore[misc]


def test_check_names_the_numbers_when_ways_exceed_classes(synthetic_test):
    spec = EpisodeSpec(ways=33, shots=1, queries=1, episodes=1)
    with pytest.raises(UserError) as info:
        spec.check(synthetic_test)
    message = str(info.value)
    assert "--ways 33" in message
    assert "32 classes" in message
    assert "synthetic/test" in message
    assert "--ways 32 or fewer" in message
    with pytest.raises(UserError, match="--ways 33"):
        EpisodeSet(synthetic_test, spec)
    EpisodeSpec(ways=32, shots=1, queries=1, episodes=1).check(synthetic_test)  # exactly enough is fine


def test_check_names_the_numbers_when_images_per_class_run_out(synthetic_test):
    spec = EpisodeSpec(ways=5, shots=5, queries=16, episodes=1)
    with pytest.raises(UserError) as info:
        spec.check(synthetic_test)
    message = str(info.value)
    assert "--shots 5" in message and "--queries 16" in message
    assert "= 21 images per class" in message
    assert "only 20" in message
    EpisodeSpec(ways=5, shots=5, queries=15, episodes=1).check(synthetic_test)  # 20 is exactly enough


def test_check_uses_the_smallest_class():
    split = tiny_split((3, 7, 5))
    with pytest.raises(UserError, match="only 3"):
        EpisodeSpec(ways=2, shots=2, queries=2, episodes=1).check(split)
    with pytest.raises(UserError, match="more than the 3 classes of tiny/test"):
        EpisodeSpec(ways=4, shots=1, queries=1, episodes=1).check(split)


# -- EpisodeSet: determinism and identity -------------------------------------------------------
def test_same_split_and_spec_give_identical_episodes(synthetic_test):
    a = EpisodeSet(synthetic_test, SPEC)
    b = EpisodeSet(synthetic_test, SPEC)
    assert a.indices.shape == (10, 5, 5)
    assert a.indices.dtype == torch.int64
    assert torch.equal(a.indices, b.indices)
    assert a.sha == b.sha
    assert len(a.sha) == 64
    assert len(a) == 10


def test_same_content_reloaded_gives_the_same_episodes(synthetic_test, tmp_path):
    reloaded = Synthetic(root=tmp_path, cache_dir=tmp_path / "cache", progress=False).load("test")
    assert reloaded is not synthetic_test
    a, b = EpisodeSet(synthetic_test, SPEC), EpisodeSet(reloaded, SPEC)
    assert torch.equal(a.indices, b.indices)
    assert a.sha == b.sha


def test_episode_i_does_not_depend_on_the_number_of_episodes(synthetic_test):
    short = EpisodeSet(synthetic_test, EpisodeSpec(5, 2, 3, episodes=10, seed=4))
    long = EpisodeSet(synthetic_test, EpisodeSpec(5, 2, 3, episodes=30, seed=4))
    assert torch.equal(long.indices[:10], short.indices)
    for i in (0, 5, 9):
        assert torch.equal(short[i].support_x, long[i].support_x)
        assert torch.equal(short[i].query_x, long[i].query_x)
    assert short.sha != long.sha


def test_episodes_differ_from_one_another(synthetic_test):
    episodes = EpisodeSet(synthetic_test, SPEC)
    class_sets = {tuple(sorted(synthetic_test.labels[row[:, 0]].tolist())) for row in episodes.indices}
    assert len(class_sets) > 1


def test_sha_changes_with_seed_and_shots(synthetic_test):
    base = EpisodeSet(synthetic_test, SPEC)
    other_seed = EpisodeSet(synthetic_test, EpisodeSpec(5, 2, 3, episodes=10, seed=1))
    other_shots = EpisodeSet(synthetic_test, EpisodeSpec(5, 3, 2, episodes=10, seed=0))  # same per_class
    assert not torch.equal(base.indices, other_seed.indices)
    assert len({base.sha, other_seed.sha, other_shots.sha}) == 3


@pytest.mark.parametrize(
    "changed",
    [
        {"sizes": (4, 7, 5)},
        {"class_names": ("class0", "class1", "renamed")},
        {"version": "2"},
        {"name": "val"},
    ],
)
def test_sha_changes_with_split_content(changed):
    spec = EpisodeSpec(ways=3, shots=1, queries=2, episodes=5, seed=0)
    base = tiny_split((3, 7, 5))
    kwargs = {"sizes": (3, 7, 5), **changed}
    sizes = kwargs.pop("sizes")
    other = tiny_split(sizes, **kwargs)
    assert base.fingerprint != other.fingerprint
    assert EpisodeSet(base, spec).sha != EpisodeSet(other, spec).sha


# -- EpisodeSet: the content of each episode ----------------------------------------------------
def test_every_episode_is_well_formed(synthetic_test):
    spec = SPEC
    episodes = EpisodeSet(synthetic_test, spec)
    labels = synthetic_test.labels
    expected_sy = torch.arange(spec.ways).repeat_interleave(spec.shots)
    expected_qy = torch.arange(spec.ways).repeat_interleave(spec.queries)
    for i, ep in enumerate(episodes):
        rows = episodes.indices[i]  # [ways, per_class]
        row_labels = labels[rows]
        # one class per row, distinct classes across rows
        assert bool((row_labels == row_labels[:, :1]).all())
        assert len(set(row_labels[:, 0].tolist())) == spec.ways
        # images within a row are distinct, so support and query never share an image
        support = set(rows[:, : spec.shots].reshape(-1).tolist())
        query = set(rows[:, spec.shots:].reshape(-1).tolist())
        assert len(support) == spec.ways * spec.shots
        assert len(query) == spec.ways * spec.queries
        assert support.isdisjoint(query)
        # labels: 0..ways-1, class-major, right counts
        assert ep.index == i
        assert torch.equal(ep.support_y, expected_sy)
        assert torch.equal(ep.query_y, expected_qy)
        assert ep.support_y.dtype == ep.query_y.dtype == torch.int64
        # images: normalised float32 gathered from those indices
        assert ep.support_x.shape == (spec.ways * spec.shots, 3, 16, 16)
        assert ep.query_x.shape == (spec.ways * spec.queries, 3, 16, 16)
        assert ep.support_x.dtype == ep.query_x.dtype == torch.float32
        assert torch.equal(ep.support_x, synthetic_test.gather(rows[:, : spec.shots].reshape(-1)))
        assert torch.equal(ep.query_x, synthetic_test.gather(rows[:, spec.shots:].reshape(-1)))


def test_make_episode_gathers_the_given_indices_class_major():
    split = tiny_split((3, 7, 5))
    indices = torch.tensor([[9, 4, 6], [0, 2, 1]])  # class 1 then class 0
    ep = make_episode(split, indices, shots=1, index=7)
    assert ep.index == 7
    assert pixel_to_index(ep.support_x).tolist() == [9, 0]
    assert pixel_to_index(ep.query_x).tolist() == [4, 6, 2, 1]
    assert ep.support_y.tolist() == [0, 1]
    assert ep.query_y.tolist() == [0, 0, 1, 1]


# -- sampling from classes of unequal size ------------------------------------------------------
def test_sampling_unequal_classes_stays_inside_each_class():
    sizes = (3, 7, 5)
    split = tiny_split(sizes)
    g = torch.Generator().manual_seed(123)
    idx = sample_indices(split, ways=3, per_class=3, generator=g, n=200)  # per_class = smallest class
    assert idx.shape == (200, 3, 3)
    assert idx.dtype == torch.int64
    assert int(idx.min()) >= 0 and int(idx.max()) < sum(sizes)
    labels = split.labels[idx]
    assert bool((labels == labels[..., :1]).all())  # every row inside one class
    for row in idx.reshape(-1, 3).tolist():
        assert len(set(row)) == 3  # without replacement
    # every image of every class is reachable, and nothing outside
    assert sorted(set(idx.reshape(-1).tolist())) == list(range(sum(sizes)))


def test_sampling_fewer_ways_than_classes_draws_distinct_classes():
    split = tiny_split((3, 7, 5, 4))
    g = torch.Generator().manual_seed(5)
    idx = sample_indices(split, ways=2, per_class=3, generator=g, n=100)
    labels = split.labels[idx]  # [100, 2, 3]
    assert bool((labels == labels[..., :1]).all())
    assert bool((labels[:, 0, 0] != labels[:, 1, 0]).all())
    assert set(labels[:, :, 0].reshape(-1).tolist()) == {0, 1, 2, 3}


def test_episode_set_on_unequal_classes_with_per_class_equal_to_the_smallest():
    split = tiny_split((3, 7, 5))
    spec = EpisodeSpec(ways=3, shots=1, queries=2, episodes=20, seed=0)
    episodes = EpisodeSet(split, spec)
    for i, ep in enumerate(episodes):
        picked = torch.cat([pixel_to_index(ep.support_x), pixel_to_index(ep.query_x)])
        labels = split.labels[picked]
        assert torch.equal(picked[: spec.ways], episodes.indices[i][:, 0])
        # the support image of label k and the query images of label k come from one class
        support_class = labels[: spec.ways]
        query_class = labels[spec.ways:].view(spec.ways, spec.queries)
        assert bool((query_class == support_class.unsqueeze(1)).all())
        assert len(set(picked.tolist())) == spec.ways * spec.per_class


# -- EpisodeSet.batch ----------------------------------------------------------------------------
def assert_batch_is_the_stacked_episodes(episodes: EpisodeSet, start: int, stop: int) -> None:
    batch = episodes.batch(start, stop)
    names = ("support_x", "support_y", "query_x", "query_y")
    for name, got in zip(names, batch):
        want = torch.stack([getattr(episodes[i], name) for i in range(start, stop)])
        assert got.dtype == want.dtype and torch.equal(got, want), name


def test_batch_gives_the_episodes_stacked(synthetic_test):
    episodes = EpisodeSet(synthetic_test, SPEC)
    for start, stop in ((0, 10), (3, 7), (9, 10)):
        assert_batch_is_the_stacked_episodes(episodes, start, stop)
    support_x, support_y, query_x, query_y = episodes.batch(2, 5)
    assert support_x.shape == (3, SPEC.ways * SPEC.shots, *synthetic_test.image_shape)
    assert query_x.shape == (3, SPEC.ways * SPEC.queries, *synthetic_test.image_shape)
    assert support_y.shape == (3, SPEC.ways * SPEC.shots) and query_y.shape == (3, SPEC.ways * SPEC.queries)


def test_batch_draws_the_support_from_the_support_split():
    support, query = tiny_split((9, 8, 10), name="train"), tiny_split((4, 5, 6), name="test")
    episodes = EpisodeSet(query, EpisodeSpec(ways=2, shots=3, queries=2, episodes=6, seed=2), support=support)
    assert_batch_is_the_stacked_episodes(episodes, 0, 6)
    support_x, _, query_x, _ = episodes.batch(1, 4)
    assert torch.equal(pixel_to_index(support_x.flatten(0, 1)).view(3, 2, 3), episodes.indices[1:4, :, :3])
    assert torch.equal(pixel_to_index(query_x.flatten(0, 1)).view(3, 2, 2), episodes.indices[1:4, :, 3:])


@pytest.mark.parametrize(("start", "stop"), [(0, 0), (5, 3), (-1, 2), (0, 11)])
def test_batch_rejects_a_range_outside_the_episodes(synthetic_test, start, stop):
    with pytest.raises(IndexError, match="of the 10 episodes"):
        EpisodeSet(synthetic_test, SPEC).batch(start, stop)


# -- no global RNG ------------------------------------------------------------------------------
def test_sampling_does_not_touch_the_global_rng(synthetic_test):
    before = torch.get_rng_state()
    g = torch.Generator().manual_seed(0)
    state0 = g.get_state()
    first = sample_indices(synthetic_test, 5, 4, g, n=3)
    assert not torch.equal(g.get_state(), state0)  # the given generator is what advances
    EpisodeSet(synthetic_test, SPEC)
    assert torch.equal(torch.get_rng_state(), before)
    again = sample_indices(synthetic_test, 5, 4, torch.Generator().manual_seed(0), n=3)
    assert torch.equal(first, again)
