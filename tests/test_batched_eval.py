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


@pytest.mark.parametrize("case", list(CASES))
def test_a_chunk_adapts_as_its_episodes_do_one_by_one(case, chunk, one_thread) -> None:
    shape, sx, sy, qx = chunk
    cls = METHODS.get("maml")
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        method = cls(make_hparams(cls, "synthetic", CASES[case], "2"), shape, torch.Generator().manual_seed(0),
                     torch.device("cpu"))
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
