"""The transfer heads adapt a chunk of episodes as they adapt each episode alone, at every scored step.

In float64 on generated data, with a stub (untrained) backbone: ``finetune``'s ``adapt_batch`` and the
``predict_batch`` of ``feature-extract`` and ``matchingnet`` against ``adapt`` episode by episode, for
every head and option; then the evaluator's chunked path against its per-episode reference.
"""

from __future__ import annotations

import pytest
import torch

from mtbench.data import DATASETS
from mtbench.data.episodes import EpisodeSet, EpisodeSpec
from mtbench.methods import METHODS, make_hparams
from mtbench.baselines.finetune import BACKBONE_BATCHING
from support import DEVICES, on_device

EPISODES = 3
# few fine-tuning steps: 5 support images in minibatches of 4, 2 passes -> 4 steps, scored at 0, 1, 3 and 4
FINETUNE = {"ft_epochs": "2", "report_steps": "0,1,3"}
CASES = {
    "finetune linear": ("finetune", {**FINETUNE, "head": "linear"}),
    "finetune cosine": ("finetune", {**FINETUNE, "head": "cosine"}),
    "finetune linear whole network": ("finetune", {**FINETUNE, "head": "linear", "finetune_backbone": "true"}),
    "finetune cosine whole network": ("finetune", {**FINETUNE, "head": "cosine", "finetune_backbone": "true"}),
    "feature-extract centroid": ("feature-extract", {"classifier": "centroid"}),
    "feature-extract logreg": ("feature-extract", {"classifier": "logreg", "newton_steps": "50"}),
    "matchingnet": ("matchingnet", {}),
    "matchingnet fce": ("matchingnet", {"fce": "true", "fce_steps": "2"}),
}


@pytest.fixture(scope="module")
def chunk():
    test = DATASETS.get("synthetic")(progress=False).load("test")
    sx, sy, qx, _ = EpisodeSet(test, EpisodeSpec(5, 1, 4, EPISODES, seed=0)).batch(0, EPISODES)
    return test.image_shape, sx.double(), sy, qx.double()


def build(name: str, overrides: dict[str, str], shape: tuple[int, int, int], device: str = "cpu"):
    cls = METHODS.get(name)
    method = cls(make_hparams(cls, "synthetic", overrides, "2"), shape, torch.Generator().manual_seed(0),
                 torch.device(device))
    method.prepare(5)
    return method


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", [*CASES, "finetune linear whole network, in lockstep"])
def test_a_chunk_adapts_as_its_episodes_do_one_by_one(case, device, chunk, one_thread, monkeypatch) -> None:
    shape, sx, sy, qx = on_device(chunk, device)
    lockstep = case.endswith(", in lockstep")
    name, overrides = CASES[case.removesuffix(", in lockstep")]
    # the backbone copies batched under vmap (what a GPU gets) on the CPU too, unless the case is the lockstep
    monkeypatch.setitem(BACKBONE_BATCHING, device, "loop" if lockstep else "vmap")
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        method = build(name, overrides, shape, device)
        state = {k: v.clone() for k, v in method.backbone.state_dict().items()}
        with torch.no_grad():
            alone = [[(getattr(p, "step", None), p(qx[e])) for p in method.adapt(sx[e], sy[e], 5)]
                     for e in range(EPISODES)]
            if method.adapt_batch is not None:
                together = [(getattr(p, "step", None), p(qx)) for p in method.adapt_batch(sx, sy, 5)]
            else:
                together = [(None, method.predict_batch(sx, sy, qx, 5))]
    finally:
        torch.set_default_dtype(before)
    assert len(together) == len(alone[0])
    assert [s for s, _ in together] == [s for s, _ in alone[0]]
    for i, (_, logits) in enumerate(together):
        expected = torch.stack([alone[e][i][1] for e in range(EPISODES)])
        assert logits.dtype == torch.float64 and logits.shape == expected.shape == (EPISODES, 20, 5)
        torch.testing.assert_close(logits, expected, rtol=1e-9, atol=1e-9)
        assert torch.equal(logits.argmax(-1), expected.argmax(-1))
    if name == "finetune":
        assert [s for s, _ in together] == [0, 1, 3, 4]
        assert not torch.allclose(together[0][1], together[-1][1])  # the steps train the head
    # nothing of the adaptation stays behind in the method's backbone
    for k, v in method.backbone.state_dict().items():
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("case", ["finetune cosine whole network", "feature-extract logreg", "matchingnet fce"])
def test_the_evaluator_scores_chunks_as_it_scores_episodes(case, one_thread, monkeypatch) -> None:
    """Through :func:`evaluate` (float32): chunks of 3 episodes give every episode the accuracy the per-episode
    reference gives it, at every step (the backbone copies of a whole-network fine-tune batched under vmap)."""
    from mtbench.run.evaluate import evaluate

    monkeypatch.setitem(BACKBONE_BATCHING, "cpu", "vmap")

    test = DATASETS.get("synthetic")(progress=False).load("test")
    method = build(*CASES[case], test.image_shape)
    episodes = EpisodeSet(test, EpisodeSpec(5, 1, 6, 6, seed=1))
    chunked = evaluate(method, episodes, progress=False, max_values=3 * 5 * 7 * 3 * 16 * 16)
    alone = evaluate(method, episodes, progress=False, batched=False)
    assert chunked["evaluation"]["batched_episodes"] == 3 and alone["evaluation"]["batched_episodes"] is None
    assert chunked["accuracy"]["per_episode"] == alone["accuracy"]["per_episode"]
    assert chunked["accuracy"]["by_step"] == alone["accuracy"]["by_step"]
    assert len(alone["accuracy"]["by_step"]) == (4 if case.startswith("finetune") else 1)


@pytest.mark.parametrize("case", ["finetune linear", "finetune cosine", "feature-extract logreg",
                                  "feature-extract centroid"])
def test_a_head_on_frozen_features_takes_many_episodes_a_chunk_and_scores_them_alike(case, one_thread) -> None:
    """On the CPU one forward pass holds one episode of these images; a head fitted on frozen features
    (``chunk_episodes``: fine-tune's heads, feature-extract's and so DANN's probe) takes 32 a chunk, embeds them
    in passes, and still gives every episode its per-episode accuracy at every step (float32)."""
    from mtbench.run.evaluate import evaluate

    test = DATASETS.get("synthetic")(progress=False).load("test")
    method = build(*CASES[case], test.image_shape)
    episodes = EpisodeSet(test, EpisodeSpec(5, 1, 15, 40, seed=2))
    assert method.chunk_episodes == 32
    assert build("finetune", {**FINETUNE, "finetune_backbone": "true"}, test.image_shape).chunk_episodes is None
    chunked = evaluate(method, episodes, progress=False)
    alone = evaluate(method, episodes, progress=False, batched=False)
    assert chunked["evaluation"]["batched_episodes"] == 20  # 40 episodes: two chunks of 20, within 32 each
    assert chunked["accuracy"]["per_episode"] == alone["accuracy"]["per_episode"]
    assert chunked["accuracy"]["by_step"] == alone["accuracy"]["by_step"]


def test_in_passes_splits_a_batch_and_gives_the_whole_batchs_output() -> None:
    from mtbench.core.runtime import PASS_IMAGES, PASS_VALUES, in_passes

    calls = []
    layer = torch.nn.Linear(28 * 28, 3).double()

    def module(x):
        calls.append(len(x))
        return layer(x.flatten(1))

    x = torch.randn(300, 1, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    whole = layer(x.flatten(1))
    assert PASS_VALUES["cpu"] == 128 * 28 * 28 and PASS_IMAGES["cpu"] == 64
    torch.testing.assert_close(in_passes(module, x), whole, rtol=0, atol=1e-12)
    assert calls == [64, 64, 64, 64, 44]  # at most 64 images a pass
    calls.clear()
    in_passes(module, x[:64])
    assert calls == [64]  # what fits in one pass is one call
    calls.clear()
    in_passes(lambda t: calls.append(len(t)) or t[:, :3].flatten(1), torch.zeros(10, 3, 84, 84))
    assert calls == [4, 4, 2]  # 84x84 images: 4 a pass by the values bound
