"""Few-shot episodes: a validated :class:`EpisodeSpec`, the sampler, and the fixed :class:`EpisodeSet`.

Random draws use CPU generators, so the same seed gives the same episodes on every device; the
resulting index table goes to the device once and every episode is gathered there by indexing.
Evaluation episode *i* has its own generator, seeded from (split fingerprint, spec, seed, i):
episodes do not depend on each other, on the number of episodes, or on any global RNG.
A :class:`GroupedSplit` (classes in groups, e.g. Omniglot's alphabets for Lake et al.'s protocol)
draws all the classes of an episode from one group; any other split draws over all its classes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from mtbench.data import Split
from mtbench.core.errors import UserError
from mtbench.core.seeding import seed_hash


@dataclass(frozen=True)
class EpisodeSpec:
    """The shape of every episode of a protocol, and how many fixed test episodes there are.

    Args:
        ways: classes per episode.
        shots: labelled support images per class.
        queries: query images per class.
        episodes: number of fixed evaluation episodes.
        seed: seed of the evaluation episodes (and the default seed of training).
    """

    ways: int = 5
    shots: int = 1
    queries: int = 15
    episodes: int = 600
    seed: int = 0

    def __post_init__(self) -> None:
        for field_name in ("ways", "shots", "queries", "episodes"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"--{field_name} must be a whole number ≥ 1, got {value!r}")
        if self.ways < 2:
            raise UserError(f"--ways must be at least 2 for a classification episode, got {self.ways}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise UserError(f"--seed must be a whole number ≥ 0, got {self.seed!r}")

    @property
    def per_class(self) -> int:
        return self.shots + self.queries

    def check(self, split: Split) -> None:
        """Raise a :class:`UserError` when ``split`` cannot supply episodes of this shape."""
        where = f"{split.dataset}/{split.name}"
        if self.ways > split.num_classes:
            raise UserError(f"--ways {self.ways} is more than the {split.num_classes} classes of {where}; "
                            f"use --ways {split.num_classes} or fewer")
        fewest = int(split.class_count.min())
        if self.per_class > fewest:
            small = split.class_names[int(split.class_count.argmin())]
            raise UserError(f"--shots {self.shots} + --queries {self.queries} = {self.per_class} images per class, "
                            f"but some classes of {where} have only {fewest} (class '{small}' has {fewest}); lower "
                            f"--shots or --queries, or add images to that class")

    def describe(self) -> str:
        return f"{self.ways}-way {self.shots}-shot, {self.queries} queries/class"


def sample_indices(split: Split, ways: int, per_class: int, generator: torch.Generator, n: int = 1) -> Tensor:
    """Draw ``n`` episodes' image indices: ``int64[n, ways, per_class]`` (CPU), classes and images without replacement."""
    counts = split.class_count  # CPU tensors
    if ways > split.num_classes or per_class > int(counts.min()):
        raise UserError(f"{split.dataset}/{split.name} cannot supply {ways}-way tasks of {per_class} images per class "
                        f"(it has {split.num_classes} classes, the smallest with {int(counts.min())} images); "
                        f"lower --ways/--shots or the method's train_* hparams")
    classes = torch.rand(n, split.num_classes, generator=generator).argsort(dim=1)[:, :ways]  # [n, ways]
    return _within(split, classes, per_class, generator)


def _within(split: Split, classes: Tensor, per_class: int, generator: torch.Generator) -> Tensor:
    """``per_class`` distinct image indices of ``split`` in each of ``classes: int64[n, ways]`` -> ``[n, ways, per_class]``."""
    counts, starts = split.class_count, split.class_start
    n, ways = classes.shape
    most = int(counts.max())
    keys = torch.rand(n, ways, most, generator=generator)
    keys[torch.arange(most).expand(n, ways, most) >= counts[classes].unsqueeze(-1)] = 2.0  # beyond a class: last
    within = keys.argsort(dim=-1)[..., :per_class]
    return starts[classes].unsqueeze(-1) + within


@dataclass(frozen=True, eq=False)
class GroupedSplit(Split):
    """A split whose classes belong to groups (Omniglot's alphabets, for Lake et al.'s protocol): its
    evaluation episodes draw all their classes from one group (:func:`sample_grouped`).

    Attributes:
        groups: the group of each class, one name per class (``len(groups) == num_classes``).
        group_kind: what a group is, in messages (``"alphabet"``).
    """

    groups: tuple[str, ...] = ()
    group_kind: str = "group"

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.groups) != len(self.class_names):
            raise ValueError(f"a GroupedSplit needs one group per class: {len(self.groups)} groups for "
                             f"{len(self.class_names)} classes")

    @property
    def fingerprint(self) -> str:
        """:attr:`Split.fingerprint` and the groups: the same images grouped otherwise are other episodes."""
        h = hashlib.sha256(f"{super().fingerprint}|groups|".encode())
        h.update("\n".join(self.groups).encode())
        return h.hexdigest()[:16]

    def group_sizes(self) -> dict[str, int]:
        """``{group: number of classes}``, in the order the groups first appear."""
        sizes: dict[str, int] = {}
        for g in self.groups:
            sizes[g] = sizes.get(g, 0) + 1
        return sizes

    def to(self, device: torch.device | str) -> "GroupedSplit":
        moved = super().to(device)
        if moved is self:
            return self
        return GroupedSplit(self.dataset, self.name, moved.images, moved.labels, self.class_names, self.mean,
                            self.std, self.version, groups=self.groups, group_kind=self.group_kind)


def check_groups(split: GroupedSplit, ways: int) -> None:
    """Raise a :class:`UserError` unless some group of ``split`` has at least ``ways`` classes."""
    sizes = split.group_sizes()
    largest = max(sizes, key=sizes.__getitem__)
    if ways > sizes[largest]:
        kind = split.group_kind
        raise UserError(f"--ways {ways} is more than the classes of every {kind} of {split.dataset}/{split.name}, "
                        f"whose episodes take all their classes from one {kind} (the largest, '{largest}', has "
                        f"{sizes[largest]}); use --ways {sizes[largest]} or fewer")


def _grouped_classes(split: GroupedSplit, ways: int, generator: torch.Generator, n: int) -> Tensor:
    """``int64[n, ways]``: per episode one group, uniformly among those with ``ways`` classes or more,
    then ``ways`` distinct classes of it."""
    check_groups(split, ways)
    names = list(split.group_sizes())
    group_of = torch.tensor([names.index(g) for g in split.groups])  # [num_classes]
    sizes = torch.bincount(group_of, minlength=len(names))
    hosts = torch.nonzero(sizes >= ways).flatten()  # the groups that can host an episode
    picked = hosts[torch.randint(len(hosts), (n,), generator=generator)]  # [n]
    keys = torch.rand(n, split.num_classes, generator=generator)
    keys[group_of.expand(n, -1) != picked.unsqueeze(-1)] = 2.0  # classes of other groups: last
    return keys.argsort(dim=1)[:, :ways]


def sample_grouped(split: GroupedSplit, ways: int, per_class: int, generator: torch.Generator,
                   n: int = 1) -> Tensor:
    """Like :func:`sample_indices`, with all ``ways`` classes of an episode from one group of ``split``:
    ``int64[n, ways, per_class]`` (CPU)."""
    if per_class > int(split.class_count.min()):
        raise UserError(f"{split.dataset}/{split.name} cannot supply tasks of {per_class} images per class (its "
                        f"smallest class has {int(split.class_count.min())}); lower --shots/--queries")
    return _within(split, _grouped_classes(split, ways, generator, n), per_class, generator)


def check_pair(support: Split, query: Split, spec: "EpisodeSpec") -> None:
    """Raise a :class:`UserError` unless ``support`` (shots) and ``query`` (queries) can make episodes together."""
    if support.class_names != query.class_names:
        raise ValueError(f"{support.dataset}: support split {support.name} and query split {query.name} "
                         f"have different classes")
    if spec.ways > query.num_classes:
        raise UserError(f"--ways {spec.ways} is more than the {query.num_classes} classes of {query.dataset}; "
                        f"use --ways {query.num_classes} or fewer")
    for split, need, option in ((support, spec.shots, "--shots"), (query, spec.queries, "--queries")):
        fewest = int(split.class_count.min())
        if need > fewest:
            small = split.class_names[int(split.class_count.argmin())]
            raise UserError(f"{option} {need} is more than the {fewest} images of the smallest class of "
                            f"{split.dataset}/{split.name} (class '{small}' has {fewest}); lower {option}, or add "
                            f"images to that class")


def sample_pair(support: Split, query: Split, spec: "EpisodeSpec", generator: torch.Generator) -> Tensor:
    """One episode whose support comes from ``support`` and queries from ``query`` (same classes):
    ``int64[ways, shots + queries]``, the first ``shots`` columns indexing ``support``."""
    if isinstance(query, GroupedSplit):
        classes = _grouped_classes(query, spec.ways, generator, 1)
    else:
        classes = torch.rand(1, query.num_classes, generator=generator).argsort(dim=1)[:, :spec.ways]
    return torch.cat([_within(support, classes, spec.shots, generator),
                      _within(query, classes, spec.queries, generator)], dim=-1)[0]


@dataclass(frozen=True, eq=False)
class Episode:
    """One few-shot task. Support/query images are normalised floats on the split's device.

    Attributes:
        support_x: ``float[ways*shots, C, H, W]``, class-major.
        support_y: ``int64[ways*shots]`` in ``[0, ways)``.
        query_x: ``float[ways*queries, C, H, W]``.
        query_y: ``int64[ways*queries]``.
    """

    index: int
    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor


def gather_episodes(split: Split, indices: Tensor, shots: int,
                    support: Split | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gather episodes from ``indices: int64[*B, ways, shots+queries]`` (on the split's device), one
    gather per tensor: ``support_x float[*B, ways*shots, C, H, W]``, ``support_y int64[*B, ways*shots]``,
    ``query_x float[*B, ways*queries, C, H, W]``, ``query_y int64[*B, ways*queries]``, class-major. The
    first ``shots`` columns index ``support`` when given (support and queries from different splits)."""
    *batch, ways, per_class = indices.shape
    labels = torch.arange(ways, device=indices.device)
    return (
        (support or split).gather(indices[..., :shots].reshape(*batch, -1)),
        labels.repeat_interleave(shots).repeat(*batch, 1),
        split.gather(indices[..., shots:].reshape(*batch, -1)),
        labels.repeat_interleave(per_class - shots).repeat(*batch, 1),
    )


def make_episode(split: Split, indices: Tensor, shots: int, index: int = 0, support: Split | None = None) -> Episode:
    """Gather one episode from ``indices: int64[ways, shots+queries]`` (see :func:`gather_episodes`)."""
    return Episode(index, *gather_episodes(split, indices, shots, support))


def episode_seed(fingerprint: str, spec: EpisodeSpec, i: int) -> int:
    text = f"{fingerprint}|{spec.ways}|{spec.shots}|{spec.queries}|{spec.seed}|{i}"
    return seed_hash(text)


class EpisodeSet:
    """The fixed evaluation episodes of a split under a spec: identical for every method.

    Args:
        split: the split to draw from (its device is where episodes are gathered).
        spec: the episode shape, count and seed.
        support: draw the support images from this split instead (same classes), the queries
            from ``split``: e.g. a target's training images as the labelled set, its test images
            as the queries. ``None``: both from ``split``.
    """

    def __init__(self, split: Split, spec: EpisodeSpec, support: Split | None = None) -> None:
        self.split, self.spec, self.support = split, spec, support
        if support is None:
            spec.check(split)
            draw = sample_indices
            if isinstance(split, GroupedSplit):  # e.g. Lake's within-alphabet episodes
                check_groups(split, spec.ways)
                draw = sample_grouped
            table = torch.stack([
                draw(split, spec.ways, spec.per_class,
                               torch.Generator().manual_seed(episode_seed(split.fingerprint, spec, i)))[0]
                for i in range(spec.episodes)
            ])  # [episodes, ways, per_class]
            digest = hashlib.sha256(f"{split.fingerprint}|{spec.ways}|{spec.shots}|{spec.queries}".encode())
        else:
            check_pair(support, split, spec)
            pair = f"{support.fingerprint}>{split.fingerprint}"
            table = torch.stack([
                sample_pair(support, split, spec, torch.Generator().manual_seed(episode_seed(pair, spec, i)))
                for i in range(spec.episodes)
            ])
            digest = hashlib.sha256(f"{pair}|{spec.ways}|{spec.shots}|{spec.queries}".encode())
        digest.update(table.numpy().astype("<i8").tobytes())
        self.sha = digest.hexdigest()
        self.indices = table.to(split.device)

    def __len__(self) -> int:
        return self.spec.episodes

    def __getitem__(self, i: int) -> Episode:
        return make_episode(self.split, self.indices[i], self.spec.shots, i, self.support)

    def batch(self, start: int, stop: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Episodes ``start`` to ``stop - 1`` at once, one gather per tensor on the device: ``support_x
        float[E, ways*shots, C, H, W]``, ``support_y int64[E, ways*shots]``, ``query_x float[E,
        ways*queries, C, H, W]``, ``query_y int64[E, ways*queries]``; row ``e`` is episode ``start + e``."""
        if not 0 <= start < stop <= len(self):
            raise IndexError(f"episodes {start}:{stop} are not a non-empty range of the {len(self)} episodes")
        return gather_episodes(self.split, self.indices[start:stop], self.spec.shots, self.support)

    def __iter__(self) -> Iterator[Episode]:
        return (self[i] for i in range(len(self)))
