"""Evaluation protocols: few-shot ``episodes`` and the ``transfer`` setting of a fixed-size target.

* ``episodes`` — N-way K-shot tasks (:class:`~mtbench.data.episodes.EpisodeSpec`), the meta-learning
  standard; on a target domain, these are BSCD-FSL's cross-domain episodes (Guo et al. 2020).
* ``transfer`` — :class:`TransferSpec`: a small labelled training set of the target (default 200
  images) and a test set (default 50), drawn class-balanced over every class of the target and
  resampled over many seeded trials (default 20). Each trial is one episode whose support is the
  training set and whose queries are the test set, so every method adapts to exactly the same
  images, and the evaluator reports the mean ± 95 % CI over trials and the adaptation curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mtbench.data.episodes import EpisodeSpec
from mtbench.core.errors import UserError

PROTOCOLS = ("episodes", "transfer")


@dataclass(frozen=True)
class TransferSpec:
    """The article's setting: ``train_images`` labelled and ``test_images`` test images of the target,
    class-balanced, over ``trials`` seeded draws.

    Args:
        train_images: labelled target images a method adapts on (split evenly over the classes).
        test_images: target images it is scored on (split evenly over the classes).
        trials: independent draws of both sets.
        seed: seed of the draws.
    """

    train_images: int = 200
    test_images: int = 50
    trials: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("train_images", "test_images", "trials"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be a whole number ≥ 1, got {value!r}")

    def episodes(self, classes: int) -> EpisodeSpec:
        """The episode shape of one trial on a target with ``classes`` classes (all of them, balanced)."""
        for name in ("train_images", "test_images"):
            if getattr(self, name) < classes:
                raise UserError(f"--{name.replace('_', '-')} {getattr(self, name)} is fewer than the {classes} "
                                f"classes of the target: give at least one image per class")
        return EpisodeSpec(ways=classes, shots=self.train_images // classes, queries=self.test_images // classes,
                           episodes=self.trials, seed=self.seed)

    def record(self) -> dict[str, Any]:
        return {"kind": "transfer", "train_images": self.train_images, "test_images": self.test_images,
                "trials": self.trials}


def resolve(default: str, protocol: str | None, *, ways: int | None = None, shots: int | None = None,
            queries: int | None = None, episodes: int | None = None, seed: int = 0,
            train_images: int | None = None, test_images: int | None = None,
            trials: int | None = None) -> EpisodeSpec | TransferSpec:
    """The protocol a command line asks for: ``protocol`` if given, else ``episodes`` when any episode
    option is given, else the dataset's ``default``. Options of the other protocol are an error."""
    episode_opts = {"--ways": ways, "--shots": shots, "--queries": queries, "--episodes": episodes}
    transfer_opts = {"--train-images": train_images, "--test-images": test_images, "--trials": trials}
    given_episode = [k for k, v in episode_opts.items() if v is not None]
    given_transfer = [k for k, v in transfer_opts.items() if v is not None]
    if protocol is None:
        protocol = "episodes" if given_episode else "transfer" if given_transfer else default
    if protocol not in PROTOCOLS:
        raise UserError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got '{protocol}'")
    if protocol == "episodes":
        if given_transfer:
            raise UserError(f"{', '.join(given_transfer)} {_belong(given_transfer)} to --protocol transfer; this run uses few-shot "
                            f"episodes (--ways/--shots/--queries/--episodes): drop them or add --protocol transfer")
        return EpisodeSpec(ways=5 if ways is None else ways, shots=1 if shots is None else shots,
                           queries=15 if queries is None else queries,
                           episodes=600 if episodes is None else episodes, seed=seed)
    if given_episode:
        raise UserError(f"{', '.join(given_episode)} {_belong(given_episode)} to few-shot episodes; --protocol transfer takes "
                        f"--train-images, --test-images and --trials: drop them or add --protocol episodes")
    return TransferSpec(train_images=200 if train_images is None else train_images,
                        test_images=50 if test_images is None else test_images,
                        trials=20 if trials is None else trials, seed=seed)


def _belong(options: list[str]) -> str:
    return "belongs" if len(options) == 1 else "belong"
