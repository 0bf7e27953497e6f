"""omniglot-lake: Lake et al.'s background/evaluation split and within-alphabet episodes, on a tiny generated
Omniglot layout; one cheap check of the split on the real data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtbench.core.errors import UserError
from mtbench.data import DATASETS, Split
from mtbench.data import omniglot as om
from mtbench.data.episodes import EpisodeSet, EpisodeSpec, GroupedSplit, sample_grouped
from mtbench.data.omniglot_lake import OmniglotLake
from mtbench.methods import METHODS, make_hparams

from data_copies import FAKE_ALPHABETS as FAKE, write_alphabets as write_fake_omniglot
from support import requires_real_data, shared_root

@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> OmniglotLake:
    root = tmp_path_factory.mktemp("data")
    write_fake_omniglot(root)
    return OmniglotLake(root=root, cache_dir=root / "cache", progress=False)


@pytest.fixture(scope="module")
def evaluation(lake: OmniglotLake) -> GroupedSplit:
    return lake.load(lake.eval_split)


def alphabet_of(split: GroupedSplit, index: int) -> str:
    return split.groups[int(split.labels[index])]


def test_is_registered_with_its_own_name_and_splits() -> None:
    cls = DATASETS.get("omniglot-lake")
    assert cls is OmniglotLake and cls.name != om.Omniglot.name
    assert (cls.fit_split, cls.eval_split) == ("background", "evaluation")
    assert "Lake" in cls.description


def test_background_and_evaluation_are_the_two_folders(lake: OmniglotLake, evaluation: GroupedSplit) -> None:
    background = lake.load("background")
    for split, archive in ((background, "images_background"), (evaluation, "images_evaluation")):
        assert set(split.groups) == set(FAKE[archive])
        assert split.num_classes == sum(FAKE[archive].values())
        assert all(n.split("/")[0] == g for n, g in zip(split.class_names, split.groups))  # class -> alphabet
        assert "rot" not in " ".join(split.class_names)  # one class per character, no rotated copies
        assert int(split.class_count.min()) == int(split.class_count.max()) == 20
    assert not set(background.class_names) & set(evaluation.class_names)
    assert background.fingerprint != evaluation.fingerprint
    # the images are omniglot's: the same decoded drawings, the same cache
    vinyals = om.Omniglot(root=lake.root, cache_dir=lake.cache_dir, progress=False)
    names, images = vinyals._decoded()
    i = names.index("Epsilon/character03")
    j = evaluation.class_names.index("Epsilon/character03")
    assert torch.equal(evaluation.images[evaluation.labels == j][:, 0], images[i])
    assert len(list(lake.cache_dir.glob("*.pt"))) == 1


def test_every_episode_takes_its_classes_from_one_alphabet(evaluation: GroupedSplit) -> None:
    spec = EpisodeSpec(ways=4, shots=1, queries=2, episodes=60)
    episodes = EpisodeSet(evaluation, spec)
    hosts = set()
    for row in episodes.indices:  # [ways, shots + queries]
        labels = evaluation.labels[row]
        assert len(set(labels[:, 0].tolist())) == spec.ways  # distinct classes
        assert bool((labels == labels[:, :1]).all())  # each row within one class
        alphabets = {alphabet_of(evaluation, int(i)) for i in row.reshape(-1)}
        assert len(alphabets) == 1
        hosts |= alphabets
    # Zeta (2 characters) cannot host a 4-way episode; the two others both do
    assert hosts == {"Delta", "Epsilon"}


def test_same_seed_same_episodes_another_seed_others(lake: OmniglotLake, evaluation: GroupedSplit) -> None:
    spec = EpisodeSpec(ways=2, shots=1, queries=3, episodes=20, seed=3)
    a, b = EpisodeSet(evaluation, spec), EpisodeSet(lake.load("evaluation"), spec)
    assert torch.equal(a.indices, b.indices) and a.sha == b.sha
    other = EpisodeSet(evaluation, EpisodeSpec(ways=2, shots=1, queries=3, episodes=20, seed=4))
    assert other.sha != a.sha and not torch.equal(other.indices, a.indices)
    # the same images and classes without the alphabets are other episodes, with another sha
    plain = GroupedSplit(evaluation.dataset, evaluation.name, evaluation.images, evaluation.labels,
                         evaluation.class_names, evaluation.mean, evaluation.std, evaluation.version,
                         groups=("one",) * evaluation.num_classes)
    assert EpisodeSet(plain, spec).sha != a.sha
    # episode i is drawn on its own: the first episodes of a longer set are the same
    longer = EpisodeSet(evaluation, EpisodeSpec(ways=2, shots=1, queries=3, episodes=30, seed=3))
    assert torch.equal(longer.indices[:20], a.indices)


def test_ways_beyond_every_alphabet_is_a_one_line_error(evaluation: GroupedSplit) -> None:
    with pytest.raises(UserError) as err:
        EpisodeSet(evaluation, EpisodeSpec(ways=7, shots=1, queries=1, episodes=2))
    message = str(err.value)
    assert "--ways 7" in message and "every alphabet of omniglot-lake/evaluation" in message
    assert "'Epsilon', has 6" in message and "--ways 6 or fewer" in message
    assert "\n" not in message
    with pytest.raises(UserError, match="--ways 6 or fewer"):
        sample_grouped(evaluation, 7, 2, torch.Generator().manual_seed(0))
    EpisodeSet(evaluation, EpisodeSpec(ways=6, shots=1, queries=1, episodes=3))  # the largest alphabet: fine


def test_grouped_split_keeps_its_alphabets_when_moved(evaluation: GroupedSplit,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert evaluation.to("cpu") is evaluation
    # another device, simulated: Split.to returns a new plain split holding copies
    monkeypatch.setattr(Split, "to", lambda self, device: Split(self.dataset, self.name, self.images.clone(),
                                                                 self.labels.clone(), self.class_names, self.mean,
                                                                 self.std, self.version))
    moved = evaluation.to("elsewhere")
    assert isinstance(moved, GroupedSplit) and moved is not evaluation and moved.groups == evaluation.groups
    assert moved.group_kind == "alphabet" and torch.equal(moved.images, evaluation.images)
    assert moved.fingerprint == evaluation.fingerprint
    with pytest.raises(ValueError, match="one group per class"):
        GroupedSplit("x", "y", evaluation.images, evaluation.labels, evaluation.class_names, (0.0,), (1.0,),
                     groups=("a",))


def test_refuses_what_would_lose_the_alphabets(lake: OmniglotLake) -> None:
    lake.configure("episodes", None)
    lake.configure("episodes", (1, 28, 28))  # a source of the same input, e.g. omniglot: fine
    with pytest.raises(UserError, match="--protocol episodes"):
        lake.configure("transfer", None)
    with pytest.raises(UserError, match="84x84 images of 3 channel"):
        lake.configure("episodes", (3, 84, 84))


def test_notes_say_which_protocol_and_methods_take_omniglots_presets(lake: OmniglotLake) -> None:
    assert any("Lake et al. (2015)" in n and "no rotations" in n for n in lake.notes)
    protonet = METHODS.get("protonet")
    for budget in ("quick", "paper"):
        assert protonet.iterations_for(budget, "omniglot-lake") == protonet.iterations_for(budget, "omniglot")
    assert make_hparams(protonet, "omniglot-lake", {}) == make_hparams(protonet, "omniglot", {})
    assert make_hparams(protonet, "omniglot-lake", {}).train_ways == 60


def test_a_run_records_the_protocol(lake: OmniglotLake, monkeypatch: pytest.MonkeyPatch) -> None:
    """The load stage of ``mtbench run --dataset omniglot-lake`` (no fit): the dataset name and notes a result
    records, and within-alphabet episodes; the fake copy passes the structure check as the official one."""
    from mtbench.run.spec import RunSpec
    from mtbench.run.stages import load, resolve

    monkeypatch.setattr(om, "OFFICIAL_COUNTS", {f: (len(a), sum(a.values())) for f, a in FAKE.items()})
    monkeypatch.setenv("MTBENCH_CACHE", str(lake.cache_dir))
    spec = RunSpec(method="protonet", dataset="omniglot-lake", budget="0", device="cpu", out=None, progress=False,
                   data_root=str(lake.root), download=False,
                   episodes=EpisodeSpec(ways=3, shots=1, queries=1, episodes=5))
    loaded = load(resolve(spec))
    assert loaded.data.name == "omniglot-lake" and loaded.test.name == "evaluation"
    assert any("Lake et al." in n for n in loaded.data.notes)
    for row in loaded.episodes.indices:
        assert len({alphabet_of(loaded.test, int(i)) for i in row.reshape(-1)}) == 1


@pytest.mark.realdata
def test_real_lake_split() -> None:
    """30 background alphabets / 964 characters, 20 evaluation alphabets / 659 characters; 20-way episodes from
    one alphabet each. No fit; the decoded images come from the tensor cache that omniglot runs share."""
    requires_real_data("omniglot")
    lake = OmniglotLake(root=shared_root(), progress=False)
    background, evaluation = lake.load("background"), lake.load("evaluation")
    assert (len(set(background.groups)), background.num_classes) == (30, 964)
    assert (len(set(evaluation.groups)), evaluation.num_classes) == (20, 659)
    assert min(evaluation.group_sizes().values()) >= 20  # every evaluation alphabet hosts 20-way episodes
    episodes = EpisodeSet(evaluation, EpisodeSpec(ways=20, shots=1, queries=1, episodes=10))
    for row in episodes.indices:
        assert len({alphabet_of(evaluation, int(i)) for i in row.reshape(-1)}) == 1
