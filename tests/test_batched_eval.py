"""Batched adaptation gives every episode what the per-episode path gives it, at every scored step.

In float64 on generated data: the adapted logits of a chunk of episodes (``adapt_batch``) against those of
``adapt`` episode by episode, for each method that adapts a chunk at once.
"""

from __future__ import annotations

import pytest
import torch

from mtbench.data import DATASETS
from mtbench.data.episodes import EpisodeSet, EpisodeSpec
from mtbench.methods import METHODS, make_hparams
from support import DEVICES, on_device

EPISODES = 4
CASES = {
    "maml": {"eval_steps": "2"},
    "fomaml": {"eval_steps": "2", "first_order": "true"},
    "anil": {"eval_steps": "2", "head_only": "true"},
}


@pytest.fixture(scope="module")
def chunk():
    test = DATASETS.get("synthetic")(progress=False).load("test")
    sx, sy, qx, qy = EpisodeSet(test, EpisodeSpec(5, 1, 6, EPISODES, seed=0)).batch(0, EPISODES)
    return test.image_shape, sx.double(), sy, qx.double()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(CASES))
def test_a_chunk_adapts_as_its_episodes_do_one_by_one(case, device, chunk, one_thread) -> None:
    shape, sx, sy, qx = on_device(chunk, device)
    cls = METHODS.get("maml")
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        method = cls(make_hparams(cls, "synthetic", CASES[case], "2"), shape, torch.Generator().manual_seed(0),
                     torch.device(device))
        method.prepare(5)
        with torch.no_grad():
            alone = [[p(qx[e]) for p in method.adapt(sx[e], sy[e], 5)] for e in range(EPISODES)]
            together = [p(qx) for p in method.adapt_batch(sx, sy, 5)]
    finally:
        torch.set_default_dtype(before)
    assert len(together) == len(alone[0]) == 3  # before adapting, then 2 steps
    for step, logits in enumerate(together):
        expected = torch.stack([alone[e][step] for e in range(EPISODES)])
        assert logits.dtype == torch.float64 and logits.shape == expected.shape
        torch.testing.assert_close(logits, expected, rtol=1e-9, atol=1e-9)
        assert torch.equal(logits.argmax(-1), expected.argmax(-1))
    # the steps adapt: the logits move away from the start
    assert not torch.allclose(together[0], together[-1])


def test_the_evaluator_scores_chunks_as_it_scores_episodes(one_thread) -> None:
    """Through :func:`evaluate`: the chunked path (several episodes a chunk) and the per-episode reference give
    the same accuracy at every step and the same number of steps, and the chunk size is recorded."""
    from mtbench.run.evaluate import evaluate

    test = DATASETS.get("synthetic")(progress=False).load("test")
    cls = METHODS.get("maml")
    method = cls(make_hparams(cls, "synthetic", {"eval_steps": "2"}, "2"), test.image_shape,
                 torch.Generator().manual_seed(0), torch.device("cpu"))
    method.prepare(5)
    episodes = EpisodeSet(test, EpisodeSpec(5, 1, 6, 6, seed=1))
    chunked = evaluate(method, episodes, progress=False, max_values=3 * 5 * 7 * 3 * 16 * 16)
    alone = evaluate(method, episodes, progress=False, batched=False)
    assert chunked["evaluation"]["batched_episodes"] == 3 and alone["evaluation"]["batched_episodes"] is None
    assert [s["step"] for s in chunked["accuracy"]["by_step"]] == [s["step"] for s in alone["accuracy"]["by_step"]]
    assert chunked["accuracy"]["per_episode"] == alone["accuracy"]["per_episode"]
    for a, b in zip(chunked["accuracy"]["by_step"], alone["accuracy"]["by_step"]):
        assert a["mean"] == pytest.approx(b["mean"], abs=1e-12)
    assert len(chunked["adaptation"]["ms_by_step"]) == 3
    assert chunked["adaptation"]["ms_by_step"] == sorted(chunked["adaptation"]["ms_by_step"])  # cumulative


def test_a_non_finite_episode_of_a_chunk_is_named(one_thread) -> None:
    from mtbench.run.evaluate import OutputError, evaluate

    test = DATASETS.get("synthetic")(progress=False).load("test")
    cls = METHODS.get("maml")

    class Broken(cls):
        def adapt_batch(self, support_x, support_y, ways):
            for step, predictor in enumerate(super().adapt_batch(support_x, support_y, ways)):
                def spoiled(query_x, predictor=predictor, step=step):
                    logits = predictor(query_x)
                    if step == 1:
                        logits[2, 0, 0] = float("nan")  # the third episode of the chunk, at step 1
                    return logits
                yield spoiled

    method = Broken(make_hparams(cls, "synthetic", {"eval_steps": "1"}, "2"), test.image_shape,
                    torch.Generator().manual_seed(0), torch.device("cpu"))
    method.prepare(5)
    with pytest.raises(OutputError, match="NaN or infinite logits on episode 2, adaptation step 1"):
        evaluate(method, EpisodeSet(test, EpisodeSpec(5, 1, 6, 4, seed=1)), progress=False, max_values=10 ** 9)


@pytest.mark.parametrize("batched", [True, False])
def test_scoring_the_last_step_only_gives_the_last_step(batched, one_thread) -> None:
    """``last_only``: the adaptation runs through every step, only the last predictor is scored, labelled with
    its step, and its accuracies are those of the full evaluation's last step."""
    from mtbench.run.evaluate import evaluate

    test = DATASETS.get("synthetic")(progress=False).load("test")
    cls = METHODS.get("maml")
    method = cls(make_hparams(cls, "synthetic", {"eval_steps": "2"}, "2"), test.image_shape,
                 torch.Generator().manual_seed(0), torch.device("cpu"))
    method.prepare(5)
    episodes = EpisodeSet(test, EpisodeSpec(5, 1, 6, 4, seed=2))
    full = evaluate(method, episodes, progress=False, batched=batched)
    last = evaluate(method, episodes, progress=False, batched=batched, last_only=True)
    assert [s["step"] for s in last["accuracy"]["by_step"]] == [2]
    assert last["accuracy"]["per_episode"] == full["accuracy"]["per_episode"]
    assert last["adaptation"]["steps"] == 1 and last["adaptation"]["ms_per_episode"] > 0
